//! `make bench`: Osprey's speed figures, measured on real processes on
//! loopback, printed and written to a file (default `bench-results/latest.txt`).
//!
//! - dispatch latency: from the moment a pipeline is requested (its job is
//!   pending when the request returns) to the first command of the job's
//!   script, read from a timestamp the script prints; p50 and p99.
//! - throughput: trivial jobs completed per second with 4 agents.
//! - executor overhead: start-to-finish of the same trivial job under the
//!   shell and the Docker executors (median and p99), when Docker is here.

use anyhow::{bail, Context};
use osprey_integration_tests::{
    Agent, AgentOpts, ApiClient, Coordinator, CoordinatorOpts, TestRepo,
};
use osprey_shared::api::PipelineView;
use osprey_shared::{JobStatus, PipelineId};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LATENCY_RUNS: usize = 60;
const THROUGHPUT_PIPELINES: usize = 20;
const THROUGHPUT_JOBS_PER_PIPELINE: usize = 10;
const OVERHEAD_RUNS: usize = 20;
const BENCH_IMAGE: &str = "osprey-test/busybox:latest";
const INGEST_BYTES: u64 = 32 << 20;
const INGEST_RUNS: usize = 3;

fn bench_coordinator() -> CoordinatorOpts {
    CoordinatorOpts {
        lease_ttl_ms: 30_000,
        heartbeat_interval_ms: 5_000,
        ..CoordinatorOpts::default()
    }
}

