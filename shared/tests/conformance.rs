//! The conformance suite: every folder of `tests/conformance/` is one case
//! written from GitLab's documented behaviour. A case holds `.gitlab-ci.yml`
//! (and any files it includes or `exists:` looks for: the folder is the
//! repository), `context.toml` (the pipeline being created) and
//! `expected.txt`: the lint errors, the planning errors, or the plan as
//! `osprey lint --plan` prints it.
//!
//! `context.toml` keys: `ref` (required), `tag` (default false), `source`
//! (default "push"), `changed` (list of paths; absent means unknown),
//! `default_branch` (default "main"), `sha` (the commit, for
//! `CI_COMMIT_SHA`...; absent: unknown), a `[project]` table (`repo`, and
//! optional `name` and `registry` as `osprey project add --registry`
//! takes it, for `CI_PROJECT_*` and `CI_REGISTRY*`) and a `[variables]`
//! table of user variables. `OSPREY_BLESS=1` rewrites `expected.txt` from the actual
//! output, for review in the diff; `OSPREY_CASE=text` runs (and blesses)
//! only the cases whose folder name contains `text`.

use osprey_shared::pipeline::Variable;
use osprey_shared::plan::{self, PipelineSource, PlanContext};
use osprey_shared::variables::predefined::{
    pipeline_predefined, project_facts, Facts, ProjectFacts,
};
use osprey_shared::yaml::{parse_pipeline_with, IncludeLoader, LoadError};
use std::path::{Path, PathBuf};

/// A case folder as a repository.
struct Folder {
    root: PathBuf,
}

const NOT_IN_REPO: [&str; 3] = ["context.toml", "expected.txt", "expected-run.txt"];

impl IncludeLoader for Folder {
    fn read(&self, path: &str) -> Result<String, LoadError> {
        if NOT_IN_REPO.contains(&path) {
            return Err(LoadError::NotFound);
        }
        std::fs::read_to_string(self.root.join(path)).map_err(|_| LoadError::NotFound)
    }

    fn list(&self) -> Result<Vec<String>, LoadError> {
        let mut out = Vec::new();
        list(&self.root, &self.root, &mut out);
        out.retain(|p| !NOT_IN_REPO.contains(&p.as_str()));
        out.sort();
        Ok(out)
    }
}

fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("readable case folder") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            list(root, &path, out);
        } else {
            let relative = path.strip_prefix(root).expect("under root");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Context {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    tag: bool,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    changed: Option<Vec<String>>,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    project: Option<Project>,
    #[serde(default)]
    variables: toml::Table,
}

/// The registered project a case's pipeline belongs to.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Project {
    repo: String,
    #[serde(default)]
    name: Option<String>,
    /// `HOST[/PATH]`.
    #[serde(default)]
    registry: Option<String>,
}

/// `CI_SERVER_URL` of every case.
const SERVER_URL: &str = "https://osprey.example.com";

impl Project {
    /// What jobs see of it, as the coordinator makes it: `CI_REGISTRY` is
    /// the host, `CI_REGISTRY_IMAGE` HOST/PATH (HOST/NAME without a path).
    fn facts(&self) -> ProjectFacts {
        let facts = project_facts(&self.repo, self.name.as_deref(), SERVER_URL, None);
        let registry = self.registry.as_deref().map(|registry| {
            let (host, path) = registry
                .split_once('/')
                .unwrap_or((registry, facts.name.as_str()));
            (host.to_owned(), format!("{host}/{}", path.to_lowercase()))
        });
        ProjectFacts { registry, ..facts }
    }
}

fn run_case(dir: &Path) -> String {
    let folder = Folder {
        root: dir.to_owned(),
    };
    let context_text = std::fs::read_to_string(dir.join("context.toml"))
        .unwrap_or_else(|e| panic!("{}: context.toml: {e}", dir.display()));
    let context: Context = toml::from_str(&context_text)
        .unwrap_or_else(|e| panic!("{}: context.toml: {e}", dir.display()));
    let text = std::fs::read_to_string(dir.join(".gitlab-ci.yml"))
        .unwrap_or_else(|e| panic!("{}: .gitlab-ci.yml: {e}", dir.display()));
    let definition = match parse_pipeline_with(".gitlab-ci.yml", &text, &folder) {
        Ok(definition) => definition,
        Err(errors) => {
            return errors.iter().map(|e| format!("{e}\n")).collect();
        }
    };
    let source = context.source.as_deref().unwrap_or("push");
    let source = PipelineSource::parse(source)
        .unwrap_or_else(|| panic!("{}: unknown source {source}", dir.display()));
    let variables = context
        .variables
        .iter()
        .map(|(key, value)| Variable {
            key: key.clone(),
            value: value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
        })
        .collect();
    let project = context.project.as_ref().map(Project::facts);
    let ctx = PlanContext {
        git_ref: context.git_ref.clone(),
        is_tag: context.tag,
        source,
        changed_files: context.changed,
        files: &folder,
        predefined: pipeline_predefined(&Facts {
            git_ref: &context.git_ref,
            is_tag: context.tag,
            source: source.as_str(),
            default_branch: Some(context.default_branch.as_deref().unwrap_or("main")),
            sha: context.sha.as_deref(),
            server_url: context.project.as_ref().map(|_| SERVER_URL),
            project: project.as_ref(),
            ..Facts::default()
        }),
        variables,
        project_variables: Vec::new(),
    };
    match plan::plan(&definition, &ctx) {
        Ok(plan) => plan::render(&plan, &ctx),
        Err(errors) => errors.iter().map(|e| format!("error: {e}\n")).collect(),
    }
}

#[test]
fn conformance_cases() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&base)
        .expect("tests/conformance exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    if let Some(filter) = std::env::var_os("OSPREY_CASE") {
        let filter = filter.to_string_lossy().into_owned();
        cases.retain(|case| {
            case.file_name()
                .is_some_and(|name| name.to_string_lossy().contains(&filter))
        });
    }
    cases.sort();
    assert!(!cases.is_empty(), "no conformance cases found");
    let bless = std::env::var_os("OSPREY_BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = run_case(case);
        let expected_path = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expected.txt");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
