//! Rows as stored, and their conversion to API views.

use osprey_shared::api::{JobView, PipelineView};
use osprey_shared::pipeline::{JobDef, When};
use osprey_shared::{JobId, JobStatus, PipelineId, PipelineStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub tags: String,
    pub run_untagged: bool,
    pub executor: String,
    pub concurrency: i64,
}

impl AgentRow {
    pub fn tag_list(&self) -> Vec<String> {
        serde_json::from_str(&self.tags).unwrap_or_default()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PipelineRow {
    pub id: i64,
    pub repo: String,
    pub git_ref: String,
    pub ref_is_tag: bool,
    pub sha: String,
    pub status: String,
    pub definition: String,
    pub before_sha: Option<String>,
    pub commit_message: Option<String>,
    pub default_branch: Option<String>,
}

impl PipelineRow {
    pub fn id(&self) -> PipelineId {
        PipelineId(self.id as u64)
    }

    pub fn status(&self) -> PipelineStatus {
        self.status.parse().unwrap_or(PipelineStatus::Failed)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    pub status: String,
    pub allow_failure: bool,
    pub when_: String,
    pub definition: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub attempt_id: Option<String>,
    pub lease_epoch: i64,
    pub job_token_sha256: Option<String>,
    pub cancel_requested: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<String>,
    pub log_size: i64,
    pub log_sealed: bool,
    pub artifact_size: Option<i64>,
    pub artifact_sha256: Option<String>,
    /// Assignments so far (1 for a job's first run; more after retries).
    pub attempt: i64,
    pub coverage: Option<f64>,
    pub scheduled_at: Option<String>,
    /// The attempt (see `attempt`) that recorded the archive, if any.
    pub artifact_attempt: Option<i64>,
    /// The archive's key in the artifact store; `None` for archives stored
    /// before keys existed (see [`JobRow::artifact_key`]).
    pub artifact_key: Option<String>,
}

impl JobRow {
    pub fn id(&self) -> JobId {
        JobId(self.id as u64)
    }

    pub fn pipeline_id(&self) -> PipelineId {
        PipelineId(self.pipeline_id as u64)
    }

    pub fn status(&self) -> JobStatus {
        self.status.parse().unwrap_or(JobStatus::Failed)
    }

    pub fn when(&self) -> When {
        When::parse(&self.when_).unwrap_or(When::OnSuccess)
    }

    pub fn definition(&self) -> Result<JobDef, serde_json::Error> {
        serde_json::from_str(&self.definition)
    }

    /// The API view; `pending_reason` comes from the dispatcher's live view.
    pub fn view(&self, pending_reason: Option<String>) -> JobView {
        JobView {
            id: self.id(),
            name: self.name.clone(),
            stage: self.stage.clone(),
            status: self.status(),
            allow_failure: self.allow_failure,
            when: self.when_.clone(),
            agent: self.agent_name.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            exit_code: self.exit_code.map(|code| code as i32),
            failure_reason: self.failure_reason.clone(),
            pending_reason,
            attempt: self.attempt.max(0) as u32,
            coverage: self.coverage,
            scheduled_at: self.scheduled_at.clone(),
        }
    }
}

impl PipelineRow {
    pub fn view(&self, jobs: Vec<JobView>) -> PipelineView {
        PipelineView {
            id: self.id(),
            status: self.status(),
            git_ref: self.git_ref.clone(),
            sha: self.sha.clone(),
            jobs,
        }
    }
}
