use super::*;
use osprey_shared::pipeline::{Retry, When};
use osprey_shared::PipelineId;
use std::collections::BTreeSet;
use time::macros::datetime;

const NOW: time::OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

fn context() -> Context {
    Context {
        now: NOW,
        held_elsewhere: BTreeSet::new(),
    }
}

fn job(id: u64, stage_index: usize, status: JobStatus) -> JobState {
    JobState::new(JobId(id), format!("job{id}"), stage_index, status)
}

fn retry(max: u32, when: &[&str], exit_codes: &[i32]) -> Retry {
    Retry {
        max,
        when: when.iter().map(|when| (*when).to_owned()).collect(),
        exit_codes: exit_codes.to_vec(),
    }
}

fn pipeline(status: PipelineStatus, jobs: Vec<JobState>) -> PipelineState {
    PipelineState {
        id: PipelineId(1),
        status,
        finished_at: None,
        jobs,
    }
}

fn running(id: u64, stage_index: usize) -> JobState {
    let mut job = job(id, stage_index, JobStatus::Running);
    job.attempt = 1;
    job.attempt_id = Some(format!("a{id}"));
    job.lease_epoch = 7;
    job
}

fn ended(id: u64, end: AttemptEnd) -> Event {
    Event::AttemptEnded {
        job: JobId(id),
        attempt_id: format!("a{id}"),
        lease_epoch: 7,
        end,
    }
}

fn failed(reason: FailureReason, exit_code: Option<i32>, message: &str) -> AttemptEnd {
    AttemptEnd::Failed {
        exit_code,
        failure: Failure::new(reason, message),
    }
}

fn status_of(state: &PipelineState, id: u64) -> JobStatus {
    state.job(JobId(id)).unwrap().status
}

#[test]
fn an_assignment_starts_a_new_attempt_and_the_pipeline_runs() {
    let state = pipeline(PipelineStatus::Pending, vec![job(1, 0, JobStatus::Pending)]);
    let event = Event::Assigned {
        job: JobId(1),
        attempt_id: "a1".into(),
        lease_epoch: 3,
        agent_id: "agent".into(),
        agent_name: "eagle".into(),
        job_token_sha256: "digest".into(),
    };
    let next = apply(&state, &event, &context()).unwrap().state;
    let assigned = next.job(JobId(1)).unwrap();
    assert_eq!(assigned.status, JobStatus::Running);
    assert_eq!((assigned.attempt, assigned.lease_epoch), (1, 3));
    assert_eq!(assigned.started_at, Some(NOW));
    assert_eq!(next.status, PipelineStatus::Running);
    // A job no longer pending (canceled meanwhile) is not assigned.
    let canceled = pipeline(
        PipelineStatus::Canceled,
        vec![job(1, 0, JobStatus::Canceled)],
    );
    assert!(matches!(
        apply(&canceled, &event, &context()),
        Err(Refusal::NotPending { .. })
    ));
}

#[test]
fn retry_follows_the_typed_reason_whatever_the_message_says() {
    let mut job = running(1, 0);
    job.retry = retry(1, &["runner_system_failure"], &[]);
    let state = pipeline(PipelineStatus::Running, vec![job]);
    let transition = apply(
        &state,
        &ended(
            1,
            failed(FailureReason::RunnerSystemFailure, None, "anything at all"),
        ),
        &context(),
    )
    .unwrap();
    assert_eq!(status_of(&transition.state, 1), JobStatus::Pending);
    assert_eq!(transition.effects, vec![Effect::Queue(JobId(1))]);
    // A script failure, even one whose text reads like a system failure, is not covered.
    let transition = apply(
        &state,
        &ended(
            1,
            failed(
                FailureReason::ScriptFailure,
                Some(1),
                "runner system failure",
            ),
        ),
        &context(),
    )
    .unwrap();
    assert_eq!(status_of(&transition.state, 1), JobStatus::Failed);
    assert_eq!(transition.state.status, PipelineStatus::Failed);
    assert_eq!(transition.state.finished_at, Some(NOW));
}

#[test]
fn retry_stops_after_max_and_honours_exit_codes() {
    let mut job = running(1, 0);
    job.retry = retry(1, &[], &[137]);
    let script = |code| failed(FailureReason::ScriptFailure, Some(code), "script failure");
    let state = pipeline(PipelineStatus::Running, vec![job.clone()]);
    let next = apply(&state, &ended(1, script(137)), &context()).unwrap();
    assert_eq!(status_of(&next.state, 1), JobStatus::Pending);
    let next = apply(&state, &ended(1, script(1)), &context()).unwrap();
    assert_eq!(
        status_of(&next.state, 1),
        JobStatus::Failed,
        "exit 1 is not listed"
    );
    job.attempt = 2;
    let state = pipeline(PipelineStatus::Running, vec![job]);
    let next = apply(&state, &ended(1, script(137)), &context()).unwrap();
    assert_eq!(status_of(&next.state, 1), JobStatus::Failed, "max reached");
}

