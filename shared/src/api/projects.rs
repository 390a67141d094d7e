//! JSON shapes of projects, their variables, schedules and triggers, API
//! tokens and push hooks (`/api/v1/projects`, `/api/v1/tokens`,
//! `/hooks/{project}`). Fields are only ever added.

use crate::pipeline::Variable;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `POST /api/v1/projects` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateProject {
    /// `[a-z0-9][a-z0-9._-]*`, at most 64 characters: it names the project in
    /// URLs (`/hooks/{name}`).
    pub name: String,
    /// URL or path of the git repository (checked against `--repo-allow`).
    pub repo: String,
    /// Default: `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// Glob patterns of protected branches and tags (`main`, `release/*`,
    /// `v*`). Default: the default branch alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_refs: Option<Vec<String>>,
    /// Poll the repository's refs this often (seconds, at least 5); `None`
    /// or 0: no polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<u64>,
    /// `HOST[/PATH]`: gives jobs `CI_REGISTRY` (HOST) and `CI_REGISTRY_IMAGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// `PATCH /api/v1/projects/{name}` body: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateProject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_refs: Option<Vec<String>>,
    /// 0 turns polling off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<u64>,
    /// `""` removes the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// A project as the API shows it (never with its webhook secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectView {
    pub name: String,
    pub repo: String,
    pub default_branch: String,
    pub protected_refs: Vec<String>,
    pub poll_seconds: Option<u64>,
    pub registry: Option<String>,
    /// Where forges send push events: `{external URL}/hooks/{name}`.
    pub webhook_url: String,
    pub created_at: String,
}

/// The answer of `POST /api/v1/projects` and of
/// `POST /api/v1/projects/{name}/webhook-secret`: the only times the
/// webhook secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedProject {
    #[serde(flatten)]
    pub project: ProjectView,
    pub webhook_secret: String,
}

/// `POST /api/v1/projects/{name}/pipelines` body (and the trigger's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunPipeline {
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
}

/// `POST /api/v1/projects/{name}/trigger` body, as GitLab's pipeline
/// trigger API: a token (or `Authorization: Bearer`), a ref, variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TriggerPipeline {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `{"KEY": "value"}`, GitLab's `variables[KEY]=value`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variables: std::collections::BTreeMap<String, String>,
}

/// `GET /api/v1/projects/{name}/pipelines` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineFilter {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// At most this many (default 20, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only pipelines with an id below this (paging, newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
}

/// `PUT /api/v1/projects/{name}/variables/{key}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetVariable {
    pub value: String,
    /// Replaced by `[MASKED]` in job logs; at least 8 characters, one line,
    /// no spaces.
    #[serde(default)]
    pub masked: bool,
    /// Only pipelines of protected refs get it.
    #[serde(default)]
    pub protected: bool,
    /// The job gets a file holding the value; the variable is its path.
    #[serde(default)]
    pub file: bool,
    /// `$` in the value is literal (GitLab's "Expand variable" unchecked).
    #[serde(default)]
    pub raw: bool,
    /// `environment:name` the variable is for: `*` (default), a name, or a
    /// wildcard (`review/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_scope: Option<String>,
}

/// A project variable as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableView {
    pub key: String,
    pub env_scope: String,
    pub masked: bool,
    pub protected: bool,
    pub file: bool,
    pub raw: bool,
    pub updated_at: String,
}

/// `POST /api/v1/projects/{name}/schedules` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateSchedule {
    /// Cron: 5 fields (minute hour day month weekday) or 6 with seconds first.
    pub cron: String,
    /// IANA time zone of the cron expression (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A pipeline schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub id: u64,
    pub project: String,
    pub cron: String,
    pub timezone: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub variables: Vec<Variable>,
    pub description: Option<String>,
    pub next_run_at: String,
    pub last_pipeline_id: Option<u64>,
}

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Pipelines, jobs, logs and environments of its project(s).
    Read,
    /// Also create, cancel, retry and play.
    Run,
    /// Also projects, variables, schedules, tokens and agents.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Run => "run",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "read" => Ok(Role::Read),
            "run" => Ok(Role::Run),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected read, run or admin"
            )),
        }
    }
}

/// `POST /api/v1/tokens` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateToken {
    pub role: Role,
    /// Limits the token to one project; `None`: every project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Lifetime in seconds; `None`: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: u64,
    pub role: Role,
    pub project: Option<String>,
    pub description: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// The answer of `POST /api/v1/tokens`: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// The `202` answer of `POST /hooks/{project}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookAnswer {
    /// `queued` (a pipeline will be created), `duplicate` (this push was
    /// seen already), `ignored` (a deletion, or an event that is no push).
    pub outcome: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub message: String,
}
