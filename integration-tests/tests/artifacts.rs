//! Artifacts of one stage are extracted for the jobs of later stages (also
//! those a failed job uploaded with `artifacts: when: on_failure`).

use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};

#[tokio::test(flavor = "multi_thread")]
async fn a_later_stage_sees_the_artifacts_of_an_earlier_one() {
    // Two agents: the consumer may run on another agent than the producer,
    // so only the artifact archive can carry the file across.
    let cluster = TestCluster::builder().agents(2).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [build, test]
produce:
  stage: build
  script:
    - mkdir -p out/nested
    - echo "payload $((6 * 7))" > out/result.txt
    - printf 'deep\n' > out/nested/deep.txt
  artifacts:
    paths: [out/]
consume:
  stage: test
  script:
    - cat out/result.txt
    - cat out/nested/deep.txt
"#,
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    let consume = pipeline.assert_job_status("consume", JobStatus::Success);
    let log = cluster.api.job_log_text(consume.id).await;
    // "payload 42" is computed by the producer; it is not in the consumer's script.
    assert!(
        log.contains("$ cat out/result.txt\npayload 42\n"),
        "consumer log lacks the artifact's content:\n{log}"
    );
    assert!(log.contains("$ cat out/nested/deep.txt\ndeep\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_passes_on_the_artifacts_it_uploaded_on_failure() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [build, report]
broken:
  stage: build
  script:
    - echo "failure report $((6 * 7))" > report.txt
    - exit 1
  artifacts:
    when: on_failure
    paths: [report.txt]
report:
  stage: report
  when: on_failure
  script: [cat report.txt]
"#,
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Failed);
    pipeline.assert_job_status("broken", JobStatus::Failed);
    let report = pipeline.assert_job_status("report", JobStatus::Success);
    let log = cluster.api.job_log_text(report.id).await;
    assert!(
        log.contains("$ cat report.txt\nfailure report 42\n"),
        "the failed job's artifact did not reach the later job:\n{log}"
    );
}