#[test]
fn a_timeout_is_retried_by_stuck_or_timeout_failure() {
    let mut job = running(1, 0);
    job.retry = retry(2, &["stuck_or_timeout_failure"], &[]);
    let state = pipeline(PipelineStatus::Running, vec![job]);
    let timeout = failed(FailureReason::JobExecutionTimeout, None, "job timeout");
    let next = apply(&state, &ended(1, timeout), &context()).unwrap();
    assert_eq!(status_of(&next.state, 1), JobStatus::Pending);
}

#[test]
fn a_report_from_another_attempt_is_refused_and_a_second_report_changes_nothing() {
    let state = pipeline(PipelineStatus::Running, vec![running(1, 0)]);
    let stale = Event::AttemptEnded {
        job: JobId(1),
        attempt_id: "a1".into(),
        lease_epoch: 6,
        end: AttemptEnd::Success,
    };
    assert!(matches!(
        apply(&state, &stale, &context()),
        Err(Refusal::StaleAttempt { .. })
    ));
    let done = apply(&state, &ended(1, AttemptEnd::Success), &context())
        .unwrap()
        .state;
    let again = apply(
        &done,
        &ended(1, failed(FailureReason::ScriptFailure, Some(1), "x")),
        &context(),
    )
    .unwrap();
    assert_eq!(again.state, done);
    assert!(again.effects.is_empty());
}

#[test]
fn an_expired_lease_fences_the_attempt_and_fails_it_as_a_system_failure() {
    let mut job = running(1, 0);
    job.retry = retry(1, &["runner_system_failure"], &[]);
    let state = pipeline(PipelineStatus::Running, vec![job]);
    let expired = Event::LeaseExpired {
        job: JobId(1),
        attempt_id: "a1".into(),
        lease_epoch: 7,
    };
    let transition = apply(&state, &expired, &context()).unwrap();
    let job = transition.state.job(JobId(1)).unwrap();
    assert_eq!(job.lease_epoch, 8, "the old copy is fenced");
    assert_eq!(
        job.status,
        JobStatus::Pending,
        "retried as runner_system_failure"
    );
    assert_eq!(job.failure_kind, Some(FailureReason::RunnerSystemFailure));
    assert!(transition
        .effects
        .contains(&Effect::AbandonOnAgent(JobId(1))));
    assert!(transition.effects.contains(&Effect::Queue(JobId(1))));
    // The same expiry again (a second coordinator, a late tick) does nothing.
    let again = apply(&transition.state, &expired, &context()).unwrap();
    assert!(again.effects.is_empty());
}

#[test]
fn an_expired_lease_during_a_cancel_ends_the_job_canceled() {
    let mut job = running(1, 0);
    job.cancel_requested = true;
    let state = pipeline(PipelineStatus::Running, vec![job]);
    let expired = Event::LeaseExpired {
        job: JobId(1),
        attempt_id: "a1".into(),
        lease_epoch: 7,
    };
    let next = apply(&state, &expired, &context()).unwrap().state;
    let job = next.job(JobId(1)).unwrap();
    assert_eq!(job.status, JobStatus::Canceled);
    assert_eq!(job.failure_message.as_deref(), Some(CANCEL_UNCONFIRMED));
    assert_eq!(next.status, PipelineStatus::Canceled);
}

#[test]
fn cancel_ends_waiting_jobs_and_asks_running_ones_to_stop() {
    let state = pipeline(
        PipelineStatus::Running,
        vec![
            job(1, 0, JobStatus::Success),
            running(2, 0),
            job(3, 1, JobStatus::Created),
        ],
    );
    let transition = apply(&state, &Event::CancelRequested, &context()).unwrap();
    assert_eq!(status_of(&transition.state, 1), JobStatus::Success);
    assert_eq!(status_of(&transition.state, 2), JobStatus::Running);
    assert_eq!(status_of(&transition.state, 3), JobStatus::Canceled);
    assert_eq!(transition.effects, vec![Effect::CancelOnAgent(JobId(2))]);
    assert_eq!(
        transition.state.status,
        PipelineStatus::Running,
        "until job 2 confirms"
    );
    let confirmed = apply(
        &transition.state,
        &ended(2, AttemptEnd::Canceled { message: None }),
        &context(),
    )
    .unwrap();
    assert_eq!(confirmed.state.status, PipelineStatus::Canceled);
}

