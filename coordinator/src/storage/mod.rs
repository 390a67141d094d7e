//! Durable state behind one trait, [`Store`]: the coordinator reads and
//! writes everything through it, and every backend passes one conformance
//! suite (`coordinator/tests/store_conformance`). In-memory state
//! (connected agents, the pending queue, leases) is a cache rebuilt from
//! here at start.
//!
//! Storage decides nothing: a change of a job's status loads the
//! pipeline's state, asks the state machine ([`crate::engine::apply`]) and
//! persists its answer in the same transaction, then hands the effects
//! back. [`SqlStore`] implements the trait for SQLite (the embedded
//! default) and PostgreSQL with one set of queries.

mod clock;
/// Environments, deployments, notification rules and the outbox.
pub mod deployments;
mod error;
/// Copying a stopped coordinator's state between databases (`migrate-store`).
pub mod migrate;
/// Counts and commit reports for the coordinator's metrics.
pub mod observe;
mod projects;
mod rows;
mod sql;

pub use crate::engine::AttemptEnd;
pub use clock::{Clock, ManualClock, SystemClock};
pub use deployments::{DeploymentStore, NotifyStore};
pub use error::{StoreError, StoreResult};
pub use observe::{Commit, FinishedJob, StatsStore, StatusCounts, StoreObserver};
pub use projects::*;
pub use rows::{AgentRow, JobRow, PipelineRow};
pub use sql::{connect, sqlite_url, Backend, SqlStore};

use async_trait::async_trait;
use osprey_shared::pipeline::Pipeline;
use osprey_shared::{JobId, JobStatus, PipelineId};
use std::sync::Arc;

/// The store as the coordinator holds it.
pub type SharedStore = Arc<dyn Store>;

/// What a job's status change did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FinishResult {
    /// The status stored after the call (a final status never changes).
    pub stored: Option<JobStatus>,
    /// Jobs made pending (the next stage, a retry, a freed resource group).
    pub newly_pending: Vec<JobId>,
}

/// What `append_log` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    Appended(u64),
    Duplicate(u64),
    Gap(u64),
}

/// The attempt a job-scoped write claims to come from.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub attempt_id: &'a str,
    pub lease_epoch: u64,
}

/// What jobs learn of a pipeline's commit beyond its sha.
#[derive(Debug, Clone, Default)]
pub struct CommitDetails {
    /// The ref's commit at its previous pipeline (`CI_COMMIT_BEFORE_SHA`).
    pub before_sha: Option<String>,
    /// The full commit message (`CI_COMMIT_MESSAGE`).
    pub message: Option<String>,
    /// The repository's default branch (`CI_DEFAULT_BRANCH`).
    pub default_branch: Option<String>,
}

/// A pipeline to record, with what its jobs learn of the commit.
pub struct NewPipeline<'a> {
    pub repo: &'a str,
    pub git_ref: &'a str,
    pub ref_is_tag: bool,
    pub sha: &'a str,
    pub pipeline: &'a Pipeline,
    pub details: &'a CommitDetails,
    pub origin: Origin<'a>,
}

/// Where a pipeline comes from: its project, what started it, the
/// variables it was started with.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// `(id, name)` of its project; the pipeline gets the project's next `iid`.
    pub project: Option<(i64, &'a str)>,
    /// `CI_PIPELINE_SOURCE`: push, api, web, schedule, trigger.
    pub source: &'a str,
    /// The pipeline variables, kept to give them the highest precedence
    /// over project variables at dispatch.
    pub variables: &'a [osprey_shared::pipeline::Variable],
    /// The trigger event the pipeline answers, closed in its transaction.
    pub trigger_event: Option<i64>,
    /// Who started it (`admin`, `token:ID`, `schedule:ID`); `None`: its source.
    pub triggered_by: Option<&'a str>,
}

impl Default for Origin<'_> {
    fn default() -> Self {
        Origin {
            project: None,
            source: "push",
            variables: &[],
            trigger_event: None,
            triggered_by: None,
        }
    }
}

/// A new agent to record.
pub struct NewAgent<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub token_sha256: &'a str,
    pub tags: &'a [String],
    pub run_untagged: bool,
    pub executor: &'a str,
    pub concurrency: u32,
}

/// An agent taking a job.
#[derive(Debug, Clone, Copy)]
pub struct Assignment<'a> {
    pub agent_id: &'a str,
    pub agent_name: &'a str,
    pub attempt_id: &'a str,
    pub lease_epoch: u64,
    pub job_token_sha256: &'a str,
}