async fn wait_finished(api: &ApiClient, id: PipelineId) -> anyhow::Result<PipelineView> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pipeline = api
            .pipeline(id)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        if pipeline.status.is_finished() {
            return Ok(pipeline);
        }
        if Instant::now() > deadline {
            bail!("pipeline {id} did not finish: {pipeline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the repo's pipeline once and waits for its end.
async fn run_once(api: &ApiClient, repo: &TestRepo) -> anyhow::Result<PipelineView> {
    let pipeline = api
        .create_pipeline(&repo.url(), "master")
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    wait_finished(api, pipeline.id).await
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (quantile(samples, 0.5), quantile(samples, 0.99))
}

fn unix_nanos(time: SystemTime) -> i128 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

async fn dispatch_latency(report: &mut String) -> anyhow::Result<()> {
    let coordinator = Coordinator::start(bench_coordinator()).await;
    let _agent = Agent::start(
        &coordinator,
        AgentOpts::named("bench-latency").concurrency(1),
    )
    .await;
    let repo = TestRepo::with_pipeline("probe:\n  script:\n    - date +%s%N\n");
    let api = coordinator.api();
    let mut samples = Vec::new();
    for _ in 0..LATENCY_RUNS {
        let requested = SystemTime::now();
        let done = run_once(&api, &repo).await?;
        let job = &done.jobs[0];
        anyhow::ensure!(
            job.status == JobStatus::Success,
            "probe job failed: {job:?}"
        );
        let log = api
            .job_log(job.id)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let text = String::from_utf8_lossy(&log);
        let started: i128 = text
            .lines()
            .skip_while(|line| !line.starts_with("$ date"))
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .context("the probe's timestamp is missing from its log")?;
        samples.push((started - unix_nanos(requested)) as f64 / 1e6);
    }
    let (p50, p99) = summary(&mut samples);
    println!("dispatch latency (request -> script start), {LATENCY_RUNS} runs: p50 {p50:.1} ms, p99 {p99:.1} ms");
    writeln!(report, "dispatch_latency_ms_p50 {p50:.1}")?;
    writeln!(report, "dispatch_latency_ms_p99 {p99:.1}")?;
    Ok(())
}

async fn throughput(report: &mut String) -> anyhow::Result<()> {
    let coordinator = Coordinator::start(bench_coordinator()).await;
    let mut agents = Vec::new();
    for index in 1..=4 {
        agents.push(
            Agent::start(
                &coordinator,
                AgentOpts::named(&format!("bench-{index}")).concurrency(1),
            )
            .await,
        );
    }
    let mut file = String::new();
    for index in 0..THROUGHPUT_JOBS_PER_PIPELINE {
        writeln!(file, "job {index}:\n  script: [\"true\"]")?;
    }
    let repo = TestRepo::with_pipeline(&file);
    let api = coordinator.api();
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..THROUGHPUT_PIPELINES {
        let pipeline = api
            .create_pipeline(&repo.url(), "master")
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        ids.push(pipeline.id);
    }
    for id in ids {
        let done = wait_finished(&api, id).await?;
        anyhow::ensure!(
            done.jobs.iter().all(|job| job.status == JobStatus::Success),
            "a job failed: {done:?}"
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    let jobs = (THROUGHPUT_PIPELINES * THROUGHPUT_JOBS_PER_PIPELINE) as f64;
    let rate = jobs / elapsed;
    println!(
        "throughput, 4 shell agents: {jobs} trivial jobs in {elapsed:.2} s = {rate:.1} jobs/s"
    );
    writeln!(report, "throughput_jobs_per_s_4_agents {rate:.1}")?;
    drop(agents);
    Ok(())
}

/// Log ingest: one job writes 32 MiB of text as fast as it can; the figure
/// is those bytes over the job's start -> finish (the agent ships, the store
/// appends at offsets, the log is sealed before the job finishes).
async fn log_ingest(report: &mut String) -> anyhow::Result<()> {
    let coordinator = Coordinator::start(bench_coordinator()).await;
    let _agent = Agent::start(&coordinator, AgentOpts::named("bench-ingest")).await;
    let repo = TestRepo::with_pipeline(&format!(
        "talk:\n  script:\n    - yes 'osprey log ingest 0123456789 abcdefghijklmnopqrstuvwxyz 0123456789' | head -c {INGEST_BYTES}\n"
    ));
    let api = coordinator.api();
    let mut rates = Vec::new();
    for _ in 0..INGEST_RUNS {
        let done = run_once(&api, &repo).await?;
        let job = &done.jobs[0];
        anyhow::ensure!(job.status == JobStatus::Success, "job failed: {job:?}");
        let log = api
            .job_log(job.id)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        anyhow::ensure!(
            log.len() as u64 >= INGEST_BYTES,
            "the log holds {} bytes",
            log.len()
        );
        let took = (parse_time(&job.finished_at)? - parse_time(&job.started_at)?).as_seconds_f64();
        rates.push(INGEST_BYTES as f64 / (1 << 20) as f64 / took);
    }
    let (p50, _) = summary(&mut rates);
    println!(
        "log ingest, one job writing {} MiB, {INGEST_RUNS} runs: median {p50:.1} MiB/s",
        INGEST_BYTES >> 20
    );
    writeln!(report, "log_ingest_mib_per_s_p50 {p50:.1}")?;
    Ok(())
}

fn parse_time(text: &Option<String>) -> anyhow::Result<time::OffsetDateTime> {
    let text = text.as_deref().context("a finished job without times")?;
    Ok(time::OffsetDateTime::parse(
        text,
        &time::format_description::well_known::Rfc3339,
    )?)
}

async fn executor_overhead(report: &mut String) -> anyhow::Result<()> {
    let docker_ready = std::process::Command::new("docker")
        .args(["image", "inspect", BENCH_IMAGE])
        .output()
        .is_ok_and(|output| output.status.success());
    if !docker_ready {
        println!("executor overhead: skipped ({BENCH_IMAGE} missing; run `make deps`)");
        writeln!(report, "executor_overhead skipped")?;
        return Ok(());
    }
    let coordinator = Coordinator::start(bench_coordinator()).await;
    let _shell = Agent::start(
        &coordinator,
        AgentOpts::named("bench-shell").tags(&["shell"]),
    )
    .await;
    let mut docker_opts = AgentOpts::named("bench-docker").tags(&["docker"]);
    docker_opts.executor = "docker".to_owned();
    docker_opts.extra_args = vec!["--docker-image".to_owned(), BENCH_IMAGE.to_owned()];
    let _docker = Agent::start(&coordinator, docker_opts).await;
    let repo = TestRepo::with_pipeline(
        "in shell:\n  tags: [shell]\n  script: [echo hi]\nin docker:\n  tags: [docker]\n  script: [echo hi]\n",
    );
    let api = coordinator.api();
    let mut shell = Vec::new();
    let mut docker = Vec::new();
    for _ in 0..OVERHEAD_RUNS {
        let done = run_once(&api, &repo).await?;
        for job in &done.jobs {
            anyhow::ensure!(job.status == JobStatus::Success, "job failed: {job:?}");
            let took = (parse_time(&job.finished_at)? - parse_time(&job.started_at)?)
                .as_seconds_f64()
                * 1e3;
            if job.name == "in shell" {
                shell.push(took)
            } else {
                docker.push(took)
            }
        }
    }
    let (shell_p50, shell_p99) = summary(&mut shell);
    let (docker_p50, docker_p99) = summary(&mut docker);
    println!(
        "job start-to-finish, {OVERHEAD_RUNS} runs: shell p50 {shell_p50:.0} ms p99 {shell_p99:.0} ms; \
         docker p50 {docker_p50:.0} ms p99 {docker_p99:.0} ms; overhead p50 {:.0} ms",
        docker_p50 - shell_p50
    );
    writeln!(report, "shell_job_ms_p50 {shell_p50:.0}")?;
    writeln!(report, "shell_job_ms_p99 {shell_p99:.0}")?;
    writeln!(report, "docker_job_ms_p50 {docker_p50:.0}")?;
    writeln!(report, "docker_job_ms_p99 {docker_p99:.0}")?;
    writeln!(
        report,
        "docker_overhead_ms_p50 {:.0}",
        docker_p50 - shell_p50
    )?;
    writeln!(
        report,
        "docker_overhead_ms_p99 {:.0}",
        docker_p99 - shell_p99
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = std::path::PathBuf::from("bench-results/latest.txt");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next().context("--out needs a path")?.into(),
            other => bail!("unknown argument {other:?} (usage: osprey-bench [--out FILE])"),
        }
    }
    let mut report = String::new();
    writeln!(
        report,
        "# osprey bench, {}, store {}",
        osprey_shared::api::format_time(time::OffsetDateTime::now_utc()),
        std::env::var("OSPREY_TEST_STORE").unwrap_or_else(|_| "sqlite".to_owned())
    )?;
    dispatch_latency(&mut report).await?;
    throughput(&mut report).await?;
    log_ingest(&mut report).await?;
    executor_overhead(&mut report).await?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("figures written to {}", out.display());
    Ok(())
}
