//! What the HTTP API may do: create, show and cancel pipelines, read and
//! follow job logs, list agents.

use super::create::{Before, PipelineRequest};
use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::storage::{IdempotencyKey, JobRow, Keyed};
use bytes::Bytes;
use futures::Stream;
use osprey_proto::v1::{self, coordinator_message::Kind};
use osprey_shared::api::{AgentView, JobView, PipelineView};
use osprey_shared::pipeline::Variable;
use osprey_shared::plan::PipelineSource;
use osprey_shared::{JobId, JobStatus, PipelineId};
use std::collections::BTreeSet;
use std::time::Duration;

/// A pipeline as `POST /api/v1/pipelines` answers it.
#[derive(Debug)]
pub struct CreatedPipeline {
    pub view: PipelineView,
    /// True when an earlier request with the same key created it.
    pub replayed: bool,
}

/// Largest piece of log one read returns.
const LOG_READ_LIMIT: usize = 1 << 20;
/// Time beyond the kill grace an agent has to report a canceled job.
const CANCEL_CONFIRM_MARGIN: Duration = Duration::from_secs(15);

impl Core {
    /// Creates a pipeline for `git_ref` of `repo`, unless its file is invalid
    /// or its rules leave nothing to run on that ref.
    pub async fn create_pipeline(
        &self,
        repo: &str,
        git_ref: &str,
        variables: Vec<Variable>,
    ) -> CoreResult<PipelineView> {
        let created = self
            .create_pipeline_once(repo, git_ref, variables, None)
            .await?;
        Ok(created.view)
    }

    /// [`Core::create_pipeline`] under an `Idempotency-Key`: a key seen with
    /// the same request (its digest) answers the pipeline it created, without
    /// reading the repository again; with another request it is refused.
    /// Only a created pipeline records its key, so a refused request may be
    /// retried with the same key after a fix.
    pub async fn create_pipeline_once(
        &self,
        repo: &str,
        git_ref: &str,
        variables: Vec<Variable>,
        key: Option<IdempotencyKey<'_>>,
    ) -> CoreResult<CreatedPipeline> {
        let request = PipelineRequest {
            repo,
            git_ref,
            at: None,
            before: Before::LastPipeline,
            variables,
            // A bare-repository pipeline stands for a push of the ref, as
            // it always has (the conformance suites rely on it).
            source: PipelineSource::Push,
            project: None,
            trigger_event: None,
            triggered_by: None,
        };
        self.create(request, key).await
    }

    pub(super) async fn replay(
        &self,
        key: IdempotencyKey<'_>,
        seen: Keyed,
    ) -> CoreResult<CreatedPipeline> {
        match seen {
            Keyed::Replayed(id) | Keyed::Created(id, _) => {
                tracing::info!(pipeline_id = %id, key = key.key, "idempotent retry answered");
                Ok(CreatedPipeline {
                    view: self.pipeline_view(id).await?,
                    replayed: true,
                })
            }
            Keyed::Mismatch => Err(CoreError::IdempotencyMismatch(format!(
                "Idempotency-Key {:?} was used with another request",
                key.key
            ))),
        }
    }

    /// GitLab's auto-cancel of redundant pipelines (its `conservative`
    /// default): an older unfinished pipeline of the same ref at another
    /// commit is canceled, unless a job of it that is not `interruptible` has
    /// already started. Only pipelines older than `newer` are looked at.
    pub(super) async fn auto_cancel_redundant(
        &self,
        repo: &str,
        git_ref: &str,
        sha: &str,
        newer: PipelineId,
    ) -> CoreResult<()> {
        let redundant = self.store().redundant_pipelines(repo, git_ref, sha).await?;
        for old in redundant.into_iter().filter(|old| old.0 < newer.0) {
            let jobs = self.store().jobs_of(old).await?;
            let protected = jobs.iter().any(|job| {
                job.started_at.is_some() && !job.definition().is_ok_and(|def| def.interruptible)
            });
            if !protected {
                tracing::info!(pipeline_id = %old, git_ref, "auto-canceling a redundant pipeline");
                self.cancel_pipeline(old).await?;
            }
        }
        Ok(())
    }

    /// Starts a manual job.
    pub async fn play_job(&self, id: JobId) -> CoreResult<JobView> {
        let pending = self.store().play_job(id).await?;
        tracing::info!(job_id = %id, "manual job played");
        self.enqueue(&pending).await?;
        self.job_view(id).await
    }

    /// GitLab's pipeline retry: its failed and canceled jobs run again, and
    /// the jobs skipped after them are looked at again.
    pub async fn retry_pipeline(&self, id: PipelineId) -> CoreResult<PipelineView> {
        let jobs = self.store().jobs_of_without_definitions(id).await?;
        if jobs.is_empty() {
            self.pipeline_view(id).await?;
        }
        let retried: Vec<JobId> = jobs
            .iter()
            .filter(|job| matches!(job.status(), JobStatus::Failed | JobStatus::Canceled))
            .map(JobRow::id)
            .collect();
        let pending = self.store().retry_jobs(id, &retried).await?;
        tracing::info!(pipeline_id = %id, jobs = retried.len(), "pipeline retried");
        self.enqueue(&pending).await?;
        self.notify();
        self.pipeline_view(id).await
    }

