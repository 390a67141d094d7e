//! Oversized output meets a clear limit, never a hang: past
//! `--max-log-bytes` the coordinator refuses more of a job's log, the job
//! itself runs to its end, and the stored log is exactly the accepted prefix.

use osprey_integration_tests::{CoordinatorOpts, PipelineExt, TestCluster, TestRepo};
use osprey_shared::JobStatus;

const LIMIT: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_log_past_the_limit_is_cut_and_the_job_still_finishes() {
    let cluster = TestCluster::builder()
        .coordinator(CoordinatorOpts {
            max_log_bytes: Some(LIMIT),
            ..CoordinatorOpts::default()
        })
        .agents(1)
        .start()
        .await;
    // About 1 MiB of output, then a marker file proving the script ran on.
    let marker = cluster.dir().join("reached-the-end");
    let repo = TestRepo::with_pipeline(&format!(
        "noisy:\n  script:\n    - 'i=0; while [ $i -lt 20000 ]; do echo \"line $i of a noisy job, padded to fifty bytes\"; i=$((i+1)); done'\n    - touch {}\n",
        marker.display()
    ));
    let done = cluster.api.run_pipeline(&repo, "master").await;
    let job = done.assert_job_status("noisy", JobStatus::Success);
    assert!(marker.exists(), "the job ran past the log limit");
    let log = cluster.api.job_log(job.id).await.unwrap();
    assert!(log.len() as u64 <= LIMIT, "stored {} bytes", log.len());
    assert!(
        log.len() as u64 > LIMIT / 2,
        "stored only {} bytes",
        log.len()
    );
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("line 0 of a noisy job"),
        "the log starts at the start"
    );
    assert!(
        !text.contains("line 19999 "),
        "the end of the output was cut"
    );
}
