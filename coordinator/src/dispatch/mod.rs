//! Dispatch: the in-memory view of connected agents, the pending queue,
//! outstanding offers and leases. A cache over the store, rebuilt at start;
//! it never touches the database itself. It also tracks whether each agent
//! shows life: one whose offer timed out or that has been silent past the
//! silence limit gets no offers until its next message (a partitioned agent
//! must not hold up jobs another agent could run). Every method is
//! synchronous and called under one mutex by [`crate::core`]; messages to
//! agents are queued on their session channels, never awaited.
//!
//! The queue holds only what matching needs (tags, next epoch), never a job's
//! spec: memory grows with what is offered or running, not with the backlog.
//! Offering is two steps. [`Dispatcher::dispatch`] picks (job, agent) pairs
//! and reserves each slot as a *preparing* offer, which counts as busy so no
//! second round picks it; the caller builds the spec from the store without
//! the lock and hands it to [`Dispatcher::send_offer`], which sends it if the
//! reservation still stands (the job not canceled, the agent's session the
//! same). A reservation whose builder never comes back (its future dropped)
//! returns to the queue after the offer timeout, like an unanswered offer but
//! without holding it against the agent.

use crate::engine::matching::{self, AgentSlotView};
use osprey_proto::v1::{self, coordinator_message::Kind};
use osprey_shared::JobId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Messages to one agent's session stream.
pub type SessionSender = UnboundedSender<Result<v1::CoordinatorMessage, tonic::Status>>;

/// A connected agent.
pub struct ConnectedAgent {
    /// Distinguishes a reconnected session from the one it replaced.
    pub session: u64,
    pub name: String,
    pub tags: BTreeSet<String>,
    pub run_untagged: bool,
    pub capacity: usize,
    pub sender: SessionSender,
}

/// A pending job waiting for an agent: only what matching needs, small and
/// bounded whatever the job's scripts and variables (the spec is built from
/// the store when the job is offered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub tags: BTreeSet<String>,
    /// Epoch of the next attempt (the job's stored epoch + 1).
    pub next_epoch: u64,
    /// It deploys (`environment:` action start): checked for an outdated
    /// deployment before it is assigned.
    pub deploys: bool,
    /// When it was first queued: kept while it goes back and forth between
    /// queue and offers, so the dispatch latency counts every wait.
    pub queued_at: Instant,
}

/// The queued jobs of one tag set, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGroup {
    pub tags: BTreeSet<String>,
    pub jobs: usize,
    /// How long the oldest of them has waited.
    pub oldest: Duration,
}

/// The connected agents' slots, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotSummary {
    pub agents: usize,
    /// Capacity not taken by a lease or an offer, summed over the agents.
    pub free_slots: usize,
}

/// An offer: reserved by matching, then sent with its spec, then answered.
pub struct Offer {
    pub job: JobId,
    pub agent: String,
    pub session: u64,
    pub state: OfferState,
    pub queued: QueuedJob,
    pub attempt_id: String,
    pub job_token: String,
}

/// Where an offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferState {
    /// The slot is reserved while the spec is built; the reservation lapses
    /// at `until` if it is never sent.
    Preparing { until: Instant },
    /// Sent to the agent, which must answer by `deadline` (counted from the send).
    Sent { deadline: Instant },
}

/// A slot reserved by [`Dispatcher::dispatch`]: build the job's spec and pass
/// it to [`Dispatcher::send_offer`], or give it up with [`Dispatcher::unreserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub offer_id: String,
    pub job: JobId,
}

/// An attempt's lease: renewed by the agent's heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub agent: String,
    pub attempt_id: String,
    pub epoch: u64,
    pub expires_at: Instant,
}

/// Whether an agent shows life, as the dispatcher last saw it.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    /// When its session last carried a message (or opened).
    last_seen: Instant,
    /// An offer to it timed out since that message.
    offer_timed_out: bool,
}

