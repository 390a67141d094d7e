//! Notifications end to end, against a real SMTP server (aiosmtpd) and a
//! real HTTP receiver: the failure e-mail carries the failed job's log
//! tail with masked values masked, the fixed e-mail follows the next
//! green pipeline, a signed webhook is retried until the receiver takes it,
//! and a coordinator killed before its delivery still delivers once.

use super::{create_project, run_project_pipeline, Remote};
use osprey_coordinator::notify::webhook::verify;
use osprey_integration_tests::{wait_for, CoordinatorOpts, PipelineExt, TestCluster};
use osprey_shared::api::{DeliveryView, NotificationView};
use osprey_shared::PipelineStatus;
use osprey_test_support::smtp::SmtpSink;
use osprey_test_support::webhook::WebhookReceiver;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "hunter2-deploy-password";
const SIGNING: &str = "a-webhook-signing-secret";

/// Fails while `broken.txt` exists in the commit.
const PIPELINE: &str = r#"
check:
  script:
    - echo "logging in with $DEPLOY_PASSWORD"
    - echo "step one done"
    - 'if [ -f broken.txt ]; then echo "boom: the build is broken"; exit 3; fi'
"#;

fn cluster_opts(smtp_url: &str, retry_ms: u64) -> CoordinatorOpts {
    let mut opts = CoordinatorOpts::default();
    opts.extra_args.extend([
        "--smtp-url".to_owned(),
        smtp_url.to_owned(),
        "--smtp-from".to_owned(),
        "Osprey CI <ci@example.com>".to_owned(),
        "--notify-retry-ms".to_owned(),
        retry_ms.to_string(),
    ]);
    opts
}

async fn add_rule(api: &osprey_integration_tests::ApiClient, body: Value) -> NotificationView {
    api.call_json(
        Method::POST,
        "/api/v1/projects/app/notifications",
        Some(&body),
    )
    .await
    .expect("add a notification rule")
}

async fn deliveries(api: &osprey_integration_tests::ApiClient) -> Vec<DeliveryView> {
    api.call_json(Method::GET, "/api/v1/projects/app/deliveries", None)
        .await
        .expect("the delivery log")
}

