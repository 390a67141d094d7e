//! The web UI end to end, one test binary: pages over plain HTTP (sign-in,
//! redirects, CSRF, roles, logs) and in a headless Chromium (live updates
//! over Server-Sent Events, forms, screenshots), the `/metrics` of the
//! coordinator and the agent, and JSON logs, against real coordinators and
//! shell agents.
//!
//! The helpers here are what the modules share: a project `app` on a
//! repository of its own, its pipelines, and a form body.

mod browser;
mod metrics;
mod pages;

use osprey_integration_tests::{ApiClient, TestRepo};
use osprey_shared::api::PipelineView;
use reqwest::Method;
use serde_json::json;

/// The project every test of this binary creates.
pub const PROJECT: &str = "app";

/// A repository on branch `main` whose pipeline is `ci_yaml`, and the
/// project [`PROJECT`] of it (keep the repository alive with the test).
pub async fn project(api: &ApiClient, ci_yaml: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.git(&["checkout", "-q", "-b", "main"]);
    repo.write(".gitlab-ci.yml", ci_yaml);
    repo.commit("pipeline");
    let body = json!({ "name": PROJECT, "repo": repo.url() });
    let response = api
        .call(api.request(Method::POST, "/api/v1/projects").json(&body))
        .await
        .unwrap_or_else(|error| panic!("create project {PROJECT}: {error}"));
    assert_eq!(response.status().as_u16(), 201, "create project {PROJECT}");
    repo
}

/// A pipeline of [`PROJECT`] on `main`, created through the API.
pub async fn start_pipeline(api: &ApiClient) -> PipelineView {
    api.call_json(
        Method::POST,
        &format!("/api/v1/projects/{PROJECT}/pipelines"),
        Some(&json!({ "ref": "main" })),
    )
    .await
    .unwrap_or_else(|error| panic!("create a pipeline of {PROJECT}: {error}"))
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", form_escape(name), form_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_escape(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (byte as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
