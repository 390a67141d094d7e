use super::*;
use crate::storage::FinishedJob;

fn assert_layout(buckets: &[f64], min: f64, max: f64, count: usize) {
    assert_eq!(buckets.len(), count, "{buckets:?}");
    assert_eq!(buckets.first().copied(), Some(min), "{buckets:?}");
    assert_eq!(buckets.last().copied(), Some(max), "{buckets:?}");
    assert!(
        buckets.windows(2).all(|pair| pair[0] < pair[1]),
        "not increasing: {buckets:?}"
    );
}

#[test]
fn bucket_layouts_span_their_ranges() {
    assert_layout(&exponential_buckets(0.0005, 10.0, 14), 0.0005, 10.0, 14);
    assert_layout(&exponential_buckets(0.1, 36_000.0, 16), 0.1, 36_000.0, 16);
    assert_layout(&exponential_buckets(0.0001, 5.0, 15), 0.0001, 5.0, 15);
}

#[test]
fn bucket_bounds_grow_by_a_constant_factor() {
    let buckets = exponential_buckets(0.0005, 10.0, 14);
    let factors: Vec<f64> = buckets.windows(2).map(|pair| pair[1] / pair[0]).collect();
    // Rounding to three digits moves each factor by well under 1 %.
    for factor in &factors {
        assert!((factor / factors[0] - 1.0).abs() < 0.01, "{factors:?}");
    }
}

#[test]
fn bounds_are_rounded_to_three_significant_digits() {
    assert_eq!(round_significant(0.0010699, 3), 0.00107);
    assert_eq!(round_significant(1234.5, 3), 1230.0);
    assert_eq!(exponential_buckets(1.0, 100.0, 3), vec![1.0, 10.0, 100.0]);
}

#[test]
fn a_degenerate_layout_is_one_bucket() {
    assert_eq!(exponential_buckets(1.0, 1.0, 5), vec![1.0]);
    assert_eq!(exponential_buckets(1.0, 10.0, 1), vec![1.0]);
}

#[test]
fn tags_are_sorted_and_joined() {
    let tags: BTreeSet<String> = ["linux", "docker", "amd64"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(tags_label(&tags), "amd64,docker,linux");
    assert_eq!(tags_label(&BTreeSet::new()), "");
}

#[test]
fn failure_reason_is_none_unless_failed() {
    assert_eq!(
        failure_label(JobStatus::Failed, Some(FailureReason::ScriptFailure)),
        "script_failure"
    );
    assert_eq!(failure_label(JobStatus::Failed, None), "unknown_failure");
    assert_eq!(failure_label(JobStatus::Success, None), "none");
    assert_eq!(
        failure_label(JobStatus::Canceled, Some(FailureReason::ScriptFailure)),
        "none"
    );
}

/// The value of the series `name` (with its labels as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn commits_count_finished_jobs_and_their_durations() {
    let metrics = Metrics::new();
    let finished = [
        FinishedJob {
            status: JobStatus::Success,
            failure: None,
            ran_for: Some(Duration::from_secs(3)),
        },
        FinishedJob {
            status: JobStatus::Failed,
            failure: Some(FailureReason::ScriptFailure),
            ran_for: Some(Duration::from_secs(1)),
        },
        FinishedJob {
            status: JobStatus::Canceled,
            failure: None,
            ran_for: None,
        },
    ];
    metrics.committed(&Commit {
        held: Duration::from_millis(2),
        finished: &finished,
        log_bytes: 10,
    });
    metrics.committed(&Commit {
        held: Duration::from_millis(1),
        finished: &[],
        log_bytes: 5,
    });
    let text = metrics.render(&Snapshot::default());
    let at = |series: &str| value(&text, series);
    assert_eq!(
        at(r#"osprey_jobs_finished_total{status="success",failure_reason="none"}"#),
        Some(1.0)
    );
    assert_eq!(
        at(r#"osprey_jobs_finished_total{status="failed",failure_reason="script_failure"}"#),
        Some(1.0)
    );
    assert_eq!(
        at(r#"osprey_jobs_finished_total{status="canceled",failure_reason="none"}"#),
        Some(1.0)
    );
    assert_eq!(at("osprey_job_duration_seconds_count"), Some(2.0));
    assert_eq!(at("osprey_job_duration_seconds_sum"), Some(4.0));
    assert_eq!(at("osprey_store_transaction_seconds_count"), Some(2.0));
    assert_eq!(at("osprey_log_bytes_received_total"), Some(15.0));
    assert_eq!(
        at(&format!(
            r#"osprey_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        Some(1.0)
    );
}

#[test]
fn gauges_follow_the_latest_snapshot() {
    let metrics = Metrics::new();
    let docker: BTreeSet<String> = ["docker".to_owned()].into();
    let snapshot = Snapshot {
        counts: StatusCounts {
            jobs: vec![(JobStatus::Pending, 2), (JobStatus::Success, 5)],
            pipelines: vec![(PipelineStatus::Failed, 1)],
        },
        queue: vec![
            QueueGroup {
                tags: BTreeSet::new(),
                jobs: 1,
                oldest: Duration::from_millis(1500),
            },
            QueueGroup {
                tags: docker,
                jobs: 1,
                oldest: Duration::from_secs(2),
            },
        ],
        slots: SlotSummary {
            agents: 2,
            free_slots: 3,
        },
    };
    let text = metrics.render(&snapshot);
    let at = |series: &str| value(&text, series);
    assert_eq!(at(r#"osprey_jobs{state="pending"}"#), Some(2.0));
    assert_eq!(at(r#"osprey_jobs{state="running"}"#), Some(0.0));
    assert_eq!(at(r#"osprey_pipelines{status="failed"}"#), Some(1.0));
    assert_eq!(at(r#"osprey_queue_jobs{tags=""}"#), Some(1.0));
    assert_eq!(at(r#"osprey_queue_jobs{tags="docker"}"#), Some(1.0));
    assert_eq!(
        at(r#"osprey_queue_oldest_pending_seconds{tags=""}"#),
        Some(1.5)
    );
    assert_eq!(at("osprey_agents_connected"), Some(2.0));
    assert_eq!(at("osprey_agent_free_slots"), Some(3.0));

    // The queue emptied: its series go, the counts stay as set.
    let text = metrics.render(&Snapshot::default());
    assert_eq!(value(&text, r#"osprey_queue_jobs{tags="docker"}"#), None);
    assert_eq!(value(&text, r#"osprey_jobs{state="pending"}"#), Some(0.0));
}

#[test]
fn notifications_count_by_channel_and_result() {
    let metrics = Metrics::new();
    metrics.notification(NotifyChannel::Webhook, NotifyResult::Retry);
    metrics.notification(NotifyChannel::Webhook, NotifyResult::Delivered);
    metrics.notification(NotifyChannel::Email, NotifyResult::Failed);
    let text = metrics.render(&Snapshot::default());
    assert_eq!(
        value(
            &text,
            r#"osprey_notifications_total{channel="webhook",result="retry"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"osprey_notifications_total{channel="email",result="failed"}"#
        ),
        Some(1.0)
    );
}
