//! The agent's Prometheus metrics, served at `/metrics` on
//! `--metrics-listen` when it is set. [`AgentMetrics`] holds the registry;
//! the job runner and the session record into it, one call per site. What
//! describes state now (jobs running, spooled bytes not yet acknowledged)
//! is read at scrape time from the registry and the log streams' shared
//! backlog, so it cannot drift.

use crate::log_stream::SpoolBacklog;
use crate::registry::Registry as JobRegistry;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The `Content-Type` of the scrape.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Job duration buckets: 0.1 s to 10 h, as the coordinator's.
const DURATION_BUCKETS: [f64; 16] = [
    0.1, 0.235, 0.551, 1.29, 3.04, 7.14, 16.8, 39.4, 92.5, 217.0, 510.0, 1200.0, 2810.0, 6600.0,
    15500.0, 36000.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The agent's registry and families.
pub struct AgentMetrics {
    registry: Registry,
    jobs_running: Gauge,
    job_duration: Histogram,
    spool_bytes: Gauge,
    reconnects: Counter,
    /// Shared by every log stream of this agent.
    backlog: SpoolBacklog,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("osprey_agent");
        let jobs_running = Gauge::default();
        registry.register("jobs_running", "Jobs running now", jobs_running.clone());
        let job_duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "job_duration_seconds",
            "From a job's start on this agent to its reported end",
            job_duration.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Log bytes spooled and not yet acknowledged by the coordinator",
            spool_bytes.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "reconnects",
            "Tries to open the session again after it ended, was lost or failed to open",
            reconnects.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The agent's version", build_info);
        Self {
            registry,
            jobs_running,
            job_duration,
            spool_bytes,
            reconnects,
            backlog: SpoolBacklog::default(),
        }
    }

    /// The backlog every log stream adds its unacknowledged bytes to.
    pub fn spool_backlog(&self) -> SpoolBacklog {
        self.backlog.clone()
    }

    /// A job ran for `ran_for` and has reported (or given up reporting).
    pub fn job_finished(&self, ran_for: Duration) {
        self.job_duration.observe(ran_for.as_secs_f64());
    }

    /// The session is about to be opened again.
    pub fn reconnecting(&self) {
        self.reconnects.inc();
    }

    /// The text of a scrape, with `running` jobs now.
    pub fn render(&self, running: usize) -> String {
        self.jobs_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        self.spool_bytes
            .set(i64::try_from(self.backlog.bytes()).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone)]
struct Scrape {
    metrics: Arc<AgentMetrics>,
    jobs: Arc<JobRegistry>,
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    let text = scrape.metrics.render(scrape.jobs.all().len());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Serves `/metrics` on `listener` until `stop` fires. Open to whoever can
/// reach the address: bind it to loopback or a private interface.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    jobs: Arc<JobRegistry>,
    stop: CancellationToken,
) {
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(Scrape { metrics, jobs });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(error = %error, "the metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    #[test]
    fn duration_buckets_span_a_tenth_of_a_second_to_ten_hours() {
        assert_eq!(DURATION_BUCKETS.first(), Some(&0.1));
        assert_eq!(DURATION_BUCKETS.last(), Some(&36000.0));
        assert!(DURATION_BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn a_scrape_reads_jobs_backlog_and_counters() {
        let metrics = AgentMetrics::new();
        metrics.job_finished(Duration::from_secs(2));
        metrics.reconnecting();
        let backlog = metrics.spool_backlog();
        backlog.add(100);
        backlog.sub(40);
        let text = metrics.render(1);
        assert_eq!(value(&text, "osprey_agent_jobs_running"), Some(1.0));
        assert_eq!(
            value(&text, "osprey_agent_job_duration_seconds_count"),
            Some(1.0)
        );
        assert_eq!(value(&text, "osprey_agent_spool_bytes"), Some(60.0));
        assert_eq!(value(&text, "osprey_agent_reconnects_total"), Some(1.0));
        let info = format!(
            r#"osprey_agent_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(value(&text, &info), Some(1.0));
    }
}
