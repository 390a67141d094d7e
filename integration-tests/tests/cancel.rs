//! Cancelling a pipeline stops its running job and the job's processes.

use osprey_integration_tests::cli::osprey;
use osprey_integration_tests::procs::{kill9_pid, pid_alive, wait_for_pid_file};
use osprey_integration_tests::wait::{describe_pipeline, wait_for};
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};
use std::time::{Duration, Instant};

/// Kills the job's `sleep` if the test fails before the agent did.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if pid_alive(self.0) {
            kill9_pid(self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_job_and_its_processes() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let pid_file = cluster.dir().join("sleep.pid");
    let repo = TestRepo::with_pipeline(&format!(
        r#"
stages: [test, after]
sleeper:
  stage: test
  script:
    - 'sleep 300 & echo $! > {pid}; wait'
later:
  stage: after
  script: ["echo never"]
"#,
        pid = pid_file.display()
    ));
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let job_id = created.job("sleeper").id;
    cluster
        .api
        .wait_for_job_status(job_id, JobStatus::Running, Duration::from_secs(60))
        .await;
    let sleep_pid = wait_for_pid_file(&pid_file, Duration::from_secs(30)).await;
    let _guard = KillOnDrop(sleep_pid);
    assert!(pid_alive(sleep_pid));

    let started = Instant::now();
    let output = osprey(
        Some(&cluster.coordinator.url()),
        &["pipeline", "cancel", &created.id.to_string()],
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        output.code(),
        Some(0),
        "osprey pipeline cancel: {}",
        output.stderr
    );

    cluster
        .api
        .wait_for_job_status(job_id, JobStatus::Canceled, Duration::from_secs(15))
        .await;
    wait_for(
        "the job's sleep process to be gone",
        Duration::from_secs(10),
        || async {
            if pid_alive(sleep_pid) {
                Err(format!("pid {sleep_pid} alive"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "cancellation took {took:?}");

    let pipeline = cluster
        .api
        .wait_for_pipeline_finished(created.id, Duration::from_secs(10))
        .await;
    pipeline.assert_status(PipelineStatus::Canceled);
    let summary = describe_pipeline(&pipeline);
    let later = pipeline.job("later");
    assert!(
        matches!(later.status, JobStatus::Canceled | JobStatus::Skipped),
        "a job after a canceled stage ran or waits: {summary}"
    );
    assert_eq!(later.started_at, None, "{summary}");
}
