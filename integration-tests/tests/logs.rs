//! Logs are stored whole and exactly once: a large log byte for byte, and a
//! chunk sent twice over gRPC stored once. The coordinator's own log, when
//! written to a file, is plain text.

use osprey_integration_tests::cli::osprey;
use osprey_integration_tests::wait::tail;
use osprey_integration_tests::{Coordinator, CoordinatorOpts, PipelineExt, TestCluster, TestRepo};
use osprey_proto::v1::agent_message::Kind as AgentKind;
use osprey_proto::v1::agent_service_client::AgentServiceClient;
use osprey_proto::v1::coordinator_message::Kind as CoordinatorKind;
use osprey_proto::v1::{
    AcceptOffer, AgentMessage, AppendLogRequest, AppendOutcome, AttemptRef, CoordinatorMessage,
    Heartbeat, Hello, JobState, RunningAttempt, SealLogRequest, UpdateStatusRequest,
};
use osprey_shared::{JobStatus, PipelineStatus};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// Lines of four pseudo-random numbers, from a shell loop whose output the
/// test computes independently. ~2 MB.
const LINES: u64 = 44_000;

fn generator_command() -> String {
    format!(
        "x=12345; i=0; while [ $i -lt {LINES} ]; do \
         a=$(( (x * 1103515245 + 12345) % 2147483648 )); \
         b=$(( (a * 1103515245 + 12345) % 2147483648 )); \
         c=$(( (b * 1103515245 + 12345) % 2147483648 )); \
         x=$(( (c * 1103515245 + 12345) % 2147483648 )); \
         printf \"%d %d %d %d %d\\n\" $i $a $b $c $x; i=$((i + 1)); done"
    )
}

