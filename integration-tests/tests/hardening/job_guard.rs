//! A job dies with its agent: when the agent is `kill -9`ed, the per-job
//! guard it leaves behind kills the job's process group (shell executor) or
//! removes the job's containers and network (Docker executor) at once. And a
//! shell agent configured with `user = "..."` runs its jobs as that user, who
//! cannot read the agent's running records.
//!
//! "Gone" for a process means no live process is left in the job's process
//! group. Zombies do not count: PID 1 of some sandboxes never reaps orphans,
//! so there `kill(-pgid, 0)` keeps succeeding on processes that are dead.

use osprey_integration_tests::wait::wait_for;
use osprey_integration_tests::{Agent, AgentOpts, Coordinator, CoordinatorOpts};
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobId, JobStatus};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The generous upper bound; the time actually taken is printed.
const GONE_WITHIN: Duration = Duration::from_secs(3);
const BUSYBOX: &str = "osprey-test/busybox:latest";

/// Pids of the live (not zombie) processes in process group `pgid`.
fn live_group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the parenthesised command name: state, ppid, pgrp.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2
                && !matches!(fields[0], "Z" | "X")
                && fields[2].parse::<i32>().ok() == Some(pgid)
        })
        .collect()
}

/// SIGKILLs the group on drop, so a failing test leaves no job behind.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.0 > 1 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The process group of the job the agent's `running/<attempt>.json` records.
async fn recorded_pgid(work_dir: &Path) -> i32 {
    let running = work_dir.join("running");
    wait_for(
        "the running record to name the job's process group",
        Duration::from_secs(30),
        || async {
            let entries = std::fs::read_dir(&running).map_err(|e| e.to_string())?;
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|ext| ext == "json") {
                    let bytes = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
                    let record: serde_json::Value =
                        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    if let Some(pgid) = record["pgid"].as_i64() {
                        return Ok(pgid as i32);
                    }
                }
            }
            Err("no record with a pgid yet".to_owned())
        },
    )
    .await
}

