//! Encrypted project variables on a shell agent: a masked value never shows
//! in a job's log, however the job prints it, and is stored nowhere in the
//! clear (data dir, database, process output, API answers); protected
//! variables reach protected refs only; scoped ones the right environment;
//! file variables are a file that exists only while the job runs.

use super::{contains, create_project, files_containing, run_project_pipeline, Remote};
use base64::Engine as _;
use osprey_integration_tests::{ApiClient, PipelineExt, TestCluster};
use osprey_shared::PipelineStatus;
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-value-42";

/// The agent runs scripts with `sh` (dash here): no `${VAR:offset}`, so
/// the pieces are cut with `cut -c`.
const LEAKING_PIPELINE: &str = r#"
leak:
  script:
    - echo "whole=$DEPLOY_TOKEN"
    - |
      printf '%s' "$(printf %s "$DEPLOY_TOKEN" | cut -c1-5)"; sleep 1; printf '%s\n' "$(printf %s "$DEPLOY_TOKEN" | cut -c6-)"
    - |
      for i in $(seq 1 15); do printf '%s' "$(printf %s "$DEPLOY_TOKEN" | cut -c$i)"; sleep 0.2; done; echo
    - printf %s "$DEPLOY_TOKEN" | base64
    - echo leak-done
"#;

const SCOPED_PIPELINE: &str = r#"
prot:
  script:
    - echo "prot=[$PROT_VALUE]"
deploy_dev:
  environment: {name: dev}
  script:
    - echo "url=$DEPLOY_URL"
deploy_prod:
  environment: {name: prod}
  script:
    - echo "url=$DEPLOY_URL"
file:
  script:
    - echo "path=$CONFIG"
    - test -f "$CONFIG"
    - echo "content=$(cat "$CONFIG")"
"#;

/// `PUT /api/v1/projects/app/variables/{key}`; returns the status and body.
async fn put_variable(api: &ApiClient, key: &str, body: Value) -> (u16, String) {
    let path = format!("/api/v1/projects/app/variables/{key}");
    match api.call(api.request(Method::PUT, &path).json(&body)).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(osprey_integration_tests::ApiError::Status { status, body }) => (status, body),
        Err(error) => panic!("set variable {key}: {error}"),
    }
}

/// The raw text of a GET answer.
async fn get_text(api: &ApiClient, path: &str) -> String {
    let response = api
        .call(api.request(Method::GET, path))
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error}"));
    response.text().await.expect("an answer body")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_masked_value_is_never_seen() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(LEAKING_PIPELINE);
    remote.push(&["main"]);
    create_project(api, "app", &remote.url(), json!({})).await;

    let (status, body) =
        put_variable(api, "SHORT", json!({ "value": "seven77", "masked": true })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at least 8 characters"), "{body}");
    let (status, body) = put_variable(
        api,
        "DEPLOY_TOKEN",
        json!({ "value": SECRET, "masked": true }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let done = run_project_pipeline(api, "main").await;
    done.assert_status(PipelineStatus::Success);
    let job = done.job("leak").id;
    let log = api.job_log(job).await.expect("the job's log");
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("leak-done"), "{text}");
    assert!(text.contains("whole=[MASKED]"), "{text}");
    // Whole, in two pieces, byte by byte and in base64: each one masked.
    let masked_lines = text
        .lines()
        .filter(|line| line.contains("[MASKED]"))
        .count();
    assert!(masked_lines >= 4, "{masked_lines} masked lines: {text}");

    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let needles = [SECRET.as_bytes(), encoded.as_bytes()];
    for needle in needles {
        assert!(!contains(&log, needle), "the log shows {needle:?}: {text}");
    }

    // Every answer the API gave about it.
    let mut answers = vec![
        get_text(api, &format!("/api/v1/pipelines/{}", done.id)).await,
        get_text(api, "/api/v1/projects/app/pipelines").await,
        get_text(api, "/api/v1/projects/app/variables").await,
        get_text(api, "/api/v1/projects/app").await,
        body,
    ];
    for job in &done.jobs {
        answers.push(get_text(api, &format!("/api/v1/jobs/{}", job.id)).await);
    }
    assert!(answers[2].contains("DEPLOY_TOKEN"), "{}", answers[2]);
    for answer in &answers {
        for needle in needles {
            assert!(
                !contains(answer.as_bytes(), needle),
                "an API answer shows it: {answer}"
            );
        }
    }

    // At rest: the data dir (the database and its WAL included) and every
    // process's output in the test dir.
    let data_dir = cluster.coordinator.data_dir();
    let outputs: Vec<std::path::PathBuf> = std::fs::read_dir(cluster.dir())
        .expect("read the test dir")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "stdout" || ext == "stderr")
        })
        .collect();
    assert!(
        outputs
            .iter()
            .any(|path| path.ends_with("coordinator.stderr")),
        "the coordinator's output is kept: {outputs:?}"
    );
    for needle in needles {
        let mut found = files_containing(data_dir, needle);
        for output in &outputs {
            found.extend(files_containing(output, needle));
        }
        assert!(
            found.is_empty(),
            "{needle:?} is stored in the clear in {found:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_scoped_and_file_variables() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new(SCOPED_PIPELINE);
    remote.work.branch("feature");
    remote.push(&["main", "feature"]);
    create_project(api, "app", &remote.url(), json!({})).await;
    for (key, body) in [
        (
            "PROT_VALUE",
            json!({ "value": "only-on-main", "protected": true }),
        ),
        (
            "DEPLOY_URL",
            json!({ "value": "https://dev.example.test", "env_scope": "dev" }),
        ),
        (
            "DEPLOY_URL",
            json!({ "value": "https://prod.example.test", "env_scope": "prod" }),
        ),
        (
            "CONFIG",
            json!({ "value": "file-content-123", "file": true }),
        ),
    ] {
        let (status, answer) = put_variable(api, key, body).await;
        assert_eq!(status, 200, "{key}: {answer}");
    }

    let main = run_project_pipeline(api, "main").await;
    main.assert_status(PipelineStatus::Success);
    let log = api.job_log_text(main.job("prot").id).await;
    assert!(
        log.contains("prot=[only-on-main]"),
        "main is protected: {log}"
    );
    for (job, url) in [
        ("deploy_dev", "https://dev.example.test"),
        ("deploy_prod", "https://prod.example.test"),
    ] {
        let log = api.job_log_text(main.job(job).id).await;
        assert!(log.contains(&format!("url={url}")), "{job}: {log}");
    }
    let log = api.job_log_text(main.job("file").id).await;
    assert!(log.contains("content=file-content-123"), "{log}");
    let path = log
        .lines()
        .find_map(|line| line.strip_prefix("path="))
        .unwrap_or_else(|| panic!("the job printed its file's path: {log}"))
        .trim()
        .to_owned();
    assert!(path.starts_with('/'), "CONFIG is a path: {path:?}");
    assert!(
        !std::path::Path::new(&path).exists(),
        "the file variable's file outlived its job: {path}"
    );

    let feature = run_project_pipeline(api, "feature").await;
    feature.assert_status(PipelineStatus::Success);
    let log = api.job_log_text(feature.job("prot").id).await;
    assert!(log.contains("prot=[]"), "feature is not protected: {log}");
}
