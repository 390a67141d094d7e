//! The agent's session with the coordinator: one bidirectional `Session`
//! stream at a time. It says `Hello` (listing the attempts still running),
//! sends heartbeats at the interval `Welcome` gives, answers offers (accept
//! while a slot is free, start only on a confirmed outcome), acks and relays
//! cancels, and kills abandoned attempts. A broken stream is reopened with
//! jittered exponential backoff while the jobs keep running.
//!
//! It also tells [`crate::lease`] when each lease was renewed: the send time
//! of the accept, of this session's `Hello` (for resumed attempts) or of the
//! heartbeat whose `HeartbeatAck` lists the attempt. The lease watchdog, not
//! the session, stops attempts whose renewal is overdue.

use crate::client::{AgentClient, CoordinatorApi};
use crate::job_runner::{self, RunnerContext};
use crate::lease::LeaseTerms;
use crate::registry::{Registry, StopCause};
use crate::tasks::Tasks;
use osprey_proto::v1::{
    agent_message, coordinator_message, AcceptOffer, AgentMessage, CancelAck, CancelJob,
    CoordinatorMessage, Heartbeat, Hello, JobAssignment, RejectOffer,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Heartbeat interval until `Welcome` says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long the coordinator has to answer `Hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeats remembered while their acks are outstanding (a hung stream
/// must not grow this forever).
const UNACKED_HEARTBEATS: usize = 256;

/// What the session needs besides the job runners' context.
pub struct SessionSettings {
    pub agent_token: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub concurrency: u32,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot open session: {0}")]
    Open(tonic::Status),
    #[error("session stream broke: {0}")]
    Stream(tonic::Status),
    #[error("coordinator closed the session")]
    Closed,
    #[error("no welcome within {0:?}")]
    NoWelcome(Duration),
    #[error("unexpected first message from coordinator")]
    NotWelcome,
}

/// Keeps a session open until `close` fires, reconnecting as needed. While
/// `draining` is fired every offer is rejected (shutdown in progress).
pub async fn run<A: CoordinatorApi>(
    client: AgentClient,
    settings: SessionSettings,
    ctx: Arc<RunnerContext<A>>,
    tasks: Tasks,
    draining: CancellationToken,
    close: CancellationToken,
) {
    let mut backoff = crate::retry::backoff();
    backoff.max_interval = Duration::from_secs(10);
    let mut session = Session {
        client,
        settings,
        ctx,
        tasks,
        draining,
        pending: HashMap::new(),
        heartbeats_sent: BTreeMap::new(),
        heartbeat_interval: None,
    };
    loop {
        let mut welcomed = false;
        let result = tokio::select! {
            result = session.run_once(&mut welcomed) => result,
            () = close.cancelled() => Ok(()),
        };
        session.drop_pending();
        if close.is_cancelled() {
            tracing::info!("session closed");
            return;
        }
        if welcomed {
            backoff = crate::retry::backoff();
            backoff.max_interval = Duration::from_secs(10);
        }
        let mut delay = crate::retry::next_delay(&mut backoff);
        if let Some(interval) = session.heartbeat_interval {
            if !session.registry().is_empty() {
                // Leases run out while we wait: try again at least as often
                // as heartbeats would renew them.
                delay = delay.min(interval);
            }
        }
        session.ctx.metrics.reconnecting();
        match result {
            Ok(()) => tracing::info!(?delay, "session ended, reconnecting"),
            Err(err) => tracing::warn!(error = %err, ?delay, "session lost, reconnecting"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = close.cancelled() => return,
        }
    }
}

struct Session<A> {
    client: AgentClient,
    settings: SessionSettings,
    ctx: Arc<RunnerContext<A>>,
    tasks: Tasks,
    draining: CancellationToken,
    /// Accepted offers awaiting their outcome, each holding a reserved slot,
    /// with when the accept was sent (the lease counts from then).
    pending: HashMap<String, (JobAssignment, Instant)>,
    /// When each heartbeat of this session not yet acknowledged was sent.
    heartbeats_sent: BTreeMap<u64, Instant>,
    /// The interval the last `Welcome` gave.
    heartbeat_interval: Option<Duration>,
}

impl<A: CoordinatorApi> Session<A> {
    fn registry(&self) -> &Registry {
        &self.ctx.registry
    }

    /// Offers accepted on a lost stream will not be confirmed on it: free their slots.
    fn drop_pending(&mut self) {
        for _ in self.pending.drain() {
            self.ctx.registry.release();
        }
    }

    async fn run_once(&mut self, welcomed: &mut bool) -> Result<(), SessionError> {
        let (outbound, outbound_rx) = mpsc::channel(64);
        let hello = Hello {
            protocol_version: osprey_proto::PROTOCOL_VERSION,
            agent_token: self.settings.agent_token.clone(),
            // Every attempt still here, fenced ones too: the coordinator
            // expires at once the leases a `Hello` leaves out, and a copy
            // fenced for lease loss may still be inside its kill grace.
            // (Heartbeats list only unfenced attempts, so a lost lease is
            // never renewed by them.)
            running: self
                .registry()
                .all()
                .iter()
                .map(|job| job.as_running())
                .collect(),
            tags: self.settings.tags.clone(),
            run_untagged: self.settings.run_untagged,
            concurrency: self.settings.concurrency,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let listed = hello.running.len();
        self.heartbeats_sent.clear();
        // Taken before the send: the coordinator renews resumed leases when
        // it receives this, which is later.
        let hello_sent = Instant::now();
        send(&outbound, agent_message::Kind::Hello(hello)).await?;
        let mut inbound = self
            .client
            .clone()
            .session(ReceiverStream::new(outbound_rx))
            .await
            .map_err(SessionError::Open)?
            .into_inner();
        let first = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message())
            .await
            .map_err(|_| SessionError::NoWelcome(WELCOME_TIMEOUT))?
            .map_err(SessionError::Stream)?
            .ok_or(SessionError::Closed)?;
        let Some(coordinator_message::Kind::Welcome(welcome)) = first.kind else {
            return Err(SessionError::NotWelcome);
        };
        *welcomed = true;
        self.ctx.leases.set_terms(LeaseTerms::from_welcome(
            welcome.lease_ttl_ms,
            welcome.lease_margin_ms,
        ));
        for attempt_id in &welcome.resumed_attempt_ids {
            self.ctx.leases.renewed(attempt_id, hello_sent);
        }
        for attempt_id in &welcome.abandoned_attempt_ids {
            if let Some(job) = self.registry().get(attempt_id) {
                tracing::warn!(job_id = job.job_id, %attempt_id, "attempt abandoned by coordinator; killing local copy");
                job.abandon();
            }
        }
        tracing::info!(
            agent_id = %welcome.agent_id,
            running = listed,
            resumed = welcome.resumed_attempt_ids.len(),
            abandoned = welcome.abandoned_attempt_ids.len(),
            "session open"
        );
        let interval = match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(ms).max(Duration::from_millis(50)),
        };
        self.heartbeat_interval = Some(interval);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    seq += 1;
                    let heartbeat = Heartbeat {
                        seq,
                        running: self.registry().running(),
                        free_slots: if self.draining.is_cancelled() { 0 } else { self.registry().free_slots() },
                    };
                    if self.heartbeats_sent.len() >= UNACKED_HEARTBEATS {
                        self.heartbeats_sent.pop_first();
                    }
                    self.heartbeats_sent.insert(seq, Instant::now());
                    send(&outbound, agent_message::Kind::Heartbeat(heartbeat)).await?;
                }
                message = inbound.message() => {
                    let message = message.map_err(SessionError::Stream)?.ok_or(SessionError::Closed)?;
                    self.handle(message, &outbound).await?;
                }
            }
        }
    }

    async fn handle(
        &mut self,
        message: CoordinatorMessage,
        outbound: &mpsc::Sender<AgentMessage>,
    ) -> Result<(), SessionError> {
        let Some(kind) = message.kind else {
            return Ok(());
        };
        match kind {
            coordinator_message::Kind::Offer(offer) => {
                let Some(assignment) = offer.assignment else {
                    return reject(outbound, offer.offer_id, "offer without assignment").await;
                };
                if self.pending.contains_key(&offer.offer_id) {
                    // A repeated offer: accepting again is twice-safe.
                    let accept = AcceptOffer {
                        offer_id: offer.offer_id,
                    };
                    return send(outbound, agent_message::Kind::Accept(accept)).await;
                }
                if self.draining.is_cancelled() {
                    return reject(outbound, offer.offer_id, "agent shutting down").await;
                }
                if !self.registry().try_reserve() {
                    return reject(outbound, offer.offer_id, "no free slot").await;
                }
                tracing::debug!(offer_id = %offer.offer_id, "offer accepted");
                self.pending
                    .insert(offer.offer_id.clone(), (assignment, Instant::now()));
                send(
                    outbound,
                    agent_message::Kind::Accept(AcceptOffer {
                        offer_id: offer.offer_id,
                    }),
                )
                .await
            }
            coordinator_message::Kind::OfferOutcome(outcome) => {
                let Some((assignment, accepted)) = self.pending.remove(&outcome.offer_id) else {
                    return Ok(());
                };
                if !outcome.confirmed {
                    tracing::debug!(offer_id = %outcome.offer_id, "offer withdrawn");
                    self.registry().release();
                    return Ok(());
                }
                // The lease has a deadline before the job exists.
                self.ctx.leases.renewed(&assignment.attempt_id, accepted);
                self.launch(assignment);
                Ok(())
            }
            coordinator_message::Kind::Cancel(cancel) => {
                let ack = CancelAck {
                    job_id: cancel.job_id,
                    attempt_id: cancel.attempt_id.clone(),
                };
                send(outbound, agent_message::Kind::CancelAck(ack)).await?;
                self.cancel(&cancel);
                Ok(())
            }
            coordinator_message::Kind::Abandon(abandon) => {
                if let Some(job) = self.registry().get(&abandon.attempt_id) {
                    tracing::warn!(job_id = abandon.job_id, attempt_id = %abandon.attempt_id, reason = %abandon.reason, "attempt abandoned; killing local copy");
                    job.abandon();
                }
                Ok(())
            }
            coordinator_message::Kind::HeartbeatAck(ack) => {
                // Acks come in order: older unacked heartbeats will not be.
                let Some(sent) = self.heartbeats_sent.remove(&ack.seq) else {
                    return Ok(());
                };
                self.heartbeats_sent = self.heartbeats_sent.split_off(&ack.seq);
                for attempt_id in &ack.renewed_attempt_ids {
                    self.ctx.leases.renewed(attempt_id, sent);
                }
                Ok(())
            }
            coordinator_message::Kind::Welcome(_) => Ok(()),
            // Advisory: a background fetch into the mirror, never an error.
            coordinator_message::Kind::Prefetch(prefetch) => {
                self.ctx
                    .git
                    .prefetch(&self.tasks, prefetch.repo_url, prefetch.sha);
                Ok(())
            }
        }
    }

    fn cancel(&self, cancel: &CancelJob) {
        let job = match self.registry().get(&cancel.attempt_id) {
            Some(job) => Some(job),
            None if cancel.attempt_id.is_empty() => self.registry().by_job(cancel.job_id),
            None => None,
        };
        let Some(job) = job else {
            tracing::debug!(
                job_id = cancel.job_id,
                "cancel for an attempt not running here"
            );
            return;
        };
        tracing::info!(job_id = job.job_id, reason = %cancel.reason, "job canceled by coordinator");
        let grace = match cancel.grace_period_ms {
            0 => self.ctx.kill_grace,
            ms => Duration::from_millis(ms),
        };
        job.stop(StopCause::Canceled { grace });
    }

    fn launch(&self, assignment: JobAssignment) {
        let attempt_id = assignment.attempt_id.clone();
        match job_runner::start(self.ctx.clone(), assignment) {
            Ok(job) => self.tasks.spawn("job", job),
            Err(err) => {
                // The lease will expire and the coordinator will retry elsewhere.
                tracing::error!(error = %err, %attempt_id, "cannot start job");
            }
        }
    }
}

async fn send(
    outbound: &mpsc::Sender<AgentMessage>,
    kind: agent_message::Kind,
) -> Result<(), SessionError> {
    outbound
        .send(AgentMessage { kind: Some(kind) })
        .await
        .map_err(|_| SessionError::Closed)
}

async fn reject(
    outbound: &mpsc::Sender<AgentMessage>,
    offer_id: String,
    reason: &str,
) -> Result<(), SessionError> {
    tracing::debug!(%offer_id, reason, "offer rejected");
    let reject = RejectOffer {
        offer_id,
        reason: reason.to_owned(),
    };
    send(outbound, agent_message::Kind::Reject(reject)).await
}
