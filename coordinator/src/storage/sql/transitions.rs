//! Every change of a job's status, as one shape: lock the pipeline, load
//! its state, ask [`engine::apply`], persist the difference, return the
//! effects. Nothing here decides anything; the only choice made is whom a
//! freed resource group is offered to first — the job that has waited
//! longest (lowest id), in whatever pipeline.

use super::deployments::{PipelineMeta, Rollback};
use super::{id, SqlStore, Write};
use crate::engine::{
    self, AttemptEnd, Context, Effect, Event, JobRules, JobState, PipelineState, Refusal,
};
use crate::storage::rows::JOB_COLUMNS;
use crate::storage::{
    Assignment, Fence, FinishResult, JobRow, LifecycleStore, StoreError, StoreResult,
};
use async_trait::async_trait;
use osprey_shared::api::format_time;
use osprey_shared::{JobId, PipelineId};
use sqlx::{Any, FromRow, Row, Transaction};
use std::collections::BTreeSet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

type Tx = Transaction<'static, Any>;

/// A transition as stored.
#[derive(Debug)]
pub(super) struct Applied {
    pub state: PipelineState,
    pub effects: Vec<Effect>,
    /// Jobs made pending in other transitions this one led to (a resource
    /// group handed over).
    pub handed_over: Vec<JobId>,
}

impl Applied {
    /// The jobs to queue for agents.
    pub fn queued(&self) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = self
            .effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Queue(job) => Some(*job),
                _ => None,
            })
            .collect();
        for job in &self.handed_over {
            if !jobs.contains(job) {
                jobs.push(*job);
            }
        }
        jobs
    }

    fn released(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::ReleaseGroup(group) => Some(group.clone()),
                _ => None,
            })
            .collect()
    }

    fn finish_result(&self, job: JobId) -> FinishResult {
        FinishResult {
            stored: self.state.job(job).map(|job| job.status),
            newly_pending: self.queued(),
        }
    }
}

fn refused(refusal: Refusal) -> StoreError {
    match refusal {
        Refusal::UnknownJob(job) => StoreError::NotFound(format!("job {job} not found")),
        stale @ Refusal::StaleAttempt { .. } => StoreError::StaleLease(stale.to_string()),
        other @ (Refusal::NotManual { .. }
        | Refusal::NotPending { .. }
        | Refusal::NotRetryable { .. }
        | Refusal::NothingToRetry) => StoreError::Refused(other.to_string()),
    }
}

fn time_of(text: Option<String>) -> StoreResult<Option<OffsetDateTime>> {
    text.map(|text| {
        OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|error| StoreError::Corrupt(format!("time {text:?}: {error}")))
    })
    .transpose()
}

/// A job's state from its row and its stored rules (or, for a job stored
/// before rules were, its definition).
fn job_state(row: JobRow, rules: Option<String>) -> StoreResult<JobState> {
    let corrupt =
        |error: serde_json::Error| StoreError::Corrupt(format!("rules of job {}: {error}", row.id));
    let rules: JobRules = match rules {
        Some(rules) => serde_json::from_str(&rules).map_err(corrupt)?,
        None => JobRules::of(&row.definition().map_err(corrupt)?),
    };
    let mut state = JobState::new(
        row.id(),
        row.name.clone(),
        row.stage_index as usize,
        row.status,
    )
    .with_rules(rules);
    state.allow_failure = row.allow_failure;
    state.when = row.when;
    state.attempt = u32::try_from(row.attempt).unwrap_or(0);
    state.attempt_id = row.attempt_id;
    state.lease_epoch = u64::try_from(row.lease_epoch).unwrap_or(0);
    state.agent_id = row.agent_id;
    state.agent_name = row.agent_name;
    state.job_token_sha256 = row.job_token_sha256;
    state.cancel_requested = row.cancel_requested;
    state.exit_code = row.exit_code.map(|code| code as i32);
    state.failure_kind = row.failure_kind;
    state.failure_message = row.failure_reason;
    state.started_at = time_of(row.started_at)?;
    state.finished_at = time_of(row.finished_at)?;
    state.scheduled_at = time_of(row.scheduled_at)?;
    Ok(state)
}

