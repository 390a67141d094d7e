//! Agents as the coordinator sees them: registration is kept across
//! restarts, flags show in `GET /api/v1/agents`, `--run-untagged`.

use osprey_integration_tests::{AgentOpts, PipelineExt, TestCluster, TestRepo};
use osprey_shared::PipelineStatus;

const ONE_JOB: &str = "stages: [test]\nhello:\n  stage: test\n  script: [\"echo hello\"]\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_keeps_its_registration() {
    let mut cluster = TestCluster::builder().agents(1).start().await;
    let before = cluster.api.agents().await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(cluster.agents[0]
        .work_dir()
        .join("credentials.json")
        .is_file());

    let api = cluster.api.clone();
    cluster.agents[0].restart(&api).await;
    let after = cluster.api.agents().await.unwrap();
    assert_eq!(after.len(), 1, "the agent registered again: {after:?}");
    assert_eq!(after[0].id, before[0].id);
    assert!(after[0].connected);

    let repo = TestRepo::with_pipeline(ONE_JOB);
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_are_listed_with_their_flags() {
    let cluster = TestCluster::builder()
        .agent(
            AgentOpts::named("builder")
                .tags(&["docker", "linux"])
                .concurrency(3),
        )
        .agent(AgentOpts::named("plain"))
        .start()
        .await;
    let agents = cluster.api.agents().await.unwrap();
    let builder = agents.iter().find(|agent| agent.name == "builder").unwrap();
    let mut tags = builder.tags.clone();
    tags.sort();
    assert_eq!(tags, ["docker", "linux"]);
    assert!(
        !builder.run_untagged,
        "a tagged agent takes untagged jobs only when told: {builder:?}"
    );
    assert_eq!(builder.concurrency, 3);
    assert_eq!(builder.executor, "shell");
    assert!(builder.connected);
    let plain = agents.iter().find(|agent| agent.name == "plain").unwrap();
    assert!(plain.tags.is_empty());
    assert!(
        plain.run_untagged,
        "an agent without tags takes untagged jobs: {plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_untagged_lets_a_tagged_agent_take_untagged_jobs() {
    let cluster = TestCluster::builder()
        .agent(AgentOpts::named("tagged").tags(&["docker"]).run_untagged())
        .start()
        .await;
    let repo = TestRepo::with_pipeline(ONE_JOB);
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    assert_eq!(pipeline.job("hello").agent.as_deref(), Some("tagged"));
}
