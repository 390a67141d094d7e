//! What the store tells the coordinator's metrics: counts read at scrape
//! time ([`StatsStore::status_counts`]) and, through a [`StoreObserver`],
//! each committed write transaction with the jobs it finished. Storage only
//! reports; `crate::metrics` decides what becomes a metric.
//!
//! Jobs are reported where transitions are applied (the one place a job's
//! status changes) and only once their transaction has committed: a rolled
//! back transition counts nothing, and a replayed event, which changes no
//! stored status, counts nothing either.

use super::StoreResult;
use crate::engine::JobState;
use async_trait::async_trait;
use osprey_shared::{FailureReason, JobStatus, PipelineStatus};
use std::sync::Arc;
use std::time::Duration;

/// A job that reached a final status in a committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedJob {
    pub status: JobStatus,
    /// Why it failed; `None` unless `status` is failed.
    pub failure: Option<FailureReason>,
    /// From its start to its end; `None` for a job that never started
    /// (canceled while pending, skipped).
    pub ran_for: Option<Duration>,
}

impl FinishedJob {
    /// The job as a transition left it, if this transition finished it.
    pub(crate) fn of_transition(before: &JobState, after: &JobState) -> Option<FinishedJob> {
        if before.status.is_finished() || !after.status.is_finished() {
            return None;
        }
        let ran_for = match (after.started_at, after.finished_at) {
            (Some(started), Some(finished)) => {
                Some(Duration::try_from(finished - started).unwrap_or_default())
            }
            _ => None,
        };
        Some(FinishedJob {
            status: after.status,
            failure: after
                .failure_kind
                .filter(|_| after.status == JobStatus::Failed),
            ran_for,
        })
    }
}

/// What one committed write transaction did.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// From its begin to its commit (the SQLite writer lock's wait excluded).
    pub held: Duration,
    /// Jobs its transitions finished.
    pub finished: &'a [FinishedJob],
    /// Log bytes it stored (bytes past the committed end only: a resent
    /// chunk counts once).
    pub log_bytes: u64,
}

/// Receives what the store did, once it is durable. Called on the writer's
/// task right after the commit: it must be quick and must not block.
pub trait StoreObserver: Send + Sync {
    fn committed(&self, commit: &Commit<'_>);
}

/// How many jobs and pipelines are in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Only statuses some job has.
    pub jobs: Vec<(JobStatus, u64)>,
    /// Only statuses some pipeline has.
    pub pipelines: Vec<(PipelineStatus, u64)>,
}

/// Counts for the metrics endpoint, and the observer of commits.
#[async_trait]
pub trait StatsStore: Send + Sync + std::fmt::Debug {
    /// Jobs and pipelines by status (one `GROUP BY status` each).
    async fn status_counts(&self) -> StoreResult<StatusCounts>;
    /// Reports every later commit to `observer` (replacing an earlier one).
    fn observe(&self, observer: Arc<dyn StoreObserver>);
}