/// The dispatcher's state.
pub struct Dispatcher {
    agents: HashMap<String, ConnectedAgent>,
    liveness: HashMap<String, Liveness>,
    /// Silence after which an agent gets no offers.
    silence_limit: Duration,
    queue: BTreeMap<JobId, QueuedJob>,
    offers: HashMap<String, Offer>,
    leases: HashMap<JobId, Lease>,
    /// Latest expiry of leases whose job is being canceled: heartbeats cannot
    /// extend them past it, so an agent that never confirms cannot keep a
    /// canceled job running forever.
    lease_caps: HashMap<JobId, Instant>,
    next_session: u64,
}

impl Dispatcher {
    /// An empty dispatcher; agents silent for `silence_limit` get no offers.
    pub fn new(silence_limit: Duration) -> Self {
        Self {
            agents: HashMap::new(),
            liveness: HashMap::new(),
            silence_limit,
            queue: BTreeMap::new(),
            offers: HashMap::new(),
            leases: HashMap::new(),
            lease_caps: HashMap::new(),
            next_session: 0,
        }
    }

    /// Adds (or replaces) a connected agent; returns its session number.
    pub fn connect(&mut self, id: &str, mut agent: ConnectedAgent) -> u64 {
        self.next_session += 1;
        agent.session = self.next_session;
        self.liveness.insert(
            id.to_owned(),
            Liveness {
                last_seen: Instant::now(),
                offer_timed_out: false,
            },
        );
        if self.agents.insert(id.to_owned(), agent).is_some() {
            self.requeue_offers(|offer| offer.agent == id);
        }
        self.next_session
    }

    /// The agent's session ended. Its offers return to the queue; its leases
    /// stay until they expire, so a quick reconnect keeps its jobs.
    pub fn disconnect(&mut self, id: &str, session: u64) {
        if self
            .agents
            .get(id)
            .is_some_and(|agent| agent.session == session)
        {
            self.agents.remove(id);
            self.liveness.remove(id);
            self.requeue_offers(|offer| offer.agent == id);
        }
    }

    pub fn is_connected(&self, id: &str) -> bool {
        self.agents.contains_key(id)
    }

    /// The agent's session `session` carried a message at `now`. Returns
    /// true when the agent had been left out of matching and is back.
    pub fn seen(&mut self, id: &str, session: u64, now: Instant) -> bool {
        if self
            .agents
            .get(id)
            .is_none_or(|agent| agent.session != session)
        {
            return false;
        }
        let silence_limit = self.silence_limit;
        let Some(liveness) = self.liveness.get_mut(id) else {
            return false;
        };
        let was_out = !liveness.responsive(now, silence_limit);
        liveness.last_seen = liveness.last_seen.max(now);
        liveness.offer_timed_out = false;
        was_out
    }

    /// Whether the agent may be offered jobs at `now`.
    pub fn is_responsive(&self, id: &str, now: Instant) -> bool {
        self.liveness
            .get(id)
            .is_some_and(|liveness| liveness.responsive(now, self.silence_limit))
    }

    pub fn enqueue(&mut self, job: JobId, mut queued: QueuedJob) {
        if !self.leases.contains_key(&job) && !self.offers.values().any(|offer| offer.job == job) {
            // Queued again while queued: it has waited since the first time.
            if let Some(earlier) = self.queue.get(&job) {
                queued.queued_at = queued.queued_at.min(earlier.queued_at);
            }
            self.queue.insert(job, queued);
        }
    }

    /// The queue by tag set: how many jobs, and the longest wait at `now`.
    /// Offers in flight are not in the queue, so they are not counted.
    pub fn queue_groups(&self, now: Instant) -> Vec<QueueGroup> {
        let mut groups: BTreeMap<&BTreeSet<String>, QueueGroup> = BTreeMap::new();
        for queued in self.queue.values() {
            let waited = now.saturating_duration_since(queued.queued_at);
            let group = groups.entry(&queued.tags).or_insert_with(|| QueueGroup {
                tags: queued.tags.clone(),
                jobs: 0,
                oldest: Duration::ZERO,
            });
            group.jobs += 1;
            group.oldest = group.oldest.max(waited);
        }
        groups.into_values().collect()
    }

