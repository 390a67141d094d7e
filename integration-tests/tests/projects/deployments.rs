//! Environments end to end: `main` deploys to `dev` and tags to
//! `production`; `env list` and `env history` show it; `osprey env
//! rollback` runs the previous release's deploy job again with its
//! artifacts; an outdated deploy job does not run; `auto_stop_in` stops an
//! environment by running its `on_stop` job.

use super::{create_project, run_project_pipeline, Remote};
use osprey_integration_tests::cli::osprey;
use osprey_integration_tests::{wait_for, PipelineExt, TestCluster};
use osprey_shared::api::{DeploymentView, EnvironmentView};
use osprey_shared::{JobStatus, PipelineStatus};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const RELEASES: &str = r#"
stages: [build, deploy]
build:
  stage: build
  script:
    - mkdir -p out && echo "release $CI_COMMIT_SHORT_SHA" > out/release.txt
  artifacts:
    paths: [out/]
deploy_dev:
  stage: deploy
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
  environment:
    name: dev
    url: https://dev.example.com/$CI_COMMIT_REF_SLUG
  script:
    - echo "deploying $(cat out/release.txt) to $CI_ENVIRONMENT_NAME ($CI_ENVIRONMENT_TIER) at $CI_ENVIRONMENT_URL"
deploy_production:
  stage: deploy
  rules:
    - if: $CI_COMMIT_TAG
  environment: production
  script:
    - echo "deploying $(cat out/release.txt) to $CI_ENVIRONMENT_NAME ($CI_ENVIRONMENT_TIER)"
"#;

async fn environments(api: &osprey_integration_tests::ApiClient) -> Vec<EnvironmentView> {
    api.call_json(Method::GET, "/api/v1/projects/app/environments", None)
        .await
        .expect("list environments")
}

async fn history(api: &osprey_integration_tests::ApiClient, env: &str) -> Vec<DeploymentView> {
    api.call_json(
        Method::GET,
        &format!("/api/v1/projects/app/environments/{env}/deployments"),
        None,
    )
    .await
    .expect("environment history")
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_deploy_to_production_and_a_rollback_reruns_the_previous_release() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(RELEASES);
    let first = remote.head();
    remote.work.tag("v1.0.0");
    remote.push(&["main", "v1.0.0"]);
    create_project(api, "app", &remote.url(), json!({})).await;

    let dev = run_project_pipeline(api, "main").await;
    dev.assert_status(PipelineStatus::Success);
    let log = api.job_log_text(dev.job("deploy_dev").id).await;
    assert!(
        log.contains(&format!(
            "deploying release {} to dev (development) at https://dev.example.com/main",
            &first[..8]
        )),
        "{log}"
    );
    run_project_pipeline(api, "v1.0.0")
        .await
        .assert_status(PipelineStatus::Success);
    let second = remote.push_commit("main", "feature.txt");
    remote.work.tag("v1.1.0");
    remote.push(&["v1.1.0"]);
    let bad = run_project_pipeline(api, "v1.1.0").await;
    bad.assert_status(PipelineStatus::Success);

    let envs = environments(api).await;
    let names: Vec<(&str, &str, &str)> = envs
        .iter()
        .map(|env| (env.name.as_str(), env.tier.as_str(), env.state.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("dev", "development", "available"),
            ("production", "production", "available")
        ]
    );
    let production = envs.iter().find(|env| env.name == "production").unwrap();
    let last = production
        .last_deployment
        .as_ref()
        .expect("a last deployment");
    assert_eq!(
        (last.sha.as_str(), last.git_ref.as_str(), last.tag),
        (second.as_str(), "v1.1.0", true)
    );
    assert_eq!(
        envs[0].url.as_deref(),
        Some("https://dev.example.com/main"),
        "variables expand in environment:url"
    );
    let before = history(api, "production").await;
    assert_eq!(before.len(), 2);
    assert_eq!(before[0].sha, second, "newest first");
    assert_eq!(before[1].sha, first);
    assert!(before
        .iter()
        .all(|d| d.status == "success" && d.source == "api"));

    // v1.1.0 is bad: back to v1.0.0 with the CLI, waiting for the deploy.
    let url = cluster.coordinator.url();
    let out = osprey(
        Some(&url),
        &["env", "rollback", "app", "production", "--wait"],
        None,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let after = history(api, "production").await;
    assert_eq!(after.len(), 3);
    let rollback = &after[0];
    assert_eq!(rollback.rollback_of, Some(before[1].id));
    assert_eq!(
        (
            rollback.sha.as_str(),
            rollback.source.as_str(),
            rollback.status.as_str()
        ),
        (first.as_str(), "rollback", "success")
    );
    assert_eq!(rollback.triggered_by, "admin");
    // The previous release's own deploy job ran again, with its artifacts.
    let job = api
        .job(osprey_shared::JobId(rollback.job as u64))
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Success);
    let log = api.job_log_text(job.id).await;
    assert!(
        log.contains(&format!("deploying release {} to production", &first[..8])),
        "{log}"
    );
    let production = environments(api)
        .await
        .into_iter()
        .find(|e| e.name == "production")
        .unwrap();
    assert_eq!(production.last_deployment.unwrap().id, rollback.id);
}