fn expected_output() -> Vec<u8> {
    let step = |value: i64| (value * 1_103_515_245 + 12_345) % 2_147_483_648;
    let mut out = Vec::new();
    let mut x: i64 = 12_345;
    for i in 0..LINES {
        let a = step(x);
        let b = step(a);
        let c = step(b);
        x = step(c);
        out.extend_from_slice(format!("{i} {a} {b} {c} {x}\n").as_bytes());
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_megabyte_log_is_stored_byte_for_byte() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let command = generator_command();
    let yaml = format!(
        "stages: [test]\nprint:\n  stage: test\n  script:\n    - echo start\n    - '{command}'\n    - echo end\n"
    );
    let repo = TestRepo::with_pipeline(&yaml);
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let job_id = created.job("print").id;
    let followed = tokio::spawn({
        let api = cluster.api.clone();
        async move { api.follow_log_to_end(job_id).await }
    });
    let pipeline = cluster.api.wait_for_pipeline(created.id).await;
    pipeline.assert_status(PipelineStatus::Success);

    // The agent frames the script's output with its own lines ("Running
    // with...", "Job succeeded"); the script part must be there exactly once.
    let mut expected = b"$ echo start\nstart\n".to_vec();
    expected.extend_from_slice(format!("$ {command}\n").as_bytes());
    expected.extend_from_slice(&expected_output());
    expected.extend_from_slice(b"$ echo end\nend\n");
    assert!(expected.len() > 2_000_000, "{} bytes", expected.len());

    let stored = cluster.api.job_log(job_id).await.unwrap();
    let start = find(&stored, b"$ echo start\n")
        .unwrap_or_else(|| panic!("no `$ echo start` in the log: {}", tail(&stored, 2000)));
    let script_part = &stored[start..(start + expected.len()).min(stored.len())];
    if script_part != expected.as_slice() {
        let first_difference = script_part
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(script_part.len().min(expected.len()));
        panic!(
            "stored log differs from the expected output at byte {} of the script part \
             (stored {} bytes from offset {start}, expected {}); stored there: {:?}, expected: {:?}",
            first_difference,
            script_part.len(),
            expected.len(),
            String::from_utf8_lossy(&script_part[first_difference..(first_difference + 120).min(script_part.len())]),
            String::from_utf8_lossy(&expected[first_difference..(first_difference + 120).min(expected.len())]),
        );
    }
    let frame = [&stored[..start], &stored[start + expected.len()..]].concat();
    assert!(
        frame.len() < 64 * 1024,
        "{} bytes around the script output",
        frame.len()
    );
    assert!(
        find(&frame, b"\n0 ").is_none() && find(&frame, b"$ echo").is_none(),
        "script output repeated outside its place: {}",
        String::from_utf8_lossy(&frame)
    );

    // Following from the start yields the same bytes as reading at the end.
    let followed = followed.await.unwrap().unwrap();
    assert!(
        followed == stored,
        "followed log ({} bytes) != stored log ({} bytes)",
        followed.len(),
        stored.len()
    );

    // `osprey logs` prints the stored bytes unchanged.
    let output = osprey(
        Some(&cluster.coordinator.url()),
        &["logs", &job_id.to_string()],
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(output.code(), Some(0), "{}", output.stderr);
    assert!(
        output.stdout == stored,
        "osprey logs printed {} bytes, stored {}",
        output.stdout.len(),
        stored.len()
    );
}

/// A fake agent on the raw gRPC protocol.
struct FakeAgent {
    client: AgentServiceClient<tonic::transport::Channel>,
    token: String,
    outbound: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
}

impl FakeAgent {
    async fn connect(url: &str, registration_token: &str) -> Self {
        let channel = tonic::transport::Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .expect("connect to the coordinator's gRPC service");
        let mut client = AgentServiceClient::new(channel);
        let registered = client
            .register(osprey_integration_tests::fake_agent::register_request(
                registration_token,
                "fake-agent",
            ))
            .await
            .expect("register")
            .into_inner();
        let token = registered.agent_token;
        let (outbound, receiver) = mpsc::channel(16);
        outbound
            .send(AgentMessage {
                kind: Some(AgentKind::Hello(Hello {
                    protocol_version: osprey_proto::PROTOCOL_VERSION,
                    agent_token: token.clone(),
                    running: Vec::new(),
                    tags: Vec::new(),
                    run_untagged: true,
                    concurrency: 1,
                    version: "integration-test".to_owned(),
                })),
            })
            .await
            .unwrap();
        let request = authorized(ReceiverStream::new(receiver), &token);
        let inbound = client
            .session(request)
            .await
            .expect("open a session")
            .into_inner();
        let mut agent = Self {
            client,
            token,
            outbound,
            inbound,
        };
        match agent.next_message().await {
            CoordinatorKind::Welcome(_) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
        agent
    }

    /// The next coordinator message other than a heartbeat ack or a
    /// prefetch hint (advisory; this agent ignores it).
    async fn next_message(&mut self) -> CoordinatorKind {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.inbound.next())
                .await
                .expect("no message from the coordinator within 30s")
                .expect("the session ended")
                .expect("the session failed");
            match message.kind {
                Some(CoordinatorKind::HeartbeatAck(_) | CoordinatorKind::Prefetch(_)) => continue,
                Some(kind) => return kind,
                None => panic!("empty coordinator message"),
            }
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        authorized(message, &self.token)
    }
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_chunk_sent_twice_is_stored_once() {
    let cluster = TestCluster::builder().start().await;
    let mut agent = FakeAgent::connect(
        &cluster.coordinator.url(),
        cluster.coordinator.registration_token(),
    )
    .await;
    let repo = TestRepo::with_pipeline(
        "stages: [test]\nonly:\n  stage: test\n  script: [\"echo real agents only\"]\n",
    );
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let job_id = created.job("only").id;

    let offer = match agent.next_message().await {
        CoordinatorKind::Offer(offer) => offer,
        other => panic!("expected a job offer, got {other:?}"),
    };
    let assignment = offer
        .assignment
        .clone()
        .expect("the offer carries an assignment");
    let spec = assignment
        .spec
        .clone()
        .expect("the assignment carries a spec");
    assert_eq!(spec.job_id, job_id.0);
    agent
        .outbound
        .send(AgentMessage {
            kind: Some(AgentKind::Accept(AcceptOffer {
                offer_id: offer.offer_id.clone(),
            })),
        })
        .await
        .unwrap();
    match agent.next_message().await {
        CoordinatorKind::OfferOutcome(outcome) => {
            assert!(outcome.confirmed, "offer not confirmed: {outcome:?}");
            assert_eq!(outcome.offer_id, offer.offer_id);
        }
        other => panic!("expected the offer outcome, got {other:?}"),
    }
    let attempt = AttemptRef {
        job_id: job_id.0,
        attempt_id: assignment.attempt_id.clone(),
        lease_epoch: assignment.lease_epoch,
        job_token: assignment.job_token.clone(),
    };
    // Keep the lease alive while the test talks (lease ttl is 3 s).
    let heartbeats = tokio::spawn({
        let outbound = agent.outbound.clone();
        let running = RunningAttempt {
            job_id: job_id.0,
            attempt_id: assignment.attempt_id.clone(),
            lease_epoch: assignment.lease_epoch,
            acked_log_offset: 0,
        };
        async move {
            for seq in 1.. {
                let beat = AgentMessage {
                    kind: Some(AgentKind::Heartbeat(Heartbeat {
                        seq,
                        running: vec![running.clone()],
                        free_slots: 0,
                    })),
                };
                if outbound.send(beat).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });

    let mut client = agent.client.clone();
    let running = client
        .update_status(agent.request(UpdateStatusRequest {
            attempt: Some(attempt.clone()),
            state: JobState::Running as i32,
            exit_code: None,
            failure_reason: String::new(),
            ..Default::default()
        }))
        .await
        .expect("report running")
        .into_inner();
    assert_eq!(running.state(), JobState::Running);
    cluster
        .api
        .wait_for_job_status(job_id, JobStatus::Running, Duration::from_secs(10))
        .await;

    let append = |offset: u64, data: &'static [u8]| {
        let mut client = client.clone();
        let request = agent.request(AppendLogRequest {
            attempt: Some(attempt.clone()),
            offset,
            data: bytes::Bytes::from_static(data),
        });
        async move {
            client
                .append_log(request)
                .await
                .expect("append log")
                .into_inner()
        }
    };
    let first: &[u8] = b"first chunk\n";
    let second: &[u8] = b"second chunk\n";
    let len = first.len() as u64;

    let answer = append(0, first).await;
    assert_eq!(
        (answer.outcome(), answer.committed_offset),
        (AppendOutcome::Appended, len)
    );
    let answer = append(0, first).await;
    assert_eq!(
        (answer.outcome(), answer.committed_offset),
        (AppendOutcome::Duplicate, len)
    );
    let answer = append(len + 10, b"after a hole\n").await;
    assert_eq!(
        (answer.outcome(), answer.committed_offset),
        (AppendOutcome::Gap, len)
    );
    let answer = append(len, second).await;
    let total = len + second.len() as u64;
    assert_eq!(
        (answer.outcome(), answer.committed_offset),
        (AppendOutcome::Appended, total)
    );
    let answer = append(len, second).await;
    assert_eq!(
        (answer.outcome(), answer.committed_offset),
        (AppendOutcome::Duplicate, total)
    );
    let answer = append(0, first).await;
    assert_eq!(
        (answer.outcome(), answer.committed_offset),
        (AppendOutcome::Duplicate, total)
    );

    let expected = [first, second].concat();
    assert_eq!(cluster.api.job_log(job_id).await.unwrap(), expected);
    assert_eq!(cluster.api.job_log_from(job_id, len).await.unwrap(), second);

    let sealed = client
        .seal_log(agent.request(SealLogRequest {
            attempt: Some(attempt.clone()),
            size: total,
            sha256: hex::encode(Sha256::digest(&expected)),
        }))
        .await
        .expect("seal the log")
        .into_inner();
    assert!(sealed.sealed, "{sealed:?}");
    assert_eq!(sealed.stored_size, total);
    let done = client
        .update_status(agent.request(UpdateStatusRequest {
            attempt: Some(attempt.clone()),
            state: JobState::Success as i32,
            exit_code: Some(0),
            failure_reason: String::new(),
            ..Default::default()
        }))
        .await
        .expect("report success")
        .into_inner();
    assert_eq!(done.state(), JobState::Success);
    heartbeats.abort();

    let pipeline = cluster
        .api
        .wait_for_pipeline_finished(created.id, Duration::from_secs(10))
        .await;
    pipeline.assert_status(PipelineStatus::Success);
    assert_eq!(cluster.api.job_log(job_id).await.unwrap(), expected);
    assert_eq!(
        cluster.api.follow_log_to_end(job_id).await.unwrap(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_log_in_a_file_has_no_colour_codes() {
    // An empty NO_COLOR leaves colours to the process (the harness
    // otherwise sets it): only its own terminal check can turn them off.
    let coordinator = Coordinator::start(CoordinatorOpts {
        env: vec![("NO_COLOR".to_owned(), String::new())],
        ..CoordinatorOpts::default()
    })
    .await;
    let path = coordinator.dir().join("coordinator.stderr");
    let log = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    assert!(
        log.contains("INFO"),
        "no log lines in {}:\n{log}",
        path.display()
    );
    assert!(
        !log.contains("\x1b["),
        "colour codes in a log file:\n{log:?}"
    );
}
