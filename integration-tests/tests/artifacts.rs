//! Artifacts of one stage are extracted for the jobs of later stages.

use osprey_integration_tests::wait::describe_pipeline;
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};
use std::time::Duration;

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
    let created = cluster
        .api
        .create_pipeline(&repo.url(), "master")
        .await
        .unwrap();
    let pipeline = cluster
        .api
        .wait_for_pipeline_finished(created.id, Duration::from_secs(90))
        .await;
    let summary = describe_pipeline(&pipeline);
    assert_eq!(pipeline.status, PipelineStatus::Success, "{summary}");
    assert_eq!(
        pipeline.job("consume").status,
        JobStatus::Success,
        "{summary}"
    );
    let log = cluster
        .api
        .job_log(pipeline.job("consume").id)
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&log);
    // "payload 42" is computed by the producer; it is not in the consumer's script.
    assert!(
        log.contains("$ cat out/result.txt\npayload 42\n"),
        "consumer log lacks the artifact's content:\n{log}"
    );
    assert!(log.contains("$ cat out/nested/deep.txt\ndeep\n"), "{log}");
}
