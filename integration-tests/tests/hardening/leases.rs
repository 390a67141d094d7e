//! No job runs twice across a partition, and a silent agent holds up no job.
//!
//! An agent reaches the coordinator through a [`FreezingProxy`]; freezing it
//! is a partition (the connection stays open, nothing passes). The partitioned
//! agent must stop its copy by TTL − margin after its last acknowledged
//! renewal, the coordinator must retry the job elsewhere no earlier than
//! TTL + margin, so the timestamps both copies write never overlap. Meanwhile
//! the silent agent must get no offers while another agent could run the job.

use osprey_integration_tests::{
    wait_for, Agent, AgentOpts, Coordinator, CoordinatorOpts, FreezingProxy, PipelineExt, TestRepo,
};
use osprey_shared::{JobStatus, PipelineStatus};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A job that retries `agent lost` and, on whatever agent runs it, writes
/// `start <agent> <unix-ms>` and then `tick <agent> <unix-ms>` every 100 ms
/// until `stop` exists (at most ~2 minutes), and `after <agent> <unix-ms>`
/// from its `after_script`.
fn ticking_pipeline(ticks: &Path, stop: &Path) -> TestRepo {
    TestRepo::with_pipeline(&format!(
        r#"
stages: [test]
ticker:
  stage: test
  retry: 2
  script:
    - 'echo "start $CI_RUNNER_DESCRIPTION $(date +%s%3N)" >> {ticks}'
    - 'i=0; while [ ! -f {stop} ] && [ $i -lt 1200 ]; do echo "tick $CI_RUNNER_DESCRIPTION $(date +%s%3N)" >> {ticks}; i=$((i+1)); sleep 0.1; done'
  after_script:
    - 'echo "after $CI_RUNNER_DESCRIPTION $(date +%s%3N)" >> {ticks}'
"#,
        ticks = ticks.display(),
        stop = stop.display()
    ))
}

/// Per copy (agent name): its first and last tick, in unix ms.
fn tick_intervals(ticks: &Path) -> BTreeMap<String, (u64, u64)> {
    let text = std::fs::read_to_string(ticks).unwrap_or_default();
    let mut intervals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some("tick"), Some(copy), Some(ms)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(ms) = ms.parse::<u64>() else { continue };
        let entry = intervals.entry(copy.to_owned()).or_insert((ms, ms));
        entry.0 = entry.0.min(ms);
        entry.1 = entry.1.max(ms);
    }
    intervals
}

