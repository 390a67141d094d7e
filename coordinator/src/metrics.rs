//! The coordinator's Prometheus metrics: one [`Metrics`] holding the
//! registry and its typed families, made by `Core::open*` and reached as
//! `core.metrics()`. Counters and histograms are recorded where things
//! happen, one call per site; gauges of state (jobs and pipelines by
//! status, the queue, the agents) are set at scrape time from the store and
//! the dispatcher, so they can never drift from what they describe.
//!
//! Labels hold bounded values only (statuses, reasons, tag sets, channels):
//! no ids or shas, which would make a series per job.

use crate::dispatch::{QueueGroup, SlotSummary};
use crate::storage::{Commit, StatusCounts, StoreObserver};
use osprey_shared::{FailureReason, JobStatus, PipelineStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    status: &'static str,
    failure_reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TagsLabel {
    tags: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    channel: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Where a notification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyChannel {
    Email,
    Webhook,
}

/// What one try of a notification came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyResult {
    Delivered,
    /// Given up: it will not be tried again.
    Failed,
    /// Not delivered; it will be tried again.
    Retry,
}

/// What the gauges are set from at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counts: StatusCounts,
    pub queue: Vec<QueueGroup>,
    pub slots: SlotSummary,
}

/// The registry and every family in it.
pub struct Metrics {
    registry: Registry,
    jobs: Family<StateLabel, Gauge>,
    pipelines: Family<StatusLabel, Gauge>,
    jobs_finished: Family<FinishedLabels, Counter>,
    queue_jobs: Family<TagsLabel, Gauge>,
    queue_oldest: Family<TagsLabel, Gauge<f64, AtomicU64>>,
    dispatch_latency: Histogram,
    job_duration: Histogram,
    agents_connected: Gauge,
    agent_free_slots: Gauge,
    log_bytes: Counter,
    artifact_bytes: Counter,
    store_transaction: Histogram,
    notifications: Family<NotificationLabels, Counter>,
    /// One scrape at a time sets the gauges and encodes them: the queue's
    /// families are cleared and refilled, which another scrape must not see
    /// half done.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `count` bucket bounds from `min` to `max`, each a constant factor above
/// the last, rounded to three significant digits so the `le` labels read
/// well (`0.00107`, not `0.0010699…`); the first is `min`, the last `max`.
pub fn exponential_buckets(min: f64, max: f64, count: u16) -> Vec<f64> {
    if count < 2 || min <= 0.0 || max <= min {
        return vec![min];
    }
    let factor = (max / min).powf(1.0 / f64::from(count - 1));
    (0..count)
        .map(|index| round_significant(min * factor.powi(i32::from(index)), 3))
        .collect()
}

fn round_significant(value: f64, digits: i32) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let scale = 10f64.powi(digits - 1 - value.abs().log10().floor() as i32);
    (value * scale).round() / scale
}

