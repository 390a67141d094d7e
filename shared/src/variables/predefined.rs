//! GitLab's predefined variables, listed once: what a pipeline's ref,
//! commit and project say ([`pipeline_predefined`], known when the pipeline
//! is planned, so `variables:` can use them), what each job adds
//! ([`job_predefined`], also known then), and what only the stored pipeline
//! and job know ([`id_predefined`]: ids and their URLs, joined at dispatch).

use super::ref_slug;
use crate::pipeline::Variable;

/// What a pipeline's predefined variables are made of.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub git_ref: &'a str,
    pub is_tag: bool,
    /// `CI_PIPELINE_SOURCE`.
    pub source: &'a str,
    pub default_branch: Option<&'a str>,
    pub sha: Option<&'a str>,
    /// The ref's commit before the push; `None`: 40 zeros, as GitLab.
    pub before_sha: Option<&'a str>,
    pub message: Option<&'a str>,
    /// `CI_SERVER_URL`.
    pub server_url: Option<&'a str>,
    pub project: Option<&'a ProjectFacts>,
}

/// A project as jobs see it: `CI_PROJECT_*` and `CI_REGISTRY*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFacts {
    pub name: String,
    /// `group/project`, from the repository URL.
    pub path: String,
    pub namespace: String,
    /// A web URL, never a path on the coordinator's host.
    pub url: String,
    /// `(CI_REGISTRY, CI_REGISTRY_IMAGE)`.
    pub registry: Option<(String, String)>,
}

/// What a job adds: `CI_JOB_NAME`, `CI_JOB_STAGE`, `CI_NODE_*`.
#[derive(Debug, Clone, Copy)]
pub struct JobFacts<'a> {
    pub name: &'a str,
    pub stage: &'a str,
    pub node: Option<(u32, u32)>,
}

/// The ids only a stored pipeline and job have.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub pipeline_id: u64,
    pub pipeline_iid: u64,
    pub job_id: u64,
}

/// The names [`id_predefined`] gives: a `variables:` value referring to
/// one is expanded when the job is dispatched.
pub const DISPATCH_NAMES: [&str; 5] = [
    "CI_PIPELINE_ID",
    "CI_PIPELINE_IID",
    "CI_PIPELINE_URL",
    "CI_JOB_ID",
    "CI_JOB_URL",
];

fn var(key: &str, value: impl Into<String>) -> Variable {
    Variable {
        key: key.to_owned(),
        value: value.into(),
    }
}

/// The variables of a pipeline's ref, commit and project.
pub fn pipeline_predefined(facts: &Facts<'_>) -> Vec<Variable> {
    let mut out = vec![
        var("CI", "true"),
        var("GITLAB_CI", "true"),
        var("OSPREY", "true"),
        var("CI_COMMIT_REF_NAME", facts.git_ref),
        var("CI_COMMIT_REF_SLUG", ref_slug(facts.git_ref)),
        var("CI_PIPELINE_SOURCE", facts.source),
    ];
    if facts.is_tag {
        out.push(var("CI_COMMIT_TAG", facts.git_ref));
    } else {
        out.push(var("CI_COMMIT_BRANCH", facts.git_ref));
    }
    if let Some(branch) = facts.default_branch {
        out.push(var("CI_DEFAULT_BRANCH", branch));
    }
    if let Some(sha) = facts.sha {
        out.push(var("CI_COMMIT_SHA", sha));
        out.push(var(
            "CI_COMMIT_SHORT_SHA",
            sha.chars().take(8).collect::<String>(),
        ));
        out.push(var(
            "CI_COMMIT_BEFORE_SHA",
            facts
                .before_sha
                .map(str::to_owned)
                .unwrap_or_else(|| "0".repeat(40)),
        ));
    }
    if let Some(message) = facts.message {
        out.push(var("CI_COMMIT_MESSAGE", message));
        out.push(var(
            "CI_COMMIT_TITLE",
            message.lines().next().unwrap_or_default(),
        ));
    }
    if let Some(server) = facts.server_url {
        out.push(var("CI_SERVER_URL", server.trim_end_matches('/')));
    }
    if let Some(project) = facts.project {
        out.push(var("CI_PROJECT_NAME", project.name.clone()));
        out.push(var("CI_PROJECT_PATH", project.path.clone()));
        out.push(var("CI_PROJECT_PATH_SLUG", ref_slug(&project.path)));
        out.push(var("CI_PROJECT_NAMESPACE", project.namespace.clone()));
        out.push(var("CI_PROJECT_URL", project.url.clone()));
        if let Some((registry, image)) = &project.registry {
            out.push(var("CI_REGISTRY", registry.clone()));
            out.push(var("CI_REGISTRY_IMAGE", image.clone()));
        }
    }
    out
}

/// The variables a job adds to its pipeline's.
pub fn job_predefined(job: &JobFacts<'_>) -> Vec<Variable> {
    let mut out = vec![var("CI_JOB_NAME", job.name), var("CI_JOB_STAGE", job.stage)];
    if let Some((index, total)) = job.node {
        out.push(var("CI_NODE_INDEX", index.to_string()));
        out.push(var("CI_NODE_TOTAL", total.to_string()));
    }
    out
}