/// An archive to record: already verified and put in the artifact store.
#[derive(Debug, Clone, Copy)]
pub struct NewArtifact<'a> {
    pub size: u64,
    pub sha256: &'a str,
    /// RFC 3339, from `artifacts: expire_in`.
    pub expires_at: Option<&'a str>,
    /// Where the archive is in the artifact store.
    pub key: &'a str,
}

/// A client's `Idempotency-Key` and the digest of the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    pub request_sha256: &'a str,
}

/// What a keyed create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed {
    /// A new pipeline, with the jobs that became pending.
    Created(PipelineId, Vec<JobId>),
    /// The key was seen with the same request: its pipeline, untouched.
    Replayed(PipelineId),
    /// The key was seen with another request.
    Mismatch,
}

/// How long an `Idempotency-Key` is remembered (as Stripe's 24 hours).
pub const KEY_LIFETIME: time::Duration = time::Duration::hours(24);

/// Refuses a call for a job whose attempt is no longer running: its job
/// token died with the attempt's final status (or with its retry).
pub fn ended(job: JobId, status: JobStatus) -> StoreResult<()> {
    if status == JobStatus::Running {
        return Ok(());
    }
    Err(StoreError::AttemptEnded(format!(
        "the job token of job {job} is no longer valid: its attempt has ended (job is {status})"
    )))
}

/// Everything the coordinator keeps, as the role traits below; each
/// method is one transaction. Import [`prelude`] to call them.
pub trait Store:
    AgentStore
    + PipelineStore
    + LifecycleStore
    + RecordStore
    + ProjectStore
    + DeploymentStore
    + NotifyStore
    + StatsStore
{
}

impl<
        T: AgentStore
            + PipelineStore
            + LifecycleStore
            + RecordStore
            + ProjectStore
            + DeploymentStore
            + NotifyStore
            + StatsStore,
    > Store for T
{
}

/// The traits of [`Store`], to bring its methods into scope.
pub mod prelude {
    pub use super::{
        AgentStore, DeploymentStore, LifecycleStore, NotifyStore, PipelineStore, ProjectStore,
        RecordStore, StatsStore, Store,
    };
}

