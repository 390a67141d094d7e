//! Rows as stored, typed as they are read: a status, a `when` or a failure
//! reason that does not parse is an error, never silently `failed`.

use osprey_shared::api::{JobView, PipelineView};
use osprey_shared::pipeline::{JobDef, When};
use osprey_shared::{FailureReason, JobId, JobStatus, PipelineId, PipelineStatus};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::str::FromStr;

/// A column that holds text of a type with `FromStr`.
pub(super) fn parsed<T>(row: &AnyRow, column: &str) -> sqlx::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|error: T::Err| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: Box::new(error),
        })
}

fn parsed_opt<T>(row: &AnyRow, column: &str) -> sqlx::Result<Option<T>>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| {
        text.parse()
            .map_err(|error: T::Err| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: Box::new(error),
            })
    })
    .transpose()
}

/// Flags are 0/1 integers in every backend.
pub(super) fn flag(row: &AnyRow, column: &str) -> sqlx::Result<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

#[derive(Debug, thiserror::Error)]
#[error("unknown when {0:?}")]
struct UnknownWhen(String);

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: String,
    pub concurrency: i64,
    /// When its session last opened or closed (`None`: never connected).
    pub last_seen_at: Option<String>,
}

impl AgentRow {
    pub fn tag_list(&self) -> Vec<String> {
        self.tags.clone()
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for AgentRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        let tags: String = row.try_get("tags")?;
        Ok(AgentRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            tags: serde_json::from_str(&tags).map_err(|error| sqlx::Error::ColumnDecode {
                index: "tags".into(),
                source: Box::new(error),
            })?,
            run_untagged: flag(row, "run_untagged")?,
            executor: row.try_get("executor")?,
            concurrency: row.try_get("concurrency")?,
            last_seen_at: row.try_get("last_seen_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct PipelineRow {
    pub id: i64,
    pub repo: String,
    pub git_ref: String,
    pub ref_is_tag: bool,
    pub sha: String,
    pub status: PipelineStatus,
    pub definition: String,
    pub before_sha: Option<String>,
    pub commit_message: Option<String>,
    pub default_branch: Option<String>,
    pub project_id: Option<i64>,
    /// The project's name when the pipeline was created.
    pub project: Option<String>,
    pub iid: Option<i64>,
    /// `CI_PIPELINE_SOURCE`.
    pub source: String,
    /// JSON of the pipeline variables (`--var`, trigger, schedule).
    pub variables: Option<String>,
    pub created_at: String,
}

impl<'r> sqlx::FromRow<'r, AnyRow> for PipelineRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(PipelineRow {
            id: row.try_get("id")?,
            repo: row.try_get("repo")?,
            git_ref: row.try_get("git_ref")?,
            ref_is_tag: flag(row, "ref_is_tag")?,
            sha: row.try_get("sha")?,
            status: parsed(row, "status")?,
            definition: row.try_get("definition")?,
            before_sha: row.try_get("before_sha")?,
            commit_message: row.try_get("commit_message")?,
            default_branch: row.try_get("default_branch")?,
            project_id: row.try_get("project_id")?,
            project: row.try_get("project")?,
            iid: row.try_get("iid")?,
            source: row.try_get("source")?,
            variables: row.try_get("variables")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl PipelineRow {
    pub fn id(&self) -> PipelineId {
        PipelineId(self.id as u64)
    }

    pub fn status(&self) -> PipelineStatus {
        self.status
    }

    /// The pipeline variables it was created with.
    pub fn pipeline_variables(&self) -> Vec<osprey_shared::pipeline::Variable> {
        self.variables
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }

    pub fn view(&self, jobs: Vec<JobView>) -> PipelineView {
        PipelineView {
            id: self.id(),
            status: self.status,
            git_ref: self.git_ref.clone(),
            sha: self.sha.clone(),
            jobs,
            project: self.project.clone(),
            iid: self.iid.map(|iid| iid as u64),
            source: self.source.clone(),
            before_sha: self.before_sha.clone(),
            created_at: Some(self.created_at.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    pub status: JobStatus,
    pub allow_failure: bool,
    pub when: When,
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
    pub failure_kind: Option<FailureReason>,
    pub failure_reason: Option<String>,
    pub log_size: i64,
    pub log_sealed: bool,
    pub artifact_size: Option<i64>,
    pub artifact_sha256: Option<String>,
    /// Where the archive is in the artifact store (`None`: an archive
    /// recorded before keys, at the legacy `{job}.tar`).
    pub artifact_key: Option<String>,
    /// Assignments so far (1 for a job's first run; more after retries).
    pub attempt: i64,
    pub coverage: Option<f64>,
    pub scheduled_at: Option<String>,
    /// The attempt (see `attempt`) that recorded the archive, if any.
    pub artifact_attempt: Option<i64>,
}

/// The columns of [`JobRow`], in a form every backend reads.
pub(super) const JOB_COLUMNS: &str = "id, pipeline_id, name, stage, stage_index, status, allow_failure, \
    when_, definition, agent_id, agent_name, attempt_id, lease_epoch, job_token_sha256, cancel_requested, \
    started_at, finished_at, exit_code, failure_kind, failure_reason, log_size, log_sealed, artifact_size, \
    artifact_sha256, artifact_key, attempt, coverage, scheduled_at, artifact_attempt";

impl<'r> sqlx::FromRow<'r, AnyRow> for JobRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        let when: String = row.try_get("when_")?;
        Ok(JobRow {
            id: row.try_get("id")?,
            pipeline_id: row.try_get("pipeline_id")?,
            name: row.try_get("name")?,
            stage: row.try_get("stage")?,
            stage_index: row.try_get("stage_index")?,
            status: parsed(row, "status")?,
            allow_failure: flag(row, "allow_failure")?,
            when: When::parse(&when).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "when_".into(),
                source: Box::new(UnknownWhen(when.clone())),
            })?,
            definition: row.try_get("definition")?,
            agent_id: row.try_get("agent_id")?,
            agent_name: row.try_get("agent_name")?,
            attempt_id: row.try_get("attempt_id")?,
            lease_epoch: row.try_get("lease_epoch")?,
            job_token_sha256: row.try_get("job_token_sha256")?,
            cancel_requested: flag(row, "cancel_requested")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            exit_code: row.try_get("exit_code")?,
            failure_kind: parsed_opt(row, "failure_kind")?,
            failure_reason: row.try_get("failure_reason")?,
            log_size: row.try_get("log_size")?,
            log_sealed: flag(row, "log_sealed")?,
            artifact_size: row.try_get("artifact_size")?,
            artifact_sha256: row.try_get("artifact_sha256")?,
            artifact_key: row.try_get("artifact_key")?,
            attempt: row.try_get("attempt")?,
            coverage: row.try_get("coverage")?,
            scheduled_at: row.try_get("scheduled_at")?,
            artifact_attempt: row.try_get("artifact_attempt")?,
        })
    }
}

impl JobRow {
    pub fn id(&self) -> JobId {
        JobId(self.id as u64)
    }

    pub fn pipeline_id(&self) -> PipelineId {
        PipelineId(self.pipeline_id as u64)
    }

    pub fn status(&self) -> JobStatus {
        self.status
    }

    pub fn when(&self) -> When {
        self.when
    }

    pub fn definition(&self) -> Result<JobDef, serde_json::Error> {
        serde_json::from_str(&self.definition)
    }

    /// Whether the job's failure is allowed, as GitLab shows it: the
    /// `allow_failure` flag, or a failure with one of its
    /// `allow_failure: exit_codes` (read from the stored definition).
    pub fn failure_allowed(&self) -> bool {
        if self.allow_failure {
            return true;
        }
        let Some(code) = self.exit_code.filter(|_| self.status == JobStatus::Failed) else {
            return false;
        };
        /// Only the field needed, so the whole definition is not decoded.
        #[derive(serde::Deserialize)]
        struct ExitCodes {
            #[serde(default)]
            allow_failure_exit_codes: Vec<i64>,
        }
        serde_json::from_str::<ExitCodes>(&self.definition)
            .is_ok_and(|codes| codes.allow_failure_exit_codes.contains(&code))
    }

    /// The API view; `pending_reason` comes from the dispatcher's live view.
    pub fn view(&self, pending_reason: Option<String>) -> JobView {
        JobView {
            id: self.id(),
            name: self.name.clone(),
            stage: self.stage.clone(),
            status: self.status,
            allow_failure: self.failure_allowed(),
            when: self.when.as_str().to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_job(definition: &str, exit_code: Option<i64>) -> JobRow {
        JobRow {
            id: 1,
            pipeline_id: 1,
            name: "tolerated".to_owned(),
            stage: "test".to_owned(),
            stage_index: 1,
            status: JobStatus::Failed,
            allow_failure: false,
            when: When::OnSuccess,
            definition: definition.to_owned(),
            agent_id: None,
            agent_name: None,
            attempt_id: None,
            lease_epoch: 0,
            job_token_sha256: None,
            cancel_requested: false,
            started_at: None,
            finished_at: None,
            exit_code,
            failure_kind: None,
            failure_reason: None,
            log_size: 0,
            log_sealed: true,
            artifact_size: None,
            artifact_sha256: None,
            artifact_key: None,
            attempt: 1,
            coverage: None,
            scheduled_at: None,
            artifact_attempt: None,
        }
    }

    #[test]
    fn a_failure_with_an_allowed_exit_code_shows_allow_failure() {
        let definition = serde_json::to_string(&JobDef {
            allow_failure_exit_codes: vec![3, 4],
            ..JobDef::default()
        })
        .expect("definition serializes");
        assert!(failed_job(&definition, Some(3)).view(None).allow_failure);
        assert!(!failed_job(&definition, Some(1)).view(None).allow_failure);
        assert!(!failed_job(&definition, None).view(None).allow_failure);
        let mut succeeded = failed_job(&definition, Some(3));
        succeeded.status = JobStatus::Success;
        assert!(!succeeded.view(None).allow_failure);
        let mut flagged = failed_job("{}", Some(1));
        flagged.allow_failure = true;
        assert!(flagged.view(None).allow_failure);
    }
}