/// The ids of a stored pipeline and job, and their URLs.
pub fn id_predefined(server_url: &str, ids: &Ids) -> Vec<Variable> {
    let server = server_url.trim_end_matches('/');
    vec![
        var("CI_PIPELINE_ID", ids.pipeline_id.to_string()),
        var("CI_PIPELINE_IID", ids.pipeline_iid.to_string()),
        var(
            "CI_PIPELINE_URL",
            format!("{server}/api/v1/pipelines/{}", ids.pipeline_id),
        ),
        var("CI_JOB_ID", ids.job_id.to_string()),
        var("CI_JOB_URL", format!("{server}/api/v1/jobs/{}", ids.job_id)),
    ]
}

/// The namespace of a repository given as a local path.
pub const LOCAL_NAMESPACE: &str = "local";

/// `CI_PROJECT_PATH`, `CI_PROJECT_NAMESPACE` and `CI_PROJECT_URL` from a
/// repository URL, as GitLab's: `https://host/group/app.git` and
/// `git@host:group/app.git` are `group/app` at `https://host/group/app`.
/// A local path names no host: the path is `local/NAME` and the URL the
/// project's page under `server_url`. `name` is the project's (else the repository's
/// last segment).
pub fn project_facts(
    repo: &str,
    name: Option<&str>,
    server_url: &str,
    registry: Option<(String, String)>,
) -> ProjectFacts {
    let trimmed = repo.trim_end_matches('/');
    let (web, path) = if let Some((scheme, rest)) = trimmed.split_once("://") {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let scheme = if scheme == "http" { "http" } else { "https" };
        (Some(format!("{scheme}://{host}")), path.to_owned())
    } else if let Some((user_host, path)) = trimmed
        .split_once(':')
        .filter(|(head, _)| !head.contains('/'))
    {
        let host = user_host
            .rsplit_once('@')
            .map_or(user_host, |(_, host)| host);
        (Some(format!("https://{host}")), path.to_owned())
    } else {
        (
            None,
            trimmed.rsplit('/').next().unwrap_or_default().to_owned(),
        )
    };
    let path = path.strip_suffix(".git").unwrap_or(&path).to_owned();
    let last = path.rsplit('/').next().unwrap_or_default();
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        if last.is_empty() {
            "project".to_owned()
        } else {
            last.to_owned()
        }
    });
    let path = if web.is_none() {
        // A local path names no group: the namespace is `local`.
        format!("{LOCAL_NAMESPACE}/{name}")
    } else if path.is_empty() {
        name.clone()
    } else {
        path
    };
    let namespace = path
        .rsplit_once('/')
        .map(|(ns, _)| ns.to_owned())
        .unwrap_or_default();
    let url = match web {
        Some(web) => format!("{web}/{path}"),
        None => format!("{}/projects/{name}", server_url.trim_end_matches('/')),
    };
    ProjectFacts {
        name,
        path,
        namespace,
        url,
        registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_come_from_the_repository_url() {
        let facts = project_facts(
            "https://oauth2:tok@git.example.com/team/web/app.git",
            None,
            "http://ci",
            None,
        );
        assert_eq!(facts.path, "team/web/app");
        assert_eq!(facts.namespace, "team/web");
        assert_eq!(facts.url, "https://git.example.com/team/web/app");
        assert_eq!(facts.name, "app");
        let scp = project_facts(
            "git@git.example.com:team/app.git",
            Some("shop"),
            "http://ci",
            None,
        );
        assert_eq!(
            (scp.path.as_str(), scp.url.as_str()),
            ("team/app", "https://git.example.com/team/app")
        );
        assert_eq!(scp.name, "shop");
        let local = project_facts("/srv/git/team/app.git", None, "http://ci:8710/", None);
        assert_eq!(
            (local.path.as_str(), local.namespace.as_str()),
            ("local/app", "local")
        );
        assert_eq!(local.url, "http://ci:8710/projects/app");
        assert!(!local.url.contains("/srv/"));
    }

    #[test]
    fn the_lists_have_what_gitlab_documents() {
        let project = project_facts(
            "https://h/g/p.git",
            None,
            "http://ci",
            Some(("reg".into(), "reg/g/p".into())),
        );
        let facts = Facts {
            git_ref: "v1.0",
            is_tag: true,
            source: "push",
            sha: Some("0123456789abcdef"),
            message: Some("Title\n\nbody"),
            server_url: Some("http://ci/"),
            project: Some(&project),
            ..Facts::default()
        };
        let all = pipeline_predefined(&facts);
        let get = |key: &str| all.iter().find(|v| v.key == key).map(|v| v.value.as_str());
        assert_eq!(get("CI_COMMIT_TAG"), Some("v1.0"));
        assert_eq!(get("CI_COMMIT_BRANCH"), None);
        assert_eq!(get("CI_COMMIT_SHORT_SHA"), Some("01234567"));
        assert_eq!(get("CI_COMMIT_BEFORE_SHA"), Some("0".repeat(40).as_str()));
        assert_eq!(get("CI_COMMIT_TITLE"), Some("Title"));
        assert_eq!(get("CI_REGISTRY_IMAGE"), Some("reg/g/p"));
        assert_eq!(get("CI_SERVER_URL"), Some("http://ci"));
        let ids = id_predefined(
            "http://ci",
            &Ids {
                pipeline_id: 7,
                pipeline_iid: 2,
                job_id: 30,
            },
        );
        let names: Vec<&str> = ids.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(names, DISPATCH_NAMES);
    }
}
