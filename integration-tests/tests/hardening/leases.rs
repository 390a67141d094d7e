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

const BUSYBOX: &str = "osprey-test/busybox:latest";

/// Which executor both agents of a partition test use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Executor {
    Shell,
    /// Jobs in `osprey-test/busybox`, the test's shared dir mounted at `/shared`.
    Docker,
}

/// A job that retries `agent lost` and, on whatever agent runs it, writes
/// `tick <agent> <ms>` into `<dir>/ticks` every 100 ms until `<dir>/stop`
/// exists (at most ~2 minutes), and `after <agent> <ms>` from its
/// `after_script`. The clock is `/proc/uptime` (10 ms steps), the one clock
/// that the host and every container read alike.
fn ticking_pipeline(dir: &str) -> TestRepo {
    TestRepo::with_pipeline(&format!(
        r#"
stages: [test]
ticker:
  stage: test
  retry: 2
  script:
    - 'i=0; while [ ! -f {dir}/stop ] && [ $i -lt 1200 ]; do read up rest < /proc/uptime; echo "tick $CI_RUNNER_DESCRIPTION $up" >> {dir}/ticks; i=$((i+1)); sleep 0.1; done'
  after_script:
    - 'read up rest < /proc/uptime; echo "after $CI_RUNNER_DESCRIPTION $up" >> {dir}/ticks'
"#
    ))
}

/// Per copy (agent name): its first and last tick, in ms of uptime.
fn tick_intervals(ticks: &Path) -> BTreeMap<String, (u64, u64)> {
    let text = std::fs::read_to_string(ticks).unwrap_or_default();
    let mut intervals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some("tick"), Some(copy), Some(seconds)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(seconds) = seconds.parse::<f64>() else {
            continue;
        };
        let ms = (seconds * 1000.0).round() as u64;
        let entry = intervals.entry(copy.to_owned()).or_insert((ms, ms));
        entry.0 = entry.0.min(ms);
        entry.1 = entry.1.max(ms);
    }
    intervals
}

/// An agent of a partition test; Docker agents get names unique to this
/// process (the engine is shared with every other test).
fn agent_opts(executor: Executor, index: u32, shared: &Path) -> AgentOpts {
    match executor {
        Executor::Shell => AgentOpts::named(&format!("agent-{index}")),
        Executor::Docker => {
            let mut opts = AgentOpts::named(&format!("lease-{}-{index}", std::process::id()));
            let config = shared
                .parent()
                .expect("the shared dir is in the test dir")
                .join(format!("agent-{index}.toml"));
            std::fs::write(
                &config,
                format!("[docker]\nvolumes = [\"{}:/shared\"]\n", shared.display()),
            )
            .expect("write the agent's config");
            opts.executor = "docker".to_owned();
            opts.extra_args = vec![
                "--docker-image".to_owned(),
                BUSYBOX.to_owned(),
                "--config".to_owned(),
                config.display().to_string(),
            ];
            opts
        }
    }
}

