//! What an agent's session may do: register, say hello, accept or reject
//! offers, heartbeat, acknowledge cancellations.

use super::Core;
use crate::auth::{new_token, token_hash};
use crate::dispatch::{ConnectedAgent, Lease, Offer, SessionSender};
use crate::error::{CoreError, CoreResult};
use crate::storage::{Assignment, NewAgent};
use osprey_proto::v1::{self, agent_message, coordinator_message::Kind};
use osprey_shared::JobId;
use std::collections::BTreeSet;
use std::time::Instant;

/// Identifies one open session of one agent.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub agent_id: String,
    pub agent_name: String,
    pub session: u64,
}

fn clean_tags(tags: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = tags
        .iter()
        .map(|tag| tag.trim().to_owned())
        .filter(|tag| !tag.is_empty())
        .collect();
    set.into_iter().collect()
}

impl Core {
    /// Registers a new agent; the answer's token is shown once and stored hashed.
    pub async fn register(&self, request: v1::RegisterRequest) -> CoreResult<v1::RegisterResponse> {
        if !crate::auth::hashes_equal(
            &token_hash(&request.registration_token),
            &token_hash(&self.settings().registration_token),
        ) {
            return Err(CoreError::Unauthenticated(
                "invalid registration token".to_owned(),
            ));
        }
        let name = request.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(CoreError::InvalidArgument(
                "agent name must be 1 to 200 characters".to_owned(),
            ));
        }
        if !matches!(request.executor.as_str(), "shell" | "docker") {
            return Err(CoreError::InvalidArgument(format!(
                "unknown executor {:?} (expected shell or docker)",
                request.executor
            )));
        }
        let agent_id = uuid::Uuid::new_v4().to_string();
        let agent_token = new_token();
        let tags = clean_tags(&request.tags);
        self.store()
            .insert_agent(NewAgent {
                id: &agent_id,
                name,
                token_sha256: &token_hash(&agent_token),
                tags: &tags,
                run_untagged: request.run_untagged,
                executor: &request.executor,
                concurrency: request.concurrency.max(1),
            })
            .await?;
        tracing::info!(agent_id = %agent_id, agent = %name, tags = ?tags, "agent registered");
        Ok(v1::RegisterResponse {
            agent_id,
            agent_token,
        })
    }

    /// Opens a session: authenticates the agent, sorts its running attempts
    /// into resumed and abandoned, queues `Welcome` and starts offering.
    pub async fn open_session(
        &self,
        hello: v1::Hello,
        sender: SessionSender,
    ) -> CoreResult<SessionHandle> {
        if hello.protocol_version != osprey_proto::PROTOCOL_VERSION {
            return Err(CoreError::InvalidArgument(format!(
                "protocol version {} is not supported (this coordinator speaks {})",
                hello.protocol_version,
                osprey_proto::PROTOCOL_VERSION
            )));
        }
        let agent = self
            .store()
            .agent_by_token(&token_hash(&hello.agent_token))
            .await?
            .ok_or_else(|| CoreError::Unauthenticated("invalid agent token".to_owned()))?;
        let tags = clean_tags(&hello.tags);
        let concurrency = hello.concurrency.max(1);
        self.store()
            .update_agent(&agent.id, &tags, hello.run_untagged, concurrency)
            .await?;

        let ttl = self.settings().lease_ttl;
        let hold = self.settings().lease_hold();
        let mut resumed = Vec::new();
        let mut abandoned = Vec::new();
        let session = {
            let mut dispatcher = self.dispatcher();
            let listed: Vec<String> = hello.running.iter().map(|r| r.attempt_id.clone()).collect();
            let gone = dispatcher.expire_unlisted(&agent.id, &listed, Instant::now());
            if gone > 0 {
                tracing::warn!(agent = %agent.name, attempts = gone, "agent restarted without its running jobs");
            }
            for running in &hello.running {
                let job = JobId(running.job_id);
                let ours = dispatcher.lease(job).is_some_and(|lease| {
                    lease.agent == agent.id
                        && lease.attempt_id == running.attempt_id
                        && lease.epoch == running.lease_epoch
                });
                if ours {
                    dispatcher.renew(
                        &agent.id,
                        &[(job, running.attempt_id.clone())],
                        Instant::now() + hold,
                    );
                    resumed.push(running.attempt_id.clone());
                } else {
                    abandoned.push(running.attempt_id.clone());
                }
            }
            let welcome = v1::CoordinatorMessage {
                kind: Some(Kind::Welcome(v1::Welcome {
                    agent_id: agent.id.clone(),
                    heartbeat_interval_ms: self.settings().heartbeat_interval.as_millis() as u64,
                    lease_ttl_ms: ttl.as_millis() as u64,
                    lease_margin_ms: self.settings().lease_margin().as_millis() as u64,
                    resumed_attempt_ids: resumed.clone(),
                    abandoned_attempt_ids: abandoned.clone(),
                })),
            };
            // Welcome goes first on the channel, before any offer.
            let _ = sender.send(Ok(welcome));
            dispatcher.connect(
                &agent.id,
                ConnectedAgent {
                    session: 0,
                    name: agent.name.clone(),
                    tags: tags.iter().cloned().collect(),
                    run_untagged: hello.run_untagged,
                    capacity: concurrency as usize,
                    sender,
                },
            )
        };
        tracing::info!(
            agent_id = %agent.id, agent = %agent.name, resumed = resumed.len(),
            abandoned = abandoned.len(), "agent connected"
        );
        self.resend_cancellations(&agent.id, &hello.running, &resumed)
            .await?;
        self.dispatch_now().await;
        self.notify();
        Ok(SessionHandle {
            agent_id: agent.id,
            agent_name: agent.name,
            session,
        })
    }

    /// A cancel sent while the agent was away is sent again on its return.
    async fn resend_cancellations(
        &self,
        agent_id: &str,
        running: &[v1::RunningAttempt],
        resumed: &[String],
    ) -> CoreResult<()> {
        for attempt in running
            .iter()
            .filter(|attempt| resumed.contains(&attempt.attempt_id))
        {
            let job = self.store().job(JobId(attempt.job_id)).await?;
            if job.is_some_and(|job| job.cancel_requested) {
                self.dispatcher().send(
                    agent_id,
                    Kind::Cancel(v1::CancelJob {
                        job_id: attempt.job_id,
                        attempt_id: attempt.attempt_id.clone(),
                        grace_period_ms: self.settings().cancel_grace.as_millis() as u64,
                        reason: "pipeline canceled".to_owned(),
                    }),
                );
            }
        }
        Ok(())
    }

    /// Handles one message of an open session.
    pub async fn on_agent_message(
        &self,
        handle: &SessionHandle,
        message: v1::AgentMessage,
    ) -> CoreResult<()> {
        // Any message is a sign of life: an agent that was left out of
        // matching (silent, or an offer timed out) gets offers again.
        let back = self
            .dispatcher()
            .seen(&handle.agent_id, handle.session, Instant::now());
        if back {
            tracing::info!(agent = %handle.agent_name, "agent responsive again");
            self.dispatch_now().await;
        }
        match message.kind {
            Some(agent_message::Kind::Accept(accept)) => {
                self.accept_offer(handle, &accept.offer_id).await
            }
            Some(agent_message::Kind::Reject(reject)) => {
                tracing::debug!(agent = %handle.agent_name, reason = %reject.reason, "offer rejected");
                self.dispatcher()
                    .reject_offer(&handle.agent_id, &reject.offer_id);
                self.dispatch_now().await;
                Ok(())
            }
            Some(agent_message::Kind::Heartbeat(heartbeat)) => {
                self.heartbeat(handle, &heartbeat);
                Ok(())
            }
            Some(agent_message::Kind::CancelAck(ack)) => {
                tracing::info!(job_id = ack.job_id, agent = %handle.agent_name, "cancel acknowledged");
                Ok(())
            }
            Some(agent_message::Kind::Hello(_)) => Err(CoreError::InvalidArgument(
                "hello is only valid as the first message of a session".to_owned(),
            )),
            None => Err(CoreError::InvalidArgument(
                "empty session message".to_owned(),
            )),
        }
    }

    /// Records an accepted offer's assignment. The offer holds its slot all
    /// the while (the dispatcher's *accepted* state) and is resolved, with
    /// the outcome sent to the agent, in one step under the dispatcher's
    /// lock: no round offers the slot again before the agent hears.
    async fn accept_offer(&self, handle: &SessionHandle, offer_id: &str) -> CoreResult<()> {
        let accepted = self.dispatcher().accept_offer(
            &handle.agent_id,
            offer_id,
            Instant::now(),
            self.settings().offer_timeout,
        );
        let result = match accepted {
            None => {
                // Not open (timed out, canceled) or not theirs: nothing to hold.
                self.dispatcher()
                    .withdraw_offer(&handle.agent_id, offer_id, false);
                Ok(())
            }
            Some(offer) => self.record_assignment(handle, offer_id, offer).await,
        };
        self.notify();
        self.dispatch_now().await;
        result
    }

    /// The store's half of an accept; resolves the accepted offer whatever happens.
    async fn record_assignment(
        &self,
        handle: &SessionHandle,
        offer_id: &str,
        offer: Offer,
    ) -> CoreResult<()> {
        if offer.queued.deploys {
            match self.prevent_outdated(offer.job).await {
                Ok(false) => {}
                Ok(true) => {
                    self.dispatcher()
                        .withdraw_offer(&handle.agent_id, offer_id, false);
                    return Ok(());
                }
                Err(error) => {
                    self.dispatcher()
                        .withdraw_offer(&handle.agent_id, offer_id, true);
                    return Err(error);
                }
            }
        }
        let assigned = self
            .store()
            .assign_job(
                offer.job,
                Assignment {
                    agent_id: &handle.agent_id,
                    agent_name: &handle.agent_name,
                    attempt_id: &offer.attempt_id,
                    lease_epoch: offer.queued.next_epoch,
                    job_token_sha256: &token_hash(&offer.job_token),
                },
            )
            .await;
        match assigned {
            Ok(true) => {
                self.dispatcher().confirm_offer(
                    offer_id,
                    offer.job,
                    Lease {
                        agent: handle.agent_id.clone(),
                        attempt_id: offer.attempt_id.clone(),
                        epoch: offer.queued.next_epoch,
                        expires_at: Instant::now() + self.settings().lease_hold(),
                    },
                );
                tracing::info!(job_id = %offer.job, agent = %handle.agent_name, "job assigned");
                self.metrics()
                    .job_dispatched(offer.queued.queued_at.elapsed());
                Ok(())
            }
            Ok(false) => {
                self.dispatcher()
                    .withdraw_offer(&handle.agent_id, offer_id, false);
                Ok(())
            }
            Err(error) => {
                self.dispatcher()
                    .withdraw_offer(&handle.agent_id, offer_id, true);
                Err(error.into())
            }
        }
    }

    /// Renews the leases a heartbeat lists and acknowledges it with the
    /// attempts renewed: the agent's lease-holder clock runs from that ack.
    fn heartbeat(&self, handle: &SessionHandle, heartbeat: &v1::Heartbeat) {
        let until = Instant::now() + self.settings().lease_hold();
        let attempts: Vec<(JobId, String)> = heartbeat
            .running
            .iter()
            .map(|running| (JobId(running.job_id), running.attempt_id.clone()))
            .collect();
        let mut dispatcher = self.dispatcher();
        let renewed = dispatcher.renew(&handle.agent_id, &attempts, until);
        for running in &heartbeat.running {
            if !renewed.contains(&running.attempt_id) {
                dispatcher.send(
                    &handle.agent_id,
                    Kind::Abandon(v1::AbandonAttempt {
                        job_id: running.job_id,
                        attempt_id: running.attempt_id.clone(),
                        reason: "the attempt is no longer this agent's".to_owned(),
                    }),
                );
            }
        }
        dispatcher.send(
            &handle.agent_id,
            Kind::HeartbeatAck(v1::HeartbeatAck {
                seq: heartbeat.seq,
                renewed_attempt_ids: renewed,
            }),
        );
    }

    /// The session ended; offers return to the queue, leases run on.
    pub async fn close_session(&self, handle: &SessionHandle) {
        self.dispatcher()
            .disconnect(&handle.agent_id, handle.session);
        tracing::info!(agent_id = %handle.agent_id, agent = %handle.agent_name, "agent disconnected");
        if let Err(error) = self.store().touch_agent(&handle.agent_id).await {
            tracing::warn!(agent_id = %handle.agent_id, error = %error, "recording when the agent was last seen");
        }
        self.dispatch_now().await;
        self.notify();
    }
}