impl SqlStore {
    async fn load_state(
        &self,
        tx: &mut Tx,
        pipeline: PipelineId,
    ) -> StoreResult<(PipelineState, PipelineMeta)> {
        let row = sqlx::query(
            "SELECT status, finished_at, project_id, git_ref, source, triggered_by \
             FROM pipelines WHERE id = $1",
        )
        .bind(id(pipeline.0))
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pipeline {pipeline} not found")))?;
        let status = crate::storage::rows::parsed(&row, "status")?;
        let finished_at = time_of(row.try_get("finished_at")?)?;
        let meta = PipelineMeta {
            project_id: row.try_get("project_id")?,
            git_ref: row.try_get("git_ref")?,
            source: row.try_get("source")?,
            triggered_by: row.try_get("triggered_by")?,
        };
        // The definition only where no rules are stored (jobs of before).
        let columns = JOB_COLUMNS.replacen(
            "definition",
            "CASE WHEN rules IS NULL THEN definition ELSE '' END AS definition, rules",
            1,
        );
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM jobs WHERE pipeline_id = $1 ORDER BY stage_index, position"
        ))
        .bind(id(pipeline.0))
        .fetch_all(&mut **tx)
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            jobs.push(job_state(JobRow::from_row(row)?, row.try_get("rules")?)?);
        }
        let state = PipelineState {
            id: pipeline,
            status,
            finished_at,
            jobs,
        };
        Ok((state, meta))
    }

    /// Writes what changed from `before` to `after`.
    async fn persist(
        &self,
        tx: &mut Tx,
        before: &PipelineState,
        after: &PipelineState,
    ) -> StoreResult<()> {
        for (old, new) in before.jobs.iter().zip(&after.jobs) {
            if old == new {
                continue;
            }
            // A new attempt starts an empty log of its own.
            let new_attempt = if new.attempt != old.attempt {
                ", log_size = 0, log_sealed = 0, log_sha256 = NULL"
            } else {
                ""
            };
            sqlx::query(&format!(
                "UPDATE jobs SET status = $1, attempt = $2, attempt_id = $3, lease_epoch = $4, agent_id = $5, \
                 agent_name = $6, job_token_sha256 = $7, cancel_requested = $8, exit_code = $9, \
                 failure_kind = $10, failure_reason = $11, started_at = $12, finished_at = $13, \
                 scheduled_at = $14{new_attempt} WHERE id = $15"
            ))
            .bind(new.status.as_str())
            .bind(i64::from(new.attempt))
            .bind(&new.attempt_id)
            .bind(id(new.lease_epoch))
            .bind(&new.agent_id)
            .bind(&new.agent_name)
            .bind(&new.job_token_sha256)
            .bind(i64::from(new.cancel_requested))
            .bind(new.exit_code.map(i64::from))
            .bind(new.failure_kind.map(|kind| kind.as_str()))
            .bind(&new.failure_message)
            .bind(new.started_at.map(format_time))
            .bind(new.finished_at.map(format_time))
            .bind(new.scheduled_at.map(format_time))
            .bind(id(new.id.0))
            .execute(&mut **tx)
            .await?;
        }
        if before.status != after.status || before.finished_at != after.finished_at {
            sqlx::query("UPDATE pipelines SET status = $1, finished_at = $2 WHERE id = $3")
                .bind(after.status.as_str())
                .bind(after.finished_at.map(format_time))
                .bind(id(after.id.0))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// One event on one pipeline inside `tx`: lock, load, apply, persist.
    pub(super) async fn transact_in(
        &self,
        write: &mut Write<'_>,
        pipeline: PipelineId,
        event: &Event,
    ) -> StoreResult<Applied> {
        self.transact_as(write, pipeline, event, None).await
    }

    /// [`SqlStore::transact_in`], with the deployments and notifications
    /// the change makes; `rollback` names the run a rollback starts. The
    /// jobs it finishes are noted on `write`, reported when it commits.
    pub(super) async fn transact_as(
        &self,
        write: &mut Write<'_>,
        pipeline: PipelineId,
        event: &Event,
        rollback: Option<&Rollback<'_>>,
    ) -> StoreResult<Applied> {
        let tx = &mut write.tx;
        if !self.lock_pipeline(tx, id(pipeline.0)).await? {
            return Err(StoreError::NotFound(format!(
                "pipeline {pipeline} not found"
            )));
        }
        let (before, meta) = self.load_state(tx, pipeline).await?;
        let groups: BTreeSet<String> = before
            .jobs
            .iter()
            .filter_map(|job| job.resource_group.clone())
            .collect();
        let mut held_elsewhere = BTreeSet::new();
        if !groups.is_empty() {
            self.lock_groups(tx, &groups).await?;
            let held: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT resource_group FROM jobs WHERE resource_group IS NOT NULL \
                 AND pipeline_id <> $1 AND status IN ('pending', 'running')",
            )
            .bind(id(pipeline.0))
            .fetch_all(&mut **tx)
            .await?;
            held_elsewhere.extend(held.into_iter().filter(|group| groups.contains(group)));
        }
        let context = Context {
            now: self.now(),
            held_elsewhere,
        };
        let transition = engine::apply(&before, event, &context).map_err(refused)?;
        self.persist(tx, &before, &transition.state).await?;
        if meta.project_id.is_some() {
            self.consequences(tx, &meta, &before, &transition.state, rollback)
                .await?;
        }
        for (old, new) in before.jobs.iter().zip(&transition.state.jobs) {
            if let Some(finished) = crate::storage::FinishedJob::of_transition(old, new) {
                write.finished(finished);
            }
        }
        Ok(Applied {
            state: transition.state,
            effects: transition.effects,
            handed_over: Vec::new(),
        })
    }

    /// One event in its own transaction, then the hand-over of every
    /// resource group it released.
    async fn transact(&self, pipeline: PipelineId, event: &Event) -> StoreResult<Applied> {
        let mut write = self.write().await?;
        let mut applied = self.transact_in(&mut write, pipeline, event).await?;
        write.commit().await?;
        for group in applied.released() {
            let handed = self.hand_over(&group).await?;
            applied.handed_over.extend(handed);
        }
        Ok(applied)
    }

    /// Offers a resource group to the job that has waited for it longest.
    async fn hand_over(&self, group: &str) -> StoreResult<Vec<JobId>> {
        let next: Option<(i64, i64)> = sqlx::query_as(
            "SELECT id, pipeline_id FROM jobs WHERE resource_group = $1 \
             AND status = 'waiting_for_resource' ORDER BY id LIMIT 1",
        )
        .bind(group)
        .fetch_optional(&self.pool)
        .await?;
        let Some((job, pipeline)) = next else {
            return Ok(Vec::new());
        };
        let mut write = self.write().await?;
        let event = Event::ResourceFreed {
            job: JobId(job as u64),
        };
        let applied = self
            .transact_in(&mut write, PipelineId(pipeline as u64), &event)
            .await?;
        write.commit().await?;
        Ok(applied.queued())
    }

    /// Hands over every free group that has a waiting job: after a crash
    /// between a release and its hand-over, or a hand-over lost to a race.
    pub(super) async fn hand_over_groups(&self) -> StoreResult<Vec<JobId>> {
        let free: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT resource_group FROM jobs AS waiting WHERE status = 'waiting_for_resource' \
             AND NOT EXISTS (SELECT 1 FROM jobs AS busy WHERE busy.resource_group = waiting.resource_group \
                             AND busy.status IN ('pending', 'running'))",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut pending = Vec::new();
        for group in free {
            pending.extend(self.hand_over(&group).await?);
        }
        Ok(pending)
    }

    async fn pipeline_of(&self, job: JobId) -> StoreResult<PipelineId> {
        let pipeline: Option<i64> =
            sqlx::query_scalar("SELECT pipeline_id FROM jobs WHERE id = $1")
                .bind(id(job.0))
                .fetch_optional(&self.pool)
                .await?;
        pipeline
            .map(|pipeline| PipelineId(pipeline as u64))
            .ok_or_else(|| StoreError::NotFound(format!("job {job} not found")))
    }
}

