//! Pipelines nobody pushes: schedules (`source == "schedule"`, running the
//! jobs whose rules ask for it) and the trigger API with a project's `run`
//! token and pipeline variables.

use super::{create_project, wait_for_project_pipeline, Remote};
use osprey_integration_tests::{PipelineExt, TestCluster};
use osprey_shared::api::{CreatedToken, PipelineView, ScheduleView};
use osprey_shared::{JobStatus, PipelineStatus};
use reqwest::Method;
use serde_json::json;

const PIPELINE: &str = r#"
always:
  script:
    - echo "source=$CI_PIPELINE_SOURCE greeting=${GREETING-none}"
nightly:
  rules:
    - if: $CI_PIPELINE_SOURCE == "schedule"
  script:
    - echo "nightly run"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_runs_its_pipeline() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(PIPELINE);
    remote.push(&["main"]);
    create_project(api, "app", &remote.url(), json!({})).await;

    let body = json!({ "cron": "*/2 * * * * *", "ref": "main", "description": "every 2s" });
    let schedule: ScheduleView = api
        .call_json(Method::POST, "/api/v1/projects/app/schedules", Some(&body))
        .await
        .expect("create a schedule");
    assert_eq!(
        (schedule.project.as_str(), schedule.git_ref.as_str()),
        ("app", "main")
    );

    let found = wait_for_project_pipeline(api, "app", "a scheduled pipeline", |p| {
        p.source == "schedule"
    })
    .await;
    let done = api.wait_for_pipeline(found.id).await;
    done.assert_status(PipelineStatus::Success);
    done.assert_job_status("nightly", JobStatus::Success);
    let log = api.job_log_text(done.job("always").id).await;
    assert!(log.contains("source=schedule"), "{log}");

    let path = format!("/api/v1/projects/app/schedules/{}", schedule.id);
    let response = api
        .call(api.request(Method::DELETE, &path))
        .await
        .expect("delete the schedule");
    assert_eq!(response.status().as_u16(), 204);
    let left: Vec<ScheduleView> = api
        .call_json(Method::GET, "/api/v1/projects/app/schedules", None)
        .await
        .expect("list schedules");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trigger_api_takes_a_run_token_and_variables() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(PIPELINE);
    remote.push(&["main"]);
    create_project(api, "app", &remote.url(), json!({})).await;
    let token: CreatedToken = api
        .call_json(
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({ "role": "run", "project": "app" })),
        )
        .await
        .expect("create a run token");

    // The trigger authenticates with the token in its body, not a bearer.
    let anonymous = api.with_token(None);
    let body = json!({ "token": token.token, "ref": "main", "variables": { "GREETING": "hi" } });
    let response = anonymous
        .call(
            anonymous
                .request(Method::POST, "/api/v1/projects/app/trigger")
                .json(&body),
        )
        .await
        .expect("trigger a pipeline");
    assert_eq!(response.status().as_u16(), 201);
    let created: PipelineView = response.json().await.expect("a pipeline");
    assert_eq!(created.source, "trigger", "{created:?}");
    let done = api.wait_for_pipeline(created.id).await;
    done.assert_status(PipelineStatus::Success);
    assert!(
        done.jobs.iter().all(|job| job.name != "nightly"),
        "{done:?}"
    );
    let log = api.job_log_text(done.job("always").id).await;
    assert!(log.contains("source=trigger greeting=hi"), "{log}");

    let bad = json!({ "token": "osp_not_a_real_token_0000000000", "ref": "main" });
    let refused = anonymous
        .call(
            anonymous
                .request(Method::POST, "/api/v1/projects/app/trigger")
                .json(&bad),
        )
        .await
        .expect_err("a bad token is refused");
    refused.assert_refused(401);
    let listed =
        wait_for_project_pipeline(api, "app", "the triggered one", |p| p.id == created.id).await;
    assert_eq!(listed.source, "trigger");
}
