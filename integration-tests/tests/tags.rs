//! Routing by tags, and the reason a job without a matching agent waits.

use osprey_integration_tests::wait::describe_pipeline;
use osprey_integration_tests::{AgentOpts, PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn tagged_jobs_go_only_to_agents_with_the_tag() {
    let cluster = TestCluster::builder()
        .agent(AgentOpts::named("plain").concurrency(2))
        .agent(
            AgentOpts::named("docker-box")
                .tags(&["docker"])
                .concurrency(2),
        )
        .start()
        .await;
    let mut yaml = String::from("stages: [test]\n");
    for index in 1..=3 {
        yaml.push_str(&format!(
            "tagged-{index}:\n  stage: test\n  tags: [docker]\n  script: [\"echo tagged {index}\"]\n"
        ));
        yaml.push_str(&format!(
            "untagged-{index}:\n  stage: test\n  script: [\"echo untagged {index}\"]\n"
        ));
    }
    let repo = TestRepo::with_pipeline(&yaml);
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    for index in 1..=3 {
        let tagged = pipeline.job(&format!("tagged-{index}"));
        assert_eq!(tagged.agent.as_deref(), Some("docker-box"), "{tagged:?}");
        // A tagged agent takes untagged jobs only with --run-untagged.
        let untagged = pipeline.job(&format!("untagged-{index}"));
        assert_eq!(untagged.agent.as_deref(), Some("plain"), "{untagged:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_no_agent_can_take_stays_pending_naming_the_tag() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [test]
needs-gpu:
  stage: test
  tags: [gpu]
  script: ["echo never"]
runs-anywhere:
  stage: test
  script: ["echo ran"]
"#,
    );
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let runs_anywhere = created.job("runs-anywhere").id;
    let needs_gpu = created.job("needs-gpu").id;
    // The sibling ran to the end, so the agent was free all along.
    cluster
        .api
        .wait_for_job_status(runs_anywhere, JobStatus::Success, Duration::from_secs(60))
        .await;
    let job = cluster
        .api
        .wait_for_job(
            needs_gpu,
            "pending with a reason",
            Duration::from_secs(10),
            |job| job.pending_reason.is_some(),
        )
        .await;
    assert_eq!(job.status, JobStatus::Pending, "{job:?}");
    assert_eq!(job.agent, None, "{job:?}");
    let reason = job.pending_reason.unwrap();
    assert!(
        reason.contains("gpu"),
        "pending reason does not name the tag: {reason:?}"
    );
    let pipeline = cluster.api.pipeline(created.id).await.unwrap();
    assert!(
        !pipeline.status.is_finished(),
        "{}",
        describe_pipeline(&pipeline)
    );

    cluster.api.cancel(created.id).await.unwrap();
    let pipeline = cluster
        .api
        .wait_for_pipeline_finished(created.id, Duration::from_secs(20))
        .await;
    pipeline.assert_status(PipelineStatus::Canceled);
    pipeline.assert_job_status("needs-gpu", JobStatus::Canceled);
    pipeline.assert_job_status("runs-anywhere", JobStatus::Success);
}
