//! The offer lifecycle: reserved by matching (*preparing*), sent with its
//! spec (*sent*), accepted by the agent while the store records the
//! assignment (*accepted*), then turned into a lease or given back. Every
//! state counts as a busy slot of its agent, so matching never offers a slot
//! twice; the outcome an agent is told goes out under the same lock that
//! frees or converts the slot, so no new offer overtakes it on the session.

use super::{Dispatcher, Lease, QueuedJob};
use crate::engine::matching::{self, AgentSlotView};
use osprey_proto::v1::{self, coordinator_message::Kind};
use osprey_shared::JobId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An offer: reserved by matching, then sent with its spec, then answered.
#[derive(Debug, Clone)]
pub struct Offer {
    pub job: JobId,
    pub agent: String,
    pub session: u64,
    pub state: OfferState,
    pub queued: QueuedJob,
    pub attempt_id: String,
    pub job_token: String,
}

impl Offer {
    /// Accepted by its agent: the accept path resolves it, nothing else.
    pub fn is_accepted(&self) -> bool {
        matches!(self.state, OfferState::Accepted { .. })
    }
}

/// Where an offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferState {
    /// The slot is reserved while the spec is built; the reservation lapses
    /// at `until` if it is never sent.
    Preparing { until: Instant },
    /// Sent to the agent, which must answer by `deadline` (counted from the send).
    Sent { deadline: Instant },
    /// The agent accepted and holds the slot for it; the assignment is being
    /// recorded. It lapses at `until` only if the accept path never comes
    /// back (its future dropped), so a lost slot is not lost for ever.
    Accepted { until: Instant },
}

/// A slot reserved by [`Dispatcher::dispatch`]: build the job's spec and pass
/// it to [`Dispatcher::send_offer`], or give it up with [`Dispatcher::unreserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub offer_id: String,
    pub job: JobId,
    /// The epoch the attempt will have: a job row read earlier describes
    /// this attempt only if its stored epoch is the one before.
    pub next_epoch: u64,
}

impl Dispatcher {
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
            let next_epoch = queued.next_epoch;
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
            reservations.push(Reservation {
                offer_id,
                job,
                next_epoch,
            });
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

    /// The agent accepted a sent offer of theirs: the slot stays taken while
    /// the caller records the assignment, then resolves the offer with
    /// [`Dispatcher::confirm_offer`] or [`Dispatcher::withdraw_offer`].
    /// Returns a copy of the offer; `None` if it is not open or not theirs.
    pub fn accept_offer(
        &mut self,
        agent: &str,
        offer_id: &str,
        now: Instant,
        hold: Duration,
    ) -> Option<Offer> {
        let offer = self.offers.get_mut(offer_id)?;
        if offer.agent != agent || !matches!(offer.state, OfferState::Sent { .. }) {
            return None;
        }
        offer.state = OfferState::Accepted { until: now + hold };
        Some(offer.clone())
    }

    /// The assignment of an accepted offer is recorded: its slot becomes the
    /// lease's, and the agent is told, in one step. The lease is added even
    /// if the offer lapsed or was dropped meanwhile: the store assigned it.
    pub fn confirm_offer(&mut self, offer_id: &str, job: JobId, lease: Lease) {
        self.offers.remove(offer_id);
        self.queue.remove(&job);
        let agent = lease.agent.clone();
        self.leases.insert(job, lease);
        self.send_outcome(&agent, offer_id, true);
    }

    /// An accepted offer is not assigned after all: its slot is free again
    /// and the agent is told so before any new offer can reach it. The job
    /// returns to the queue when `requeue` (recording failed), else it is
    /// dropped (the store refused: the job is no longer pending).
    pub fn withdraw_offer(&mut self, agent: &str, offer_id: &str, requeue: bool) {
        let accepted = self
            .offers
            .get(offer_id)
            .is_some_and(|offer| offer.agent == agent && offer.is_accepted());
        if accepted {
            if let Some(offer) = self.offers.remove(offer_id) {
                if requeue {
                    self.queue.insert(offer.job, offer.queued);
                }
            }
        }
        self.send_outcome(agent, offer_id, false);
    }

    /// The agent declined an offer: the job goes back to the queue.
    pub fn reject_offer(&mut self, agent: &str, offer_id: &str) {
        let sent = self.offers.get(offer_id).is_some_and(|offer| {
            offer.agent == agent && matches!(offer.state, OfferState::Sent { .. })
        });
        if sent {
            if let Some(offer) = self.offers.remove(offer_id) {
                self.queue.insert(offer.job, offer.queued);
            }
        }
    }

    fn send_outcome(&self, agent: &str, offer_id: &str, confirmed: bool) {
        self.send(
            agent,
            Kind::OfferOutcome(v1::OfferOutcome {
                offer_id: offer_id.to_owned(),
                confirmed,
            }),
        );
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
