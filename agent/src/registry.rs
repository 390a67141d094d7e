//! The agent's running attempts and free slots, shared by the session (which
//! takes offers, lists attempts in `Hello` and heartbeats, and relays cancels
//! and abandons) and the job runners (which add and remove themselves).

use crate::executor::StopGrace;
use crate::workspace::{AttemptDirs, RunningRecord};
use osprey_proto::v1::RunningAttempt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a job's executor was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// `CancelJob` from the coordinator: report CANCELED.
    Canceled { grace: Duration },
    /// The agent is shutting down: report FAILED.
    Shutdown,
}

/// Handles to steer one running attempt.
#[derive(Debug)]
pub struct RunningJob {
    pub job_id: u64,
    pub attempt_id: String,
    pub lease_epoch: u64,
    /// Offset up to which the coordinator acknowledged the log.
    pub acked: watch::Receiver<u64>,
    /// Stops the executor.
    pub cancel: CancellationToken,
    /// The attempt is no longer ours: kill it and report nothing more.
    pub fenced: CancellationToken,
    /// The grace its stop asks for, read by the executor.
    pub stop_grace: StopGrace,
    stop_cause: Mutex<Option<StopCause>>,
    record: Mutex<RunningRecord>,
    dirs: AttemptDirs,
}

impl RunningJob {
    pub fn new(record: RunningRecord, dirs: AttemptDirs, acked: watch::Receiver<u64>) -> Self {
        Self {
            job_id: record.job_id,
            attempt_id: record.attempt_id.clone(),
            lease_epoch: record.lease_epoch,
            acked,
            cancel: CancellationToken::new(),
            fenced: CancellationToken::new(),
            stop_grace: StopGrace::default(),
            stop_cause: Mutex::new(None),
            record: Mutex::new(record),
            dirs,
        }
    }

    /// Stops the job for `cause`; the first cause wins.
    pub fn stop(&self, cause: StopCause) {
        if let StopCause::Canceled { grace } = cause {
            self.stop_grace.request(grace);
        }
        lock(&self.stop_cause).get_or_insert(cause);
        self.cancel.cancel();
    }

    pub fn stop_cause(&self) -> Option<StopCause> {
        *lock(&self.stop_cause)
    }

    /// Kills the local copy and silences it.
    pub fn abandon(&self) {
        self.fenced.cancel();
        self.cancel.cancel();
    }

    /// Process group of the script now running.
    pub fn pgid(&self) -> Option<i32> {
        lock(&self.record).pgid
    }

    /// Records the script's process group, on disk too.
    pub fn set_pgid(&self, pgid: Option<i32>) {
        let mut record = lock(&self.record);
        record.pgid = pgid;
        if let Err(err) = record.store(&self.dirs.record) {
            tracing::warn!(error = %err, job_id = self.job_id, "cannot update running record");
        }
    }

    /// The attempt as `Hello` and heartbeats list it.
    pub fn as_running(&self) -> RunningAttempt {
        RunningAttempt {
            job_id: self.job_id,
            attempt_id: self.attempt_id.clone(),
            lease_epoch: self.lease_epoch,
            acked_log_offset: *self.acked.borrow(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the agent down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
struct Inner {
    /// Accepted offers not yet confirmed or dropped.
    reserved: u32,
    jobs: HashMap<String, Arc<RunningJob>>,
}

/// Slots and running attempts.
#[derive(Debug)]
pub struct Registry {
    concurrency: u32,
    inner: Mutex<Inner>,
}

impl Registry {
    pub fn new(concurrency: u32) -> Self {
        Self {
            concurrency,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn free_slots(&self) -> u32 {
        let inner = lock(&self.inner);
        self.concurrency
            .saturating_sub(inner.reserved + inner.jobs.len() as u32)
    }

    /// Takes a slot for an offer about to be accepted.
    pub fn try_reserve(&self) -> bool {
        let mut inner = lock(&self.inner);
        if inner.reserved + (inner.jobs.len() as u32) < self.concurrency {
            inner.reserved += 1;
            true
        } else {
            false
        }
    }

    /// Gives back a slot of an offer that was not confirmed.
    pub fn release(&self) {
        let mut inner = lock(&self.inner);
        inner.reserved = inner.reserved.saturating_sub(1);
    }

    /// Turns a reserved slot into a running job.
    pub fn insert(&self, job: Arc<RunningJob>) {
        let mut inner = lock(&self.inner);
        inner.reserved = inner.reserved.saturating_sub(1);
        inner.jobs.insert(job.attempt_id.clone(), job);
    }

    /// Frees the slot of a finished attempt.
    pub fn remove(&self, attempt_id: &str) {
        lock(&self.inner).jobs.remove(attempt_id);
    }

    pub fn get(&self, attempt_id: &str) -> Option<Arc<RunningJob>> {
        lock(&self.inner).jobs.get(attempt_id).cloned()
    }

    /// The running attempt of `job_id`, if any.
    pub fn by_job(&self, job_id: u64) -> Option<Arc<RunningJob>> {
        lock(&self.inner)
            .jobs
            .values()
            .find(|job| job.job_id == job_id && !job.fenced.is_cancelled())
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<RunningJob>> {
        lock(&self.inner).jobs.values().cloned().collect()
    }

    /// What `Hello` and heartbeats list: attempts not abandoned.
    pub fn running(&self) -> Vec<RunningAttempt> {
        let mut running: Vec<_> = self
            .all()
            .iter()
            .filter(|job| !job.fenced.is_cancelled())
            .map(|job| job.as_running())
            .collect();
        running.sort_by_key(|attempt| attempt.job_id);
        running
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.inner).jobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::WorkDir;

    fn job(id: u64) -> Arc<RunningJob> {
        let record = RunningRecord {
            job_id: id,
            attempt_id: format!("a{id}"),
            lease_epoch: 1,
            job_token: "t".into(),
            pgid: None,
        };
        let dirs = WorkDir::create(&std::env::temp_dir().join("osprey-registry-test"))
            .unwrap()
            .attempt(id, &record.attempt_id, "p", 0);
        Arc::new(RunningJob::new(record, dirs, watch::channel(5).1))
    }

    #[test]
    fn slots_count_reservations_and_jobs() {
        let registry = Registry::new(2);
        assert!(registry.try_reserve());
        assert!(registry.try_reserve());
        assert!(!registry.try_reserve(), "over capacity");
        registry.release();
        assert_eq!(registry.free_slots(), 1);
        registry.insert(job(1));
        assert_eq!(registry.free_slots(), 1);
        assert_eq!(registry.running()[0].acked_log_offset, 5);
        registry.get("a1").unwrap().abandon();
        assert!(
            registry.running().is_empty(),
            "abandoned attempts are not listed"
        );
        registry.remove("a1");
        assert_eq!(registry.free_slots(), 2);
    }

    #[test]
    fn first_stop_cause_wins() {
        let job = job(2);
        job.stop(StopCause::Shutdown);
        job.stop(StopCause::Canceled {
            grace: Duration::ZERO,
        });
        assert_eq!(job.stop_cause(), Some(StopCause::Shutdown));
        assert!(job.cancel.is_cancelled() && !job.fenced.is_cancelled());
    }
}
