//! Push webhooks of GitLab, GitHub and Gitea: a verified push of the bare
//! remote makes exactly one pipeline (numbered within the project), a
//! redelivery or a forged request makes none, a deletion makes none, and a
//! tag push runs the jobs its rules give tags.

use super::{create_project, project_pipelines, send_hook, wait_for_project_pipeline, Remote};
use osprey_coordinator::hooks::signing::{sign_gitea, sign_github};
use osprey_integration_tests::{ApiClient, PipelineExt, TestCluster};
use osprey_shared::{JobStatus, PipelineStatus};
use serde_json::{json, Value};

const ZEROS: &str = "0000000000000000000000000000000000000000";

const PIPELINE: &str = r#"
build:
  script:
    - echo "tag=[$CI_COMMIT_TAG] branch=[${CI_COMMIT_BRANCH-unset}] source=$CI_PIPELINE_SOURCE"
deploy:
  rules:
    - if: $CI_COMMIT_TAG =~ /^v\d+\.\d+\.\d+$/
  script:
    - echo "deploying $CI_COMMIT_TAG"
"#;

/// A push payload as GitHub and Gitea send it (the parts a push needs).
fn github_push(git_ref: &str, before: &str, after: &str, repo: &str) -> Vec<u8> {
    let body = json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": before == ZEROS,
        "deleted": after == ZEROS,
        "forced": false,
        "repository": { "name": "app", "full_name": "group/app", "clone_url": repo },
        "pusher": { "name": "tester" },
        "commits": [],
    });
    serde_json::to_vec(&body).expect("serialize a push payload")
}

/// GitLab's `Push Hook` payload.
fn gitlab_push(git_ref: &str, before: &str, after: &str, repo: &str) -> Vec<u8> {
    let body = json!({
        "object_kind": "push",
        "event_name": "push",
        "ref": git_ref,
        "before": before,
        "after": after,
        "checkout_sha": after,
        "project": { "path_with_namespace": "group/app", "git_http_url": repo },
        "repository": { "name": "app", "git_http_url": repo },
        "commits": [],
        "total_commits_count": 0,
    });
    serde_json::to_vec(&body).expect("serialize a push payload")
}

fn github_headers(secret: &str, body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-GitHub-Event", "push".to_owned()),
        ("X-GitHub-Delivery", delivery.to_owned()),
        ("X-Hub-Signature-256", sign_github(secret, body)),
    ]
}

fn gitea_headers(
    event: &str,
    secret: &str,
    body: &[u8],
    delivery: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("X-Gitea-Event", event.to_owned()),
        ("X-Gitea-Delivery", delivery.to_owned()),
        ("X-Gitea-Signature", sign_gitea(secret, body)),
    ]
}

#[track_caller]
fn assert_outcome(answer: &(u16, Value), outcome: &str) {
    assert_eq!(answer.0, 202, "{answer:?}");
    assert_eq!(answer.1["outcome"], outcome, "{answer:?}");
}

#[track_caller]
fn assert_unauthorized(answer: &(u16, Value)) {
    assert_eq!(answer.0, 401, "{answer:?}");
    assert!(answer.1["error"].is_string(), "a JSON error: {answer:?}");
}