async fn setup(api: &osprey_integration_tests::ApiClient, remote: &Remote) {
    create_project(api, "app", &remote.url(), json!({})).await;
    let body = json!({ "value": SECRET, "masked": true });
    api.call(
        api.request(
            Method::PUT,
            "/api/v1/projects/app/variables/DEPLOY_PASSWORD",
        )
        .json(&body),
    )
    .await
    .expect("set a masked variable");
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_and_fixed_mails_and_a_signed_webhook_retried_until_taken() {
    let smtp = SmtpSink::start().expect("start the SMTP sink");
    let receiver = WebhookReceiver::start(vec![500, 500, 500])
        .await
        .expect("start the webhook receiver");
    let cluster = TestCluster::builder()
        .coordinator(cluster_opts(&smtp.url(), 200))
        .agents(1)
        .start()
        .await;
    let api = &cluster.api;
    let remote = Remote::new(PIPELINE);
    remote.work.write("broken.txt", "yes");
    remote.work.commit("break the build");
    remote.push(&["main"]);
    setup(api, &remote).await;
    add_rule(
        api,
        json!({ "email": "team@example.com", "on": ["pipeline_failed", "pipeline_fixed"], "ref": "main" }),
    )
    .await;
    let hook = add_rule(
        api,
        json!({ "webhook": receiver.url(), "secret": SIGNING, "on": ["pipeline_failed"] }),
    )
    .await;
    assert!(hook.signed);
    let listed: Vec<NotificationView> = api
        .call_json(Method::GET, "/api/v1/projects/app/notifications", None)
        .await
        .unwrap();
    assert!(
        !serde_json::to_string(&listed).unwrap().contains(SIGNING),
        "the secret is never shown"
    );

    let red = run_project_pipeline(api, "main").await;
    red.assert_status(PipelineStatus::Failed);
    let mails = smtp
        .wait_for(1, Duration::from_secs(30))
        .await
        .expect("the failure e-mail");
    let mail = &mails[0];
    assert!(mail.contains("Subject: [app] Pipeline"), "{mail}");
    assert!(mail.contains("failed"), "{mail}");
    assert!(mail.contains("To: team@example.com"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "both parts: {mail}"
    );
    assert!(
        mail.contains("boom: the build is broken"),
        "the log tail: {mail}"
    );
    assert!(mail.contains("[MASKED]"), "{mail}");
    assert!(
        !mail.contains(SECRET),
        "a masked value stays masked: {mail}"
    );

    // The receiver refuses three times; the fourth try is taken.
    let requests = receiver
        .wait_for(4, Duration::from_secs(30))
        .await
        .expect("four webhook tries");
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 500, 200]
    );
    let ids: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert!(
        ids.len() == 4 && ids.iter().all(|id| *id == ids[0]),
        "one id, the idempotency key: {ids:?}"
    );
    let taken = &requests[3];
    let timestamp: i64 = taken.header("webhook-timestamp").unwrap().parse().unwrap();
    let signature = taken.header("webhook-signature").unwrap();
    assert!(
        verify(SIGNING, ids[0], timestamp, &taken.body, signature),
        "the signature verifies"
    );
    assert!(!verify(
        "another secret",
        ids[0],
        timestamp,
        &taken.body,
        signature
    ));
    assert_eq!(taken.header("x-gitlab-event"), Some("Pipeline Hook"));
    let payload: Value = serde_json::from_slice(&taken.body).unwrap();
    assert_eq!(payload["object_kind"], "pipeline");
    assert_eq!(payload["object_attributes"]["id"], red.id.0);
    assert_eq!(payload["object_attributes"]["status"], "failed");
    assert_eq!(payload["object_attributes"]["ref"], "main");
    assert_eq!(payload["builds"][0]["name"], "check");
    assert!(!String::from_utf8_lossy(&taken.body).contains(SECRET));
    let log = wait_for(
        "the webhook's delivery recorded",
        Duration::from_secs(10),
        || async {
            let log = deliveries(api).await;
            match log.iter().find(|d| d.kind == "webhook") {
                Some(d) if d.state == "delivered" => Ok(d.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(log.attempts.len(), 4);
    assert_eq!(
        log.attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![Some(500), Some(500), Some(500), Some(200)]
    );

    // Fixed: the next pipeline of main is green.
    remote.work.git(&["rm", "-q", "broken.txt"]);
    remote.work.commit("fix the build");
    remote.push(&["main"]);
    run_project_pipeline(api, "main")
        .await
        .assert_status(PipelineStatus::Success);
    let mails = smtp
        .wait_for(2, Duration::from_secs(30))
        .await
        .expect("the fixed e-mail");
    assert!(mails[1].contains("fixed"), "{}", mails[1]);
    // No more: the success is not wanted, and the webhook is only on failures.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(receiver.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_before_delivering_delivers_once_after_restart() {
    // The server defers the first message: the notification is still in
    // the outbox, waiting for its next try, when the coordinator dies.
    let smtp = SmtpSink::start_deferring(1).expect("start the SMTP sink");
    let opts = cluster_opts(&smtp.url(), 3000);
    let mut cluster = TestCluster::builder()
        .coordinator(opts)
        .agents(1)
        .start()
        .await;
    let remote = Remote::new(PIPELINE);
    remote.work.write("broken.txt", "yes");
    remote.work.commit("break the build");
    remote.push(&["main"]);
    setup(&cluster.api, &remote).await;
    add_rule(
        &cluster.api,
        json!({ "email": "team@example.com", "on": ["pipeline_failed"] }),
    )
    .await;
    run_project_pipeline(&cluster.api, "main")
        .await
        .assert_status(PipelineStatus::Failed);
    let api = cluster.api.clone();
    wait_for(
        "the first, deferred try",
        Duration::from_secs(30),
        || async {
            match deliveries(&api).await.first() {
                Some(d) if !d.attempts.is_empty() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(smtp.messages().is_empty());

    cluster.coordinator.kill9();
    cluster.coordinator.restart().await;
    let mails = smtp
        .wait_for(1, Duration::from_secs(30))
        .await
        .expect("the e-mail after the restart");
    assert!(mails[0].contains("boom: the build is broken"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 1, "exactly one e-mail");
    let log = deliveries(&cluster.api).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].state, "delivered");
    assert_eq!(log[0].attempts.len(), 2);
}