/// The `tags` label of a tag set: sorted (a `BTreeSet` is), joined by `,`,
/// empty for untagged jobs.
pub fn tags_label(tags: &BTreeSet<String>) -> String {
    tags.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The `failure_reason` label: the reason's snake_case name, `none` when
/// the job did not fail (or failed without a recorded reason: `unknown_failure`).
pub fn failure_label(status: JobStatus, reason: Option<FailureReason>) -> &'static str {
    match (status, reason) {
        (JobStatus::Failed, Some(reason)) => reason.as_str(),
        (JobStatus::Failed, None) => FailureReason::UnknownFailure.as_str(),
        _ => "none",
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("osprey");
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        let pipelines = Family::<StatusLabel, Gauge>::default();
        registry.register("pipelines", "Pipelines by status", pipelines.clone());
        let jobs_finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs that reached a final status, by status and failure reason",
            jobs_finished.clone(),
        );
        let queue_jobs = Family::<TagsLabel, Gauge>::default();
        registry.register(
            "queue_jobs",
            "Pending jobs waiting for an agent, by tag set",
            queue_jobs.clone(),
        );
        let queue_oldest = Family::<TagsLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "queue_oldest_pending_seconds",
            "How long the oldest queued job of each tag set has waited",
            queue_oldest.clone(),
        );
        let dispatch_latency = Histogram::new(exponential_buckets(0.0005, 10.0, 14));
        registry.register(
            "dispatch_latency_seconds",
            "From a job being queued to an agent accepting it",
            dispatch_latency.clone(),
        );
        let job_duration = Histogram::new(exponential_buckets(0.1, 36_000.0, 16));
        registry.register(
            "job_duration_seconds",
            "From a job's start to its final status",
            job_duration.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents with an open session",
            agents_connected.clone(),
        );
        let agent_free_slots = Gauge::default();
        registry.register(
            "agent_free_slots",
            "Free job slots, summed over connected agents",
            agent_free_slots.clone(),
        );
        let log_bytes = Counter::default();
        registry.register(
            "log_bytes_received",
            "Job log bytes stored",
            log_bytes.clone(),
        );
        let artifact_bytes = Counter::default();
        registry.register(
            "artifact_bytes_stored",
            "Artifact archive bytes stored",
            artifact_bytes.clone(),
        );
        let store_transaction = Histogram::new(exponential_buckets(0.0001, 5.0, 15));
        registry.register(
            "store_transaction_seconds",
            "Time of each store write transaction, from begin to commit",
            store_transaction.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification tries, by channel and result",
            notifications.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The coordinator's version", build_info);
        Metrics {
            registry,
            jobs,
            pipelines,
            jobs_finished,
            queue_jobs,
            queue_oldest,
            dispatch_latency,
            job_duration,
            agents_connected,
            agent_free_slots,
            log_bytes,
            artifact_bytes,
            store_transaction,
            notifications,
            scrape: Mutex::new(()),
        }
    }

    /// An agent accepted a job that had been queued for `waited`.
    pub fn job_dispatched(&self, waited: Duration) {
        self.dispatch_latency.observe(waited.as_secs_f64());
    }

    pub fn artifact_stored(&self, bytes: u64) {
        self.artifact_bytes.inc_by(bytes);
    }

    pub fn notification(&self, channel: NotifyChannel, result: NotifyResult) {
        let channel = match channel {
            NotifyChannel::Email => "email",
            NotifyChannel::Webhook => "webhook",
        };
        let result = match result {
            NotifyResult::Delivered => "delivered",
            NotifyResult::Failed => "failed",
            NotifyResult::Retry => "retry",
        };
        self.notifications
            .get_or_create(&NotificationLabels { channel, result })
            .inc();
    }

    /// Sets the gauges from `snapshot` and encodes everything in the
    /// OpenMetrics text format (which Prometheus reads).
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let _one_scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for status in JobStatus::ALL {
            let count = count_of(&snapshot.counts.jobs, status);
            self.jobs
                .get_or_create(&StateLabel {
                    state: status.as_str(),
                })
                .set(count);
        }
        for status in PipelineStatus::ALL {
            let count = count_of(&snapshot.counts.pipelines, status);
            self.pipelines
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(count);
        }
        // Tag sets come and go: only those queued now have series.
        self.queue_jobs.clear();
        self.queue_oldest.clear();
        for group in &snapshot.queue {
            let label = TagsLabel {
                tags: tags_label(&group.tags),
            };
            self.queue_jobs
                .get_or_create(&label)
                .set(gauge_value(group.jobs as u64));
            self.queue_oldest
                .get_or_create(&label)
                .set(group.oldest.as_secs_f64());
        }
        self.agents_connected
            .set(gauge_value(snapshot.slots.agents as u64));
        self.agent_free_slots
            .set(gauge_value(snapshot.slots.free_slots as u64));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn count_of<S: PartialEq>(counts: &[(S, u64)], status: S) -> i64 {
    counts
        .iter()
        .find(|(counted, _)| *counted == status)
        .map_or(0, |(_, count)| gauge_value(*count))
}

fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl StoreObserver for Metrics {
    fn committed(&self, commit: &Commit<'_>) {
        self.store_transaction.observe(commit.held.as_secs_f64());
        if commit.log_bytes > 0 {
            self.log_bytes.inc_by(commit.log_bytes);
        }
        for job in commit.finished {
            self.jobs_finished
                .get_or_create(&FinishedLabels {
                    status: job.status.as_str(),
                    failure_reason: failure_label(job.status, job.failure),
                })
                .inc();
            if let Some(ran_for) = job.ran_for {
                self.job_duration.observe(ran_for.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests;
