//! Crashes: a coordinator killed with SIGKILL mid-job and restarted, and an
//! agent killed mid-job.

use osprey_integration_tests::procs::{kill9_pid, pid_alive, read_pid_file, wait_for_pid_file};
use osprey_integration_tests::{CoordinatorOpts, PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_job_survives_a_coordinator_kill_and_restart_with_its_log_whole() {
    let mut cluster = TestCluster::builder().agents(1).start().await;
    // Each run of the script leaves a mark: the job must run once, resumed
    // across the restart, not be run again.
    let runs = cluster.dir().join("runs");
    // ~6 s of output, one line every 0.1 s.
    let repo = TestRepo::with_pipeline(&format!(
        r#"
stages: [test]
chatty:
  stage: test
  script:
    - echo run >> {runs}
    - 'for i in $(seq 1 60); do echo "line $i"; sleep 0.1; done'
"#,
        runs = runs.display()
    ));
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let job_id = created.job("chatty").id;
    // About 2 s into the job.
    cluster
        .api
        .wait_for_log_containing(job_id, "line 20\n", Duration::from_secs(60))
        .await;
    let before = cluster.api.job(job_id).await.unwrap();
    cluster.coordinator.kill9();
    cluster.coordinator.restart().await;

    let pipeline = cluster.api.wait_for_pipeline(created.id).await;
    pipeline.assert_status(PipelineStatus::Success);
    let after = pipeline.assert_job_status("chatty", JobStatus::Success);
    assert_eq!(
        after.started_at, before.started_at,
        "the job was started again"
    );
    assert_eq!(after.agent, before.agent);
    let marks = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(marks, "run\n", "the script ran more than once");

    let text = cluster.api.job_log_text(job_id).await;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("line "))
        .collect();
    let expected: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "the log is not whole:\n{text}");
    let echo = "$ for i in $(seq 1 60); do echo \"line $i\"; sleep 0.1; done\nline 1\n";
    assert_eq!(
        text.matches(echo).count(),
        1,
        "the script's start is not there exactly once:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_agent_dies_fails_as_agent_lost() {
    let mut cluster = TestCluster::builder().agents(1).start().await;
    let pid_file = cluster.dir().join("job.pid");
    let shell_pid_file = cluster.dir().join("shell.pid");
    let repo = TestRepo::with_pipeline(&format!(
        r#"
stages: [test]
doomed:
  stage: test
  script:
    - 'echo $$ > {shell}; sleep 300 & echo $! > {pid}; wait'
"#,
        shell = shell_pid_file.display(),
        pid = pid_file.display()
    ));
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let job_id = created.job("doomed").id;
    cluster
        .api
        .wait_for_job_status(job_id, JobStatus::Running, Duration::from_secs(60))
        .await;
    let sleep_pid = wait_for_pid_file(&pid_file, Duration::from_secs(30)).await;

    cluster.agents[0].kill9();
    let job = cluster
        .api
        .wait_for_job_status(job_id, JobStatus::Failed, Duration::from_secs(30))
        .await;
    // The orphaned job processes are ours to clean up (the agent is gone).
    if let Some(shell) = read_pid_file(&shell_pid_file) {
        kill9_pid(shell);
    }
    if pid_alive(sleep_pid) {
        kill9_pid(sleep_pid);
    }
    assert_eq!(job.failure_reason.as_deref(), Some("agent lost"), "{job:?}");
    let pipeline = cluster
        .api
        .wait_for_pipeline_finished(created.id, Duration::from_secs(10))
        .await;
    pipeline.assert_status(PipelineStatus::Failed);
}

/// `migrate-store`: a used SQLite coordinator is stopped, its state moved to
/// PostgreSQL, and the coordinator started on PostgreSQL with the same data
/// dir: history, logs and artifacts are all there, the agent carries on,
/// and new pipelines run (their ids after the old ones).
#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_data_dir_moves_to_postgres_with_nothing_lost() {
    let database = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/osprey.db?mode=rwc", database.path().display());
    let mut cluster = TestCluster::builder()
        .coordinator(CoordinatorOpts {
            extra_args: vec!["--database-url".to_owned(), sqlite.clone()],
            ..CoordinatorOpts::default()
        })
        .agents(1)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [build, test]
build:
  stage: build
  script:
    - echo "built at $CI_PIPELINE_ID" > out.txt
    - echo "build log line"
  artifacts:
    paths: [out.txt]
test:
  stage: test
  script:
    - cat out.txt
"#,
    );
    let first = cluster.api.start_pipeline(&repo, "master").await;
    let first_run = cluster.api.wait_for_pipeline(first.id).await;
    first_run.assert_status(PipelineStatus::Success);
    let build_log = cluster.api.job_log_text(first.job("build").id).await;
    assert!(build_log.contains("build log line\n"), "{build_log}");

    cluster.coordinator.sigterm();
    cluster.coordinator.wait_exit(Duration::from_secs(30)).await;
    let postgres = osprey_test_support::postgres::TempPostgres::shared()
        .fresh_database("moved")
        .unwrap();
    let output =
        std::process::Command::new(osprey_integration_tests::bins::binary("osprey-coordinator"))
            .args(["migrate-store", "--from", &sqlite, "--to", &postgres])
            .output()
            .unwrap();
    assert!(
        output.status.success(),
        "migrate-store: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.coordinator.set_arg("--database-url", &postgres);
    cluster.coordinator.restart().await;

    // The history, whole.
    let moved = cluster.api.pipeline(first.id).await.unwrap();
    assert_eq!(moved.status, PipelineStatus::Success);
    assert_eq!(moved.jobs.len(), 2);
    assert_eq!(
        cluster.api.job_log_text(first.job("build").id).await,
        build_log
    );
    // New work on the new store, with artifacts passed on.
    let second = cluster.api.start_pipeline(&repo, "master").await;
    assert!(
        second.id.0 > first.id.0,
        "ids continue after the copied ones"
    );
    let second_run = cluster.api.wait_for_pipeline(second.id).await;
    second_run.assert_status(PipelineStatus::Success);
    let test_log = cluster.api.job_log_text(second.job("test").id).await;
    assert!(
        test_log.contains(&format!("built at {}", second.id.0)),
        "{test_log}"
    );
}
