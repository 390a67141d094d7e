//! [`apply`]: one event on one pipeline, the new state and its effects.
//! Every rule of a job's life is here — retry, resource groups, what a
//! lease expiry means, manual play re-opening a finished pipeline, `start_in`
//! — so storage only loads, persists and hands the effects back.

use super::stages::{self, Decision};
use super::state::{
    AttemptEnd, Context, Effect, Event, JobState, PipelineState, Refusal, Transition,
};
use osprey_shared::{Failure, FailureReason, JobId, JobStatus, PipelineStatus};

/// What the log says of an attempt whose lease ran out during a cancel.
pub const CANCEL_UNCONFIRMED: &str = "canceled (agent did not confirm)";
/// What the log says of an attempt whose lease ran out.
pub const AGENT_LOST: &str = "agent lost";

/// Applies `event` to `state`. Refused events change nothing; an event that
/// finds its work already done (a second report of a final status, an
/// expired lease of an attempt that ended) is a transition without changes.
pub fn apply(
    state: &PipelineState,
    event: &Event,
    context: &Context,
) -> Result<Transition, Refusal> {
    let mut next = state.clone();
    let now = context.now;
    match event {
        Event::Advance | Event::CancelRequested | Event::DelaysElapsed => {}
        Event::Assigned {
            job,
            attempt_id,
            lease_epoch,
            agent_id,
            agent_name,
            job_token_sha256,
        } => {
            let job = find(&mut next, *job)?;
            if job.status != JobStatus::Pending {
                return Err(Refusal::NotPending {
                    job: job.id,
                    status: job.status,
                });
            }
            job.status = JobStatus::Running;
            job.attempt += 1;
            job.attempt_id = Some(attempt_id.clone());
            job.lease_epoch = *lease_epoch;
            job.agent_id = Some(agent_id.clone());
            job.agent_name = Some(agent_name.clone());
            job.job_token_sha256 = Some(job_token_sha256.clone());
            job.cancel_requested = false;
            job.started_at = Some(now);
            job.finished_at = None;
            job.exit_code = None;
            job.failure_kind = None;
            job.failure_message = None;
        }
        Event::AttemptEnded {
            job,
            attempt_id,
            lease_epoch,
            end,
        } => {
            let job = find(&mut next, *job)?;
            fence(job, attempt_id, *lease_epoch)?;
            if job.status == JobStatus::Running {
                end_attempt(job, end, now);
            }
        }
        Event::LeaseExpired {
            job,
            attempt_id,
            lease_epoch,
        } => {
            let job = find(&mut next, *job)?;
            if fence(job, attempt_id, *lease_epoch).is_err() || job.status != JobStatus::Running {
                return Ok(unchanged(state));
            }
            // Whatever the agent does next carries the old epoch: fenced.
            job.lease_epoch += 1;
            let end = if job.cancel_requested {
                AttemptEnd::Canceled {
                    message: Some(CANCEL_UNCONFIRMED.to_owned()),
                }
            } else {
                AttemptEnd::Failed {
                    exit_code: None,
                    failure: Failure::new(FailureReason::RunnerSystemFailure, AGENT_LOST),
                }
            };
            end_attempt(job, &end, now);
        }
        Event::ManualPlayed { job } => {
            let index = index_of(&next, *job)?;
            let status = next.jobs[index].status;
            if status != JobStatus::Manual {
                return Err(Refusal::NotManual { job: *job, status });
            }
            // As on GitLab, a finished (or blocked) pipeline runs again while
            // the job does. A canceled one stays canceled.
            if matches!(
                next.status,
                PipelineStatus::Success | PipelineStatus::Failed | PipelineStatus::Manual
            ) {
                next.status = PipelineStatus::Running;
                next.finished_at = None;
            }
            make_ready(&mut next, index, context);
        }
        Event::RetryRequested { jobs } => retry(&mut next, jobs)?,
        Event::Prevented { job, failure } => {
            let job = find(&mut next, *job)?;
            if job.status != JobStatus::Pending {
                return Err(Refusal::NotPending {
                    job: job.id,
                    status: job.status,
                });
            }
            let message = Some(failure.message.clone());
            finish(
                job,
                JobStatus::Failed,
                None,
                Some(failure.reason),
                message,
                now,
            );
        }
        Event::ResourceFreed { job } => {
            let index = index_of(&next, *job)?;
            if next.jobs[index].status == JobStatus::WaitingForResource {
                make_ready(&mut next, index, context);
            }
        }
    }
    if *event == Event::CancelRequested {
        cancel(&mut next, now);
    }
    if *event == Event::DelaysElapsed {
        for index in 0..next.jobs.len() {
            let job = &next.jobs[index];
            if job.status == JobStatus::Scheduled && job.scheduled_at.is_none_or(|at| at <= now) {
                make_ready(&mut next, index, context);
            }
        }
    }
    advance(&mut next, context);
    let effects = effects(state, &next);
    Ok(Transition {
        state: next,
        effects,
    })
}