/// Polls `done` every 20 ms; returns how long it took to hold, or panics
/// after [`GONE_WITHIN`] with the last state `done` described.
async fn time_until(what: &str, mut done: impl FnMut() -> Result<(), String>) -> Duration {
    let started = Instant::now();
    loop {
        let last = match done() {
            Ok(()) => return started.elapsed(),
            Err(last) => last,
        };
        assert!(
            started.elapsed() < GONE_WITHIN,
            "{what}: still not so {GONE_WITHIN:?} after the agent's kill -9; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `path` exists and has grown since it was first seen.
async fn wait_growing(path: &Path) {
    let first = wait_for(
        "the job to write its marker",
        Duration::from_secs(60),
        || async {
            match file_len(path) {
                0 => Err("no marker yet".to_owned()),
                len => Ok(len),
            }
        },
    )
    .await;
    wait_for("the marker to grow", Duration::from_secs(10), || async {
        match file_len(path) {
            len if len > first => Ok(()),
            len => Err(format!("{len} bytes")),
        }
    })
    .await;
}

/// Asserts the marker no longer changes. A window is the only way to see that
/// something stops happening; the job writes every 100 ms, so 500 ms of
/// silence means it is no longer running.
async fn assert_marker_still(path: &Path) {
    let before = file_len(path);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        file_len(path),
        before,
        "the job still writes its marker after its agent died"
    );
}

/// A job that prints nothing and appends to `marker` every 100 ms.
fn silent_job(marker: &Path) -> String {
    format!(
        r#"
stages: [test]
silent:
  stage: test
  script:
    - 'while true; do echo tick >> {}; sleep 0.1; done'
"#,
        marker.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_shell_job_dies_within_a_second_of_its_agent_kill9() {
    let mut cluster = TestCluster::builder().agents(1).start().await;
    let marker = cluster.dir().join("marker");
    let repo = TestRepo::with_pipeline(&silent_job(&marker));
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let job_id = created.job("silent").id;
    cluster
        .api
        .wait_for_job_status(job_id, JobStatus::Running, Duration::from_secs(60))
        .await;
    wait_growing(&marker).await;
    let pgid = recorded_pgid(cluster.agents[0].work_dir()).await;
    let _cleanup = KillGroupOnDrop(pgid);
    assert!(
        !live_group_members(pgid).is_empty(),
        "the recorded group {pgid} runs nothing"
    );

    cluster.agents[0].kill9();
    let took = time_until(
        "the job's process group is gone",
        || match live_group_members(pgid) {
            members if members.is_empty() => Ok(()),
            members => Err(format!("live members {members:?}")),
        },
    )
    .await;
    eprintln!("shell job gone {took:?} after its agent's kill -9");
    assert_marker_still(&marker).await;
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run `docker {}`: {error}", args.join(" ")))
}

/// Ids of what the engine holds for `job` of the agent `name`: containers, networks.
fn engine_resources(name: &str, job: JobId) -> Result<(Vec<String>, Vec<String>), String> {
    let job_label = format!("label=osprey.job_id={job}");
    let agent_label = format!("label=osprey.agent={name}");
    let list = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--filter", &job_label, "--filter", &agent_label]);
        let output = docker(&full);
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>())
    };
    Ok((list(&["ps", "-a", "-q"])?, list(&["network", "ls", "-q"])?))
}

/// Removes whatever the engine still holds of the agent `name` on drop.
struct RemoveAgentResources(String);

impl Drop for RemoveAgentResources {
    fn drop(&mut self) {
        let label = format!("label=osprey.agent={}", self.0);
        let listed = docker(&["ps", "-aq", "--filter", &label]);
        for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        let listed = docker(&["network", "ls", "-q", "--filter", &label]);
        for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            docker(&["network", "rm", id]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_docker_job_is_removed_within_a_second_of_its_agent_kill9() {
    let inspect = docker(&["image", "inspect", "--format", "{{.Id}}", BUSYBOX]);
    assert!(
        inspect.status.success(),
        "test image {BUSYBOX} is missing (run scripts/build-test-images.sh): {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let api = coordinator.api();
    let name = format!("jg-{}-docker", std::process::id());
    let _cleanup = RemoveAgentResources(name.clone());
    let mut opts = AgentOpts::named(&name);
    opts.executor = "docker".to_owned();
    opts.extra_args = vec!["--docker-image".to_owned(), BUSYBOX.to_owned()];
    let mut agent = Agent::start(&coordinator, opts).await;
    // Docker jobs cannot write to the test's dir: the engine says they run.
    let repo = TestRepo::with_pipeline(
        r#"
stages: [test]
silent:
  stage: test
  script:
    - 'while true; do sleep 0.1; done'
"#,
    );
    let created = api.start_pipeline(&repo, "master").await;
    let job_id = created.job("silent").id;
    api.wait_for_job_status(job_id, JobStatus::Running, Duration::from_secs(60))
        .await;
    let build_label = "label=osprey.role=build".to_owned();
    let job_label = format!("label=osprey.job_id={job_id}");
    let agent_label = format!("label=osprey.agent={name}");
    wait_for(
        "the job's build container to run",
        Duration::from_secs(60),
        || async {
            let output = docker(&[
                "ps",
                "-q",
                "--filter",
                &build_label,
                "--filter",
                &job_label,
                "--filter",
                &agent_label,
            ]);
            match String::from_utf8_lossy(&output.stdout).trim() {
                "" => Err("no running build container".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;

    agent.kill9();
    let took = time_until(
        "the job's containers and network are gone",
        || match engine_resources(&name, job_id)? {
            (containers, networks) if containers.is_empty() && networks.is_empty() => Ok(()),
            (containers, networks) => {
                Err(format!("containers {containers:?}, networks {networks:?}"))
            }
        },
    )
    .await;
    eprintln!("docker job gone {took:?} after its agent's kill -9");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_job_runs_as_the_configured_user_and_cannot_read_the_agents_records() {
    // /proc/self belongs to the process's effective user.
    let euid =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc"));
    if euid != 0 {
        eprintln!(
            "skipped: running jobs as another user needs the agent, so this test, to run as root"
        );
        return;
    }
    let mut opts = AgentOpts::named("as-nobody");
    opts.extra_args = vec!["--user".to_owned(), "nobody".to_owned()];
    let cluster = TestCluster::builder().agent(opts).start().await;
    // The test's temp dir is 0700; an operator puts the work dir where the
    // job's user can reach its build dir.
    std::fs::set_permissions(
        cluster.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .expect("chmod the test dir");
    let work = cluster.agents[0].work_dir().display().to_string();
    let repo = TestRepo::with_pipeline(&format!(
        r#"
stages: [build, test]
build:
  stage: build
  script:
    - echo "uid=$(id -u) home=$HOME"
    - 'cat {work}/running/*.json && echo RECORD-READABLE || true'
    - 'ls {work}/running && echo RUNNING-LISTABLE || true'
    - 'cat {work}/credentials.json && echo CREDENTIALS-READABLE || true'
    - mkdir -p out
    - echo "made by $(id -u)" > out/result.txt
  artifacts:
    paths: [out/]
use:
  stage: test
  script:
    - cat out/result.txt
"#
    ));
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    let build = pipeline.job("build").id;
    let log = cluster.api.job_log_text(build).await;
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let home = passwd
        .lines()
        .find_map(|line| line.strip_prefix("nobody:"))
        .and_then(|rest| rest.split(':').nth(4))
        .expect("nobody in /etc/passwd");
    assert!(log.contains(&format!("uid=65534 home={home}\n")), "{log}");
    for leak in [
        "RECORD-READABLE",
        "RUNNING-LISTABLE",
        "CREDENTIALS-READABLE",
    ] {
        assert!(!log.contains(&format!("\n{leak}")), "{leak}:\n{log}");
    }
    assert_eq!(pipeline.job("build").status, JobStatus::Success, "{log}");
    let use_log = cluster.api.job_log_text(pipeline.job("use").id).await;
    assert!(use_log.contains("made by 65534"), "{use_log}");
}
