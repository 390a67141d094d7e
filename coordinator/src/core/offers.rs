//! Offering queued jobs: the dispatcher reserves (job, agent) slots under its
//! lock, then each job's spec is built here from the store, without the
//! lock, and sent on the agent's session. Building the spec at offer time,
//! not at enqueue, is what keeps the queue small: a backlog of thousands of
//! pending jobs holds their tags, not their scripts and variables.

use super::Core;
use crate::dispatch::Reservation;
use crate::error::{CoreError, CoreResult};
use crate::spec;
use crate::storage::{JobRow, PipelineRow};
use osprey_proto::v1;
use osprey_shared::pipeline::Pipeline;
use osprey_shared::{JobId, JobStatus, PipelineId};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Instant;

/// A pipeline read and decoded once per dispatch round, however many of its
/// jobs the round offers: its row and global variables without the jobs'
/// definitions, and its jobs without theirs (only the offered job's is read).
struct PipelineContext {
    row: PipelineRow,
    definition: Pipeline,
    jobs: Vec<JobRow>,
    project: super::ProjectContext,
}

impl Core {
    /// Offers every queued job a free agent can take. Rounds repeat while a
    /// reservation was dropped (its job no longer pending), since that freed
    /// a slot another queued job may fit; a reservation put back after a
    /// store error waits for the next trigger instead of spinning.
    pub(super) async fn dispatch_now(&self) {
        self.dispatch_with(&[]).await;
    }

    /// [`Core::dispatch_now`] right after `fresh` were read from the store
    /// as pending and queued: their offers are built from these rows instead
    /// of reading each job again (the rows live for this call only, so the
    /// queue still holds no specs).
    pub(super) async fn dispatch_with(&self, fresh: &[JobRow]) {
        let fresh: HashMap<JobId, &JobRow> = fresh.iter().map(|row| (row.id(), row)).collect();
        loop {
            let timeout = self.settings().offer_timeout;
            let reservations = self.dispatcher().dispatch(Instant::now(), timeout);
            if reservations.is_empty() || self.offer_reserved(reservations, &fresh).await == 0 {
                return;
            }
        }
    }

    /// Builds and sends the offers of one round; returns how many
    /// reservations were dropped because their job is no longer pending.
    async fn offer_reserved(
        &self,
        reservations: Vec<Reservation>,
        fresh: &HashMap<JobId, &JobRow>,
    ) -> usize {
        let mut pipelines: HashMap<PipelineId, Option<PipelineContext>> = HashMap::new();
        let mut dropped = 0;
        for reservation in reservations {
            match self.offer_spec(&reservation, fresh, &mut pipelines).await {
                Ok(Some(spec)) => {
                    // The spec is moved into the message: nothing of it stays here.
                    let timeout = self.settings().offer_timeout;
                    self.dispatcher().send_offer(
                        &reservation.offer_id,
                        spec,
                        Instant::now(),
                        timeout,
                    );
                }
                Ok(None) => {
                    tracing::debug!(job_id = %reservation.job, "reserved job no longer pending");
                    self.dispatcher().unreserve(&reservation.offer_id, false);
                    dropped += 1;
                }
                Err(error) => {
                    tracing::warn!(job_id = %reservation.job, error = %error, "building the offer failed; the job stays queued");
                    self.dispatcher().unreserve(&reservation.offer_id, true);
                }
            }
        }
        dropped
    }

    /// The spec of a reserved job, or `None` if the job is gone or no longer
    /// pending (canceled meanwhile). Reads the job unless `fresh` has its row
    /// for this very attempt, and its pipeline once per round through
    /// `pipelines`. A job canceled after its fresh row was read loses its
    /// reservation to the cancel (the offer is never sent), or, canceled
    /// before it was queued, is refused by the store at the assignment (the
    /// agent hears no): the store stays the judge of what is pending.
    async fn offer_spec(
        &self,
        reservation: &Reservation,
        fresh: &HashMap<JobId, &JobRow>,
        pipelines: &mut HashMap<PipelineId, Option<PipelineContext>>,
    ) -> CoreResult<Option<v1::JobSpec>> {
        let stored;
        let job: &JobRow = match fresh.get(&reservation.job) {
            Some(row) if row.lease_epoch as u64 + 1 == reservation.next_epoch => row,
            _ => {
                stored = self.store().job(reservation.job).await?;
                let Some(row) = &stored else {
                    return Ok(None);
                };
                row
            }
        };
        if job.status() != JobStatus::Pending {
            return Ok(None);
        }
        let pipeline_id = job.pipeline_id();
        if let Entry::Vacant(entry) = pipelines.entry(pipeline_id) {
            let context = match self.store().pipeline_without_jobs(pipeline_id).await? {
                None => None,
                Some(row) => {
                    let definition = serde_json::from_str(&row.definition).map_err(|error| {
                        CoreError::Internal(format!("decoding pipeline: {error}"))
                    })?;
                    let jobs = self
                        .store()
                        .jobs_of_without_definitions(pipeline_id)
                        .await?;
                    let project = self.project_context(&row).await?;
                    Some(PipelineContext {
                        row,
                        definition,
                        jobs,
                        project,
                    })
                }
            };
            entry.insert(context);
        }
        let Some(context) = &pipelines[&pipeline_id] else {
            return Ok(None);
        };
        let job_def = job
            .definition()
            .map_err(|error| CoreError::Internal(format!("decoding job: {error}")))?;
        let sources = spec::artifact_sources(job, &job_def, &context.jobs);
        let inputs = spec::SpecInputs {
            pipeline: &context.row,
            definition: &context.definition,
            server_url: &self.settings().server_url,
            project: &context.project,
        };
        Ok(Some(spec::job_spec(&inputs, job, &job_def, &sources)))
    }
}
