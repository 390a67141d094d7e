//! The job keywords that change how a pipeline runs, end to end on real
//! agents: `needs`, `parallel`, `retry`, `allow_failure: exit_codes`,
//! `when: manual` with `osprey job play`, `when: delayed`, `resource_group`.

use osprey_integration_tests::cli::osprey;
use osprey_integration_tests::{JobTimes, PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn needs_parallel_retry_exit_codes_and_manual_jobs_run_as_on_gitlab() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(4)
        .start()
        .await;
    let marker = cluster.dir().join("flaky-ran-once");
    let repo = TestRepo::with_pipeline(&format!(
        r#"
stages: [build, test, deploy]
build:
  stage: build
  script: [echo built]
flaky:
  stage: test
  retry: {{max: 2, when: script_failure}}
  script:
    - sleep 2
    - 'if [ -f {marker} ]; then echo second try; else touch {marker}; exit 1; fi'
tolerated:
  stage: test
  allow_failure: {{exit_codes: [3]}}
  script: [exit 3]
unit:
  stage: test
  needs: [build]
  parallel: 2
  script: ['echo "node $CI_NODE_INDEX of $CI_NODE_TOTAL"']
early:
  stage: deploy
  needs: [unit]
  script: [echo early]
deploy:
  stage: deploy
  when: manual
  script: ['echo "deploying to $CI_ENVIRONMENT_NAME"']
  environment: {{name: production}}
"#,
        marker = marker.display()
    ));
    let done = cluster.api.run_pipeline(&repo, "master").await;
    // The manual job may fail (GitLab's default), so it holds nothing up.
    assert_eq!(done.status, PipelineStatus::Success, "{done:#?}");
    done.assert_job_status("deploy", JobStatus::Manual);

    let flaky = done.assert_job_status("flaky", JobStatus::Success);
    assert_eq!(flaky.attempt, 2, "one retry");
    let log = cluster.api.job_log_text(flaky.id).await;
    assert!(log.contains("second try"));

    let tolerated = done.job("tolerated");
    assert_eq!(
        (tolerated.status, tolerated.exit_code),
        (JobStatus::Failed, Some(3))
    );
    assert!(
        tolerated.allow_failure,
        "exit code 3 is allowed: {tolerated:?}"
    );

    for index in 1..=2 {
        let unit = done.assert_job_status(&format!("unit {index}/2"), JobStatus::Success);
        let log = cluster.api.job_log_text(unit.id).await;
        assert!(log.contains(&format!("node {index} of 2")));
        // `needs: [build]` let it start while its stage's `flaky` still ran.
        assert!(unit.started() < flaky.finished(), "{unit:?} vs {flaky:?}");
    }
    let early = done.job("early");
    assert!(
        early.started() < flaky.finished(),
        "deploy-stage job with needs started early"
    );

    let deploy = done.job("deploy").id;
    let played = osprey(
        Some(&cluster.coordinator.url()),
        &["job", "play", &deploy.to_string()],
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(played.code(), Some(0), "{played:?}");
    let deployed = cluster
        .api
        .wait_for_job_status(deploy, JobStatus::Success, Duration::from_secs(60))
        .await;
    let log = cluster.api.job_log_text(deployed.id).await;
    assert!(log.contains("deploying to production"));
    let after = cluster
        .api
        .wait_for_pipeline_finished(done.id, Duration::from_secs(30))
        .await;
    assert_eq!(after.status, PipelineStatus::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_jobs_wait_and_resource_groups_run_one_job_at_a_time() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(4)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(
        r#"
later:
  when: delayed
  start_in: 2 seconds
  script: [echo later]
release:
  resource_group: production
  script: [sleep 1]
"#,
    );
    let first = cluster.api.start_pipeline(&repo, "master").await;
    assert_eq!(first.job("later").status, JobStatus::Scheduled);
    let second = cluster.api.start_pipeline(&repo, "master").await;
    let first = cluster.api.wait_for_pipeline(first.id).await;
    let second = cluster.api.wait_for_pipeline(second.id).await;
    assert_eq!(first.status, PipelineStatus::Success, "{first:#?}");
    assert_eq!(second.status, PipelineStatus::Success, "{second:#?}");

    let later = first.job("later");
    let waited = later.started() - first.job("release").started();
    assert!(
        waited >= time::Duration::milliseconds(1500),
        "started after {waited}"
    );

    let (a, b) = (first.job("release"), second.job("release"));
    let apart = a.finished() <= b.started() || b.finished() <= a.started();
    assert!(apart, "jobs of one resource group overlapped: {a:?} {b:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_commit_cancels_redundant_pipelines_of_interruptible_jobs_only() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(4)
        .start()
        .await;
    let file = |interruptible: bool| {
        format!(
            "slow:\n  interruptible: {interruptible}\n  script: [sleep 30]\n  coverage: '/Coverage: \\d+\\.\\d+%/'\n"
        )
    };
    let repo = TestRepo::with_pipeline(&file(true));
    let old = cluster.api.start_pipeline(&repo, "master").await;
    cluster
        .api
        .wait_for_job_status(
            old.job("slow").id,
            JobStatus::Running,
            Duration::from_secs(30),
        )
        .await;
    repo.write(".gitlab-ci.yml", &file(false));
    repo.commit("not interruptible");
    let protected = cluster.api.start_pipeline(&repo, "master").await;
    let old = cluster
        .api
        .wait_for_pipeline_finished(old.id, Duration::from_secs(30))
        .await;
    assert_eq!(
        old.status,
        PipelineStatus::Canceled,
        "interruptible: canceled"
    );

    cluster
        .api
        .wait_for_job_status(
            protected.job("slow").id,
            JobStatus::Running,
            Duration::from_secs(30),
        )
        .await;
    repo.write(
        ".gitlab-ci.yml",
        "quick:\n  script: ['echo Coverage: 87.5%']\n  coverage: '/Coverage: \\d+\\.\\d+%/'\n",
    );
    repo.commit("quick");
    let newest = cluster.api.start_pipeline(&repo, "master").await;
    let newest = cluster
        .api
        .wait_for_pipeline_finished(newest.id, Duration::from_secs(30))
        .await;
    assert_eq!(newest.job("quick").coverage, Some(87.5));
    let protected = cluster.api.pipeline(protected.id).await.unwrap();
    assert_eq!(
        protected.job("slow").status,
        JobStatus::Running,
        "a started job that is not interruptible keeps its pipeline"
    );
    cluster.api.cancel(protected.id).await.unwrap();
}
