//! Rendering, payload and signature tests: pure functions, no I/O.

use super::email::{human_duration, render};
use super::webhook::{event_headers, payload, sign, signing_key, verify};
use super::{DeploymentFacts, JobFacts, PipelineFacts, ProjectFacts, Report};
use osprey_shared::api::NotifyEvent;

fn job(id: i64, name: &str, stage: &str, status: &str) -> JobFacts {
    JobFacts {
        id,
        name: name.to_owned(),
        stage: stage.to_owned(),
        status: status.to_owned(),
        when: "on_success".to_owned(),
        manual: false,
        allow_failure: false,
        created_at: Some("2026-03-01T10:00:00Z".to_owned()),
        started_at: Some("2026-03-01T10:00:02.5Z".to_owned()),
        finished_at: Some("2026-03-01T10:01:07Z".to_owned()),
        duration_seconds: Some(64.5),
        failure_reason: None,
        agent_name: Some("agent-1".to_owned()),
        environment: None,
        log_tail: None,
    }
}

/// Pipeline #12 of `myproj` on main failed: `build` passed, `test <unit>`
/// failed with a coloured log and a progress bar.
fn failed_report() -> Report {
    let mut failed = job(31, "test <unit>", "test", "failed");
    failed.failure_reason = Some("script_failure".to_owned());
    failed.log_tail = Some(
        "\x1b[32;1m$ cargo test\x1b[0m\r\n\
         downloading 10%\rdownloading 50%\rdownloading 100%\n\
         \x1b]0;title\x07assertion failed: a < b & c\n\
         \x1b[31merror\x1b[0m: 1 test failed\n"
            .to_owned(),
    );
    Report {
        event: NotifyEvent::PipelineFailed,
        webhook_id: "msg_7_abc".to_owned(),
        project: ProjectFacts {
            id: 3,
            name: "myproj".to_owned(),
            repo: "https://git.example.com/team/myproj.git".to_owned(),
            url: "https://ci.example.com/api/v1/projects/myproj".to_owned(),
        },
        pipeline: PipelineFacts {
            id: 12,
            iid: Some(4),
            git_ref: "main".to_owned(),
            tag: false,
            sha: "abc1234def5678900112233445566778899aabbc".to_owned(),
            before_sha: None,
            source: "push".to_owned(),
            status: "failed".to_owned(),
            created_at: "2026-03-01T11:00:00+01:00".to_owned(),
            finished_at: Some("2026-03-01T10:01:05Z".to_owned()),
            duration_seconds: Some(65.2),
            commit_title: Some("Fix <script> & \"quotes\"".to_owned()),
            commit_message: Some("Fix <script> & \"quotes\"\n\nMore.".to_owned()),
            stages: vec!["build".to_owned(), "test".to_owned()],
            url: "https://ci.example.com/api/v1/pipelines/12".to_owned(),
        },
        jobs: vec![job(30, "build", "build", "success"), failed],
        deployment: None,
    }
}

fn deployment_report(event: NotifyEvent, status: &str) -> Report {
    let mut report = failed_report();
    report.event = event;
    report.pipeline.status = "success".to_owned();
    let mut deploy = job(40, "deploy", "deploy", status);
    deploy.environment = Some((
        "production".to_owned(),
        "start".to_owned(),
        Some("production".to_owned()),
    ));
    report.jobs = vec![deploy];
    report.deployment = Some(DeploymentFacts {
        id: 5,
        status: status.to_owned(),
        status_changed_at: "2026-03-01T10:02:00Z".to_owned(),
        environment: "production".to_owned(),
        environment_slug: "production".to_owned(),
        environment_tier: "production".to_owned(),
        environment_url: Some("https://myproj.example.com".to_owned()),
        job_id: 40,
        job_name: "deploy".to_owned(),
        job_url: "https://ci.example.com/api/v1/jobs/40".to_owned(),
        rollback_of: None,
    });
    report
}

#[test]
fn subjects_name_project_event_ref_and_short_sha() {
    let mut report = failed_report();
    let subject = |report: &Report| render(report).subject;
    assert_eq!(
        subject(&report),
        "[myproj] Pipeline #12 failed on main (abc1234d)"
    );
    report.event = NotifyEvent::PipelineFixed;
    assert_eq!(
        subject(&report),
        "[myproj] Pipeline #12 fixed on main (abc1234d)"
    );
    report.event = NotifyEvent::PipelineSuccess;
    assert_eq!(
        subject(&report),
        "[myproj] Pipeline #12 succeeded on main (abc1234d)"
    );
    report.event = NotifyEvent::Test;
    assert_eq!(subject(&report), "[myproj] Test notification from Osprey");

    report.event = NotifyEvent::ManualWaiting;
    let mut manual = job(41, "deploy", "deploy", "manual");
    manual.manual = true;
    manual.when = "manual".to_owned();
    report.jobs.push(manual);
    assert_eq!(
        subject(&report),
        "[myproj] Pipeline #12: job deploy waits to be played"
    );

    let deployed = deployment_report(NotifyEvent::DeploymentSuccess, "success");
    assert_eq!(
        subject(&deployed),
        "[myproj] Deployed abc1234d to production"
    );
    let failed = deployment_report(NotifyEvent::DeploymentFailed, "failed");
    assert_eq!(
        subject(&failed),
        "[myproj] Deployment to production failed (abc1234d)"
    );
}

