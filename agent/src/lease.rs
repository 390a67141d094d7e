//! Lease-holder discipline on the agent's side: every running attempt has a
//! deadline on the agent's monotonic clock, `sent + TTL - margin`, where
//! `sent` is when the agent sent the last message whose renewal the
//! coordinator acknowledged (the accept, this session's `Hello`, or a
//! heartbeat). A watchdog stops and fences an attempt whose deadline passes,
//! so a partitioned agent has killed its copy before the coordinator (which
//! waits `TTL + margin` from when it received that message) hands the job on.
//! See docs/ARCHITECTURE.md, "Leases: never two copies at once".
//!
//! It does not decide what a renewal is (the session does) and does not kill
//! processes itself (the job runner's cancel path does).

use crate::registry::{Registry, StopCause};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The lease terms the coordinator's `Welcome` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    pub ttl: Duration,
    pub margin: Duration,
}

impl LeaseTerms {
    /// Terms from `Welcome`; `None` when the coordinator gave none (an older
    /// one), in which case attempts run until the coordinator says otherwise.
    pub fn from_welcome(ttl_ms: u64, margin_ms: u64) -> Option<Self> {
        let (ttl, margin) = (
            Duration::from_millis(ttl_ms),
            Duration::from_millis(margin_ms),
        );
        (ttl_ms > 0 && margin_ms > 0 && margin < ttl).then_some(Self { ttl, margin })
    }

    /// How long after sending a renewal the agent may keep running.
    pub fn hold(&self) -> Duration {
        self.ttl - self.margin
    }

    /// The SIGTERM-to-SIGKILL grace of an attempt stopped for lease loss:
    /// at most half the margin, so the copy is dead well before the
    /// coordinator may start another one (`2 * margin` later).
    pub fn stop_grace(&self, kill_grace: Duration) -> Duration {
        kill_grace.min(self.margin / 2)
    }
}

#[derive(Debug, Default)]
struct Inner {
    terms: Option<LeaseTerms>,
    /// Attempt id -> when the agent must have stopped it.
    deadlines: HashMap<String, Instant>,
}

/// Deadlines of the running attempts' leases, shared by the session (which
/// renews them) and the watchdog (which enforces them).
#[derive(Debug, Default)]
pub struct Leases {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the terms of a new session's `Welcome`.
    pub fn set_terms(&self, terms: Option<LeaseTerms>) {
        self.lock().terms = terms;
        self.changed.notify_one();
    }

    pub fn terms(&self) -> Option<LeaseTerms> {
        self.lock().terms
    }

    /// The coordinator acknowledged a renewal of `attempt_id` that the agent
    /// sent at `sent`: the attempt may run until `sent + hold`. Counting from
    /// the send, not from the ack, keeps the agent's deadline before the
    /// coordinator's however late the ack arrives.
    pub fn renewed(&self, attempt_id: &str, sent: Instant) {
        let mut inner = self.lock();
        let Some(terms) = inner.terms else {
            return;
        };
        let deadline = sent + terms.hold();
        let entry = inner
            .deadlines
            .entry(attempt_id.to_owned())
            .or_insert(deadline);
        *entry = (*entry).max(deadline);
        drop(inner);
        self.changed.notify_one();
    }

    /// When `attempt_id` must have stopped, if it has a lease deadline.
    pub fn deadline(&self, attempt_id: &str) -> Option<Instant> {
        self.lock().deadlines.get(attempt_id).copied()
    }

    /// Removes and returns the attempts whose deadline is at or before `now`.
    fn take_due(&self, now: Instant) -> Vec<String> {
        let mut inner = self.lock();
        let due: Vec<String> = inner
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            inner.deadlines.remove(id);
        }
        due
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.lock().deadlines.values().min().copied()
    }
}