    /// How many agents are connected and how many of their slots are free.
    pub fn slot_summary(&self) -> SlotSummary {
        let mut busy: HashMap<&str, usize> = HashMap::new();
        for lease in self.leases.values() {
            *busy.entry(lease.agent.as_str()).or_default() += 1;
        }
        for offer in self.offers.values() {
            *busy.entry(offer.agent.as_str()).or_default() += 1;
        }
        let free_slots = self
            .agents
            .iter()
            .map(|(id, agent)| {
                let taken = busy.get(id.as_str()).copied().unwrap_or(0);
                agent.capacity.saturating_sub(taken)
            })
            .sum();
        SlotSummary {
            agents: self.agents.len(),
            free_slots,
        }
    }

    /// Drops a job from the queue (canceled before it was offered).
    pub fn dequeue(&mut self, job: JobId) {
        self.queue.remove(&job);
        self.offers.retain(|_, offer| offer.job != job);
    }

    pub fn is_queued(&self, job: JobId) -> bool {
        self.queue.contains_key(&job)
    }

    /// Why no connected agent can take a queued job, if none can.
    pub fn pending_reason(&self, tags: &BTreeSet<String>) -> Option<String> {
        matching::pending_reason(
            tags,
            self.agents
                .values()
                .map(|agent| (&agent.tags, agent.run_untagged)),
        )
    }

    /// Reserves a slot for every queued job that an agent with a free slot
    /// can take; the caller builds each spec and sends it (module doc).
    /// Pure matching: no spec is built or sent under the lock.
    pub fn dispatch(&mut self, now: Instant, offer_timeout: Duration) -> Vec<Reservation> {
        if self.queue.is_empty() || self.agents.is_empty() {
            return Vec::new();
        }
        let mut busy: HashMap<&str, usize> = HashMap::new();
        for lease in self.leases.values() {
            *busy.entry(lease.agent.as_str()).or_default() += 1;
        }
        // Preparing offers count too: a slot is reserved once.
        for offer in self.offers.values() {
            *busy.entry(offer.agent.as_str()).or_default() += 1;
        }
        let mut views: Vec<AgentSlotView<'_, String>> = self
            .agents
            .iter()
            .map(|(id, agent)| AgentSlotView {
                key: id.clone(),
                tags: &agent.tags,
                run_untagged: agent.run_untagged,
                capacity: agent.capacity,
                busy: busy.get(id.as_str()).copied().unwrap_or(0),
                responsive: self.is_responsive(id, now),
            })
            .collect();
        let mut picks = Vec::new();
        for (job, queued) in &self.queue {
            let Some(agent_id) = matching::pick_agent(&queued.tags, &views) else {
                continue;
            };
            if let Some(view) = views.iter_mut().find(|view| view.key == agent_id) {
                view.busy += 1;
            }
            picks.push((*job, agent_id));
        }
        drop(views);
        let mut reservations = Vec::new();
        for (job, agent_id) in picks {
            let Some(agent) = self.agents.get(&agent_id) else {
                continue;
            };
            let Some(queued) = self.queue.remove(&job) else {
                continue;
            };
            let offer_id = uuid::Uuid::new_v4().to_string();
            self.offers.insert(
                offer_id.clone(),
                Offer {
                    job,
                    agent: agent_id,
                    session: agent.session,
                    state: OfferState::Preparing {
                        until: now + offer_timeout,
                    },
                    queued,
                    attempt_id: uuid::Uuid::new_v4().to_string(),
                    job_token: crate::auth::new_token(),
                },
            );
            reservations.push(Reservation { offer_id, job });
        }
        reservations
    }

