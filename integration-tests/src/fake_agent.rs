//! An agent played by the test over the real gRPC protocol: it registers,
//! opens a session, takes one offered job and then holds the attempt's
//! credentials, so a test can make job-scoped calls exactly as an agent (or
//! an attacker who copied a job token) would, in any order. It heartbeats
//! the attempts it holds so their leases stay alive while the test works.

use osprey_proto::v1::agent_service_client::AgentServiceClient;
use osprey_proto::v1::{
    agent_message, coordinator_message, upload_artifact_request, upload_cache_request, AcceptOffer,
    AgentMessage, AppendLogRequest, ArtifactHeader, ArtifactTrailer, AttemptRef, CacheHeader,
    CoordinatorMessage, Heartbeat, Hello, JobAssignment, RegisterRequest, RunningAttempt,
    SealLogRequest, UploadArtifactRequest, UploadCacheRequest,
};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Streaming;

/// How often the fake agent heartbeats.
const HEARTBEAT: Duration = Duration::from_millis(300);

/// A registered agent with an open session.
pub struct FakeAgent {
    pub client: AgentServiceClient<Channel>,
    outbound: mpsc::Sender<AgentMessage>,
    inbound: Streaming<CoordinatorMessage>,
    held: Arc<Mutex<Vec<RunningAttempt>>>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Every message the session delivered, in order, as the test read them.
    pub received: Vec<coordinator_message::Kind>,
    /// Sequence numbers of [`FakeAgent::sync`]'s own heartbeats, counting
    /// down from the top so they never meet the periodic ones.
    sync_seq: u64,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl FakeAgent {
    /// Registers (as a shell agent running untagged jobs) and opens a session.
    pub async fn connect(url: &str, registration_token: &str) -> Self {
        Self::connect_as(url, registration_token, &[], true, 1).await
    }

    /// Registers and opens a session with these tags and slots.
    pub async fn connect_as(
        url: &str,
        registration_token: &str,
        tags: &[&str],
        run_untagged: bool,
        concurrency: u32,
    ) -> Self {
        let mut client = AgentServiceClient::connect(url.to_owned())
            .await
            .expect("connect to the coordinator");
        let registered = client
            .register(register_request(registration_token, "fake-agent"))
            .await
            .expect("register the fake agent")
            .into_inner();
        let (outbound, receiver) = mpsc::channel(16);
        outbound
            .send(AgentMessage {
                kind: Some(agent_message::Kind::Hello(Hello {
                    protocol_version: osprey_proto::PROTOCOL_VERSION,
                    agent_token: registered.agent_token,
                    running: vec![],
                    tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
                    run_untagged,
                    concurrency,
                    version: "fake".to_owned(),
                })),
            })
            .await
            .expect("queue hello");
        let mut inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .expect("open the session")
            .into_inner();
        match inbound.message().await.expect("the session answers") {
            Some(CoordinatorMessage {
                kind: Some(coordinator_message::Kind::Welcome(_)),
            }) => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        let held: Arc<Mutex<Vec<RunningAttempt>>> = Arc::default();
        let heartbeat = tokio::spawn(heartbeats(outbound.clone(), held.clone()));
        Self {
            client,
            outbound,
            inbound,
            held,
            heartbeat,
            received: Vec::new(),
            sync_seq: u64::MAX,
        }
    }

    /// The next message of the session (also kept in `received`).
    pub async fn next_message(&mut self, timeout: Duration) -> coordinator_message::Kind {
        let message = tokio::time::timeout(timeout, self.inbound.message())
            .await
            .expect("a message within the timeout")
            .expect("the session stays open")
            .expect("the session stays open");
        let kind = message.kind.expect("a message has a kind");
        self.received.push(kind.clone());
        kind
    }

    /// Queues a message on the session.
    pub async fn send(&self, kind: agent_message::Kind) {
        self.outbound
            .send(AgentMessage { kind: Some(kind) })
            .await
            .expect("the session stays open");
    }

    /// Heartbeats and reads the session up to the answer: returns what came
    /// before it. Whatever the coordinator queued for this agent before the
    /// heartbeat arrived is in there, since a session delivers in order.
    pub async fn sync(&mut self, timeout: Duration) -> Vec<coordinator_message::Kind> {
        self.sync_seq -= 1;
        let seq = self.sync_seq;
        let running = self.held.lock().unwrap().clone();
        self.send(agent_message::Kind::Heartbeat(Heartbeat {
            seq,
            running,
            free_slots: 0,
        }))
        .await;
        let mut before = Vec::new();
        loop {
            match self.next_message(timeout).await {
                coordinator_message::Kind::HeartbeatAck(ack) if ack.seq == seq => return before,
                other => before.push(other),
            }
        }
    }

    /// Waits for an offer, accepts it and returns the assignment once the
    /// coordinator confirms it.
    pub async fn take_job(&mut self, timeout: Duration) -> JobAssignment {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut accepted: Option<(String, JobAssignment)> = None;
        loop {
            let message = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .expect("an offer within the timeout")
                .expect("the session stays open")
                .expect("the session stays open");
            if let Some(kind) = &message.kind {
                self.received.push(kind.clone());
            }
            match message.kind {
                Some(coordinator_message::Kind::Offer(offer)) if accepted.is_none() => {
                    let assignment = offer.assignment.expect("an offer carries its assignment");
                    self.outbound
                        .send(AgentMessage {
                            kind: Some(agent_message::Kind::Accept(AcceptOffer {
                                offer_id: offer.offer_id.clone(),
                            })),
                        })
                        .await
                        .expect("send accept");
                    accepted = Some((offer.offer_id, assignment));
                }
                Some(coordinator_message::Kind::OfferOutcome(outcome)) => {
                    let Some((offer_id, assignment)) = accepted.take() else {
                        continue;
                    };
                    assert_eq!(outcome.offer_id, offer_id);
                    assert!(outcome.confirmed, "the coordinator confirms the offer");
                    let spec = assignment.spec.as_ref().expect("a spec");
                    self.held.lock().unwrap().push(RunningAttempt {
                        job_id: spec.job_id,
                        attempt_id: assignment.attempt_id.clone(),
                        lease_epoch: assignment.lease_epoch,
                        acked_log_offset: 0,
                    });
                    return assignment;
                }
                _ => {}
            }
        }
    }
}

impl FakeAgent {
    /// Stops heartbeating an attempt (it ended): its slot is free again.
    pub fn release(&self, attempt_id: &str) {
        self.held
            .lock()
            .unwrap()
            .retain(|attempt| attempt.attempt_id != attempt_id);
    }
}

/// Heartbeats the held attempts until the session's sender is gone.
async fn heartbeats(outbound: mpsc::Sender<AgentMessage>, held: Arc<Mutex<Vec<RunningAttempt>>>) {
    let mut seq = 0;
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        seq += 1;
        let running = held.lock().unwrap().clone();
        let beat = AgentMessage {
            kind: Some(agent_message::Kind::Heartbeat(Heartbeat {
                seq,
                running,
                free_slots: 0,
            })),
        };
        if outbound.send(beat).await.is_err() {
            return;
        }
    }
}

/// The fencing triple and token of an assignment, as every job-scoped call carries it.
/// A `Register` of an untagged shell agent with one slot named `name`.
pub fn register_request(registration_token: &str, name: &str) -> RegisterRequest {
    RegisterRequest {
        registration_token: registration_token.to_owned(),
        name: name.to_owned(),
        tags: vec![],
        run_untagged: true,
        executor: "shell".to_owned(),
        concurrency: 1,
    }
}

pub fn attempt_ref(assignment: &JobAssignment) -> AttemptRef {
    AttemptRef {
        job_id: assignment.spec.as_ref().expect("a spec").job_id,
        attempt_id: assignment.attempt_id.clone(),
        lease_epoch: assignment.lease_epoch,
        job_token: assignment.job_token.clone(),
    }
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `AppendLog` of `data` at `offset`.
pub async fn append(
    client: &mut AgentServiceClient<Channel>,
    attempt: &AttemptRef,
    offset: u64,
    data: &[u8],
) -> Result<u64, tonic::Status> {
    client
        .append_log(AppendLogRequest {
            attempt: Some(attempt.clone()),
            offset,
            data: data.to_vec().into(),
        })
        .await
        .map(|response| response.into_inner().committed_offset)
}

/// `SealLog` claiming the log is exactly `log`.
pub async fn seal(
    client: &mut AgentServiceClient<Channel>,
    attempt: &AttemptRef,
    log: &[u8],
) -> Result<bool, tonic::Status> {
    client
        .seal_log(SealLogRequest {
            attempt: Some(attempt.clone()),
            size: log.len() as u64,
            sha256: sha256_hex(log),
        })
        .await
        .map(|response| response.into_inner().sealed)
}

fn trailer(bytes: &[u8]) -> ArtifactTrailer {
    ArtifactTrailer {
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

/// `UploadArtifact` of `archive` in one data message.
pub async fn upload_artifact(
    client: &mut AgentServiceClient<Channel>,
    attempt: &AttemptRef,
    archive: &[u8],
) -> Result<(), tonic::Status> {
    use upload_artifact_request::Part;
    let parts = [
        Part::Header(ArtifactHeader {
            attempt: Some(attempt.clone()),
        }),
        Part::Data(archive.to_vec()),
        Part::Trailer(trailer(archive)),
    ]
    .map(|part| UploadArtifactRequest { part: Some(part) });
    client
        .upload_artifact(futures::stream::iter(parts))
        .await
        .map(|_| ())
}

/// `UploadCache` of `archive` under `key` in one data message.
pub async fn upload_cache(
    client: &mut AgentServiceClient<Channel>,
    attempt: &AttemptRef,
    key: &str,
    archive: &[u8],
) -> Result<(), tonic::Status> {
    use upload_cache_request::Part;
    let parts = [
        Part::Header(CacheHeader {
            attempt: Some(attempt.clone()),
            key: key.to_owned(),
        }),
        Part::Data(archive.to_vec()),
        Part::Trailer(trailer(archive)),
    ]
    .map(|part| UploadCacheRequest { part: Some(part) });
    client
        .upload_cache(futures::stream::iter(parts))
        .await
        .map(|_| ())
}
