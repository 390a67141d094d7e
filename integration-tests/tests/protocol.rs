//! The protocol refuses what it must: a bad registration token, a bogus agent
//! token, a session that does not start with `Hello` or speaks another protocol
//! version, a job token used for another job, and a call from a stale attempt —
//! each with a clear status, and the coordinator keeps serving.

use osprey_integration_tests::wait::wait_for;
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_proto::v1::agent_service_client::AgentServiceClient;
use osprey_proto::v1::{
    agent_message, AgentMessage, AppendLogRequest, AttemptRef, Heartbeat, Hello, RegisterRequest,
};
use osprey_shared::JobStatus;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

async fn client(url: &str) -> AgentServiceClient<Channel> {
    AgentServiceClient::connect(url.to_owned())
        .await
        .expect("connect to the coordinator")
}

fn register_request(token: &str) -> RegisterRequest {
    osprey_integration_tests::fake_agent::register_request(token, "probe")
}

/// Opens a session whose first message is `first`; returns the status the
/// coordinator answers with (Ok when it accepted the session).
async fn open_session(url: &str, first: AgentMessage) -> Result<(), tonic::Status> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(first).await.unwrap();
    let mut inbound = client(url)
        .await
        .session(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await?
        .into_inner();
    // The coordinator may also refuse after accepting the stream.
    inbound.message().await.map(|_| ())
}

fn hello(token: &str, version: u32) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::Hello(Hello {
            protocol_version: version,
            agent_token: token.to_owned(),
            running: vec![],
            tags: vec![],
            run_untagged: true,
            concurrency: 1,
            version: "test".to_owned(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_and_sessions_refuse_bad_credentials() {
    let cluster = TestCluster::builder().start().await;
    let url = cluster.coordinator.url();
    let mut grpc = client(&url).await;

    let refused = grpc
        .register(register_request("not-the-token"))
        .await
        .expect_err("a wrong registration token must be refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let mut bad_executor = register_request(cluster.coordinator.registration_token());
    bad_executor.executor = "kubernetes".to_owned();
    let refused = grpc
        .register(bad_executor)
        .await
        .expect_err("unknown executor");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let bogus = open_session(
        &url,
        hello("bogus-agent-token", osprey_proto::PROTOCOL_VERSION),
    )
    .await
    .expect_err("a bogus agent token must be refused");
    assert_eq!(bogus.code(), Code::Unauthenticated, "{bogus:?}");

    let registered = grpc
        .register(register_request(cluster.coordinator.registration_token()))
        .await
        .expect("register with the right token")
        .into_inner();
    let old = open_session(&url, hello(&registered.agent_token, 999))
        .await
        .expect_err("an unknown protocol version must be refused");
    assert_eq!(old.code(), Code::InvalidArgument, "{old:?}");
    assert!(old.message().contains("protocol version"), "{old:?}");

    let heartbeat_first = AgentMessage {
        kind: Some(agent_message::Kind::Heartbeat(Heartbeat::default())),
    };
    let refused = open_session(&url, heartbeat_first)
        .await
        .expect_err("a session must start with hello");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // Still serving.
    open_session(
        &url,
        hello(&registered.agent_token, osprey_proto::PROTOCOL_VERSION),
    )
    .await
    .expect("a good hello opens a session");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_token_is_valid_for_its_own_attempt_only() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(2)
        .start()
        .await;
    let tokens = cluster.dir().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    // Each job leaves its token where the test can read it, then waits.
    let repo = TestRepo::with_pipeline(&format!(
        r#"
first:
  script: ['echo "$CI_JOB_TOKEN" > {dir}/$CI_JOB_ID; sleep 30']
second:
  script: ['echo "$CI_JOB_TOKEN" > {dir}/$CI_JOB_ID; sleep 30']
"#,
        dir = tokens.display()
    ));
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let first = created.job("first").id;
    let second = created.job("second").id;
    let first_token = wait_for("the first job's token", Duration::from_secs(60), || async {
        std::fs::read_to_string(tokens.join(first.to_string()))
            .ok()
            .map(|token| token.trim().to_owned())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| "not written yet".to_owned())
    })
    .await;
    cluster
        .api
        .wait_for_job_status(second, JobStatus::Running, Duration::from_secs(60))
        .await;

    let mut grpc = client(&cluster.coordinator.url()).await;
    let append = |job: u64, epoch: u64| AppendLogRequest {
        attempt: Some(AttemptRef {
            job_id: job,
            attempt_id: "00000000-0000-0000-0000-000000000000".to_owned(),
            lease_epoch: epoch,
            job_token: first_token.clone(),
        }),
        offset: 0,
        data: b"forged\n".to_vec().into(),
    };
    let other_job = grpc
        .append_log(append(second.0, 1))
        .await
        .expect_err("the first job's token must not write the second job's log");
    assert_eq!(other_job.code(), Code::Unauthenticated, "{other_job:?}");

    let stale = grpc
        .append_log(append(first.0, 0))
        .await
        .expect_err("an attempt that is not the job's current one must be fenced");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().starts_with("stale lease"), "{stale:?}");

    let missing = grpc
        .append_log(append(987_654, 1))
        .await
        .expect_err("an unknown job");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let log = cluster.api.job_log_text(second).await;
    assert!(
        !log.contains("forged"),
        "a refused append must store nothing"
    );
    cluster.api.cancel(created.id).await.unwrap();
}

/// `retry: when:` reads the failure's reported kind, never its text: a
/// `runner_system_failure` worded like nothing known is retried, and a
/// `script_failure` worded like a system failure is not.
#[tokio::test(flavor = "multi_thread")]
async fn retry_follows_the_reported_failure_kind_whatever_the_message() {
    use osprey_integration_tests::fake_agent::{attempt_ref, FakeAgent};
    use osprey_proto::v1::{FailureKind, JobState, UpdateStatusRequest};
    use osprey_shared::PipelineStatus;

    let cluster = TestCluster::builder().start().await;
    let repo = TestRepo::with_pipeline(
        "flaky:\n  script: ['true']\n  retry:\n    max: 2\n    when: [runner_system_failure]\n",
    );
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let mut agent = FakeAgent::connect(
        &cluster.coordinator.url(),
        cluster.coordinator.registration_token(),
    )
    .await;
    let report = |attempt: AttemptRef, code: Option<i32>, text: &str, kind: FailureKind| {
        UpdateStatusRequest {
            attempt: Some(attempt),
            state: JobState::Failed.into(),
            exit_code: code,
            failure_reason: text.to_owned(),
            failure_kind: kind.into(),
        }
    };
    let first = attempt_ref(&agent.take_job(Duration::from_secs(30)).await);
    let request = report(
        first.clone(),
        None,
        "the disk sang a song",
        FailureKind::RunnerSystemFailure,
    );
    agent.client.update_status(request).await.expect("report");
    agent.release(&first.attempt_id);
    let second = attempt_ref(&agent.take_job(Duration::from_secs(30)).await);
    assert_eq!(second.job_id, first.job_id, "the job is retried");
    assert_ne!(second.attempt_id, first.attempt_id);
    let request = report(
        second.clone(),
        Some(1),
        "runner system failure: agent lost",
        FailureKind::ScriptFailure,
    );
    agent.client.update_status(request).await.expect("report");
    let pipeline = cluster.api.wait_for_pipeline(created.id).await;
    pipeline.assert_status(PipelineStatus::Failed);
    let job = pipeline.assert_job_status("flaky", JobStatus::Failed);
    assert_eq!(job.attempt, 2, "a script failure is not retried");
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("runner system failure: agent lost")
    );
}