    /// Sends a reserved offer with its spec; the agent has `offer_timeout`
    /// from now to answer. False when the reservation is gone (the job
    /// canceled, the agent disconnected or replaced, the reservation lapsed)
    /// or the session is closed, in which case the job is back in the queue
    /// if it still belongs there.
    pub fn send_offer(
        &mut self,
        offer_id: &str,
        spec: v1::JobSpec,
        now: Instant,
        offer_timeout: Duration,
    ) -> bool {
        let Some(offer) = self.offers.get(offer_id) else {
            return false;
        };
        if !matches!(offer.state, OfferState::Preparing { .. }) {
            return false;
        }
        let sent = self
            .agents
            .get(&offer.agent)
            .filter(|agent| agent.session == offer.session)
            .is_some_and(|agent| {
                let message = v1::CoordinatorMessage {
                    kind: Some(Kind::Offer(v1::JobOffer {
                        offer_id: offer_id.to_owned(),
                        assignment: Some(v1::JobAssignment {
                            attempt_id: offer.attempt_id.clone(),
                            lease_epoch: offer.queued.next_epoch,
                            job_token: offer.job_token.clone(),
                            spec: Some(with_job_token(spec, &offer.job_token)),
                        }),
                    })),
                };
                agent.sender.send(Ok(message)).is_ok()
            });
        if !sent {
            self.unreserve(offer_id, true);
            return false;
        }
        if let Some(offer) = self.offers.get_mut(offer_id) {
            tracing::debug!(job_id = %offer.job, agent_id = %offer.agent, "job offered");
            offer.state = OfferState::Sent {
                deadline: now + offer_timeout,
            };
        }
        true
    }

    /// Gives up a reservation that was not sent: the job returns to the queue
    /// when `requeue` (its spec could not be built this time), else it is
    /// dropped (the job is no longer pending).
    pub fn unreserve(&mut self, offer_id: &str, requeue: bool) {
        let preparing = self
            .offers
            .get(offer_id)
            .is_some_and(|offer| matches!(offer.state, OfferState::Preparing { .. }));
        if !preparing {
            return;
        }
        if let Some(offer) = self.offers.remove(offer_id) {
            if requeue {
                self.queue.insert(offer.job, offer.queued);
            }
        }
    }

    /// Takes an offer the agent accepted, if it is still open and theirs.
    pub fn take_offer(&mut self, agent: &str, offer_id: &str) -> Option<Offer> {
        match self.offers.get(offer_id) {
            Some(offer)
                if offer.agent == agent && matches!(offer.state, OfferState::Sent { .. }) =>
            {
                self.offers.remove(offer_id)
            }
            _ => None,
        }
    }

    /// The agent declined an offer: the job goes back to the queue.
    pub fn reject_offer(&mut self, agent: &str, offer_id: &str) {
        if let Some(offer) = self.take_offer(agent, offer_id) {
            self.queue.insert(offer.job, offer.queued);
        }
    }

    /// Puts an accepted offer's job back (the store refused the assignment).
    pub fn return_offer(&mut self, offer: Offer) {
        self.queue.insert(offer.job, offer.queued);
    }

    pub fn add_lease(&mut self, job: JobId, lease: Lease) {
        self.leases.insert(job, lease);
    }

    pub fn lease(&self, job: JobId) -> Option<&Lease> {
        self.leases.get(&job)
    }

    pub fn remove_lease(&mut self, job: JobId) -> Option<Lease> {
        self.lease_caps.remove(&job);
        self.leases.remove(&job)
    }

    /// Caps a lease: it expires at `deadline` at the latest, heartbeats or not.
    pub fn cap_lease(&mut self, job: JobId, deadline: Instant) {
        self.lease_caps.insert(job, deadline);
        if let Some(lease) = self.leases.get_mut(&job) {
            lease.expires_at = lease.expires_at.min(deadline);
        }
    }