/// Stops every attempt whose lease deadline passes, until `close` fires.
/// Spawned once per agent (in `agent::run`); independent of the session so it
/// acts while the stream is hung, broken or reconnecting.
pub async fn watchdog(
    leases: Arc<Leases>,
    registry: Arc<Registry>,
    kill_grace: Duration,
    close: CancellationToken,
) {
    loop {
        // Far enough to mean "until something changes".
        let wake = leases
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = close.cancelled() => return,
            () = leases.changed.notified() => continue,
            () = tokio::time::sleep_until(wake) => {}
        }
        let grace = leases
            .terms()
            .map_or(kill_grace, |terms| terms.stop_grace(kill_grace));
        for attempt_id in leases.take_due(Instant::now()) {
            // A finished attempt has left the registry: nothing to stop.
            let Some(job) = registry.get(&attempt_id) else {
                continue;
            };
            if job.fenced.is_cancelled() {
                continue;
            }
            tracing::warn!(
                job_id = job.job_id,
                %attempt_id,
                ?grace,
                "lease not renewed in time; stopping the local copy"
            );
            // Fenced first: whoever sees the cancel must already see that the
            // attempt is lost, so it reports nothing (not CANCELED).
            job.fenced.cancel();
            job.stop(StopCause::Canceled { grace });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RunningJob;
    use crate::workspace::{RunningRecord, WorkDir};

    fn terms() -> Option<LeaseTerms> {
        LeaseTerms::from_welcome(3000, 500)
    }

    #[test]
    fn terms_need_a_margin_inside_the_ttl() {
        assert_eq!(LeaseTerms::from_welcome(3000, 0), None);
        assert_eq!(LeaseTerms::from_welcome(0, 0), None);
        assert_eq!(LeaseTerms::from_welcome(3000, 3000), None);
        let terms = terms().unwrap();
        assert_eq!(terms.hold(), Duration::from_millis(2500));
        assert_eq!(
            terms.stop_grace(Duration::from_secs(10)),
            Duration::from_millis(250)
        );
        assert_eq!(
            terms.stop_grace(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_deadline_counts_from_the_send_and_never_moves_back() {
        let leases = Leases::default();
        let sent = Instant::now();
        leases.renewed("a", sent);
        assert_eq!(leases.deadline("a"), None, "no terms, no deadline");
        leases.set_terms(terms());
        leases.renewed("a", sent);
        assert_eq!(
            leases.deadline("a"),
            Some(sent + Duration::from_millis(2500))
        );
        // A late ack of an older heartbeat does not shorten it.
        leases.renewed("a", sent - Duration::from_secs(1));
        assert_eq!(
            leases.deadline("a"),
            Some(sent + Duration::from_millis(2500))
        );
        leases.renewed("a", sent + Duration::from_secs(1));
        assert_eq!(
            leases.deadline("a"),
            Some(sent + Duration::from_millis(3500))
        );
        assert!(leases
            .take_due(sent + Duration::from_millis(3499))
            .is_empty());
        assert_eq!(leases.take_due(sent + Duration::from_millis(3500)), ["a"]);
        assert_eq!(leases.deadline("a"), None);
    }

    #[tokio::test]
    async fn the_watchdog_fences_an_attempt_at_its_deadline_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::create(dir.path()).unwrap();
        let record = RunningRecord {
            job_id: 1,
            attempt_id: "a1".into(),
            lease_epoch: 1,
            job_token: "t".into(),
            pgid: None,
        };
        let dirs = work.attempt(1, "a1", "p", 0);
        let job = Arc::new(RunningJob::new(
            record,
            dirs,
            tokio::sync::watch::channel(0).1,
        ));
        let registry = Arc::new(Registry::new(1));
        assert!(registry.try_reserve());
        registry.insert(job.clone());
        let leases = Arc::new(Leases::default());
        leases.set_terms(LeaseTerms::from_welcome(600, 100));
        let close = CancellationToken::new();
        let watchdog = tokio::spawn(watchdog(
            leases.clone(),
            registry,
            Duration::from_secs(10),
            close.clone(),
        ));
        let sent = Instant::now();
        leases.renewed("a1", sent);
        tokio::time::timeout(Duration::from_secs(5), job.fenced.cancelled())
            .await
            .expect("the attempt was never stopped");
        assert!(
            sent.elapsed() >= Duration::from_millis(500),
            "stopped {:?} after the renewal, before TTL - margin",
            sent.elapsed()
        );
        assert!(job.cancel.is_cancelled());
        assert_eq!(
            job.stop_cause(),
            Some(StopCause::Canceled {
                grace: Duration::from_millis(50)
            }),
            "the kill grace must fit in the margin"
        );
        close.cancel();
        watchdog.await.unwrap();
    }
}
