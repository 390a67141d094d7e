//! Projects end to end, one test binary: push webhooks of each forge,
//! polling, schedules, the trigger API, encrypted project variables (masked,
//! protected, scoped, file) and API tokens with roles, against real
//! coordinators, shell agents and a bare git remote per test.
//!
//! The helpers here are what every module shares: a bare remote with a work
//! copy that pushes to it ([`Remote`]), creating a project, listing and
//! waiting for its pipelines, and sending a webhook.

mod access;
mod cli;
mod deployments;
mod hooks;
mod notify;
mod polling;
mod secrets;
mod triggers;

use osprey_integration_tests::{ApiClient, ApiError, TestRepo};
use osprey_shared::api::{CreatedProject, PipelineView};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

/// How long a pushed or scheduled pipeline may take to appear.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(30);

/// A bare repository (the project's `repo`) and a work copy on branch
/// `main` whose `origin` it is.
pub struct Remote {
    bare: TempDir,
    pub work: TestRepo,
}

impl Remote {
    /// A bare remote and a work copy whose first commit holds `ci_yaml`,
    /// not pushed yet.
    pub fn new(ci_yaml: &str) -> Self {
        let bare = tempfile::Builder::new()
            .prefix("osprey-remote-")
            .tempdir()
            .expect("create a temp dir for the bare remote");
        let status = std::process::Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(bare.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .status()
            .expect("run git init --bare");
        assert!(status.success(), "git init --bare failed");
        let work = TestRepo::new();
        work.git(&["checkout", "-q", "-b", "main"]);
        work.write(".gitlab-ci.yml", ci_yaml);
        work.commit("pipeline");
        let url = bare.path().display().to_string();
        work.git(&["remote", "add", "origin", &url]);
        Self { bare, work }
    }

    /// The bare repository's path: the project's `repo`.
    pub fn url(&self) -> String {
        self.bare.path().display().to_string()
    }

    /// `git push origin REFSPEC...`.
    pub fn push(&self, refspecs: &[&str]) {
        let mut args = vec!["push", "-q", "origin"];
        args.extend_from_slice(refspecs);
        self.work.git(&args);
    }

    /// Commits a change of `file` on the current branch and pushes it;
    /// returns the new sha.
    pub fn push_commit(&self, branch: &str, file: &str) -> String {
        self.work.write(file, file);
        let sha = self.work.commit(&format!("change {file}"));
        self.push(&[branch]);
        sha
    }

    /// The sha of HEAD in the work copy.
    pub fn head(&self) -> String {
        self.work.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// `POST /api/v1/projects` with `extra` fields merged in; asserts 201 and
/// returns the created project (with its webhook secret).
pub async fn create_project(
    api: &ApiClient,
    name: &str,
    repo: &str,
    extra: Value,
) -> CreatedProject {
    let mut body = json!({ "name": name, "repo": repo });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let response = api
        .call(api.request(Method::POST, "/api/v1/projects").json(&body))
        .await
        .unwrap_or_else(|error| panic!("create project {name}: {error}"));
    assert_eq!(response.status().as_u16(), 201, "create project {name}");
    let created: CreatedProject = response.json().await.expect("a CreatedProject");
    assert_eq!(created.project.name, name);
    assert!(
        created
            .project
            .webhook_url
            .ends_with(&format!("/hooks/{name}")),
        "{created:?}"
    );
    assert!(created.webhook_secret.len() >= 16, "a real webhook secret");
    created
}

/// `POST /api/v1/projects/app/pipelines` for `git_ref`, run to its end.
pub async fn run_project_pipeline(api: &ApiClient, git_ref: &str) -> PipelineView {
    let created: PipelineView = api
        .call_json(
            Method::POST,
            "/api/v1/projects/app/pipelines",
            Some(&json!({ "ref": git_ref })),
        )
        .await
        .unwrap_or_else(|error| panic!("run a pipeline on {git_ref}: {error}"));
    api.wait_for_pipeline(created.id).await
}

/// `GET /api/v1/projects/{name}/pipelines` (newest first).
pub async fn project_pipelines(api: &ApiClient, name: &str) -> Result<Vec<PipelineView>, ApiError> {
    api.call_json(
        Method::GET,
        &format!("/api/v1/projects/{name}/pipelines"),
        None,
    )
    .await
}

/// Waits until a pipeline of the project matches `check`; returns it.
pub async fn wait_for_project_pipeline(
    api: &ApiClient,
    name: &str,
    what: &str,
    check: impl Fn(&PipelineView) -> bool,
) -> PipelineView {
    let what = format!("a pipeline of {name}: {what} [{}]", api.context());
    osprey_integration_tests::wait_for(&what, APPEAR_TIMEOUT, || async {
        match project_pipelines(api, name).await {
            Ok(pipelines) => pipelines.iter().find(|p| check(p)).cloned().ok_or_else(|| {
                let seen: Vec<String> = pipelines
                    .iter()
                    .map(|p| format!("#{} {} {} {}", p.id, p.source, p.git_ref, p.sha))
                    .collect();
                format!("{seen:?}")
            }),
            Err(error) => Err(error.to_string()),
        }
    })
    .await
}

/// The status and body of a `POST /hooks/{project}` with `headers`.
pub async fn send_hook(
    api: &ApiClient,
    project: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    // Hooks carry no API token: the forge's signature is the credential.
    let anonymous = api.with_token(None);
    let mut request = anonymous
        .request(Method::POST, &format!("/hooks/{project}"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    match anonymous.call(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(ApiError::Status { status, body }) => {
            (status, serde_json::from_str(&body).unwrap_or(Value::Null))
        }
        Err(error) => panic!("send a hook to {project}: {error}"),
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(
                    entries
                        .filter_map(|entry| entry.ok())
                        .map(|entry| entry.path()),
                );
            }
        } else if meta.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                if contains(&bytes, needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}