#[async_trait]
impl LifecycleStore for SqlStore {
    async fn assign_job(&self, job: JobId, assignment: Assignment<'_>) -> StoreResult<bool> {
        let pipeline = self.pipeline_of(job).await?;
        let event = Event::Assigned {
            job,
            attempt_id: assignment.attempt_id.to_owned(),
            lease_epoch: assignment.lease_epoch,
            agent_id: assignment.agent_id.to_owned(),
            agent_name: assignment.agent_name.to_owned(),
            job_token_sha256: assignment.job_token_sha256.to_owned(),
        };
        match self.transact(pipeline, &event).await {
            Ok(_) => Ok(true),
            Err(StoreError::Refused(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn finish_job(
        &self,
        job: JobId,
        fence: Fence<'_>,
        end: AttemptEnd,
    ) -> StoreResult<FinishResult> {
        let pipeline = self.pipeline_of(job).await?;
        let event = Event::AttemptEnded {
            job,
            attempt_id: fence.attempt_id.to_owned(),
            lease_epoch: fence.lease_epoch,
            end,
        };
        Ok(self.transact(pipeline, &event).await?.finish_result(job))
    }

    async fn expire_lease(&self, job: JobId, fence: Fence<'_>) -> StoreResult<FinishResult> {
        let pipeline = self.pipeline_of(job).await?;
        let event = Event::LeaseExpired {
            job,
            attempt_id: fence.attempt_id.to_owned(),
            lease_epoch: fence.lease_epoch,
        };
        let applied = self.transact(pipeline, &event).await?;
        if applied.effects.is_empty() {
            return Ok(FinishResult::default());
        }
        Ok(applied.finish_result(job))
    }

    async fn cancel_pipeline(&self, pipeline: PipelineId) -> StoreResult<Vec<JobRow>> {
        let applied = self.transact(pipeline, &Event::CancelRequested).await?;
        let mut running = Vec::new();
        for effect in &applied.effects {
            if let Effect::CancelOnAgent(job) = effect {
                let row = sqlx::query_as::<_, JobRow>(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
                ))
                .bind(id(job.0))
                .fetch_one(&self.pool)
                .await?;
                running.push(row);
            }
        }
        Ok(running)
    }

    async fn play_job(&self, job: JobId) -> StoreResult<Vec<JobId>> {
        let pipeline = self.pipeline_of(job).await?;
        Ok(self
            .transact(pipeline, &Event::ManualPlayed { job })
            .await?
            .queued())
    }

    async fn retry_jobs(&self, pipeline: PipelineId, jobs: &[JobId]) -> StoreResult<Vec<JobId>> {
        Ok(self
            .transact(
                pipeline,
                &Event::RetryRequested {
                    jobs: jobs.to_vec(),
                },
            )
            .await?
            .queued())
    }

    async fn start_due_jobs(&self) -> StoreResult<Vec<JobId>> {
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT pipeline_id FROM jobs WHERE status = 'scheduled' AND scheduled_at <= $1 \
             ORDER BY pipeline_id",
        )
        .bind(self.now_text())
        .fetch_all(&self.pool)
        .await?;
        let mut pending = Vec::new();
        for pipeline in due {
            let applied = self
                .transact(PipelineId(pipeline as u64), &Event::DelaysElapsed)
                .await?;
            pending.extend(applied.queued());
        }
        pending.extend(self.hand_over_groups().await?);
        Ok(pending)
    }

    async fn advance(&self, pipeline: PipelineId) -> StoreResult<Vec<JobId>> {
        Ok(self.transact(pipeline, &Event::Advance).await?.queued())
    }

    async fn set_coverage(&self, job: JobId, coverage: f64) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query("UPDATE jobs SET coverage = $1 WHERE id = $2")
            .bind(coverage)
            .bind(id(job.0))
            .execute(&mut *write.tx)
            .await?;
        write.commit().await
    }
}