/// Registered agents.
#[async_trait]
pub trait AgentStore: Send + Sync + std::fmt::Debug {
    async fn insert_agent(&self, agent: NewAgent<'_>) -> StoreResult<()>;
    async fn agent_by_token(&self, token_sha256: &str) -> StoreResult<Option<AgentRow>>;
    /// Updates what a connecting agent says of itself; it is seen now.
    async fn update_agent(
        &self,
        id: &str,
        tags: &[String],
        run_untagged: bool,
        concurrency: u32,
    ) -> StoreResult<()>;
    async fn agents(&self) -> StoreResult<Vec<AgentRow>>;
    /// Records that the agent's session opened or closed now.
    async fn touch_agent(&self, id: &str) -> StoreResult<()>;
}

/// Pipelines and their jobs as recorded, and what reads them.
#[async_trait]
pub trait PipelineStore: Send + Sync + std::fmt::Debug {
    /// Records a pipeline and its jobs and starts it; returns its id and the
    /// jobs that became pending.
    async fn create_pipeline_with(
        &self,
        new: &NewPipeline<'_>,
    ) -> StoreResult<(PipelineId, Vec<JobId>)>;
    /// [`PipelineStore::create_pipeline_with`] without commit details.
    async fn create_pipeline(
        &self,
        repo: &str,
        git_ref: &str,
        ref_is_tag: bool,
        sha: &str,
        pipeline: &Pipeline,
    ) -> StoreResult<(PipelineId, Vec<JobId>)> {
        self.create_pipeline_with(&NewPipeline {
            repo,
            git_ref,
            ref_is_tag,
            sha,
            pipeline,
            details: &CommitDetails::default(),
            origin: Origin::default(),
        })
        .await
    }
    /// The pipeline a live key created, if any (before any work is done).
    async fn keyed_pipeline(&self, key: IdempotencyKey<'_>) -> StoreResult<Option<Keyed>>;
    /// [`Store::create_pipeline_with`] under a key: the check and the record
    /// are in the pipeline's transaction, so two requests racing with one
    /// key create one pipeline.
    async fn create_pipeline_keyed(
        &self,
        new: &NewPipeline<'_>,
        key: IdempotencyKey<'_>,
    ) -> StoreResult<Keyed>;
    /// The commit of the latest pipeline of this ref, for `changes:`.
    async fn last_sha(&self, repo: &str, git_ref: &str) -> StoreResult<Option<String>>;
    async fn pipeline(&self, id: PipelineId) -> StoreResult<Option<PipelineRow>>;
    /// The pipeline with its definition's `jobs` left out (`[]`): each job's
    /// definition is in its own row.
    async fn pipeline_without_jobs(&self, id: PipelineId) -> StoreResult<Option<PipelineRow>>;
    async fn jobs_of(&self, pipeline: PipelineId) -> StoreResult<Vec<JobRow>>;
    /// The jobs of a pipeline with empty `definition`s.
    async fn jobs_of_without_definitions(&self, pipeline: PipelineId) -> StoreResult<Vec<JobRow>>;
    async fn job(&self, id: JobId) -> StoreResult<Option<JobRow>>;
    async fn jobs_with_status(&self, status: JobStatus) -> StoreResult<Vec<JobRow>>;
    /// The newest pipelines of every project and none, newest first,
    /// older than `before` when given.
    async fn recent_pipelines(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PipelineRow>>;
    /// Pipelines not yet finished, for re-advancing at start.
    async fn unfinished_pipelines(&self) -> StoreResult<Vec<PipelineId>>;
    /// Older unfinished pipelines of the same ref at another commit.
    async fn redundant_pipelines(
        &self,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> StoreResult<Vec<PipelineId>>;
}

/// Every change of a job's status: each runs the state machine in its
/// transaction.
#[async_trait]
pub trait LifecycleStore: Send + Sync + std::fmt::Debug {
    /// Records that an agent took the job. False if it is no longer pending.
    async fn assign_job(&self, job: JobId, assignment: Assignment<'_>) -> StoreResult<bool>;
    /// Ends the current attempt of a running job, fenced by attempt and epoch.
    async fn finish_job(
        &self,
        job: JobId,
        fence: Fence<'_>,
        end: AttemptEnd,
    ) -> StoreResult<FinishResult>;
    /// A lease expired: fence the attempt and end it.
    async fn expire_lease(&self, job: JobId, fence: Fence<'_>) -> StoreResult<FinishResult>;
    /// Cancels a pipeline; returns the running jobs whose agents must be told.
    async fn cancel_pipeline(&self, pipeline: PipelineId) -> StoreResult<Vec<JobRow>>;
    /// Starts a manual job.
    async fn play_job(&self, job: JobId) -> StoreResult<Vec<JobId>>;
    /// Runs finished jobs of one pipeline again; returns the jobs made pending.
    async fn retry_jobs(&self, pipeline: PipelineId, jobs: &[JobId]) -> StoreResult<Vec<JobId>>;
    /// Delayed jobs whose time has come, and resource groups left free (by
    /// a crash between a release and its hand-over), move on.
    async fn start_due_jobs(&self) -> StoreResult<Vec<JobId>>;
    /// Re-runs the state machine of a pipeline (used at start).
    async fn advance(&self, pipeline: PipelineId) -> StoreResult<Vec<JobId>>;
    async fn set_coverage(&self, job: JobId, coverage: f64) -> StoreResult<()>;
}

/// A job's records: its log (appended at offsets, then sealed) and its
/// archive. Each write is fenced: it lands only while the job runs under
/// the caller's attempt and lease epoch.
#[async_trait]
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Appends `data` at `offset` to a job's log, storing only bytes past the
    /// committed end; never more than `max_size` in all, never after the seal.
    async fn append_log(
        &self,
        job: JobId,
        fence: Fence<'_>,
        offset: u64,
        data: &[u8],
        max_size: u64,
    ) -> StoreResult<AppendResult>;
    /// The stored log bytes of the current attempt from `offset`, at most
    /// `limit` of them (read chunk by chunk: no more than needed).
    async fn read_log(&self, job: JobId, offset: u64, limit: usize) -> StoreResult<Vec<u8>>;
    /// Seals the log of `size` bytes with digest `sha256`. False if the log
    /// grew meanwhile; a repeated identical seal is true again.
    async fn seal_log(
        &self,
        job: JobId,
        fence: Fence<'_>,
        size: u64,
        sha256: &str,
    ) -> StoreResult<bool>;
    /// Refuses early an upload that [`Store::set_artifact`] would refuse.
    async fn check_artifact_open(&self, job: JobId, fence: Fence<'_>) -> StoreResult<()>;
    /// Records a job's archive, once per attempt.
    async fn set_artifact(
        &self,
        job: JobId,
        fence: Fence<'_>,
        artifact: NewArtifact<'_>,
    ) -> StoreResult<()>;
    /// Forgets the archives whose `expire_in` has passed; returns their jobs
    /// and keys so the objects can be deleted (after the row).
    async fn expire_artifacts(&self) -> StoreResult<Vec<(JobId, Option<String>)>>;
}
