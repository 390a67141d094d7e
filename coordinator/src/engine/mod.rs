//! The pipeline state machine: pure logic, no I/O. Given the jobs of one
//! pipeline, [`advance`] says which waiting jobs become pending or skipped and
//! what the pipeline's status is now. Storage applies the effects in the same
//! transaction that recorded the event that led here, so a crash never leaves a
//! pipeline half-advanced.

pub mod matching;

use osprey_shared::pipeline::When;
use osprey_shared::{JobId, JobStatus, PipelineStatus};

/// What the state machine needs to know of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub id: JobId,
    pub stage_index: usize,
    pub status: JobStatus,
    pub allow_failure: bool,
    pub when: When,
}

/// A change to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The job's turn has come: queue it for an agent.
    MakePending(JobId),
    /// The job will not run (its `when` does not match the earlier stages' result).
    Skip(JobId),
    /// Cancel a job that has not started (it never reaches an agent).
    CancelWaiting(JobId),
    /// Ask the agent running the job to stop it.
    CancelRunning(JobId),
    /// The pipeline's status changed to this.
    SetPipelineStatus(PipelineStatus),
}

/// Moves a pipeline forward after any job changed status.
///
/// GitLab's rules: stages run in order; a stage starts once every job of the
/// earlier stages is finished; then its `on_success` jobs run if no earlier job
/// failed without `allow_failure`, its `on_failure` jobs only if one did, and
/// its `always` jobs in any case; the others are skipped.
pub fn advance(jobs: &[JobState], current: PipelineStatus) -> Vec<Effect> {
    let mut jobs = jobs.to_vec();
    let mut effects = Vec::new();
    let mut stages: Vec<usize> = jobs.iter().map(|job| job.stage_index).collect();
    stages.sort_unstable();
    stages.dedup();

    let mut failed_before = false;
    for stage in stages {
        let mut stage_finished = true;
        for job in jobs.iter_mut().filter(|job| job.stage_index == stage) {
            if job.status == JobStatus::Created {
                let runs = match job.when {
                    When::OnSuccess => !failed_before,
                    When::OnFailure => failed_before,
                    When::Always => true,
                };
                if runs {
                    job.status = JobStatus::Pending;
                    effects.push(Effect::MakePending(job.id));
                } else {
                    job.status = JobStatus::Skipped;
                    effects.push(Effect::Skip(job.id));
                }
            }
            stage_finished &= job.status.is_finished();
        }
        if !stage_finished {
            break;
        }
        failed_before |= jobs
            .iter()
            .filter(|job| job.stage_index == stage)
            .any(counts_as_failure);
    }

    let status = pipeline_status(&jobs, current);
    if status != current {
        effects.push(Effect::SetPipelineStatus(status));
    }
    effects
}

/// Cancels a whole pipeline: waiting jobs end `canceled` at once, running ones
/// are asked to stop and end `canceled` when their agent confirms.
pub fn cancel(jobs: &[JobState]) -> Vec<Effect> {
    jobs.iter()
        .filter_map(|job| match job.status {
            JobStatus::Created | JobStatus::Pending | JobStatus::Manual => {
                Some(Effect::CancelWaiting(job.id))
            }
            JobStatus::Running => Some(Effect::CancelRunning(job.id)),
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped => {
                None
            }
        })
        .collect()
}

fn counts_as_failure(job: &JobState) -> bool {
    match job.status {
        JobStatus::Failed | JobStatus::Canceled => !job.allow_failure,
        JobStatus::Created
        | JobStatus::Pending
        | JobStatus::Running
        | JobStatus::Success
        | JobStatus::Skipped
        | JobStatus::Manual => false,
    }
}

fn pipeline_status(jobs: &[JobState], current: PipelineStatus) -> PipelineStatus {
    if current.is_finished() {
        return current;
    }
    if jobs.iter().all(|job| job.status.is_finished()) {
        if jobs.iter().any(|job| job.status == JobStatus::Canceled) {
            PipelineStatus::Canceled
        } else if jobs.iter().any(counts_as_failure) {
            PipelineStatus::Failed
        } else {
            PipelineStatus::Success
        }
    } else if jobs
        .iter()
        .any(|job| job.status == JobStatus::Running || job.status.is_finished())
    {
        PipelineStatus::Running
    } else {
        PipelineStatus::Pending
    }
}

#[cfg(test)]
mod tests;
