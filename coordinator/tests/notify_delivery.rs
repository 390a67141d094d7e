//! Notification delivery against real servers on loopback: e-mail through
//! `Mailer` to an aiosmtpd sink, webhooks through `WebhookSender` to an axum
//! receiver.

use osprey_coordinator::notify::email::Mailer;
use osprey_coordinator::notify::webhook::{payload, verify, WebhookSender};
use osprey_coordinator::notify::{DeliveryError, JobFacts, PipelineFacts, ProjectFacts, Report};
use osprey_shared::api::NotifyEvent;
use osprey_test_support::smtp::SmtpSink;
use osprey_test_support::webhook::WebhookReceiver;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn report() -> Report {
    let job = |id: i64, name: &str, status: &str, log_tail: Option<&str>| JobFacts {
        id,
        name: name.to_owned(),
        stage: "test".to_owned(),
        status: status.to_owned(),
        when: "on_success".to_owned(),
        manual: false,
        allow_failure: false,
        created_at: Some("2026-03-01T10:00:00Z".to_owned()),
        started_at: Some("2026-03-01T10:00:01Z".to_owned()),
        finished_at: Some("2026-03-01T10:01:05Z".to_owned()),
        duration_seconds: Some(64.0),
        failure_reason: (status == "failed").then(|| "script_failure".to_owned()),
        agent_name: Some("agent-1".to_owned()),
        environment: None,
        log_tail: log_tail.map(str::to_owned),
    };
    Report {
        event: NotifyEvent::PipelineFailed,
        webhook_id: "msg_7_e2e".to_owned(),
        project: ProjectFacts {
            id: 3,
            name: "myproj".to_owned(),
            repo: "https://git.example.com/team/myproj.git".to_owned(),
            url: "http://ci.example.com/api/v1/projects/myproj".to_owned(),
        },
        pipeline: PipelineFacts {
            id: 12,
            iid: None,
            git_ref: "main".to_owned(),
            tag: false,
            sha: "abc1234def5678900112233445566778899aabbc".to_owned(),
            before_sha: None,
            source: "push".to_owned(),
            status: "failed".to_owned(),
            created_at: "2026-03-01T10:00:00Z".to_owned(),
            finished_at: Some("2026-03-01T10:01:05Z".to_owned()),
            duration_seconds: Some(65.0),
            commit_title: Some("Make the tests <fail>".to_owned()),
            commit_message: Some("Make the tests <fail>".to_owned()),
            stages: vec!["test".to_owned()],
            url: "http://ci.example.com/api/v1/pipelines/12".to_owned(),
        },
        jobs: vec![
            job(30, "lint", "success", None),
            job(
                31,
                "unit",
                "failed",
                Some("\x1b[31mthread 'main' panicked\x1b[0m\nassertion failed: left < right\n"),
            ),
        ],
        deployment: None,
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn mail_reaches_the_smtp_server_as_multipart_with_the_log_tail() {
    let sink = SmtpSink::start().expect("smtp sink");
    let mailer = Mailer::new(&sink.url(), "Osprey <osprey@example.com>").expect("mailer");
    mailer
        .send("dev@example.com", &report())
        .await
        .expect("send");

    let messages = sink.wait_for(1, WAIT).await.expect("mail");
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    for expected in [
        "Subject: [myproj] Pipeline #12 failed on main (abc1234d)",
        "Message-ID: <msg_7_e2e@osprey>",
        "From: Osprey <osprey@example.com>",
        "To: dev@example.com",
        "Content-Type: multipart/alternative",
    ] {
        assert!(mail.contains(expected), "{expected:?} not in:\n{mail}");
    }
    let text = part(mail, "text/plain");
    for expected in [
        "Commit:   abc1234d Make the tests <fail>",
        // The log tail without its colour codes.
        "* unit (stage test): script_failure, 1m 04s\n    thread 'main' panicked\n    assertion failed: left < right\n",
        "http://ci.example.com/api/v1/pipelines/12",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let html = part(mail, "text/html");
    for expected in [
        "<pre style=\"background: #f4f4f4; padding: 8px\">thread &#39;main&#39; panicked\nassertion failed: left &lt; right</pre>",
        "abc1234d Make the tests &lt;fail&gt;",
        "<a href=\"http://ci.example.com/api/v1/pipelines/12\">",
    ] {
        assert!(html.contains(expected), "{expected:?} not in:\n{html}");
    }
    assert!(!mail.contains('\x1b'));
}

/// The decoded body of the part of multipart `mail` whose type is
/// `content_type`, with `\n` line ends.
fn part(mail: &str, content_type: &str) -> String {
    let mail = mail.replace("\r\n", "\n");
    let boundary = mail
        .split("boundary=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a multipart boundary");
    let part = mail
        .split(&format!("--{boundary}"))
        .find(|part| {
            part.trim_start()
                .starts_with(&format!("Content-Type: {content_type}"))
        })
        .unwrap_or_else(|| panic!("no {content_type} part in:\n{mail}"));
    let (headers, body) = part.split_once("\n\n").expect("part headers and body");
    let encoding = headers
        .lines()
        .find_map(|line| line.strip_prefix("Content-Transfer-Encoding: "))
        .unwrap_or("7bit");
    match encoding {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            use base64::Engine as _;
            let compact: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("base64 part");
            String::from_utf8(bytes).expect("utf-8 part")
        }
        _ => body.to_owned(),
    }
}

/// RFC 2045 quoted-printable: `=` at a line end joins lines, `=XX` is a byte.
fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = (bytes[at] == b'=')
            .then(|| joined.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match hex {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).expect("utf-8 part")
}

#[tokio::test]
async fn refused_unreachable_and_invalid_mails_are_told_apart() {
    let sink = SmtpSink::start().expect("smtp sink");
    let mailer = Mailer::new(&sink.url(), "osprey@example.com").expect("mailer");

    // The sink refuses `refuse*` recipients with 550.
    match mailer.send("refuse@example.com", &report()).await {
        Err(DeliveryError::Refused { status, .. }) => assert_eq!(status, Some(550)),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(matches!(
        mailer.send("not an address", &report()).await,
        Err(DeliveryError::Invalid(_))
    ));
    assert!(sink.messages().is_empty());

    let nowhere = Mailer::new(
        &format!("smtp://127.0.0.1:{}", closed_port()),
        "osprey@example.com",
    )
    .expect("mailer");
    match nowhere.send("dev@example.com", &report()).await {
        Err(DeliveryError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // Implicit TLS to a plain SMTP server: the handshake fails.
    let tls = Mailer::new(
        &sink.url().replacen("smtp://", "smtps://", 1),
        "osprey@example.com",
    )
    .expect("mailer");
    match tls.send("dev@example.com", &report()).await {
        Err(DeliveryError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }

    assert!(matches!(
        Mailer::new("gopher://example.com", "osprey@example.com"),
        Err(DeliveryError::Invalid(_))
    ));
    assert!(matches!(
        Mailer::new(&sink.url(), "no at sign"),
        Err(DeliveryError::Invalid(_))
    ));
}

#[tokio::test]
async fn webhook_retry_after_500_is_delivered_signed_with_the_same_body() {
    let receiver = WebhookReceiver::start(vec![500]).await.expect("receiver");
    let sender = WebhookSender::new().expect("sender");
    let report = report();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = serde_json::to_vec(&payload(&report)).expect("json");

    match sender
        .send(&receiver.url(), Some(secret), &report, &body)
        .await
    {
        Err(DeliveryError::Refused { status, detail }) => {
            assert_eq!(status, Some(500));
            assert_eq!(detail, "answer 500");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let status = sender
        .send(&receiver.url(), Some(secret), &report, &body)
        .await
        .expect("second try");
    assert_eq!(status, 200);

    let requests = receiver.wait_for(2, WAIT).await.expect("requests");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 200]
    );
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/hook");
        assert_eq!(request.body.as_ref(), body.as_slice());
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("webhook-id"), Some("msg_7_e2e"));
        assert_eq!(request.header("x-gitlab-event"), Some("Pipeline Hook"));
        assert_eq!(request.header("x-osprey-event"), Some("pipeline_failed"));
        let agent = request.header("user-agent").expect("user-agent");
        assert!(agent.starts_with("osprey/"), "{agent}");
        let timestamp: i64 = request
            .header("webhook-timestamp")
            .expect("timestamp")
            .parse()
            .expect("unix seconds");
        let signature = request.header("webhook-signature").expect("signature");
        assert!(verify(
            secret,
            "msg_7_e2e",
            timestamp,
            &request.body,
            signature
        ));
        assert!(!verify(
            "whsec_b3RoZXI=",
            "msg_7_e2e",
            timestamp,
            &request.body,
            signature
        ));
    }
    let received: serde_json::Value = serde_json::from_slice(&requests[1].body).expect("json");
    assert_eq!(received["object_kind"], "pipeline");
    assert_eq!(received["builds"][1]["name"], "unit");
}

#[tokio::test]
async fn unsigned_unreachable_and_invalid_webhooks() {
    let receiver = WebhookReceiver::start(vec![]).await.expect("receiver");
    let sender = WebhookSender::new().expect("sender");
    let report = report();
    let body = b"{}";

    assert_eq!(
        sender
            .send(&receiver.url(), None, &report, body)
            .await
            .expect("send"),
        200
    );
    let requests = receiver.wait_for(1, WAIT).await.expect("request");
    assert_eq!(requests[0].header("webhook-signature"), None);

    let nowhere = format!("http://127.0.0.1:{}/hook", closed_port());
    match sender.send(&nowhere, None, &report, body).await {
        Err(DeliveryError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // TLS to a plain-HTTP server: the handshake fails, which is no answer.
    let https = receiver.url().replacen("http://", "https://", 1);
    match sender.send(&https, None, &report, body).await {
        Err(DeliveryError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    for url in ["ftp://example.com/hook", "not a url"] {
        assert!(
            matches!(
                sender.send(url, None, &report, body).await,
                Err(DeliveryError::Invalid(_))
            ),
            "{url}"
        );
    }
    assert!(matches!(
        sender
            .send(&receiver.url(), Some("whsec_not base64!"), &report, body)
            .await,
        Err(DeliveryError::Invalid(_))
    ));
    assert_eq!(receiver.requests().len(), 1);
}