/// Puts finished jobs back to wait for their turn (GitLab's retry), with
/// the jobs skipped after them: later stages, and whatever `needs` them.
fn retry(state: &mut PipelineState, jobs: &[JobId]) -> Result<(), Refusal> {
    if jobs.is_empty() {
        return Err(Refusal::NothingToRetry);
    }
    let mut retried = Vec::new();
    for job in jobs {
        let index = index_of(state, *job)?;
        let status = state.jobs[index].status;
        if !matches!(
            status,
            JobStatus::Failed | JobStatus::Canceled | JobStatus::Success
        ) {
            return Err(Refusal::NotRetryable { job: *job, status });
        }
        retried.push(index);
    }
    let first_stage = retried
        .iter()
        .map(|index| state.jobs[*index].stage_index)
        .min()
        .unwrap_or(0);
    let names: Vec<String> = retried
        .iter()
        .map(|index| state.jobs[*index].name.clone())
        .collect();
    for (index, job) in state.jobs.iter_mut().enumerate() {
        let downstream = job.status == JobStatus::Skipped
            && (job.stage_index > first_stage
                || job
                    .needs
                    .as_ref()
                    .is_some_and(|needs| needs.iter().any(|need| names.contains(need))));
        if retried.contains(&index) || downstream {
            job.status = JobStatus::Created;
            job.cancel_requested = false;
            job.exit_code = None;
            job.failure_kind = None;
            job.failure_message = None;
            job.finished_at = None;
        }
    }
    if state.status.is_finished() {
        state.status = PipelineStatus::Running;
        state.finished_at = None;
    }
    Ok(())
}

fn unchanged(state: &PipelineState) -> Transition {
    Transition {
        state: state.clone(),
        effects: Vec::new(),
    }
}

fn index_of(state: &PipelineState, job: JobId) -> Result<usize, Refusal> {
    state
        .jobs
        .iter()
        .position(|candidate| candidate.id == job)
        .ok_or(Refusal::UnknownJob(job))
}

fn find(state: &mut PipelineState, job: JobId) -> Result<&mut JobState, Refusal> {
    let index = index_of(state, job)?;
    Ok(&mut state.jobs[index])
}

fn fence(job: &JobState, attempt_id: &str, lease_epoch: u64) -> Result<(), Refusal> {
    if job.attempt_id.as_deref() == Some(attempt_id) && job.lease_epoch == lease_epoch {
        Ok(())
    } else {
        Err(Refusal::StaleAttempt {
            job: job.id,
            attempt_id: attempt_id.to_owned(),
            lease_epoch,
        })
    }
}

/// Ends a running attempt: back to pending as a new attempt when `retry:`
/// covers the failure, else final.
fn end_attempt(job: &mut JobState, end: &AttemptEnd, now: time::OffsetDateTime) {
    match end {
        AttemptEnd::Success => finish(job, JobStatus::Success, None, None, None, now),
        AttemptEnd::Canceled { message } => {
            finish(job, JobStatus::Canceled, None, None, message.clone(), now)
        }
        AttemptEnd::Failed { exit_code, failure } if retries(job, failure, *exit_code) => {
            job.status = JobStatus::Pending;
            job.cancel_requested = false;
            job.exit_code = *exit_code;
            job.failure_kind = Some(failure.reason);
            job.failure_message = Some(format!("{} (retrying)", failure.message));
        }
        AttemptEnd::Failed { exit_code, failure } => finish(
            job,
            JobStatus::Failed,
            *exit_code,
            Some(failure.reason),
            Some(failure.message.clone()),
            now,
        ),
    }
}

fn finish(
    job: &mut JobState,
    status: JobStatus,
    exit_code: Option<i32>,
    kind: Option<FailureReason>,
    message: Option<String>,
    now: time::OffsetDateTime,
) {
    job.status = status;
    job.exit_code = exit_code;
    job.failure_kind = kind;
    job.failure_message = message;
    job.finished_at = Some(now);
}