#[test]
fn playing_a_manual_job_reopens_a_finished_pipeline() {
    let mut manual = job(2, 1, JobStatus::Manual);
    manual.when = When::Manual;
    manual.allow_failure = true;
    let mut state = pipeline(
        PipelineStatus::Success,
        vec![job(1, 0, JobStatus::Success), manual],
    );
    state.finished_at = Some(NOW);
    let play = Event::ManualPlayed { job: JobId(2) };
    let transition = apply(&state, &play, &context()).unwrap();
    assert_eq!(status_of(&transition.state, 2), JobStatus::Pending);
    assert_eq!(transition.state.status, PipelineStatus::Running);
    assert_eq!(transition.state.finished_at, None);
    assert_eq!(transition.effects, vec![Effect::Queue(JobId(2))]);
    // Only a manual job can be played.
    assert!(matches!(
        apply(&state, &Event::ManualPlayed { job: JobId(1) }, &context()),
        Err(Refusal::NotManual { .. })
    ));
    // A canceled pipeline stays canceled.
    let mut canceled = state.clone();
    canceled.status = PipelineStatus::Canceled;
    let next = apply(&canceled, &play, &context()).unwrap().state;
    assert_eq!(next.status, PipelineStatus::Canceled);
}

#[test]
fn a_delayed_job_is_scheduled_at_start_in_and_starts_when_time_has_come() {
    let mut delayed = job(2, 1, JobStatus::Created);
    delayed.when = When::Delayed;
    delayed.start_in_seconds = Some(90);
    let state = pipeline(PipelineStatus::Running, vec![running(1, 0), delayed]);
    let transition = apply(&state, &ended(1, AttemptEnd::Success), &context()).unwrap();
    let at = NOW + time::Duration::seconds(90);
    assert_eq!(status_of(&transition.state, 2), JobStatus::Scheduled);
    assert_eq!(transition.effects, vec![Effect::WakeAt(JobId(2), at)]);

    let early = Context {
        now: at - time::Duration::seconds(1),
        ..context()
    };
    let next = apply(&transition.state, &Event::DelaysElapsed, &early).unwrap();
    assert_eq!(status_of(&next.state, 2), JobStatus::Scheduled);
    let due = Context {
        now: at,
        ..context()
    };
    let next = apply(&transition.state, &Event::DelaysElapsed, &due).unwrap();
    assert_eq!(status_of(&next.state, 2), JobStatus::Pending);
    assert_eq!(next.effects, vec![Effect::Queue(JobId(2))]);
}

#[test]
fn a_resource_group_holds_one_job_at_a_time_here_and_across_pipelines() {
    let grouped = |id| {
        let mut job = job(id, 0, JobStatus::Created);
        job.resource_group = Some("production".into());
        job
    };
    let state = pipeline(PipelineStatus::Created, vec![grouped(1), grouped(2)]);
    let transition = apply(&state, &Event::Advance, &context()).unwrap();
    assert_eq!(status_of(&transition.state, 1), JobStatus::Pending);
    assert_eq!(
        status_of(&transition.state, 2),
        JobStatus::WaitingForResource
    );

    // Held in another pipeline: both wait.
    let held = Context {
        held_elsewhere: BTreeSet::from(["production".to_owned()]),
        ..context()
    };
    let waiting = apply(&state, &Event::Advance, &held).unwrap().state;
    assert_eq!(status_of(&waiting, 1), JobStatus::WaitingForResource);
    assert_eq!(status_of(&waiting, 2), JobStatus::WaitingForResource);
    // Still held: a wake-up changes nothing.
    let freed = Event::ResourceFreed { job: JobId(1) };
    let still = apply(&waiting, &freed, &held).unwrap();
    assert!(still.effects.is_empty());
    // Freed: the job goes, and the other still waits behind it.
    let next = apply(&waiting, &freed, &context()).unwrap();
    assert_eq!(status_of(&next.state, 1), JobStatus::Pending);
    assert_eq!(status_of(&next.state, 2), JobStatus::WaitingForResource);
    assert_eq!(next.effects, vec![Effect::Queue(JobId(1))]);
}

#[test]
fn a_job_that_ends_releases_its_resource_group_but_a_retry_keeps_it() {
    let mut job = running(1, 0);
    job.resource_group = Some("production".into());
    job.retry = retry(1, &[], &[]);
    let state = pipeline(PipelineStatus::Running, vec![job]);
    let failure = || failed(FailureReason::ScriptFailure, Some(1), "script failure");
    let retried = apply(&state, &ended(1, failure()), &context()).unwrap();
    assert_eq!(retried.effects, vec![Effect::Queue(JobId(1))]);
    let done = apply(&state, &ended(1, AttemptEnd::Success), &context()).unwrap();
    assert_eq!(
        done.effects,
        vec![Effect::ReleaseGroup("production".into())]
    );
}
