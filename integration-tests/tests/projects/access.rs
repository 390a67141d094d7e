//! API tokens and roles: without a token nothing but `/healthz` answers; a
//! project's token reaches only its project and only what its role allows;
//! a revoked token is refused; an address guessing tokens is slowed down.

use super::create_project;
use osprey_integration_tests::{ApiClient, TestCluster, TestRepo};
use osprey_shared::api::{CreatedToken, PipelineView, ProjectView};
use reqwest::Method;
use serde_json::json;

async fn token(api: &ApiClient, role: &str, project: &str) -> CreatedToken {
    api.call_json(
        Method::POST,
        "/api/v1/tokens",
        Some(&json!({ "role": role, "project": project })),
    )
    .await
    .unwrap_or_else(|error| panic!("create a {role} token of {project}: {error}"))
}

/// A pipeline of `project`, created by the admin (it stays pending: the
/// cluster has no agent).
async fn pipeline_of(api: &ApiClient, project: &str) -> PipelineView {
    api.call_json(
        Method::POST,
        &format!("/api/v1/projects/{project}/pipelines"),
        Some(&json!({ "ref": "main" })),
    )
    .await
    .unwrap_or_else(|error| panic!("create a pipeline of {project}: {error}"))
}

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.git(&["checkout", "-q", "-b", "main"]);
    repo.write(".gitlab-ci.yml", "build:\n  script: ['true']\n");
    repo.commit("pipeline");
    repo
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_reach_their_project_and_role_only() {
    let cluster = TestCluster::builder().start().await;
    let admin = &cluster.api;
    let (repo_a, repo_b) = (repo(), repo());
    create_project(admin, "app", &repo_a.url(), json!({})).await;
    create_project(admin, "other", &repo_b.url(), json!({})).await;
    let mine = pipeline_of(admin, "app").await;
    let theirs = pipeline_of(admin, "other").await;
    let job = mine.jobs.first().expect("a job").id;

    let anonymous = admin.with_token(None);
    assert_eq!(anonymous.healthz().await.expect("healthz answers"), "ok");
    let routes = [
        (Method::GET, format!("/api/v1/pipelines/{}", mine.id)),
        (
            Method::POST,
            format!("/api/v1/pipelines/{}/cancel", mine.id),
        ),
        (Method::POST, format!("/api/v1/pipelines/{}/retry", mine.id)),
        (Method::POST, "/api/v1/pipelines".to_owned()),
        (Method::GET, format!("/api/v1/jobs/{job}")),
        (Method::GET, format!("/api/v1/jobs/{job}/log")),
        (Method::GET, "/api/v1/agents".to_owned()),
        (Method::GET, "/api/v1/projects".to_owned()),
        (Method::POST, "/api/v1/projects".to_owned()),
        (Method::GET, "/api/v1/projects/app".to_owned()),
        (Method::GET, "/api/v1/projects/app/pipelines".to_owned()),
        (Method::GET, "/api/v1/projects/app/variables".to_owned()),
        (Method::PUT, "/api/v1/projects/app/variables/KEY".to_owned()),
        (Method::GET, "/api/v1/projects/app/schedules".to_owned()),
        (Method::GET, "/api/v1/tokens".to_owned()),
        (Method::POST, "/api/v1/tokens".to_owned()),
    ];
    for (method, path) in &routes {
        let request = anonymous.request(method.clone(), path).json(
            &json!({ "name": "x", "repo": "/tmp", "ref": "main", "value": "v", "role": "admin" }),
        );
        let error = anonymous
            .call(request)
            .await
            .expect_err(&format!("{method} {path} needs a token"));
        let body = error.assert_refused(401);
        assert!(!body.error.is_empty(), "{method} {path}: {body:?}");
    }

    // A read token of app: reads app, cannot act on it, cannot see other.
    let read = token(admin, "read", "app").await;
    let reader = admin.with_token(Some(&read.token));
    let seen = reader.pipeline(mine.id).await.expect("read its pipeline");
    assert_eq!(seen.id, mine.id);
    reader.job_log(job).await.expect("read its job's log");
    reader
        .cancel(mine.id)
        .await
        .expect_err("read cannot cancel")
        .assert_refused(403);
    let run_again = reader
        .call_json::<PipelineView>(
            Method::POST,
            "/api/v1/projects/app/pipelines",
            Some(&json!({ "ref": "main" })),
        )
        .await
        .expect_err("read cannot run");
    run_again.assert_refused(403);
    reader
        .call_json::<serde_json::Value>(Method::GET, "/api/v1/projects/app/variables", None)
        .await
        .expect_err("read cannot list variables")
        .assert_refused(403);
    reader
        .pipeline(theirs.id)
        .await
        .expect_err("not other's pipeline")
        .assert_refused(403);
    reader
        .call_json::<ProjectView>(Method::GET, "/api/v1/projects/other", None)
        .await
        .expect_err("not other's project")
        .assert_refused(403);
    reader
        .call_json::<serde_json::Value>(Method::GET, "/api/v1/agents", None)
        .await
        .expect_err("agents are an admin's")
        .assert_refused(403);
    let listed: Vec<ProjectView> = reader
        .call_json(Method::GET, "/api/v1/projects", None)
        .await
        .expect("list projects");
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["app"]);
    let all: Vec<ProjectView> = admin
        .call_json(Method::GET, "/api/v1/projects", None)
        .await
        .expect("list projects");
    assert_eq!(all.len(), 2, "{all:?}");

    // A run token of app may cancel app's pipeline, not other's.
    let run = token(admin, "run", "app").await;
    let runner = admin.with_token(Some(&run.token));
    runner
        .cancel(theirs.id)
        .await
        .expect_err("not other's")
        .assert_refused(403);
    runner
        .cancel(mine.id)
        .await
        .expect("run cancels its pipeline");

    // Revoked: refused at once.
    let response = admin
        .call(admin.request(Method::DELETE, &format!("/api/v1/tokens/{}", read.view.id)))
        .await
        .expect("revoke the read token");
    assert_eq!(response.status().as_u16(), 204);
    reader
        .pipeline(mine.id)
        .await
        .expect_err("revoked")
        .assert_refused(401);
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_tokens_is_slowed_down() {
    let cluster = TestCluster::builder().start().await;
    let mut last = None;
    for attempt in 0..20 {
        let guesser = cluster
            .api
            .with_token(Some(&format!("osp_guess_{attempt:030}")));
        let request = guesser.request(Method::GET, "/api/v1/projects");
        let response = guesser
            .call(request)
            .await
            .expect_err("a guessed token is refused");
        match response.status() {
            Some(401) => continue,
            Some(429) => {
                last = Some(attempt);
                break;
            }
            other => panic!("attempt {attempt}: {other:?} {response}"),
        }
    }
    let blocked_at = last.expect("a 429 within 20 bad tokens");
    assert!(
        blocked_at >= 5,
        "the first few failures are free: {blocked_at}"
    );
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/projects", cluster.api.base_url()))
        .bearer_auth("osp_guess_again_000000000000000000")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a numeric Retry-After header");
    assert!(retry_after >= 1, "{retry_after}");
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    assert!(body["error"].is_string(), "{body}");
    cluster.api.healthz().await.expect("healthz needs no token");
}
