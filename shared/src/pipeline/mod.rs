//! The validated pipeline model: what a `.gitlab-ci.yml` means once parsed,
//! defaults applied and hidden jobs dropped. Built by [`crate::yaml`]; consumed
//! by the coordinator's planner. Every value here is already checked.

use serde::{Deserialize, Serialize};

pub mod cache;
pub mod conditions;
pub(crate) mod dag;

pub use cache::{
    cache_key_problem, Cache, CacheKeyFiles, CachePolicy, CacheWhen, DEFAULT_CACHE_KEY,
};
pub use conditions::{
    InheritVariables, JobConditions, JobFilter, PipelineDefinition, RefPolicy, Rule, RuleWhen,
};

/// The stages GitLab uses when a file has no `stages:`.
pub const DEFAULT_STAGES: [&str; 5] = [".pre", "build", "test", "deploy", ".post"];

/// The stage of a job without `stage:`.
pub const DEFAULT_JOB_STAGE: &str = "test";

/// A whole pipeline definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// In run order; always starts with `.pre` and ends with `.post` as in GitLab.
    pub stages: Vec<String>,
    /// Global `variables:`, in file order.
    pub variables: Vec<Variable>,
    /// Visible jobs in file order (hidden `.name` jobs are not here).
    pub jobs: Vec<JobDef>,
}

impl Pipeline {
    /// Index of a stage in [`Pipeline::stages`].
    pub fn stage_index(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s == stage)
    }
}

/// One job, with `default:` / top-level values already applied.
///
/// Fields after `timeout_seconds` came with the rest of GitLab's job keywords;
/// they default so that stored definitions of older pipelines still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobDef {
    pub name: String,
    pub stage: String,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    pub tags: Vec<String>,
    pub allow_failure: bool,
    pub when: When,
    /// Job `variables:`, in file order (applied over the global ones).
    pub variables: Vec<Variable>,
    pub artifacts: Artifacts,
    pub image: Option<ImageRef>,
    pub services: Vec<ServiceRef>,
    /// `timeout:` in seconds, if the job sets one.
    pub timeout_seconds: Option<u64>,
    /// `needs:`: `None` without the keyword (stage order applies); `Some([])`
    /// for `needs: []` (starts at once). Names are of planned jobs (a
    /// `parallel` job's name is expanded to all its instances).
    #[serde(default)]
    pub needs: Option<Vec<Need>>,
    /// `dependencies:`: whose artifacts the job downloads; `None` = GitLab's
    /// default (all earlier stages, or the `needs` with `artifacts: true`).
    #[serde(default)]
    pub dependencies: Option<Vec<String>>,
    /// `retry:`; `max: 0` without the keyword.
    #[serde(default)]
    pub retry: Retry,
    /// `allow_failure: {exit_codes: [...]}`: a failure with one of these
    /// codes is allowed (`allow_failure` itself is then false).
    #[serde(default)]
    pub allow_failure_exit_codes: Vec<i32>,
    /// `start_in:` of a `when: delayed` job, in seconds.
    #[serde(default)]
    pub start_in_seconds: Option<u64>,
    /// `interruptible:`.
    #[serde(default)]
    pub interruptible: bool,
    /// `resource_group:` (expanded).
    #[serde(default)]
    pub resource_group: Option<String>,
    /// `environment:` (name and url expanded).
    #[serde(default)]
    pub environment: Option<Environment>,
    /// `coverage:` regex (without the slashes), matched on the log.
    #[serde(default)]
    pub coverage: Option<String>,
    /// `parallel:` instance: (`CI_NODE_INDEX`, `CI_NODE_TOTAL`), 1-based.
    #[serde(default)]
    pub node: Option<(u32, u32)>,
    /// `cache:` (up to 4; empty without caches). After planning each key is
    /// final: variables expanded, `key:files` hashed.
    #[serde(default)]
    pub caches: Vec<Cache>,
}

/// One entry of `needs:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    pub job: String,
    /// Download the needed job's artifacts (GitLab's default: true).
    pub artifacts: bool,
    /// `optional: true`: no error when the job is not in the pipeline.
    pub optional: bool,
}

/// `retry:` as GitLab means it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Retries after the first attempt, 0 to 2.
    pub max: u32,
    /// GitLab failure reasons that allow a retry (`always` when empty).
    pub when: Vec<String>,
    /// Exit codes that allow a retry (any when empty).
    pub exit_codes: Vec<i32>,
}

