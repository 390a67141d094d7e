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

/// Predefined variables expand inside `variables:` as on GitLab: those of
/// the ref, commit and project when the pipeline is planned, the ids when
/// the job is dispatched. The project's path and URL come from its
/// repository URL, never the coordinator's file system.
#[tokio::test(flavor = "multi_thread")]
async fn predefined_variables_expand_inside_variables() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
variables:
  IMAGE: $CI_REGISTRY_IMAGE/bot:$CI_COMMIT_SHORT_SHA
show:
  variables:
    WHO: "$CI_JOB_NAME/$CI_JOB_STAGE in $CI_PROJECT_NAME at $CI_PIPELINE_ID.$CI_PIPELINE_IID job $CI_JOB_ID"
  script:
    - echo "image=$IMAGE"
    - echo "who=$WHO"
    - echo "path=$CI_PROJECT_PATH ns=$CI_PROJECT_NAMESPACE url=$CI_PROJECT_URL"
"#,
    );
    let sha = repo.git(&["rev-parse", "HEAD"]);
    let body = serde_json::json!({
        "name": "bot",
        "repo": repo.url(),
        "default_branch": "master",
        "registry": "registry.example.com/Team/Bot",
    });
    let _: serde_json::Value = cluster
        .api
        .call_json(reqwest::Method::POST, "/api/v1/projects", Some(&body))
        .await
        .unwrap();
    let created: osprey_shared::api::PipelineView = cluster
        .api
        .call_json(
            reqwest::Method::POST,
            "/api/v1/projects/bot/pipelines",
            Some(&serde_json::json!({"ref": "master"})),
        )
        .await
        .unwrap();
    let done = cluster.api.wait_for_pipeline(created.id).await;
    let job = done.job("show");
    let log = cluster.api.job_log_text(job.id).await;
    assert!(
        log.contains(&format!(
            "image=registry.example.com/team/bot/bot:{}",
            &sha[..8]
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "who=show/test in bot at {}.1 job {}",
            done.id, job.id
        )),
        "{log}"
    );
    let host_path = repo.path().display().to_string();
    let line = log
        .lines()
        .find(|line| line.starts_with("path="))
        .unwrap_or_default();
    assert!(!line.contains(&host_path), "no host path: {line}");
    assert!(
        line.contains("path=local/bot ns=local url=http://127.0.0.1:"),
        "{line}"
    );
    assert!(line.ends_with("/projects/bot"), "{line}");
}
