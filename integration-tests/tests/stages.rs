//! Stage ordering and parallelism inside a stage.

use osprey_integration_tests::{JobTimes, PipelineExt, TestCluster, TestRepo};
use osprey_shared::api::JobView;
use osprey_shared::PipelineStatus;

#[tokio::test(flavor = "multi_thread")]
async fn each_stage_starts_after_the_previous_one_finished() {
    let cluster = TestCluster::builder()
        .agents(2)
        .concurrency(2)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [build, test, deploy]
compile:
  stage: build
  script: ["sleep 1", "echo compiled"]
lint:
  stage: build
  script: ["echo linted"]
unit:
  stage: test
  script: ["echo unit"]
integration:
  stage: test
  script: ["sleep 0.5", "echo integration"]
ship:
  stage: deploy
  script: ["echo shipped"]
"#,
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);

    let stages = [
        vec!["compile", "lint"],
        vec!["unit", "integration"],
        vec!["ship"],
    ];
    for pair in stages.windows(2) {
        let earlier: Vec<&JobView> = pair[0].iter().map(|name| pipeline.job(name)).collect();
        let later: Vec<&JobView> = pair[1].iter().map(|name| pipeline.job(name)).collect();
        let earlier_end = earlier.iter().map(|job| job.finished()).max().unwrap();
        for job in later {
            assert!(
                job.started() >= earlier_end,
                "job {} (stage {}) started at {:?}, before stage {} finished at {earlier_end}",
                job.name,
                job.stage,
                job.started_at,
                earlier[0].stage
            );
        }
    }
}

/// Both jobs run at the same time: each started before the other finished.
fn assert_overlap(first: &JobView, second: &JobView) {
    assert!(
        first.started() < second.finished() && second.started() < first.finished(),
        "jobs did not overlap: {} ran {:?}..{:?}, {} ran {:?}..{:?}",
        first.name,
        first.started_at,
        first.finished_at,
        second.name,
        second.started_at,
        second.finished_at
    );
}

const TWO_SLOW_JOBS: &str = r#"
stages: [test]
left:
  stage: test
  script: ["sleep 1", "echo left"]
right:
  stage: test
  script: ["sleep 1", "echo right"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn jobs_of_one_stage_overlap_on_one_agent_with_two_slots() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(2)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(TWO_SLOW_JOBS);
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    assert_overlap(pipeline.job("left"), pipeline.job("right"));
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_of_one_stage_overlap_on_two_agents() {
    let cluster = TestCluster::builder()
        .agents(2)
        .concurrency(1)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(TWO_SLOW_JOBS);
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    let (left, right) = (pipeline.job("left"), pipeline.job("right"));
    assert_overlap(left, right);
    assert_ne!(
        left.agent, right.agent,
        "one slot per agent, yet both jobs ran on one agent"
    );
}
