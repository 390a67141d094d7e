//! What the state machine reads and writes: a pipeline with its jobs, the
//! events that move it, and the effects the caller carries out.

use osprey_shared::pipeline::{JobDef, Retry, When};
use osprey_shared::{Failure, FailureReason, JobId, JobStatus, PipelineId, PipelineStatus};
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// One pipeline as the state machine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineState {
    pub id: PipelineId,
    pub status: PipelineStatus,
    pub finished_at: Option<OffsetDateTime>,
    /// In stage order, then file order.
    pub jobs: Vec<JobState>,
}

impl PipelineState {
    pub fn job(&self, id: JobId) -> Option<&JobState> {
        self.jobs.iter().find(|job| job.id == id)
    }
}

/// One job: what its definition fixes, then what changes as it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    pub id: JobId,
    pub name: String,
    pub stage_index: usize,
    pub when: When,
    /// The `allow_failure` keyword.
    pub allow_failure: bool,
    /// `allow_failure: exit_codes`.
    pub allow_failure_exit_codes: Vec<i32>,
    /// `needs:` as names of jobs of this pipeline; `None` = stage order.
    pub needs: Option<Vec<String>>,
    pub retry: Retry,
    pub start_in_seconds: Option<u64>,
    pub resource_group: Option<String>,

    pub status: JobStatus,
    /// Assignments so far (1 during a job's first run).
    pub attempt: u32,
    pub attempt_id: Option<String>,
    /// Bumped by every assignment and every lease expiry: a write carrying
    /// an older epoch comes from a copy that lost its lease.
    pub lease_epoch: u64,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub job_token_sha256: Option<String>,
    pub cancel_requested: bool,
    pub exit_code: Option<i32>,
    pub failure_kind: Option<FailureReason>,
    /// The human text of a failure or cancel.
    pub failure_message: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub scheduled_at: Option<OffsetDateTime>,
}

impl JobState {
    /// A job that has not run, with default keywords (for tests and for
    /// building from a definition).
    pub fn new(id: JobId, name: String, stage_index: usize, status: JobStatus) -> JobState {
        JobState {
            id,
            name,
            stage_index,
            when: When::OnSuccess,
            allow_failure: false,
            allow_failure_exit_codes: Vec::new(),
            needs: None,
            retry: Retry::default(),
            start_in_seconds: None,
            resource_group: None,
            status,
            attempt: 0,
            attempt_id: None,
            lease_epoch: 0,
            agent_id: None,
            agent_name: None,
            job_token_sha256: None,
            cancel_requested: false,
            exit_code: None,
            failure_kind: None,
            failure_message: None,
            started_at: None,
            finished_at: None,
            scheduled_at: None,
        }
    }

    /// Takes the keywords the state machine reads from the job's definition.
    pub fn with_definition(self, definition: &JobDef) -> JobState {
        let mut state = self.with_rules(JobRules::of(definition));
        state.when = definition.when;
        state.allow_failure = definition.allow_failure;
        state
    }

    /// Takes the keywords the state machine reads, as stored beside the job.
    pub fn with_rules(mut self, rules: JobRules) -> JobState {
        self.allow_failure_exit_codes = rules.allow_failure_exit_codes;
        self.needs = rules.needs;
        self.retry = rules.retry;
        self.start_in_seconds = rules.start_in_seconds;
        self.resource_group = rules.resource_group;
        self
    }

    /// Whether this job's failure is allowed: `allow_failure`, or it failed
    /// with one of `allow_failure: exit_codes`.
    pub fn failure_allowed(&self) -> bool {
        self.allow_failure
            || (self.status == JobStatus::Failed
                && self
                    .exit_code
                    .is_some_and(|code| self.allow_failure_exit_codes.contains(&code)))
    }

    /// Whether the job holds its resource group (it is queued or running).
    pub fn holds_resource(&self) -> bool {
        self.resource_group.is_some()
            && matches!(self.status, JobStatus::Pending | JobStatus::Running)
    }
}

