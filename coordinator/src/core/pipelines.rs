//! What the HTTP API may do: create, show and cancel pipelines, read and
//! follow job logs, list agents.

use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::repo;
use crate::repo::{GitTree, ResolvedCommit};
use crate::storage::{CommitDetails, IdempotencyKey, JobRow, Keyed, NewPipeline};
use bytes::Bytes;
use futures::Stream;
use osprey_proto::v1::{self, coordinator_message::Kind};
use osprey_shared::api::{AgentView, JobView, PipelineView};
use osprey_shared::pipeline::{Pipeline, Variable};
use osprey_shared::plan::{plan, PipelineSource, Plan, PlanContext};
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
        if let Some(key) = key {
            if let Some(seen) = self.store().keyed_pipeline(key).await? {
                return self.replay(key, seen).await;
            }
        }
        let mirrors = self.settings().data_dir.join("mirrors");
        let commit = repo::resolve(repo, git_ref, &mirrors, &self.settings().repos).await?;
        let max_file_bytes = self.settings().repos.max_pipeline_file_bytes;
        let before = self.store().last_sha(repo, git_ref).await?;
        let (planned, default_branch) = {
            let commit = commit.clone();
            let git_ref = git_ref.to_owned();
            let before = before.clone();
            // Planning reads included files with blocking git calls.
            tokio::task::spawn_blocking(move || {
                plan_pipeline(&commit, &git_ref, before, variables, max_file_bytes)
            })
            .await
            .map_err(|error| CoreError::Internal(format!("planning task failed: {error}")))??
        };
        let details = CommitDetails {
            before_sha: before,
            message: Some(commit.message.clone()),
            default_branch,
        };
        let new = NewPipeline {
            repo,
            git_ref,
            ref_is_tag: commit.ref_is_tag,
            sha: &commit.sha,
            pipeline: &planned,
            details: &details,
        };
        let (id, pending) = match key {
            None => self.store().create_pipeline_with(&new).await?,
            Some(key) => match self.store().create_pipeline_keyed(&new, key).await? {
                Keyed::Created(id, pending) => (id, pending),
                // Another request with this key won the race.
                seen => return self.replay(key, seen).await,
            },
        };
        tracing::info!(pipeline_id = %id, git_ref, sha = %commit.sha, jobs = planned.jobs.len(), "pipeline created");
        // Only once the new pipeline is stored: a failure before leaves the
        // old ones running.
        self.auto_cancel_redundant(repo, git_ref, &commit.sha, id)
            .await?;
        self.enqueue(&pending).await?;
        Ok(CreatedPipeline {
            view: self.pipeline_view(id).await?,
            replayed: false,
        })
    }

    async fn replay(&self, key: IdempotencyKey<'_>, seen: Keyed) -> CoreResult<CreatedPipeline> {
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
    async fn auto_cancel_redundant(
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

    pub async fn pipeline_view(&self, id: PipelineId) -> CoreResult<PipelineView> {
        let pipeline = self
            .store()
            .pipeline(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("pipeline {id} not found")))?;
        let jobs = self.store().jobs_of(id).await?;
        let views = jobs.iter().map(|job| self.job_view_of(job)).collect();
        Ok(pipeline.view(views))
    }

    pub async fn job_view(&self, id: JobId) -> CoreResult<JobView> {
        let job = self
            .store()
            .job(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {id} not found")))?;
        Ok(self.job_view_of(&job))
    }

    fn job_view_of(&self, job: &JobRow) -> JobView {
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
        Ok(self
            .store()
            .agents()
            .await?
            .into_iter()
            .map(|agent| AgentView {
                connected: connected.contains(&agent.id),
                tags: agent.tag_list(),
                id: agent.id,
                name: agent.name,
                run_untagged: agent.run_untagged,
                executor: agent.executor,
                concurrency: agent.concurrency as u32,
            })
            .collect())
    }
}

/// Parses the pipeline file at the commit (following `include:` in git) and
/// plans it for the ref: which jobs exist, with which variables. Pipelines
/// made through the API stand for a push of the ref (`CI_PIPELINE_SOURCE=push`).
fn plan_pipeline(
    commit: &ResolvedCommit,
    git_ref: &str,
    before: Option<String>,
    variables: Vec<Variable>,
    max_file_bytes: u64,
) -> CoreResult<(Pipeline, Option<String>)> {
    let tree = GitTree::new(commit.git_dir.clone(), commit.sha.clone(), max_file_bytes);
    let parsed =
        osprey_shared::yaml::parse_pipeline_with(repo::PIPELINE_FILE, &commit.pipeline_file, &tree);
    // An include over the limit is refused as the pipeline file is (400,
    // naming the file and the limit), not as a lint error.
    if let Some(refusal) = tree.oversized.take() {
        return Err(refusal);
    }
    tree.parsed();
    let definition = parsed.map_err(CoreError::InvalidPipeline)?;
    let source = PipelineSource::Push;
    let default_branch = tree.default_branch();
    let mut predefined = osprey_shared::variables::predefined(
        git_ref,
        commit.ref_is_tag,
        source.as_str(),
        default_branch.as_deref(),
    );
    predefined.push(Variable {
        key: "CI_COMMIT_SHA".to_owned(),
        value: commit.sha.clone(),
    });
    let context = PlanContext {
        git_ref: git_ref.to_owned(),
        is_tag: commit.ref_is_tag,
        source,
        changed_files: tree.changed_files(before.as_deref()),
        files: &tree,
        predefined,
        variables,
    };
    match plan(&definition, &context) {
        Ok(Plan::Created { pipeline }) => Ok((pipeline, default_branch)),
        Ok(Plan::NotCreated { reason }) => Err(CoreError::PipelineRefused {
            reason,
            errors: Vec::new(),
        }),
        Err(errors) => Err(CoreError::PipelineRefused {
            reason: "planning failed".to_owned(),
            errors: errors.iter().map(ToString::to_string).collect(),
        }),
    }
}
