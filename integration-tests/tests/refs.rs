//! Pipelines for branches and tags: the commit and pipeline file of the ref,
//! the predefined variables the job sees, and refused refs and repositories.

use osprey_integration_tests::{ApiClient, PipelineExt, TestCluster, TestRepo};
use osprey_shared::PipelineStatus;

const PRINT_VARIABLES: &str = r#"
stages: [test]
vars:
  stage: test
  script:
    - 'echo "branch=${CI_COMMIT_BRANCH:-none} tag=${CI_COMMIT_TAG:-none} ref=$CI_COMMIT_REF_NAME sha=$CI_COMMIT_SHA pipeline=$CI_PIPELINE_ID job=$CI_JOB_NAME stage=$CI_JOB_STAGE ci=$CI"'
"#;

/// Runs the pipeline of `git_ref` to success; returns the `vars` job's log.
async fn variables_line(api: &ApiClient, repo: &TestRepo, git_ref: &str) -> (String, String) {
    let pipeline = api.run_pipeline(repo, git_ref).await;
    pipeline.assert_status(PipelineStatus::Success);
    assert_eq!(pipeline.git_ref, git_ref);
    let log = api.job_log(pipeline.job("vars").id).await.unwrap();
    let log = String::from_utf8(log).unwrap();
    let line = log
        .lines()
        .find(|line| line.starts_with("branch="))
        .unwrap_or_else(|| panic!("no variables line in:\n{log}"))
        .to_owned();
    (
        line,
        format!("pipeline={} job=vars stage=test ci=true", pipeline.id),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_branch_pipeline_sees_the_branch_variables() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::new();
    repo.write(".gitlab-ci.yml", PRINT_VARIABLES);
    let sha = repo.commit("variables");
    let (line, rest) = variables_line(&cluster.api, &repo, "master").await;
    assert_eq!(
        line,
        format!("branch=master tag=none ref=master sha={sha} {rest}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_pipeline_sees_the_tag_variables() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::new();
    repo.write(".gitlab-ci.yml", PRINT_VARIABLES);
    let sha = repo.commit("variables");
    repo.tag("v1.0");
    repo.write("later.txt", "a later commit on master\n");
    repo.commit("later");
    let (line, rest) = variables_line(&cluster.api, &repo, "v1.0").await;
    assert_eq!(
        line,
        format!("branch=none tag=v1.0 ref=v1.0 sha={sha} {rest}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_branch_runs_its_own_pipeline_file() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        "stages: [test]\non-master:\n  stage: test\n  script: [\"echo master\"]\n",
    );
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write(
        ".gitlab-ci.yml",
        "stages: [test]\non-feature:\n  stage: test\n  script: [\"echo feature\"]\n",
    );
    let feature_sha = repo.commit("feature pipeline");
    let feature = cluster.api.start_pipeline(&repo, "feature").await;
    assert_eq!(feature.sha, feature_sha);
    let names: Vec<&str> = feature.jobs.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names, ["on-feature"]);
    let master = cluster.api.start_pipeline(&repo, "master").await;
    let names: Vec<&str> = master.jobs.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names, ["on-master"]);
    for id in [feature.id, master.id] {
        let pipeline = cluster.api.wait_for_pipeline(id).await;
        pipeline.assert_status(PipelineStatus::Success);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_ref_or_repository_is_a_bad_request() {
    let cluster = TestCluster::builder().start().await;
    let repo = TestRepo::with_pipeline(PRINT_VARIABLES);
    let error = cluster
        .api
        .create_pipeline(&repo.url(), "no-such-branch")
        .await
        .expect_err("a pipeline for a missing ref");
    assert!(!error.assert_refused(400).error.is_empty(), "{error}");

    let missing = repo.path().join("not-a-repository");
    let error = cluster
        .api
        .create_pipeline(&missing.display().to_string(), "master")
        .await
        .expect_err("a pipeline for a missing repository");
    assert!(!error.assert_refused(400).error.is_empty(), "{error}");
}