/// The keywords of a job the state machine reads beyond `when` and
/// `allow_failure`: small, so a transition loads them without the job's
/// whole definition (scripts, variables).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct JobRules {
    pub allow_failure_exit_codes: Vec<i32>,
    pub needs: Option<Vec<String>>,
    pub retry: Retry,
    pub start_in_seconds: Option<u64>,
    pub resource_group: Option<String>,
}

impl JobRules {
    pub fn of(definition: &JobDef) -> JobRules {
        JobRules {
            allow_failure_exit_codes: definition.allow_failure_exit_codes.clone(),
            needs: definition
                .needs
                .as_ref()
                .map(|needs| needs.iter().map(|need| need.job.clone()).collect()),
            retry: definition.retry.clone(),
            start_in_seconds: definition.start_in_seconds,
            resource_group: definition.resource_group.clone(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Look again (a new pipeline, a restart): nothing else happened.
    Advance,
    /// An agent took the job: a new attempt.
    Assigned {
        job: JobId,
        attempt_id: String,
        lease_epoch: u64,
        agent_id: String,
        agent_name: String,
        job_token_sha256: String,
    },
    /// The agent reported the end of an attempt.
    AttemptEnded {
        job: JobId,
        attempt_id: String,
        lease_epoch: u64,
        end: AttemptEnd,
    },
    /// The attempt's lease ran out without a renewal.
    LeaseExpired {
        job: JobId,
        attempt_id: String,
        lease_epoch: u64,
    },
    /// Someone canceled the pipeline.
    CancelRequested,
    /// Someone started a manual job.
    ManualPlayed { job: JobId },
    /// Someone retried finished jobs (`osprey job retry`, `pipeline retry`):
    /// they run again as new attempts, and the jobs skipped after them are
    /// looked at again.
    RetryRequested { jobs: Vec<JobId> },
    /// Time passed: delayed jobs whose `start_in` is over start.
    DelaysElapsed,
    /// The job's resource group may be free now.
    ResourceFreed { job: JobId },
    /// A pending job is not to run (an outdated deployment): it fails
    /// without an attempt, and is not retried.
    Prevented { job: JobId, failure: Failure },
}

/// How an attempt ended, as its agent says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    Success,
    Failed {
        exit_code: Option<i32>,
        failure: Failure,
    },
    Canceled {
        message: Option<String>,
    },
}

/// What the caller knows beyond the pipeline.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: OffsetDateTime,
    /// Resource groups held (by a pending or running job) in other pipelines.
    pub held_elsewhere: BTreeSet<String>,
}

/// A change for the caller to carry out once the new state is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// The job is pending: queue it for an agent.
    Queue(JobId),
    /// Ask the agent running the job to stop it.
    CancelOnAgent(JobId),
    /// The attempt is over without its agent (lease expired): forget its
    /// lease; if the agent comes back it is fenced.
    AbandonOnAgent(JobId),
    /// The job no longer holds this resource group: the oldest job waiting
    /// for it (in any pipeline) may go.
    ReleaseGroup(String),
    /// A delayed job starts at this time.
    WakeAt(JobId, OffsetDateTime),
}

/// An event that does not apply to the state it met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("job {0} is not in this pipeline")]
    UnknownJob(JobId),
    #[error("attempt {attempt_id} epoch {lease_epoch} is not job {job}'s current attempt")]
    StaleAttempt {
        job: JobId,
        attempt_id: String,
        lease_epoch: u64,
    },
    #[error("job {job} is {status}; only a manual job can be played")]
    NotManual { job: JobId, status: JobStatus },
    #[error("job {job} is {status}, not pending")]
    NotPending { job: JobId, status: JobStatus },
    #[error("job {job} is {status}; only a finished job can be retried")]
    NotRetryable { job: JobId, status: JobStatus },
    #[error("nothing to retry: no job failed or was canceled")]
    NothingToRetry,
}

/// The new state and what to do about it.
#[derive(Debug, Clone)]
pub struct Transition {
    pub state: PipelineState,
    pub effects: Vec<Effect>,
}
