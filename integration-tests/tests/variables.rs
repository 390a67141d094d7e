//! The predefined variables a job sees, as GitLab defines them.

use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};

const PRINT: &str = r#"
show:
  script:
    - echo "slug=$CI_COMMIT_REF_SLUG title=$CI_COMMIT_TITLE source=$CI_PIPELINE_SOURCE"
    - echo "before=$CI_COMMIT_BEFORE_SHA default=$CI_DEFAULT_BRANCH"
    - echo "url=$CI_JOB_URL node=${CI_NODE_INDEX:-none}"
"#;

async fn log_of(cluster: &TestCluster, repo: &TestRepo, git_ref: &str) -> String {
    let done = cluster.api.run_pipeline(repo, git_ref).await;
    cluster.api.job_log_text(done.job("show").id).await
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_see_commit_and_pipeline_variables() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::new();
    repo.write(".gitlab-ci.yml", PRINT);
    let first = repo.commit("Add the pipeline\n\nWith a body.");
    repo.git(&["checkout", "-q", "-b", "Feature/Login_Page"]);

    let log = log_of(&cluster, &repo, "Feature/Login_Page").await;
    assert!(
        log.contains("slug=feature-login-page title=Add the pipeline source=push"),
        "{log}"
    );
    assert!(
        log.contains(&format!("before={} default=", "0".repeat(40))),
        "{log}"
    );
    assert!(
        log.contains("default=Feature/Login_Page"),
        "HEAD's branch is the default: {log}"
    );
    assert!(log.contains("node=none"), "{log}");

    repo.write("README", "more");
    repo.commit("Second commit");
    let log = log_of(&cluster, &repo, "Feature/Login_Page").await;
    assert!(log.contains(&format!("before={first}")), "{log}");
    assert!(log.contains("title=Second commit"), "{log}");
    assert!(log.contains("/api/v1/jobs/"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_script_sees_the_job_status() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(2)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(
        r#"
passes:
  script: ["true"]
  after_script: ['echo "status=$CI_JOB_STATUS"']
fails:
  script: ["false"]
  after_script: ['echo "status=$CI_JOB_STATUS"']
  allow_failure: true
"#,
    );
    let done = cluster.api.run_pipeline(&repo, "master").await;
    for (job, status) in [("passes", "success"), ("fails", "failed")] {
        let log = cluster.api.job_log_text(done.job(job).id).await;
        assert!(log.contains(&format!("status={status}")), "{job}: {log}");
    }
}