async fn pipeline_count(api: &ApiClient, project: &str) -> usize {
    project_pipelines(api, project)
        .await
        .expect("list the project's pipelines")
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_forge_push_makes_one_pipeline() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(PIPELINE);
    let repo = remote.url();
    let first = remote.head();
    remote.push(&["main"]);
    let secret = create_project(api, "app", &repo, json!({}))
        .await
        .webhook_secret;

    // GitLab: the branch's first push (before = zeros).
    let body = gitlab_push("refs/heads/main", ZEROS, &first, &repo);
    let headers = [
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", secret.clone()),
        ("X-Gitlab-Event-UUID", "gitlab-delivery-1".to_owned()),
    ];
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "queued");
    let one = wait_for_project_pipeline(api, "app", "the GitLab push", |p| p.sha == first).await;
    assert_eq!(
        (
            one.source.as_str(),
            one.git_ref.as_str(),
            one.iid,
            one.before_sha.as_deref()
        ),
        ("push", "main", Some(1), None),
        "{one:?}"
    );
    assert_eq!(one.project.as_deref(), Some("app"));
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "duplicate");

    // GitHub: a second commit.
    let second = remote.push_commit("main", "two.txt");
    let body = github_push("refs/heads/main", &first, &second, &repo);
    let headers = github_headers(&secret, &body, "github-delivery-2");
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "queued");
    let two = wait_for_project_pipeline(api, "app", "the GitHub push", |p| p.sha == second).await;
    assert_eq!(
        (two.source.as_str(), two.iid, two.before_sha.as_deref()),
        ("push", Some(2), Some(first.as_str())),
        "{two:?}"
    );
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "duplicate");

    // Forged or incomplete requests for a third commit are refused.
    let third = remote.push_commit("main", "three.txt");
    let body = github_push("refs/heads/main", &second, &third, &repo);
    let forged = github_headers("not-the-secret", &body, "github-delivery-3");
    assert_unauthorized(&send_hook(api, "app", &forged, &body).await);
    let unsigned = [("X-GitHub-Event", "push".to_owned())];
    assert_unauthorized(&send_hook(api, "app", &unsigned, &body).await);
    let wrong_token = [
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", format!("{secret}x")),
    ];
    let gitlab_body = gitlab_push("refs/heads/main", &second, &third, &repo);
    assert_unauthorized(&send_hook(api, "app", &wrong_token, &gitlab_body).await);
    let tampered = github_push("refs/heads/main", &second, &first, &repo);
    let signed_other = github_headers(&secret, &body, "github-delivery-4");
    assert_unauthorized(&send_hook(api, "app", &signed_other, &tampered).await);
    assert_unauthorized(&send_hook(api, "app", &[], &body).await);

    // A deleted branch builds nothing.
    let body = github_push("refs/heads/gone", &second, ZEROS, &repo);
    let headers = github_headers(&secret, &body, "github-delivery-5");
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "ignored");

    // Gitea: the third commit.
    let body = github_push("refs/heads/main", &second, &third, &repo);
    let headers = gitea_headers("push", &secret, &body, "gitea-delivery-6");
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "queued");
    let three = wait_for_project_pipeline(api, "app", "the Gitea push", |p| p.sha == third).await;
    assert_eq!(
        (
            three.source.as_str(),
            three.iid,
            three.before_sha.as_deref()
        ),
        ("push", Some(3), Some(second.as_str())),
        "{three:?}"
    );
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "duplicate");

    // Events are made into pipelines in order: with the Gitea push's there,
    // anything the refused or ignored requests had queued would be too.
    let pipelines = project_pipelines(api, "app").await.expect("list pipelines");
    let mut iids: Vec<Option<u64>> = pipelines.iter().map(|p| p.iid).collect();
    iids.sort();
    assert_eq!(iids, vec![Some(1), Some(2), Some(3)], "{pipelines:?}");
    let done = api.wait_for_pipeline(three.id).await;
    done.assert_status(PipelineStatus::Success);
    assert_eq!(done.sha, third);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_push_runs_the_tag_jobs() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(PIPELINE);
    let repo = remote.url();
    let sha = remote.head();
    remote.push(&["main"]);
    let secret = create_project(api, "app", &repo, json!({}))
        .await
        .webhook_secret;

    let body = github_push("refs/heads/main", ZEROS, &sha, &repo);
    let headers = gitea_headers("push", &secret, &body, "gitea-branch");
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "queued");
    let branch =
        wait_for_project_pipeline(api, "app", "the branch push", |p| p.git_ref == "main").await;
    let branch = api.wait_for_pipeline(branch.id).await;
    branch.assert_status(PipelineStatus::Success);
    assert!(
        branch.jobs.iter().all(|job| job.name != "deploy"),
        "no deploy job on a branch: {branch:?}"
    );
    let log = api.job_log_text(branch.job("build").id).await;
    assert!(log.contains("tag=[] branch=[main] source=push"), "{log}");

    remote.work.tag("v1.2.3");
    remote.push(&["v1.2.3"]);
    let body = github_push("refs/tags/v1.2.3", ZEROS, &sha, &repo);
    let headers = gitea_headers("push", &secret, &body, "gitea-tag-push");
    assert_outcome(&send_hook(api, "app", &headers, &body).await, "queued");
    let tag =
        wait_for_project_pipeline(api, "app", "the tag push", |p| p.git_ref == "v1.2.3").await;
    let tag = api.wait_for_pipeline(tag.id).await;
    tag.assert_status(PipelineStatus::Success);
    assert_eq!(
        (tag.source.as_str(), tag.sha.as_str()),
        ("push", sha.as_str())
    );
    tag.assert_job_status("deploy", JobStatus::Success);
    let log = api.job_log_text(tag.job("build").id).await;
    assert!(
        log.contains("tag=[v1.2.3] branch=[unset] source=push"),
        "{log}"
    );
    let log = api.job_log_text(tag.job("deploy").id).await;
    assert!(log.contains("deploying v1.2.3"), "{log}");

    // Gitea also sends `create` for the new tag: the same push, nothing new.
    let create = serde_json::to_vec(&json!({
        "sha": sha,
        "ref": "v1.2.3",
        "ref_type": "tag",
        "repository": { "name": "app", "clone_url": repo },
    }))
    .expect("serialize a create payload");
    let headers = gitea_headers("create", &secret, &create, "gitea-tag-create");
    let answer = send_hook(api, "app", &headers, &create).await;
    assert_eq!(answer.0, 202, "{answer:?}");
    assert_ne!(answer.1["outcome"], "queued", "{answer:?}");
    assert_eq!(pipeline_count(api, "app").await, 2);
}
