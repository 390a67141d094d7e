//! The job lifecycle in the store: assignment, final statuses (with
//! retries), lease expiry, cancellation, manual play and delayed start —
//! each in one transaction together with the state machine's effects, and
//! resource groups (one job at a time per group, across pipelines).

use super::sqlite::{now, Store, JOB_COLUMNS};
use super::JobRow;
use crate::engine::{self, Effect, JobState};
use crate::error::{CoreError, CoreResult};
use osprey_shared::pipeline::{JobDef, When};
use osprey_shared::{JobId, JobStatus, PipelineId, PipelineStatus};
use sqlx::{Sqlite, Transaction};

type Tx<'a> = Transaction<'a, Sqlite>;

/// What a job's status change did.
#[derive(Debug, Default)]
pub struct FinishResult {
    /// The status stored after the call (a final status never changes).
    pub stored: Option<JobStatus>,
    /// Jobs made pending (the next stage, a retry, a freed resource group).
    pub newly_pending: Vec<JobId>,
}

/// GitLab's `retry:when` reason for one of our failure reasons.
pub fn retry_reason(failure_reason: &str) -> &'static str {
    match failure_reason {
        "script failure" => "script_failure",
        "job timeout" => "job_execution_timeout",
        "agent lost" => "runner_system_failure",
        reason if reason.starts_with("artifact download") => "unmet_prerequisites",
        reason
            if reason.starts_with("source checkout")
                || reason.starts_with("image ")
                || reason.starts_with("service ")
                || reason.starts_with("artifact upload") =>
        {
            "runner_system_failure"
        }
        _ => "unknown_failure",
    }
}

/// Whether a failed attempt is retried, by GitLab's `retry:` rules.
fn retries(job: &JobDef, attempt: i64, reason: &str, exit_code: Option<i32>) -> bool {
    let retry = &job.retry;
    if attempt > i64::from(retry.max) {
        return false;
    }
    let reason = retry_reason(reason);
    let when_ok = retry.when.is_empty()
        || retry.when.iter().any(|when| {
            when == "always"
                || when == reason
                || (when == "stuck_or_timeout_failure" && reason == "job_execution_timeout")
        });
    let code_ok = retry.exit_codes.is_empty()
        || exit_code.is_some_and(|code| retry.exit_codes.contains(&code));
    when_ok && code_ok
}

async fn definition_of(tx: &mut Tx<'_>, job: JobId) -> CoreResult<JobDef> {
    let text: String = sqlx::query_scalar("SELECT definition FROM jobs WHERE id = ?")
        .bind(job.0 as i64)
        .fetch_one(&mut **tx)
        .await?;
    serde_json::from_str(&text)
        .map_err(|error| CoreError::Internal(format!("decoding job {job}: {error}")))
}