#[test]
fn text_says_what_where_and_shows_the_cleaned_log_tail() {
    let text = render(&failed_report()).text;
    for expected in [
        "Project:  myproj",
        "Ref:      main",
        "Commit:   abc1234d Fix <script> & \"quotes\"",
        "Pipeline: #12 (failed)",
        "Duration: 1m 05s",
        "* test <unit> (stage test): script_failure, 1m 05s",
        "    $ cargo test\n    downloading 100%\n    assertion failed: a < b & c\n    error: 1 test failed\n",
        "https://ci.example.com/api/v1/pipelines/12",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    assert!(!text.contains('\x1b'), "escape left in:\n{text}");
    assert!(!text.contains('\r'));
    assert!(!text.contains("downloading 10%"));
    assert!(!text.contains("title"), "OSC title left in:\n{text}");
    // Only failed jobs are listed.
    assert!(!text.contains("* build"));
}

#[test]
fn html_escapes_everything_users_wrote() {
    let html = render(&failed_report()).html;
    assert!(html.contains("Fix &lt;script&gt; &amp; &quot;quotes&quot;"));
    assert!(html.contains("test &lt;unit&gt; (stage test)"));
    assert!(html.contains("assertion failed: a &lt; b &amp; c"));
    assert!(!html.contains("<script>"));
    assert!(!html.contains("<unit>"));
    assert!(!html.contains('\x1b'));
    assert!(html.contains("<a href=\"https://ci.example.com/api/v1/pipelines/12\">"));
}

#[test]
fn deployment_mail_names_environment_and_job() {
    let text = render(&deployment_report(
        NotifyEvent::DeploymentSuccess,
        "success",
    ))
    .text;
    assert!(text.contains("Environment:     production"), "{text}");
    assert!(text.contains("Deployment:      #5 (success)"), "{text}");
    assert!(text.contains("https://ci.example.com/api/v1/jobs/40"));
    assert!(text.contains("Environment URL: https://myproj.example.com"));
}

#[test]
fn test_and_manual_mails_say_what_to_make_of_them() {
    let mut report = failed_report();
    report.event = NotifyEvent::Test;
    let rendered = render(&report);
    assert!(rendered
        .text
        .starts_with("Test notification from Osprey\n\nThis is a test message"));
    assert!(rendered.html.contains("<p>This is a test message"));

    report.event = NotifyEvent::ManualWaiting;
    let mut manual = job(41, "deploy", "deploy", "manual");
    manual.manual = true;
    report.jobs = vec![manual];
    let text = render(&report).text;
    assert!(text.contains("Play the job"), "{text}");
    assert!(
        text.contains("Waiting job: deploy (stage deploy)"),
        "{text}"
    );
    assert!(!text.contains("Failed jobs"), "{text}");
}

#[test]
fn durations_read_like_a_person_wrote_them() {
    assert_eq!(human_duration(0.2), "0s");
    assert_eq!(human_duration(45.0), "45s");
    assert_eq!(human_duration(65.4), "1m 05s");
    assert_eq!(human_duration(3600.0 + 3.0 * 60.0 + 7.0), "1h 03m 07s");
}

#[test]
fn pipeline_payload_is_gitlab_shaped() {
    let body = payload(&failed_report());
    assert_eq!(body["object_kind"], "pipeline");
    assert_eq!(body["osprey_event"], "pipeline_failed");
    let attributes = &body["object_attributes"];
    assert_eq!(attributes["id"], 12);
    assert_eq!(attributes["iid"], 4);
    assert!(attributes["name"].is_null());
    assert_eq!(attributes["ref"], "main");
    assert_eq!(attributes["tag"], false);
    assert_eq!(
        attributes["before_sha"],
        "0000000000000000000000000000000000000000"
    );
    assert_eq!(attributes["status"], "failed");
    assert_eq!(attributes["stages"], serde_json::json!(["build", "test"]));
    // GitLab's time format, in UTC.
    assert_eq!(attributes["created_at"], "2026-03-01 10:00:00 UTC");
    assert_eq!(attributes["finished_at"], "2026-03-01 10:01:05 UTC");
    assert_eq!(attributes["duration"], 65);
    assert_eq!(attributes["variables"], serde_json::json!([]));
    assert_eq!(
        attributes["url"],
        "https://ci.example.com/api/v1/pipelines/12"
    );
    assert_eq!(body["project"]["path_with_namespace"], "myproj");
    assert_eq!(
        body["project"]["git_http_url"],
        "https://git.example.com/team/myproj.git"
    );
    assert_eq!(body["commit"]["title"], "Fix <script> & \"quotes\"");
    assert!(body["user"].is_null() && body["merge_request"].is_null());

    let builds = body["builds"].as_array().expect("builds");
    assert_eq!(builds.len(), 2);
    let failed = &builds[1];
    assert_eq!(failed["name"], "test <unit>");
    assert_eq!(failed["failure_reason"], "script_failure");
    assert_eq!(failed["started_at"], "2026-03-01 10:00:02 UTC");
    assert_eq!(failed["queued_duration"], 2.5);
    assert_eq!(failed["runner"]["description"], "agent-1");
    assert!(failed["environment"].is_null());
    assert!(failed["artifacts_file"]["filename"].is_null());

    let mut report = failed_report();
    report.event = NotifyEvent::PipelineSuccess;
    report.pipeline.status = "success".to_owned();
    report.pipeline.before_sha = Some("f".repeat(40));
    let body = payload(&report);
    assert_eq!(body["object_attributes"]["detailed_status"], "passed");
    assert_eq!(body["object_attributes"]["before_sha"], "f".repeat(40));
    assert_eq!(
        event_headers(&report),
        [
            ("X-Gitlab-Event", "Pipeline Hook"),
            ("X-Osprey-Event", "pipeline_success")
        ]
    );
}

#[test]
fn deployment_payload_is_a_deployment_hook() {
    let report = deployment_report(NotifyEvent::DeploymentSuccess, "success");
    let body = payload(&report);
    assert_eq!(body["object_kind"], "deployment");
    assert_eq!(body["osprey_event"], "deployment_success");
    assert_eq!(body["status"], "success");
    assert_eq!(body["status_changed_at"], "2026-03-01 10:02:00 UTC");
    assert_eq!(body["deployment_id"], 5);
    assert_eq!(body["deployable_id"], 40);
    assert_eq!(
        body["deployable_url"],
        "https://ci.example.com/api/v1/jobs/40"
    );
    assert_eq!(body["environment"], "production");
    assert_eq!(body["environment_tier"], "production");
    assert_eq!(body["environment_slug"], "production");
    assert_eq!(
        body["environment_external_url"],
        "https://myproj.example.com"
    );
    assert_eq!(body["short_sha"], "abc1234d");
    assert_eq!(body["ref"], "main");
    assert_eq!(body["commit_title"], "Fix <script> & \"quotes\"");
    assert_eq!(body["project"]["id"], 3);
    assert!(body["user"].is_null() && body["commit_url"].is_null());
    assert_eq!(
        event_headers(&report)[0],
        ("X-Gitlab-Event", "Deployment Hook")
    );

    let pipeline_jobs = payload(&failed_report());
    assert!(pipeline_jobs.get("deployment_id").is_none());
}

// Vectors computed independently with python3:
//   base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest())
#[test]
fn signature_matches_an_independent_hmac() {
    let body = br#"{"test": 2432232314}"#;
    let signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        body,
    );
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

    // Not `whsec_`: the secret's bytes are the key.
    assert_eq!(
        sign("plain secret", "wh-1", 1700000000, br#"{"a":1}"#),
        "v1,5Vkpw5UWCtvHGvvaXXPD77JZupWcpvV5D7aPglSHBRQ="
    );
}

#[test]
fn verify_accepts_any_listed_signature_and_nothing_else() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (id, timestamp, body) = ("msg_1", 1700000000, b"{}".as_slice());
    let good = sign(secret, id, timestamp, body);
    assert!(verify(secret, id, timestamp, body, &good));
    let rotated = format!("v1,bm90IHRoaXMgb25l {good} v2,whatever");
    assert!(verify(secret, id, timestamp, body, &rotated));

    assert!(!verify(secret, id, timestamp, b"{ }", &good));
    assert!(!verify(secret, "msg_2", timestamp, body, &good));
    assert!(!verify(secret, id, timestamp + 1, body, &good));
    assert!(!verify("whsec_b3RoZXI=", id, timestamp, body, &good));
    assert!(!verify(secret, id, timestamp, body, ""));
    assert!(!verify(secret, id, timestamp, body, "v1,%%%"));
    assert!(!verify(
        secret,
        id,
        timestamp,
        body,
        &good.replacen("v1,", "v2,", 1)
    ));
}

#[test]
fn whsec_secrets_must_be_base64() {
    assert_eq!(signing_key("whsec_aGk=").unwrap(), b"hi");
    assert_eq!(signing_key("whsec_aGk").unwrap(), b"hi");
    assert_eq!(signing_key("hunter2").unwrap(), b"hunter2");
    assert!(signing_key("whsec_not base64!").is_err());
}