/// `environment:` of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    pub url: Option<String>,
    /// `start` (default), `prepare`, `stop`, `verify`, `access`.
    pub action: String,
    /// `deployment_tier`: production, staging, testing, development or
    /// other; after planning, guessed from the name when not given.
    #[serde(default)]
    pub tier: Option<String>,
    /// `auto_stop_in` in seconds (`never`: `None`).
    #[serde(default)]
    pub auto_stop_in: Option<u64>,
    /// `on_stop`: the job that stops the environment.
    #[serde(default)]
    pub on_stop: Option<String>,
}

impl Environment {
    /// A job of this action records a deployment (`prepare`, `verify` and
    /// `access` do not, as on GitLab; `stop` stops the environment).
    pub fn deploys(&self) -> bool {
        self.action == "start"
    }
}

/// When a job runs, relative to the result of the earlier stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
    /// Waits for `osprey job play`; `allow_failure` defaults to true.
    Manual,
    /// Runs `start_in_seconds` after it would have run `on_success`.
    Delayed,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
        }
    }

    pub fn parse(text: &str) -> Option<When> {
        match text {
            "on_success" => Some(When::OnSuccess),
            "on_failure" => Some(When::OnFailure),
            "always" => Some(When::Always),
            "manual" => Some(When::Manual),
            "delayed" => Some(When::Delayed),
            _ => None,
        }
    }
}

/// A `KEY: value` pair of `variables:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub key: String,
    pub value: String,
}

/// `artifacts:` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifacts {
    /// Files, folders and globs relative to the project dir.
    pub paths: Vec<String>,
    /// Globs of files left out of what `paths` and `untracked` collect.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Also every file git does not track (and does not ignore).
    #[serde(default)]
    pub untracked: bool,
    /// For which job results the archive is uploaded.
    #[serde(default)]
    pub when: ArtifactsWhen,
    /// `artifacts:name`: the archive's name as the user sees it (not yet shown).
    #[serde(default)]
    pub name: Option<String>,
    /// `artifacts:expire_in`; `None` keeps the archive (Osprey has no default expiry).
    #[serde(default)]
    pub expire_in: Option<ArtifactsExpiry>,
}

impl Artifacts {
    /// Whether the job has anything to collect at all.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.untracked
    }
}

/// `artifacts:when`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactsWhen {
    /// GitLab's default: only when the job succeeds.
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

/// `artifacts:expire_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactsExpiry {
    /// `never`.
    Never,
    /// A duration after the job's end, in seconds.
    After(u64),
}

/// `image:` as a string or `{name, entrypoint}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub entrypoint: Option<Vec<String>>,
}

/// One entry of `services:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    pub name: String,
    /// As written; `None` means the alias is derived from the image name.
    pub alias: Option<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub variables: Vec<Variable>,
}

impl ServiceRef {
    /// The host name the job reaches the service by. GitLab derives it from the
    /// image name: tag and digest dropped, `/` becomes `__` (and a second alias
    /// with `-`); we use the `-` form, which is a valid DNS name (a registry
    /// port's `:` becomes `-` too). `docker:dind` → `docker`,
    /// `registry.example.com:5000/team/pg:15` → `registry.example.com-5000-team-pg`.
    pub fn effective_alias(&self) -> String {
        if let Some(alias) = &self.alias {
            return alias.clone();
        }
        let without_digest = self.name.split('@').next().unwrap_or(&self.name);
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
        let without_tag = match without_digest[last_slash..].find(':') {
            Some(colon) => &without_digest[..last_slash + colon],
            None => without_digest,
        };
        without_tag.replace(['/', ':'], "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceRef {
        ServiceRef {
            name: name.to_owned(),
            alias: None,
            command: None,
            entrypoint: None,
            variables: Vec::new(),
        }
    }

    #[test]
    fn service_alias_follows_gitlab_derivation() {
        assert_eq!(service("docker:dind").effective_alias(), "docker");
        assert_eq!(service("postgres").effective_alias(), "postgres");
        assert_eq!(
            service("registry.example.com:5000/team/pg:15").effective_alias(),
            "registry.example.com-5000-team-pg"
        );
        let mut named = service("redis:7");
        named.alias = Some("cache".into());
        assert_eq!(named.effective_alias(), "cache");
    }
}
