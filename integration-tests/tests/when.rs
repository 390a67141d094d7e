//! `allow_failure`, skipped later stages, `when: on_failure` and `when: always`.

use osprey_integration_tests::wait::describe_pipeline;
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::api::PipelineView;
use osprey_shared::{JobStatus, PipelineStatus};

/// Runs `yaml` as the pipeline of a fresh repository to its end, on a fresh
/// cluster of one agent with two slots. The cluster is returned so that its
/// process output is shown if a later assertion fails.
async fn run(yaml: &str) -> (TestCluster, PipelineView) {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(2)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(yaml);
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    (cluster, pipeline)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_failure_does_not_fail_the_pipeline() {
    let (_cluster, pipeline) = run(r#"
stages: [test, deploy]
flaky:
  stage: test
  allow_failure: true
  script: ["echo trying", "exit 3"]
deploy:
  stage: deploy
  script: ["echo deployed"]
"#)
    .await;
    pipeline.assert_status(PipelineStatus::Success);
    let flaky = pipeline.assert_job_status("flaky", JobStatus::Failed);
    assert!(flaky.allow_failure);
    assert_eq!(flaky.exit_code, Some(3), "{flaky:?}");
    assert_eq!(
        flaky.failure_reason.as_deref(),
        Some("script failure"),
        "{flaky:?}"
    );
    pipeline.assert_job_status("deploy", JobStatus::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_skips_later_stages_but_not_its_siblings() {
    let (_cluster, pipeline) = run(r#"
stages: [build, test, deploy]
broken:
  stage: build
  script: ["exit 1"]
sibling:
  stage: build
  script: ["sleep 1", "echo sibling done"]
unit:
  stage: test
  script: ["echo should not run"]
ship:
  stage: deploy
  script: ["echo should not run"]
"#)
    .await;
    pipeline.assert_status(PipelineStatus::Failed);
    let broken = pipeline.assert_job_status("broken", JobStatus::Failed);
    assert_eq!(
        broken.exit_code,
        Some(1),
        "{}",
        describe_pipeline(&pipeline)
    );
    pipeline.assert_job_status("sibling", JobStatus::Success);
    for name in ["unit", "ship"] {
        let job = pipeline.assert_job_status(name, JobStatus::Skipped);
        assert_eq!(job.agent, None, "a skipped job ran: {job:?}");
        assert_eq!(job.started_at, None, "a skipped job ran: {job:?}");
    }
}

const WHEN_JOBS: &str = r#"
cleanup-on-failure:
  stage: cleanup
  when: on_failure
  script: ["echo cleaning after a failure"]
cleanup-always:
  stage: cleanup
  when: always
  script: ["echo cleaning anyway"]
next-on-success:
  stage: cleanup
  script: ["echo only after success"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn on_failure_and_always_jobs_run_after_a_failure() {
    let yaml = format!(
        "stages: [build, cleanup]\nbroken:\n  stage: build\n  script: [\"exit 1\"]\n{WHEN_JOBS}"
    );
    let (_cluster, pipeline) = run(&yaml).await;
    pipeline.assert_status(PipelineStatus::Failed);
    pipeline.assert_job_status("cleanup-on-failure", JobStatus::Success);
    assert_eq!(pipeline.job("cleanup-on-failure").when, "on_failure");
    pipeline.assert_job_status("cleanup-always", JobStatus::Success);
    assert_eq!(pipeline.job("cleanup-always").when, "always");
    pipeline.assert_job_status("next-on-success", JobStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_failure_jobs_are_skipped_after_success_and_always_jobs_run() {
    let yaml = format!(
        "stages: [build, cleanup]\nfine:\n  stage: build\n  script: [\"echo fine\"]\n{WHEN_JOBS}"
    );
    let (_cluster, pipeline) = run(&yaml).await;
    pipeline.assert_status(PipelineStatus::Success);
    pipeline.assert_job_status("cleanup-on-failure", JobStatus::Skipped);
    pipeline.assert_job_status("cleanup-always", JobStatus::Success);
    pipeline.assert_job_status("next-on-success", JobStatus::Success);
}
