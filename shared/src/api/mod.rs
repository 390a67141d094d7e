//! JSON shapes of the coordinator's HTTP API, shared by the coordinator (which
//! writes them) and the CLI (which reads them). Scripts read these too: fields
//! are only ever added, never renamed.
//!
//! Times are RFC 3339 with milliseconds in UTC; absent values are `null`.

mod deployments;
mod projects;

pub use deployments::*;
pub use projects::*;

use crate::ids::{JobId, PipelineId};
use crate::status::{JobStatus, PipelineStatus};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/pipelines` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatePipeline {
    /// Local path or URL of a git repository that agents can reach too
    /// (admins only; others name a `project`). Empty with `project`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// A registered project: the pipeline is numbered in it and gets its
    /// variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Branch, tag or commit.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Pipeline variables, the highest precedence (as GitLab's `variables` of
    /// a pipeline created by API or by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<crate::pipeline::Variable>,
}

/// A pipeline and its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineView {
    pub id: PipelineId,
    pub status: PipelineStatus,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub jobs: Vec<JobView>,
    /// The project it belongs to (`None`: created with a bare `repo`).
    #[serde(default)]
    pub project: Option<String>,
    /// Its number within the project (`CI_PIPELINE_IID`).
    #[serde(default)]
    pub iid: Option<u64>,
    /// What started it (`CI_PIPELINE_SOURCE`): push, api, web, schedule, trigger.
    #[serde(default = "default_source")]
    pub source: String,
    /// The ref's commit before the push (`CI_COMMIT_BEFORE_SHA`); `None` for
    /// a ref's first pipeline.
    #[serde(default)]
    pub before_sha: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

fn default_source() -> String {
    "push".to_owned()
}

/// One job of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    /// `allow_failure`, or the job failed with one of its
    /// `allow_failure: exit_codes` (as GitLab shows it).
    pub allow_failure: bool,
    pub when: String,
    /// Name of the agent that ran (or runs) the job.
    pub agent: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub pending_reason: Option<String>,
    /// Attempts so far (more than 1 after `retry:`).
    #[serde(default)]
    pub attempt: u32,
    /// `coverage:` figure found in the log.
    #[serde(default)]
    pub coverage: Option<f64>,
    /// When a `scheduled` (delayed) job starts.
    #[serde(default)]
    pub scheduled_at: Option<String>,
}

/// A connected or known agent (`GET /api/v1/agents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: String,
    pub concurrency: u32,
    pub connected: bool,
    /// When its session last opened or closed (a connected agent is seen now).
    #[serde(default)]
    pub last_seen_at: Option<String>,
    /// The jobs it is running.
    #[serde(default)]
    pub running: Vec<JobId>,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Lint errors as `FILE:LINE:COL: message`, when the pipeline file is invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Formats a time the way the API does: RFC 3339, milliseconds, UTC.
pub fn format_time(time: time::OffsetDateTime) -> String {
    let utc = time.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    utc.format(&format).expect("UTC times always format")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds_and_utc() {
        let t = time::macros::datetime!(2026-11-21 10:20:30.123456 +02:00);
        assert_eq!(format_time(t), "2026-11-21T08:20:30.123Z");
    }

    #[test]
    fn absent_values_serialise_as_null() {
        let job = JobView {
            id: JobId(1),
            name: "build".into(),
            stage: "build".into(),
            status: JobStatus::Pending,
            allow_failure: false,
            when: "on_success".into(),
            agent: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            failure_reason: None,
            pending_reason: Some("no agent with tags: docker".into()),
            attempt: 0,
            coverage: None,
            scheduled_at: None,
        };
        let json = serde_json::to_value(&job).unwrap();
        assert!(json["agent"].is_null());
        assert_eq!(json["status"], "pending");
    }
}
