//! The stage rules: given the jobs of one pipeline, which waiting jobs
//! become pending, manual, scheduled or skipped, and what the pipeline's
//! status is now. [`super::apply`] carries the decisions out.

use super::JobState;
use osprey_shared::pipeline::When;
use osprey_shared::{JobId, JobStatus, PipelineStatus};

/// What the stage rules decide for a waiting job, or the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The job's turn has come: queue it for an agent.
    MakePending(JobId),
    /// The job's turn has come, but a person starts it (`when: manual`).
    MakeManual(JobId),
    /// The job's turn has come; it starts after its `start_in` (`when: delayed`).
    Schedule(JobId),
    /// The job will not run (its `when` does not match its predecessors' result).
    Skip(JobId),
    /// The pipeline's status changed to this.
    SetPipelineStatus(PipelineStatus),
}

/// Moves a pipeline forward after any job changed status.
///
/// GitLab's rules: a job's predecessors are its `needs:` when it has them,
/// else every job of the earlier stages. Once every predecessor is complete,
/// `on_success`, `manual` and `delayed` jobs go ahead if no predecessor failed
/// without being allowed to, `on_failure` jobs only if one did, `always` jobs
/// in any case; the others are skipped. A manual job that may fail (the
/// default) does not hold up later stages; one with `allow_failure: false`
/// does, and a job that `needs` a manual job waits until it has run.
pub fn advance(jobs: &[JobState], current: PipelineStatus) -> Vec<Decision> {
    let mut jobs = jobs.to_vec();
    let mut effects = Vec::new();
    // Needs may point forward in file order: repeat until nothing changes.
    loop {
        let mut changed = false;
        for index in 0..jobs.len() {
            if jobs[index].status != JobStatus::Created {
                continue;
            }
            let Some(before) = predecessors_outcome(&jobs, &jobs[index]) else {
                continue;
            };
            let job = &mut jobs[index];
            let (status, effect) = match (job.when, before) {
                (When::OnSuccess, Before::Succeeded)
                | (When::OnFailure, Before::Failed)
                | (When::Always, _) => (JobStatus::Pending, Decision::MakePending(job.id)),
                (When::Manual, Before::Succeeded) => {
                    (JobStatus::Manual, Decision::MakeManual(job.id))
                }
                (When::Delayed, Before::Succeeded) => {
                    (JobStatus::Scheduled, Decision::Schedule(job.id))
                }
                (
                    When::OnSuccess | When::Manual | When::Delayed,
                    Before::Failed | Before::Skipped,
                )
                | (When::OnFailure, Before::Succeeded | Before::Skipped) => {
                    (JobStatus::Skipped, Decision::Skip(job.id))
                }
            };
            job.status = status;
            effects.push(effect);
            changed = true;
        }
        if !changed {
            break;
        }
    }

    let status = pipeline_status(&jobs, current);
    if status != current {
        effects.push(Decision::SetPipelineStatus(status));
    }
    effects
}

/// What a job's predecessors came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    Succeeded,
    /// One failed without being allowed to.
    Failed,
    /// A needed job was skipped (so, as on GitLab, only `always` jobs run).
    Skipped,
}

/// `None` while some predecessor of `job` is not complete.
fn predecessors_outcome(jobs: &[JobState], job: &JobState) -> Option<Before> {
    let mut failed = false;
    let mut skipped = false;
    match &job.needs {
        Some(needs) => {
            for needed in jobs.iter().filter(|other| needs.contains(&other.name)) {
                if !needed.status.is_finished() {
                    return None;
                }
                failed |= counts_as_failure(needed);
                skipped |= needed.status == JobStatus::Skipped;
            }
        }
        None => {
            for earlier in jobs
                .iter()
                .filter(|other| other.stage_index < job.stage_index)
            {
                if !settled(earlier) {
                    return None;
                }
                failed |= counts_as_failure(earlier);
            }
        }
    }
    Some(if failed {
        Before::Failed
    } else if skipped {
        Before::Skipped
    } else {
        Before::Succeeded
    })
}

/// Finished, or a manual job that may fail and so holds nothing up.
fn settled(job: &JobState) -> bool {
    job.status.is_finished() || (job.status == JobStatus::Manual && job.failure_allowed())
}

fn counts_as_failure(job: &JobState) -> bool {
    match job.status {
        JobStatus::Failed | JobStatus::Canceled => !job.failure_allowed(),
        JobStatus::Created
        | JobStatus::Pending
        | JobStatus::Running
        | JobStatus::Success
        | JobStatus::Skipped
        | JobStatus::Manual
        | JobStatus::Scheduled
        | JobStatus::WaitingForResource => false,
    }
}

pub(super) fn pipeline_status(jobs: &[JobState], current: PipelineStatus) -> PipelineStatus {
    if current.is_finished() {
        return current;
    }
    if jobs.iter().all(settled) {
        if jobs.iter().any(|job| job.status == JobStatus::Canceled) {
            PipelineStatus::Canceled
        } else if jobs.iter().any(counts_as_failure) {
            PipelineStatus::Failed
        } else {
            PipelineStatus::Success
        }
    } else if jobs.iter().any(|job| {
        matches!(
            job.status,
            JobStatus::Pending
                | JobStatus::Running
                | JobStatus::Scheduled
                | JobStatus::WaitingForResource
        )
    }) {
        if jobs
            .iter()
            .any(|job| job.status == JobStatus::Running || job.status.is_finished())
        {
            PipelineStatus::Running
        } else {
            PipelineStatus::Pending
        }
    } else {
        // Nothing can move until a person plays a manual job that holds the
        // rest up (GitLab shows such a pipeline as blocked / manual).
        PipelineStatus::Manual
    }
}

#[cfg(test)]
#[path = "stages_tests.rs"]
mod tests;