impl Store {
    /// Records that an agent took the job: a new attempt with a bumped lease
    /// epoch. False if the job is no longer pending (canceled meanwhile).
    pub async fn assign_job(
        &self,
        job: JobId,
        agent_id: &str,
        agent_name: &str,
        attempt_id: &str,
        lease_epoch: u64,
        token_sha256: &str,
    ) -> CoreResult<bool> {
        let (_guard, mut tx) = self.write().await?;
        let changed = sqlx::query(
            "UPDATE jobs SET status = 'running', agent_id = ?, agent_name = ?, attempt_id = ?, \
             lease_epoch = ?, job_token_sha256 = ?, started_at = ?, finished_at = NULL, exit_code = NULL, \
             failure_reason = NULL, log_size = 0, log_sealed = 0, attempt = attempt + 1 \
             WHERE id = ? AND status = 'pending'",
        )
        .bind(agent_id)
        .bind(agent_name)
        .bind(attempt_id)
        .bind(lease_epoch as i64)
        .bind(token_sha256)
        .bind(now())
        .bind(job.0 as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            let pipeline = pipeline_of(&mut tx, job).await?;
            advance_in(&mut tx, pipeline).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Ends the current attempt of a running job, fenced by attempt and
    /// epoch: a failure that `retry:` covers sends the job back to pending as
    /// a new attempt; otherwise the status is final and the pipeline advances.
    pub async fn finish_job(
        &self,
        job: JobId,
        attempt_id: &str,
        lease_epoch: u64,
        status: JobStatus,
        exit_code: Option<i32>,
        reason: Option<&str>,
    ) -> CoreResult<FinishResult> {
        let (_guard, mut tx) = self.write().await?;
        let row: Option<(String, Option<String>, i64)> =
            sqlx::query_as("SELECT status, attempt_id, lease_epoch FROM jobs WHERE id = ?")
                .bind(job.0 as i64)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((current, current_attempt, current_epoch)) = row else {
            return Err(CoreError::NotFound(format!("job {job} not found")));
        };
        if current_attempt.as_deref() != Some(attempt_id) || current_epoch as u64 != lease_epoch {
            return Err(CoreError::StaleLease(format!(
                "attempt {attempt_id} epoch {lease_epoch} is not job {job}'s current attempt"
            )));
        }
        let current: JobStatus = current.parse().unwrap_or(JobStatus::Failed);
        if current != JobStatus::Running {
            return Ok(FinishResult {
                stored: Some(current),
                newly_pending: Vec::new(),
            });
        }
        let result = end_attempt(&mut tx, job, status, exit_code, reason).await?;
        tx.commit().await?;
        Ok(result)
    }

    /// A lease expired: fence the attempt (bump the epoch) and end it —
    /// `canceled` if a cancel was under way, else `failed` with `agent lost`
    /// (which `retry:` may cover, as GitLab's `runner_system_failure`).
    pub async fn expire_lease(
        &self,
        job: JobId,
        attempt_id: &str,
        lease_epoch: u64,
    ) -> CoreResult<FinishResult> {
        let (_guard, mut tx) = self.write().await?;
        let row: Option<bool> = sqlx::query_scalar(
            "SELECT cancel_requested FROM jobs WHERE id = ? AND attempt_id = ? \
             AND lease_epoch = ? AND status = 'running'",
        )
        .bind(job.0 as i64)
        .bind(attempt_id)
        .bind(lease_epoch as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cancel_requested) = row else {
            return Ok(FinishResult::default());
        };
        sqlx::query("UPDATE jobs SET lease_epoch = lease_epoch + 1 WHERE id = ?")
            .bind(job.0 as i64)
            .execute(&mut *tx)
            .await?;
        let result = if cancel_requested {
            end_attempt(
                &mut tx,
                job,
                JobStatus::Canceled,
                None,
                Some("canceled (agent did not confirm)"),
            )
            .await?
        } else {
            end_attempt(&mut tx, job, JobStatus::Failed, None, Some("agent lost")).await?
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Cancels a pipeline: waiting jobs end `canceled`; running jobs are marked
    /// and returned so their agents can be told.
    pub async fn cancel_pipeline(&self, pipeline: PipelineId) -> CoreResult<Vec<JobRow>> {
        let (_guard, mut tx) = self.write().await?;
        let jobs = job_states_in(&mut tx, pipeline).await?;
        let mut running = Vec::new();
        for effect in engine::cancel(&jobs) {
            match effect {
                Effect::CancelWaiting(job) => {
                    set_status(&mut tx, job, JobStatus::Canceled).await?;
                    sqlx::query("UPDATE jobs SET finished_at = ? WHERE id = ?")
                        .bind(now())
                        .bind(job.0 as i64)
                        .execute(&mut *tx)
                        .await?;
                }
                Effect::CancelRunning(job) => {
                    sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?")
                        .bind(job.0 as i64)
                        .execute(&mut *tx)
                        .await?;
                    running.push(job);
                }
                Effect::MakePending(_)
                | Effect::MakeManual(_)
                | Effect::Schedule(_)
                | Effect::Skip(_)
                | Effect::SetPipelineStatus(_) => {}
            }
        }
        advance_in(&mut tx, pipeline).await?;
        let mut rows = Vec::new();
        for job in running {
            rows.push(
                sqlx::query_as::<_, JobRow>(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
                ))
                .bind(job.0 as i64)
                .fetch_one(&mut *tx)
                .await?,
            );
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Starts a manual job (`osprey job play`). A finished pipeline runs again
    /// while it does, as on GitLab.
    pub async fn play_job(&self, job: JobId) -> CoreResult<Vec<JobId>> {
        let (_guard, mut tx) = self.write().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
            .bind(job.0 as i64)
            .fetch_optional(&mut *tx)
            .await?;
        match status.as_deref() {
            None => return Err(CoreError::NotFound(format!("job {job} not found"))),
            Some("manual") => {}
            Some(other) => {
                return Err(CoreError::InvalidArgument(format!(
                    "job {job} is {other}; only a manual job can be played"
                )))
            }
        }
        let pipeline = pipeline_of(&mut tx, job).await?;
        sqlx::query(
            "UPDATE pipelines SET status = 'running', finished_at = NULL WHERE id = ? \
             AND status IN ('success', 'failed', 'manual')",
        )
        .bind(pipeline.0 as i64)
        .execute(&mut *tx)
        .await?;
        let mut pending = Vec::new();
        if make_pending(&mut tx, job).await? {
            pending.push(job);
        }
        pending.extend(advance_in(&mut tx, pipeline).await?);
        tx.commit().await?;
        Ok(pending)
    }

    /// Delayed jobs whose time has come become pending.
    pub async fn start_due_jobs(&self) -> CoreResult<Vec<JobId>> {
        // Called on every housekeeping tick: look without the write lock
        // first, since almost always nothing is due.
        let any_due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = 'scheduled' AND scheduled_at <= ? LIMIT 1",
        )
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        if any_due.is_none() {
            return Ok(Vec::new());
        }
        let (_guard, mut tx) = self.write().await?;
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = 'scheduled' AND scheduled_at <= ? ORDER BY id",
        )
        .bind(now())
        .fetch_all(&mut *tx)
        .await?;
        let mut pending = Vec::new();
        for id in due {
            let job = JobId(id as u64);
            if make_pending(&mut tx, job).await? {
                pending.push(job);
            }
        }
        tx.commit().await?;
        Ok(pending)
    }

    /// Re-runs the state machine of a pipeline (used at start).
    pub async fn advance(&self, pipeline: PipelineId) -> CoreResult<Vec<JobId>> {
        let (_guard, mut tx) = self.write().await?;
        let pending = advance_in(&mut tx, pipeline).await?;
        tx.commit().await?;
        Ok(pending)
    }

    /// Records a job's coverage figure.
    pub async fn set_coverage(&self, job: JobId, coverage: f64) -> CoreResult<()> {
        let (_guard, mut tx) = self.write().await?;
        sqlx::query("UPDATE jobs SET coverage = ? WHERE id = ?")
            .bind(coverage)
            .bind(job.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Ends a running attempt: retried when `retry:` covers the failure, else
/// final; then advances the pipeline and frees the job's resource group.
async fn end_attempt(
    tx: &mut Tx<'_>,
    job: JobId,
    status: JobStatus,
    exit_code: Option<i32>,
    reason: Option<&str>,
) -> CoreResult<FinishResult> {
    let definition = definition_of(tx, job).await?;
    let attempt: i64 = sqlx::query_scalar("SELECT attempt FROM jobs WHERE id = ?")
        .bind(job.0 as i64)
        .fetch_one(&mut **tx)
        .await?;
    let mut newly_pending = Vec::new();
    let stored = if status == JobStatus::Failed
        && retries(&definition, attempt, reason.unwrap_or(""), exit_code)
    {
        tracing::info!(job_id = %job, attempt, reason, "job failed; retrying");
        sqlx::query(
            "UPDATE jobs SET status = 'pending', cancel_requested = 0, exit_code = ?, failure_reason = ? WHERE id = ?",
        )
        .bind(exit_code.map(i64::from))
        .bind(reason.map(|reason| format!("{reason} (retrying)")))
        .bind(job.0 as i64)
        .execute(&mut **tx)
        .await?;
        newly_pending.push(job);
        JobStatus::Pending
    } else {
        sqlx::query(
            "UPDATE jobs SET status = ?, exit_code = ?, failure_reason = ?, finished_at = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(exit_code.map(i64::from))
        .bind(reason)
        .bind(now())
        .bind(job.0 as i64)
        .execute(&mut **tx)
        .await?;
        status
    };
    let pipeline = pipeline_of(tx, job).await?;
    newly_pending.extend(advance_in(tx, pipeline).await?);
    Ok(FinishResult {
        stored: Some(stored),
        newly_pending,
    })
}

async fn pipeline_of(tx: &mut Tx<'_>, job: JobId) -> CoreResult<PipelineId> {
    let id: i64 = sqlx::query_scalar("SELECT pipeline_id FROM jobs WHERE id = ?")
        .bind(job.0 as i64)
        .fetch_one(&mut **tx)
        .await?;
    Ok(PipelineId(id as u64))
}

async fn set_status(tx: &mut Tx<'_>, job: JobId, status: JobStatus) -> CoreResult<()> {
    sqlx::query("UPDATE jobs SET status = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(job.0 as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Makes a ready job pending, or `waiting_for_resource` while another job
/// of its resource group is pending or running. True if it became pending.
async fn make_pending(tx: &mut Tx<'_>, job: JobId) -> CoreResult<bool> {
    let group: Option<String> = sqlx::query_scalar("SELECT resource_group FROM jobs WHERE id = ?")
        .bind(job.0 as i64)
        .fetch_one(&mut **tx)
        .await?;
    if let Some(group) = group {
        let busy: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE resource_group = ? AND id != ? AND status IN ('pending', 'running')",
        )
        .bind(&group)
        .bind(job.0 as i64)
        .fetch_one(&mut **tx)
        .await?;
        if busy > 0 {
            set_status(tx, job, JobStatus::WaitingForResource).await?;
            return Ok(false);
        }
    }
    set_status(tx, job, JobStatus::Pending).await?;
    Ok(true)
}

/// The oldest waiting job of every resource group that is free now becomes
/// pending (any pipeline).
async fn release_resource_groups(tx: &mut Tx<'_>) -> CoreResult<Vec<JobId>> {
    let free: Vec<i64> = sqlx::query_scalar(
        "SELECT MIN(id) FROM jobs AS waiting WHERE status = 'waiting_for_resource' \
         AND NOT EXISTS (SELECT 1 FROM jobs AS busy WHERE busy.resource_group = waiting.resource_group \
                         AND busy.status IN ('pending', 'running')) \
         GROUP BY resource_group",
    )
    .fetch_all(&mut **tx)
    .await?;
    for id in &free {
        set_status(tx, JobId(*id as u64), JobStatus::Pending).await?;
    }
    Ok(free.into_iter().map(|id| JobId(id as u64)).collect())
}

/// The columns the state machine reads of a job.
#[derive(sqlx::FromRow)]
struct StateRow {
    id: i64,
    name: String,
    stage_index: i64,
    status: String,
    allow_failure: bool,
    when_: String,
    definition: String,
    exit_code: Option<i64>,
}

pub(super) async fn job_states_in(
    tx: &mut Tx<'_>,
    pipeline: PipelineId,
) -> CoreResult<Vec<JobState>> {
    let rows: Vec<StateRow> = sqlx::query_as(
        "SELECT id, name, stage_index, status, allow_failure, when_, definition, exit_code FROM jobs \
         WHERE pipeline_id = ? ORDER BY stage_index, position",
    )
    .bind(pipeline.0 as i64)
    .fetch_all(&mut **tx)
    .await?;
    let mut states = Vec::with_capacity(rows.len());
    for StateRow {
        id,
        name,
        stage_index,
        status,
        allow_failure,
        when_: when,
        definition,
        exit_code,
    } in rows
    {
        let definition: JobDef = serde_json::from_str(&definition)
            .map_err(|error| CoreError::Internal(format!("decoding job {id}: {error}")))?;
        let status: JobStatus = status.parse().unwrap_or(JobStatus::Failed);
        let allowed_code = status == JobStatus::Failed
            && exit_code
                .is_some_and(|code| definition.allow_failure_exit_codes.contains(&(code as i32)));
        states.push(JobState {
            id: JobId(id as u64),
            name,
            stage_index: stage_index as usize,
            status,
            allow_failure: allow_failure || allowed_code,
            when: When::parse(&when).unwrap_or(When::OnSuccess),
            needs: definition
                .needs
                .map(|needs| needs.into_iter().map(|need| need.job).collect()),
        });
    }
    Ok(states)
}

/// Runs the state machine over one pipeline inside `tx` and applies its
/// effects; returns the jobs made pending (here or in freed resource groups).
pub(super) async fn advance_in(tx: &mut Tx<'_>, pipeline: PipelineId) -> CoreResult<Vec<JobId>> {
    let status: String = sqlx::query_scalar("SELECT status FROM pipelines WHERE id = ?")
        .bind(pipeline.0 as i64)
        .fetch_one(&mut **tx)
        .await?;
    let status: PipelineStatus = status.parse().unwrap_or(PipelineStatus::Failed);
    let jobs = job_states_in(tx, pipeline).await?;
    let mut pending = Vec::new();
    for effect in engine::advance(&jobs, status) {
        match effect {
            Effect::MakePending(job) => {
                if make_pending(tx, job).await? {
                    pending.push(job);
                }
            }
            Effect::MakeManual(job) => set_status(tx, job, JobStatus::Manual).await?,
            Effect::Skip(job) => set_status(tx, job, JobStatus::Skipped).await?,
            Effect::Schedule(job) => {
                let delay = definition_of(tx, job).await?.start_in_seconds.unwrap_or(0);
                let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(delay as i64);
                sqlx::query("UPDATE jobs SET status = 'scheduled', scheduled_at = ? WHERE id = ?")
                    .bind(osprey_shared::api::format_time(at))
                    .bind(job.0 as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            Effect::SetPipelineStatus(new_status) => {
                let finished_at = new_status.is_finished().then(now);
                sqlx::query("UPDATE pipelines SET status = ?, finished_at = ? WHERE id = ?")
                    .bind(new_status.as_str())
                    .bind(finished_at)
                    .bind(pipeline.0 as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            Effect::CancelWaiting(_) | Effect::CancelRunning(_) => {}
        }
    }
    for job in release_resource_groups(tx).await? {
        if !pending.contains(&job) {
            pending.push(job);
        }
    }
    Ok(pending)
}
