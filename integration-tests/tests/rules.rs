//! Which jobs a pipeline has depends on its ref, as on GitLab: `only`/`except`,
//! `rules`, `workflow: rules`, `include: local` read from git at the commit,
//! and pipeline variables given with the request.

use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::api::PipelineView;
use osprey_shared::PipelineStatus;

/// The users' pattern: test everywhere, deploy to dev from master, to prod from tags.
const DEPLOYS: &str = r#"
include:
  - local: ci/deploy.yml
stages: [test, deploy]
variables:
  TARGET: nowhere
test:
  stage: test
  script: ['echo "testing for $TARGET"']
"#;

const DEPLOY_FILE: &str = r#"
deploy dev:
  stage: deploy
  script: ['echo "deploy dev $DEPLOY_ENV"']
  variables: {DEPLOY_ENV: dev}
  only: [master]
deploy prod:
  stage: deploy
  script: ['echo "deploy prod $CI_COMMIT_TAG"']
  only: [tags]
feature checks:
  stage: test
  script: ['echo feature']
  rules:
    - if: '$CI_COMMIT_BRANCH =~ /^feature\//'
    - if: '$FORCE_CHECKS == "yes"'
      when: always
"#;

fn names(pipeline: &PipelineView) -> Vec<&str> {
    let mut names: Vec<&str> = pipeline.jobs.iter().map(|job| job.name.as_str()).collect();
    names.sort_unstable();
    names
}

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(".gitlab-ci.yml", DEPLOYS);
    repo.write("ci/deploy.yml", DEPLOY_FILE);
    repo.commit("pipeline with deploys");
    repo.tag("v1.0.0");
    repo.branch("feature/login");
    repo
}

#[tokio::test(flavor = "multi_thread")]
async fn each_ref_gets_the_jobs_its_rules_select() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(2)
        .start()
        .await;
    let repo = repo();
    let api = &cluster.api;

    let master = api.start_pipeline(&repo, "master").await;
    assert_eq!(names(&master), ["deploy dev", "test"]);
    let tag = api.start_pipeline(&repo, "v1.0.0").await;
    assert_eq!(names(&tag), ["deploy prod", "test"]);
    let feature = api.start_pipeline(&repo, "feature/login").await;
    assert_eq!(names(&feature), ["feature checks", "test"]);
    let forced = api
        .create_pipeline_with(&repo.url(), "master", &[("FORCE_CHECKS", "yes")])
        .await
        .unwrap();
    assert_eq!(names(&forced), ["deploy dev", "feature checks", "test"]);
    assert_eq!(forced.job("feature checks").when, "always");

    let done = api.wait_for_pipeline(master.id).await;
    done.assert_status(PipelineStatus::Success);
    let log = api.job_log_text(done.job("deploy dev").id).await;
    assert!(log.contains("deploy dev dev"));
    let done = api.wait_for_pipeline(tag.id).await;
    let log = api.job_log_text(done.job("deploy prod").id).await;
    assert!(log.contains("deploy prod v1.0.0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_rules_can_refuse_a_pipeline() {
    let cluster = TestCluster::builder().start().await;
    let repo = TestRepo::with_pipeline(
        r#"
workflow:
  rules:
    - if: '$CI_COMMIT_TAG'
build:
  script: [echo tagged]
"#,
    );
    let refused = cluster
        .api
        .create_pipeline(&repo.url(), "master")
        .await
        .expect_err("workflow rules refuse a branch pipeline");
    let body = refused.assert_refused(422);
    assert!(body.error.contains("workflow"), "{body:?}");
    let missing = cluster.api.pipeline(osprey_shared::PipelineId(1)).await;
    assert_eq!(
        missing.unwrap_err().status(),
        Some(404),
        "nothing was created"
    );
}

/// A second pipeline of the same commit compares with nothing, so its
/// `changes:` are true (GitLab: true for any pipeline that is no push); it
/// used to drop the `changes:` jobs the first one ran.
#[tokio::test(flavor = "multi_thread")]
async fn changes_hold_for_a_second_pipeline_of_the_same_commit() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::new();
    repo.write(
        ".gitlab-ci.yml",
        "always:\n  script: ['true']\nsrc:\n  script: ['true']\n  rules:\n    - changes: [src/*]\n",
    );
    repo.commit("pipeline");
    cluster.api.run_pipeline(&repo, "master").await;
    repo.write("src/a.txt", "a");
    repo.commit("change src");
    let first = cluster.api.run_pipeline(&repo, "master").await;
    assert_eq!(names(&first), vec!["always", "src"]);
    let again = cluster.api.run_pipeline(&repo, "master").await;
    assert_eq!(
        names(&again),
        vec!["always", "src"],
        "same commit: changes are true"
    );
    repo.write("README", "docs");
    repo.commit("docs only");
    let docs = cluster.api.run_pipeline(&repo, "master").await;
    assert_eq!(
        names(&docs),
        vec!["always"],
        "a push that changes no src/ file"
    );
}
