//! Artifacts of one stage are extracted for the jobs of later stages.

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