    /// Runs one finished job again (a new attempt of the same job).
    pub async fn retry_job(&self, id: JobId) -> CoreResult<JobView> {
        let job = self
            .store()
            .job(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {id} not found")))?;
        let pending = self.store().retry_jobs(job.pipeline_id(), &[id]).await?;
        tracing::info!(job_id = %id, "job retried");
        self.enqueue(&pending).await?;
        self.notify();
        self.job_view(id).await
    }

    pub async fn pipeline_view(&self, id: PipelineId) -> CoreResult<PipelineView> {
        Ok(self.pipeline_with_rows(id).await?.0)
    }

    /// A pipeline's view and its jobs' rows, in the view's order (the web
    /// UI's graph reads `needs:` from the rows' definitions).
    pub async fn pipeline_with_rows(
        &self,
        id: PipelineId,
    ) -> CoreResult<(PipelineView, Vec<JobRow>)> {
        let pipeline = self
            .store()
            .pipeline(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("pipeline {id} not found")))?;
        let jobs = self.store().jobs_of(id).await?;
        let views = jobs.iter().map(|job| self.job_view_of(job)).collect();
        Ok((pipeline.view(views), jobs))
    }

    pub async fn job_view(&self, id: JobId) -> CoreResult<JobView> {
        let job = self
            .store()
            .job(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {id} not found")))?;
        Ok(self.job_view_of(&job))
    }

    pub(crate) fn job_view_of(&self, job: &JobRow) -> JobView {
        let reason = if job.status() == JobStatus::Pending {
            job.definition().ok().and_then(|definition| {
                let tags: BTreeSet<String> = definition.tags.into_iter().collect();
                self.pending_reason(&tags)
            })
        } else {
            None
        };
        job.view(reason)
    }

    /// Cancels a pipeline: its waiting jobs at once, its running jobs on their agents.
    pub async fn cancel_pipeline(&self, id: PipelineId) -> CoreResult<PipelineView> {
        self.store()
            .pipeline(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("pipeline {id} not found")))?;
        let running = self.store().cancel_pipeline(id).await?;
        let jobs = self.store().jobs_of(id).await?;
        {
            let mut dispatcher = self.dispatcher();
            for job in jobs
                .iter()
                .filter(|job| job.status() == JobStatus::Canceled)
            {
                dispatcher.dequeue(job.id());
            }
            // The agent has the grace period plus a margin to confirm; after
            // that the lease expires and the job ends canceled regardless.
            let deadline =
                std::time::Instant::now() + self.settings().cancel_grace + CANCEL_CONFIRM_MARGIN;
            for job in &running {
                let (Some(agent), Some(attempt_id)) = (&job.agent_id, &job.attempt_id) else {
                    continue;
                };
                dispatcher.cap_lease(job.id(), deadline);
                let sent = dispatcher.send(
                    agent,
                    Kind::Cancel(v1::CancelJob {
                        job_id: job.id as u64,
                        attempt_id: attempt_id.clone(),
                        grace_period_ms: self.settings().cancel_grace.as_millis() as u64,
                        reason: "pipeline canceled".to_owned(),
                    }),
                );
                tracing::info!(job_id = job.id, sent, "cancel sent to agent");
            }
        }
        self.notify();
        self.pipeline_view(id).await
    }

    /// The stored log of a job from `offset` (at most 1 MiB per call).
    pub async fn read_log(&self, job: JobId, offset: u64) -> CoreResult<Bytes> {
        self.job_view(job).await?;
        Ok(Bytes::from(
            self.store().read_log(job, offset, LOG_READ_LIMIT).await?,
        ))
    }

    /// The log of a job from `offset`, then new bytes as they are stored; ends
    /// once the job is finished and all of its log has been sent.
    pub fn follow_log(
        &self,
        job: JobId,
        mut offset: u64,
    ) -> impl Stream<Item = CoreResult<Bytes>> + Send + 'static {
        let core = self.clone();
        async_stream::try_stream! {
            let mut changes = core.subscribe();
            loop {
                changes.borrow_and_update();
                let row = core
                    .store()
                    .job(job)
                    .await?
                    .ok_or_else(|| CoreError::NotFound(format!("job {job} not found")))?;
                let data = core.store().read_log(job, offset, LOG_READ_LIMIT).await?;
                if !data.is_empty() {
                    offset += data.len() as u64;
                    yield Bytes::from(data);
                    continue;
                }
                if row.status().is_finished() && offset >= row.log_size as u64 {
                    break;
                }
                // The timeout only guards against a missed wake-up.
                let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
            }
        }
    }

    pub async fn agents(&self) -> CoreResult<Vec<AgentView>> {
        let connected = self.dispatcher().connected_ids();
        let running = self.store().jobs_with_status(JobStatus::Running).await?;
        Ok(self
            .store()
            .agents()
            .await?
            .into_iter()
            .map(|agent| AgentView {
                connected: connected.contains(&agent.id),
                tags: agent.tag_list(),
                running: running
                    .iter()
                    .filter(|job| job.agent_id.as_deref() == Some(agent.id.as_str()))
                    .map(JobRow::id)
                    .collect(),
                last_seen_at: agent.last_seen_at,
                id: agent.id,
                name: agent.name,
                run_untagged: agent.run_untagged,
                executor: agent.executor,
                concurrency: agent.concurrency as u32,
            })
            .collect())
    }
}