/// Partitions the agent running a `retry:` job for longer than the lease and
/// checks that the partitioned copy and the retry never ran at the same time.
async fn partition_longer_than_the_lease(lease_ttl_ms: u64, heartbeat_interval_ms: u64) {
    let coordinator = Coordinator::start(CoordinatorOpts {
        lease_ttl_ms,
        heartbeat_interval_ms,
        ..CoordinatorOpts::default()
    })
    .await;
    let api = coordinator.api();
    let proxy = FreezingProxy::start(coordinator.addr()).await;
    let mut partitioned = AgentOpts::named("agent-1");
    partitioned.url = Some(proxy.url());
    let agent_1 = Agent::start(&coordinator, partitioned).await;

    let ticks = coordinator.dir().join("ticks");
    let stop = coordinator.dir().join("stop");
    let repo = ticking_pipeline(&ticks, &stop);
    let created = api.start_pipeline(&repo, "master").await;
    let job_id = created.job("ticker").id;
    // Waits until `copy` has ticked for `for_ms`.
    let ticking = |copy: &'static str, for_ms: u64| {
        let ticks = ticks.clone();
        move || {
            let intervals = tick_intervals(&ticks);
            async move {
                match intervals.get(copy) {
                    Some((first, last)) if last - first >= for_ms => Ok(()),
                    _ => Err(format!("ticks so far: {intervals:?}")),
                }
            }
        }
    };
    // The first copy ticks on agent-1 (the only agent so far).
    wait_for(
        "the first copy to tick",
        Duration::from_secs(60),
        ticking("agent-1", 0),
    )
    .await;
    // Only now can the retry go elsewhere.
    let agent_2 = Agent::start(&coordinator, AgentOpts::named("agent-2")).await;

    proxy.freeze();
    let frozen_at = Instant::now();
    let limit = Duration::from_millis(lease_ttl_ms * 3) + Duration::from_secs(60);
    let retried = api
        .wait_for_job(job_id, "retried on agent-2", limit, |job| {
            job.attempt >= 2 && job.agent.as_deref() == Some(agent_2.name())
        })
        .await;
    // Both copies would tick in this second if the first were still alive.
    wait_for(
        "the second copy to tick for a second",
        limit,
        ticking("agent-2", 1000),
    )
    .await;
    let partition = frozen_at.elapsed();
    // The partitioned agent comes back while the retry runs: it must not
    // report for its old attempt or disturb the new one.
    proxy.thaw();
    agent_1.wait_connected(&api).await;
    std::fs::write(&stop, "").unwrap();

    let pipeline = api.wait_for_pipeline(created.id).await;
    pipeline.assert_status(PipelineStatus::Success);
    let job = pipeline.assert_job_status("ticker", JobStatus::Success);
    assert_eq!(job.agent.as_deref(), Some("agent-2"), "{job:?}");
    assert_eq!(job.attempt, retried.attempt, "{job:?}");

    let intervals = tick_intervals(&ticks);
    let (first, second) = (intervals["agent-1"], intervals["agent-2"]);
    assert!(
        first.1 < second.0,
        "two copies ran at once: agent-1 ticked from {} to {}, agent-2 from {} to {} \
         ({} ms of overlap; partition of {partition:?}, lease {lease_ttl_ms} ms)",
        first.0,
        first.1,
        second.0,
        second.1,
        first.1.saturating_sub(second.0)
    );
    // The lost copy runs nothing more, not even its after_script: the
    // retry may already be running.
    let text = std::fs::read_to_string(&ticks).unwrap();
    assert!(
        !text.contains("after agent-1"),
        "the partitioned copy ran its after_script:\n{text}"
    );
    assert!(text.contains("after agent-2"), "{text}");
    eprintln!(
        "lease {lease_ttl_ms} ms: copy 1 stopped {} ms before copy 2 started",
        second.0 - first.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_longer_than_a_short_lease_never_runs_two_copies_at_once() {
    partition_longer_than_the_lease(3000, 500).await;
}

/// The default lease (30 s, heartbeats every 5 s): slow, but it is the one
/// operators run.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_longer_than_the_default_lease_never_runs_two_copies_at_once() {
    partition_longer_than_the_lease(30_000, 5_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_agent_gets_no_offers_while_another_is_idle() {
    // An offer to the silent agent would hold its job for this long.
    let offer_timeout = Duration::from_secs(20);
    let heartbeat = Duration::from_millis(500);
    let coordinator = Coordinator::start(CoordinatorOpts {
        heartbeat_interval_ms: heartbeat.as_millis() as u64,
        offer_timeout_ms: Some(offer_timeout.as_millis() as u64),
        ..CoordinatorOpts::default()
    })
    .await;
    let api = coordinator.api();
    let proxy = FreezingProxy::start(coordinator.addr()).await;
    let mut silent = AgentOpts::named("silent").concurrency(2);
    silent.url = Some(proxy.url());
    let _silent = Agent::start(&coordinator, silent).await;
    let _alive = Agent::start(&coordinator, AgentOpts::named("alive").concurrency(2)).await;

    proxy.freeze();
    // The rule under test is about time: an agent unheard of for more than
    // two heartbeat intervals is silent. Let that much time pass.
    tokio::time::sleep(heartbeat * 3).await;

    // Two jobs, two idle agents: without the rule one job is offered to each
    // (least loaded first), so one waits out the offer timeout.
    let repo = TestRepo::with_pipeline(
        r#"
stages: [test]
one:
  stage: test
  script: [echo one]
two:
  stage: test
  script: [echo two]
"#,
    );
    let started = Instant::now();
    let pipeline = api.run_pipeline(&repo, "master").await;
    let took = started.elapsed();
    pipeline.assert_status(PipelineStatus::Success);
    for name in ["one", "two"] {
        let job = pipeline.job(name);
        assert_eq!(job.agent.as_deref(), Some("alive"), "{job:?}");
    }
    assert!(
        took < offer_timeout / 2,
        "the pipeline took {took:?}: a job was offered to the silent agent and waited out the offer timeout"
    );
    proxy.thaw();
}