const OUTDATED: &str = r#"
deploy:
  environment: staging
  rules:
    - if: $CI_COMMIT_BRANCH == "release"
      when: manual
      allow_failure: true
    - when: on_success
  script:
    - echo "deploying $CI_COMMIT_SHORT_SHA"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_outdated_deploy_job_does_not_run() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(OUTDATED);
    remote.work.branch("release");
    remote.push(&["main", "release"]);
    create_project(api, "app", &remote.url(), json!({})).await;

    // The older pipeline's deploy waits for someone; a newer one deploys.
    let older = run_project_pipeline(api, "release").await;
    let waiting = older.assert_job_status("deploy", JobStatus::Manual).id;
    remote.push_commit("main", "newer.txt");
    run_project_pipeline(api, "main")
        .await
        .assert_status(PipelineStatus::Success);

    let played = api
        .call(api.request(Method::POST, &format!("/api/v1/jobs/{waiting}/play")))
        .await
        .expect("play the old deploy job");
    assert!(played.status().is_success());
    let what = "the outdated deploy job to fail";
    let job = wait_for(what, Duration::from_secs(30), || async {
        match api.job(waiting).await {
            Ok(job) if job.status.is_finished() => Ok(job),
            Ok(job) => Err(format!("{:?}", job.status)),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    assert_eq!(job.status, JobStatus::Failed);
    let reason = job.failure_reason.unwrap_or_default();
    assert!(
        reason.starts_with("outdated deployment: pipeline"),
        "{reason}"
    );
    assert!(api.job_log_text(waiting).await.is_empty(), "it never ran");
    let staging = history(api, "staging").await;
    let outdated = staging.iter().find(|d| d.job == waiting.0 as i64).unwrap();
    assert_eq!(
        (outdated.status.as_str(), outdated.reason.as_deref()),
        ("failed", Some("outdated deployment"))
    );
}

const REVIEW: &str = r#"
review:
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    auto_stop_in: 2 seconds
    on_stop: stop_review
  script:
    - echo "review app up"
stop_review:
  when: manual
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    action: stop
  script:
    - echo "review app down"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn auto_stop_in_runs_the_on_stop_job() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(REVIEW);
    remote.push(&["main"]);
    create_project(api, "app", &remote.url(), json!({})).await;

    let pipeline = run_project_pipeline(api, "main").await;
    let stop_job = pipeline
        .assert_job_status("stop_review", JobStatus::Manual)
        .id;
    let env = environments(api)
        .await
        .pop()
        .expect("the review environment");
    assert_eq!(
        (env.name.as_str(), env.tier.as_str()),
        ("review/main", "development")
    );
    assert!(env.auto_stop_at.is_some(), "{env:?}");

    let stopped = wait_for(
        "the review environment to stop",
        Duration::from_secs(30),
        || async {
            let env = environments(api).await.pop().unwrap();
            if env.state == "stopped" {
                Ok(env)
            } else {
                Err(format!("{env:?}"))
            }
        },
    )
    .await;
    assert_eq!(stopped.auto_stop_at, None);
    assert_eq!(api.job(stop_job).await.unwrap().status, JobStatus::Success);
    let log = api.job_log_text(stop_job).await;
    assert!(log.contains("review app down"), "{log}");
}
