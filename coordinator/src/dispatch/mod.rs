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
//!
//! A slot is taken from the moment it is reserved until the assignment is
//! recorded (then the lease holds it) or the offer is declined, times out or
//! its session ends: an accepted offer stays an offer, in the *accepted*
//! state, while the store records the assignment (`offers.rs`). Were it freed
//! at the accept, a round running meanwhile would offer the agent a slot it
//! does not have, and the agent would bounce the offer.

mod offers;

use crate::engine::matching;
use osprey_proto::v1::{self, coordinator_message::Kind};
use osprey_shared::JobId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

pub use offers::{Offer, OfferState, Reservation};

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
            self.requeue_offers(|offer| offer.agent == id && !offer.is_accepted());
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
            // An accepted offer is the accept path's to resolve: the store
            // may be recording its assignment right now.
            self.requeue_offers(|offer| offer.agent == id && !offer.is_accepted());
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
            OfferState::Preparing { until } | OfferState::Accepted { until } => until <= now,
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

    /// Sends `message` (a prefetch hint) once to each connected agent that
    /// could run a job of one of these tag sets, by the rules matching
    /// applies; returns how many were sent. Capacity and liveness do not
    /// matter: a busy agent may take the job later, and the hint is cheap.
    /// The session channel never blocks; a closed one drops the hint.
    pub fn prefetch(&self, tag_sets: &[BTreeSet<String>], message: &Kind) -> usize {
        self.agents
            .values()
            .filter(|agent| {
                tag_sets
                    .iter()
                    .any(|tags| matching::can_run(tags, &agent.tags, agent.run_untagged))
            })
            .filter(|agent| {
                agent
                    .sender
                    .send(Ok(v1::CoordinatorMessage {
                        kind: Some(message.clone()),
                    }))
                    .is_ok()
            })
            .count()
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

#[cfg(test)]
mod tests;