/// Partitions the agent running a `retry:` job for longer than the lease and
/// checks that the partitioned copy and the retry never ran at the same time.
async fn partition_longer_than_the_lease(
    executor: Executor,
    lease_ttl_ms: u64,
    heartbeat_interval_ms: u64,
) {
    let coordinator = Coordinator::start(CoordinatorOpts {
        lease_ttl_ms,
        heartbeat_interval_ms,
        ..CoordinatorOpts::default()
    })
    .await;
    let api = coordinator.api();
    let shared = coordinator.dir().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let proxy = FreezingProxy::start(coordinator.addr()).await;
    let mut partitioned = agent_opts(executor, 1, &shared);
    partitioned.url = Some(proxy.url());
    let agent_1 = Agent::start(&coordinator, partitioned).await;
    let name_1 = agent_1.name().to_owned();

    let ticks = shared.join("ticks");
    let repo = ticking_pipeline(&match executor {
        Executor::Shell => shared.display().to_string(),
        Executor::Docker => "/shared".to_owned(),
    });
    let created = api.start_pipeline(&repo, "master").await;
    let job_id = created.job("ticker").id;
    // Waits until `copy` has ticked for `for_ms`.
    let ticking = |copy: String, for_ms: u64| {
        let ticks = ticks.clone();
        move || {
            let intervals = tick_intervals(&ticks);
            let copy = copy.clone();
            async move {
                match intervals.get(&copy) {
                    Some((first, last)) if last - first >= for_ms => Ok(()),
                    _ => Err(format!("ticks so far: {intervals:?}")),
                }
            }
        }
    };
    // The first copy ticks on agent 1 (the only agent so far).
    wait_for(
        "the first copy to tick",
        Duration::from_secs(60),
        ticking(name_1.clone(), 0),
    )
    .await;
    // Only now can the retry go elsewhere.
    let agent_2 = Agent::start(&coordinator, agent_opts(executor, 2, &shared)).await;
    let name_2 = agent_2.name().to_owned();

    proxy.freeze();
    let frozen_at = Instant::now();
    let limit = Duration::from_millis(lease_ttl_ms * 3) + Duration::from_secs(60);
    let retried = api
        .wait_for_job(job_id, "retried on agent 2", limit, |job| {
            job.attempt >= 2 && job.agent.as_deref() == Some(name_2.as_str())
        })
        .await;
    // Both copies would tick in this second if the first were still alive.
    wait_for(
        "the second copy to tick for a second",
        limit,
        ticking(name_2.clone(), 1000),
    )
    .await;
    let partition = frozen_at.elapsed();
    // The partitioned agent comes back while the retry runs: it must not
    // report for its old attempt or disturb the new one.
    proxy.thaw();
    agent_1.wait_connected(&api).await;
    std::fs::write(shared.join("stop"), "").unwrap();

    let pipeline = api.wait_for_pipeline(created.id).await;
    pipeline.assert_status(PipelineStatus::Success);
    let job = pipeline.assert_job_status("ticker", JobStatus::Success);
    assert_eq!(job.agent.as_deref(), Some(name_2.as_str()), "{job:?}");
    assert_eq!(job.attempt, retried.attempt, "{job:?}");

    let intervals = tick_intervals(&ticks);
    let (first, second) = (intervals[&name_1], intervals[&name_2]);
    assert!(
        first.1 < second.0,
        "two copies ran at once: {name_1} ticked from {} to {}, {name_2} from {} to {} \
         (ms of uptime; {} ms of overlap; partition of {partition:?}, lease {lease_ttl_ms} ms)",
        first.0,
        first.1,
        second.0,
        second.1,
        first.1.saturating_sub(second.0)
    );
    // The file's order says the same without clocks: the appends of the
    // first copy all come before those of the second.
    let text = std::fs::read_to_string(&ticks).unwrap();
    let first_of_2 = text.find(&format!("tick {name_2} ")).unwrap();
    assert!(
        !text[first_of_2..].contains(&format!("tick {name_1} ")),
        "the first copy ticked after the second started:\n{text}"
    );
    // The lost copy runs nothing more, not even its after_script: the
    // retry may already be running.
    assert!(
        !text.contains(&format!("after {name_1} ")),
        "the partitioned copy ran its after_script:\n{text}"
    );
    assert!(text.contains(&format!("after {name_2} ")), "{text}");
    if executor == Executor::Docker {
        // The lost copy's containers are gone too, not just stopped.
        let label = format!("label=osprey.agent={name_1}");
        wait_for(
            "the partitioned agent's containers to be removed",
            Duration::from_secs(30),
            || {
                let label = label.clone();
                async move {
                    let output = std::process::Command::new("docker")
                        .args(["ps", "-a", "-q", "--filter", &label])
                        .output()
                        .map_err(|error| error.to_string())?;
                    let ids = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                    match (output.status.success(), ids.is_empty()) {
                        (true, true) => Ok(()),
                        _ => Err(format!("containers: {ids:?}")),
                    }
                }
            },
        )
        .await;
    }
    eprintln!(
        "{executor:?}, lease {lease_ttl_ms} ms: copy 1 stopped {} ms before copy 2 started",
        second.0 - first.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_longer_than_a_short_lease_never_runs_two_copies_at_once() {
    partition_longer_than_the_lease(Executor::Shell, 3000, 500).await;
}

/// The default lease (30 s, heartbeats every 5 s): slow, but it is the one
/// operators run.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_longer_than_the_default_lease_never_runs_two_copies_at_once() {
    partition_longer_than_the_lease(Executor::Shell, 30_000, 5_000).await;
}

/// Docker jobs: the partitioned agent stops and removes its container in time.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_never_runs_two_docker_copies_at_once() {
    partition_longer_than_the_lease(Executor::Docker, 3000, 500).await;
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