    /// An agent (re)connected listing the attempts it runs: its leases on any
    /// other attempt belong to a process that is gone, so they expire now.
    pub fn expire_unlisted(&mut self, agent: &str, listed: &[String], now: Instant) -> usize {
        let mut expired = 0;
        for lease in self.leases.values_mut() {
            if lease.agent == agent && !listed.contains(&lease.attempt_id) {
                lease.expires_at = now;
                expired += 1;
            }
        }
        expired
    }

    /// Renews the leases the agent holds for these attempts and returns the
    /// attempts renewed. A renewal never shortens a lease (a log append's
    /// renewal may come after a heartbeat's longer one); only a cap does.
    pub fn renew(
        &mut self,
        agent: &str,
        attempts: &[(JobId, String)],
        until: Instant,
    ) -> Vec<String> {
        let mut renewed = Vec::new();
        for (job, attempt_id) in attempts {
            if let Some(lease) = self.leases.get_mut(job) {
                if lease.agent == agent && &lease.attempt_id == attempt_id {
                    let longer = lease.expires_at.max(until);
                    lease.expires_at = match self.lease_caps.get(job) {
                        Some(cap) => longer.min(*cap),
                        None => longer,
                    };
                    renewed.push(attempt_id.clone());
                }
            }
        }
        renewed
    }

    /// Sends a message to a connected agent; false if it is not connected.
    pub fn send(&self, agent: &str, message: Kind) -> bool {
        self.agents.get(agent).is_some_and(|connected| {
            connected
                .sender
                .send(Ok(v1::CoordinatorMessage {
                    kind: Some(message),
                }))
                .is_ok()
        })
    }

    /// Expired offers go back to the queue (not counted as a try); expired
    /// leases are removed and returned for the store to fence and fail.
    /// An agent whose offer timed out gets no more offers until it shows life;
    /// a lapsed reservation (never sent) says nothing of the agent.
    pub fn expire(&mut self, now: Instant) -> Vec<(JobId, Lease)> {
        for offer in self.offers.values() {
            let OfferState::Sent { deadline } = offer.state else {
                continue;
            };
            if deadline > now {
                continue;
            }
            if let Some(liveness) = self.liveness.get_mut(&offer.agent) {
                if !liveness.offer_timed_out {
                    tracing::warn!(agent_id = %offer.agent, "offer timed out; no offers to the agent until it shows life");
                }
                liveness.offer_timed_out = true;
            }
        }
        self.requeue_offers(|offer| match offer.state {
            OfferState::Preparing { until } => until <= now,
            OfferState::Sent { deadline } => deadline <= now,
        });
        let expired: Vec<JobId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.expires_at <= now)
            .map(|(job, _)| *job)
            .collect();
        expired
            .into_iter()
            .filter_map(|job| self.remove_lease(job).map(|lease| (job, lease)))
            .collect()
    }

    fn requeue_offers(&mut self, mut which: impl FnMut(&Offer) -> bool) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, offer)| which(offer))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(offer) = self.offers.remove(&id) {
                tracing::debug!(job_id = %offer.job, "offer returned to the queue");
                self.queue.insert(offer.job, offer.queued);
            }
        }
    }

    /// Connected agents, for the API.
    pub fn connected_ids(&self) -> BTreeSet<String> {
        self.agents.keys().cloned().collect()
    }
}

impl Liveness {
    fn responsive(&self, now: Instant, silence_limit: Duration) -> bool {
        !self.offer_timed_out && now.saturating_duration_since(self.last_seen) <= silence_limit
    }
}

/// The job token is also the `CI_JOB_TOKEN` variable of the attempt.
fn with_job_token(mut spec: v1::JobSpec, token: &str) -> v1::JobSpec {
    spec.variables.push(v1::Variable {
        key: "CI_JOB_TOKEN".to_owned(),
        value: token.to_owned(),
        masked: true,
        file: false,
    });
    spec
}

#[cfg(test)]
mod tests;