/// Whether a failed attempt is retried, by GitLab's `retry:` rules: while
/// attempts remain, when the reason is one `retry:when` names (any, if it
/// names none) and the exit code one of `retry:exit_codes` (any, if none).
pub fn retries(job: &JobState, failure: &Failure, exit_code: Option<i32>) -> bool {
    let retry = &job.retry;
    if job.attempt > retry.max {
        return false;
    }
    let when_ok = retry.when.is_empty()
        || retry
            .when
            .iter()
            .any(|when| failure.reason.matches_retry_when(when));
    let code_ok = retry.exit_codes.is_empty()
        || exit_code.is_some_and(|code| retry.exit_codes.contains(&code));
    when_ok && code_ok
}

/// A job whose turn has come: pending, or waiting while another job holds
/// its resource group (here or in another pipeline).
fn make_ready(state: &mut PipelineState, index: usize, context: &Context) {
    let busy = state.jobs[index]
        .resource_group
        .as_ref()
        .is_some_and(|group| {
            context.held_elsewhere.contains(group)
                || state.jobs.iter().enumerate().any(|(other, job)| {
                    other != index
                        && job.holds_resource()
                        && job.resource_group.as_ref() == Some(group)
                })
        });
    state.jobs[index].status = if busy {
        JobStatus::WaitingForResource
    } else {
        JobStatus::Pending
    };
}

/// Waiting jobs end `canceled` at once; running ones are asked to stop and
/// end `canceled` when their agent confirms (or their lease runs out).
fn cancel(state: &mut PipelineState, now: time::OffsetDateTime) {
    for job in &mut state.jobs {
        match job.status {
            JobStatus::Created
            | JobStatus::Pending
            | JobStatus::Manual
            | JobStatus::Scheduled
            | JobStatus::WaitingForResource => {
                job.status = JobStatus::Canceled;
                job.finished_at = Some(now);
            }
            JobStatus::Running => job.cancel_requested = true,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped => {}
        }
    }
}

/// Runs the stage rules and carries out their decisions.
fn advance(state: &mut PipelineState, context: &Context) {
    for decision in stages::advance(&state.jobs, state.status) {
        match decision {
            Decision::MakePending(job) => {
                if let Ok(index) = index_of(state, job) {
                    make_ready(state, index, context);
                }
            }
            Decision::MakeManual(job) => set_status(state, job, JobStatus::Manual),
            Decision::Skip(job) => set_status(state, job, JobStatus::Skipped),
            Decision::Schedule(job) => {
                if let Ok(job) = find(state, job) {
                    let delay = job.start_in_seconds.unwrap_or(0);
                    job.status = JobStatus::Scheduled;
                    job.scheduled_at = Some(
                        context.now
                            + time::Duration::seconds(i64::try_from(delay).unwrap_or(i64::MAX)),
                    );
                }
            }
            Decision::SetPipelineStatus(status) => {
                state.status = status;
                state.finished_at = status.is_finished().then_some(context.now);
            }
        }
    }
}

fn set_status(state: &mut PipelineState, job: JobId, status: JobStatus) {
    if let Ok(job) = find(state, job) {
        job.status = status;
    }
}

/// The effects of going from `before` to `after`, read off the difference.
fn effects(before: &PipelineState, after: &PipelineState) -> Vec<Effect> {
    let mut effects = Vec::new();
    for (old, new) in before.jobs.iter().zip(&after.jobs) {
        if new.status == JobStatus::Pending && old.status != JobStatus::Pending {
            effects.push(Effect::Queue(new.id));
        }
        if new.cancel_requested && !old.cancel_requested {
            effects.push(Effect::CancelOnAgent(new.id));
        }
        if new.lease_epoch > old.lease_epoch && new.attempt == old.attempt {
            effects.push(Effect::AbandonOnAgent(new.id));
        }
        if old.holds_resource() && !new.holds_resource() {
            if let Some(group) = &old.resource_group {
                let effect = Effect::ReleaseGroup(group.clone());
                if !effects.contains(&effect) {
                    effects.push(effect);
                }
            }
        }
        if new.status == JobStatus::Scheduled && old.status != JobStatus::Scheduled {
            if let Some(at) = new.scheduled_at {
                effects.push(Effect::WakeAt(new.id, at));
            }
        }
    }
    effects
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
