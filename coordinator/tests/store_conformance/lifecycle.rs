//! Every transition of a job, through the store: fencing, expiry, cancel,
//! retry, resource groups, concurrency, delays and manual play.

use super::{assignment, fence, pipeline, running_job, script_failure, Harness, FENCE};
use osprey_coordinator::storage::SharedStore;
use osprey_coordinator::storage::{AttemptEnd, StoreError};
use osprey_shared::pipeline::Pipeline;
use osprey_shared::pipeline::When;
use osprey_shared::PipelineId;
use osprey_shared::{Failure, FailureReason, JobId, JobStatus, PipelineStatus};

/// Creates the pipeline and assigns its first pending job (attempt `a1`).
async fn started(store: &SharedStore, definition: &Pipeline) -> (PipelineId, Vec<JobId>) {
    let (pipeline, pending) = store
        .create_pipeline("/repo", "master", false, "abc", definition)
        .await
        .unwrap();
    assert!(store
        .assign_job(pending[0], assignment("a1", 1))
        .await
        .unwrap());
    (pipeline, pending)
}

pub async fn finishing_a_job_is_fenced_and_advances_the_pipeline(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    assert!(matches!(
        store
            .finish_job(job, fence("attempt-1", 0), AttemptEnd::Success)
            .await,
        Err(StoreError::StaleLease(_))
    ));
    let result = store
        .finish_job(job, FENCE, AttemptEnd::Success)
        .await
        .unwrap();
    assert_eq!(result.newly_pending, vec![JobId(2)]);
    // Twice-safe: a repeat changes nothing, a different final status is ignored.
    let again = store
        .finish_job(job, FENCE, script_failure(1))
        .await
        .unwrap();
    assert_eq!(again.stored, Some(JobStatus::Success));
    assert!(again.newly_pending.is_empty());
}

pub async fn an_expired_lease_fails_the_job_as_a_system_failure_and_fences_it(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    store.expire_lease(job, FENCE).await.unwrap();
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.failure_reason.as_deref(), Some("agent lost"));
    assert_eq!(row.failure_kind, Some(FailureReason::RunnerSystemFailure));
    assert_eq!(row.lease_epoch, 2);
    assert!(matches!(
        store.finish_job(job, FENCE, AttemptEnd::Success).await,
        Err(StoreError::StaleLease(_))
    ));
    // A second expiry of the same attempt (a late tick) does nothing.
    assert_eq!(
        store.expire_lease(job, FENCE).await.unwrap(),
        Default::default()
    );
    let pipeline = store.pipeline(row.pipeline_id()).await.unwrap().unwrap();
    assert_eq!(pipeline.status, PipelineStatus::Failed);
    let later = store.job(JobId(2)).await.unwrap().unwrap();
    assert_eq!(later.status, JobStatus::Skipped);
}

pub async fn cancel_ends_waiting_jobs_and_marks_running_ones(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    let pipeline = store.job(job).await.unwrap().unwrap().pipeline_id();
    let running = store.cancel_pipeline(pipeline).await.unwrap();
    assert_eq!(running.len(), 1);
    assert!(running[0].cancel_requested);
    assert_eq!(
        store.job(JobId(2)).await.unwrap().unwrap().status,
        JobStatus::Canceled
    );
    store
        .finish_job(
            job,
            FENCE,
            AttemptEnd::Canceled {
                message: Some("canceled".into()),
            },
        )
        .await
        .unwrap();
    let pipeline = store.pipeline(pipeline).await.unwrap().unwrap();
    assert_eq!(pipeline.status, PipelineStatus::Canceled);
}

pub async fn a_retried_failure_becomes_a_new_attempt_with_its_own_log(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs[0].retry.max = 1;
    let (_, pending) = started(&store, &definition).await;
    let job = pending[0];
    store
        .append_log(job, fence("a1", 1), 0, b"first try\n", 1 << 20)
        .await
        .unwrap();
    let result = store
        .finish_job(job, fence("a1", 1), script_failure(1))
        .await
        .unwrap();
    assert_eq!(result.stored, Some(JobStatus::Pending));
    assert_eq!(result.newly_pending, vec![job]);

    assert!(store.assign_job(job, assignment("a2", 2)).await.unwrap());
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.attempt, 2);
    assert!(
        store.read_log(job, 0, 1 << 20).await.unwrap().is_empty(),
        "a fresh log"
    );
    let result = store
        .finish_job(job, fence("a2", 2), script_failure(1))
        .await
        .unwrap();
    assert_eq!(result.stored, Some(JobStatus::Failed), "max 1 retry");
}

pub async fn retry_when_reads_the_typed_reason_not_the_message(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs[0].retry.max = 2;
    definition.jobs[0].retry.when = vec!["runner_system_failure".into()];
    let (_, pending) = started(&store, &definition).await;
    let job = pending[0];
    let system = AttemptEnd::Failed {
        exit_code: None,
        failure: Failure::new(FailureReason::RunnerSystemFailure, "a wording never seen"),
    };
    let result = store.finish_job(job, fence("a1", 1), system).await.unwrap();
    assert_eq!(result.stored, Some(JobStatus::Pending), "retried");
    assert!(store.assign_job(job, assignment("a2", 2)).await.unwrap());
    let worded_like_one = AttemptEnd::Failed {
        exit_code: Some(1),
        failure: Failure::new(FailureReason::ScriptFailure, "agent lost"),
    };
    let result = store
        .finish_job(job, fence("a2", 2), worded_like_one)
        .await
        .unwrap();
    assert_eq!(
        result.stored,
        Some(JobStatus::Failed),
        "a script failure is not covered"
    );
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.failure_kind, Some(FailureReason::ScriptFailure));
}

pub async fn a_job_stored_before_rules_follows_its_definition(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs[0].retry.max = 1;
    let (_, pending) = store
        .create_pipeline("/repo", "master", false, "abc", &definition)
        .await
        .unwrap();
    // As a job recorded by an older version: no rules column.
    sqlx::query("UPDATE jobs SET rules = NULL")
        .execute(harness.sql.pool())
        .await
        .unwrap();
    let job = pending[0];
    assert!(store.assign_job(job, assignment("a1", 1)).await.unwrap());
    let result = store
        .finish_job(job, fence("a1", 1), script_failure(1))
        .await
        .unwrap();
    assert_eq!(
        result.stored,
        Some(JobStatus::Pending),
        "retry read from the definition"
    );
}

pub async fn one_job_of_a_resource_group_runs_at_a_time_across_pipelines(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs[0].resource_group = Some("production".into());
    let (_, first) = store
        .create_pipeline("/repo", "master", false, "abc", &definition)
        .await
        .unwrap();
    let (_, second) = store
        .create_pipeline("/repo", "master", false, "def", &definition)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(second.is_empty(), "the second waits for the resource");
    let waiting = store
        .jobs_with_status(JobStatus::WaitingForResource)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(store
        .assign_job(first[0], assignment("a1", 1))
        .await
        .unwrap());
    let result = store
        .finish_job(first[0], fence("a1", 1), AttemptEnd::Success)
        .await
        .unwrap();
    assert!(
        result.newly_pending.contains(&waiting[0].id()),
        "{result:?}"
    );
    assert_eq!(
        store.job(waiting[0].id()).await.unwrap().unwrap().status,
        JobStatus::Pending
    );
}

pub async fn concurrent_finishes_of_one_pipeline_start_the_next_stage_once(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs = vec![
        super::job("a", "build"),
        super::job("b", "build"),
        super::job("c", "build"),
        super::job("next", "test"),
    ];
    let (pipeline_id, pending) = store
        .create_pipeline("/repo", "master", false, "abc", &definition)
        .await
        .unwrap();
    assert_eq!(pending.len(), 3);
    for (index, job) in pending.iter().enumerate() {
        let attempt = format!("a{index}");
        assert!(store
            .assign_job(*job, assignment(&attempt, 1))
            .await
            .unwrap());
    }
    let mut finishes = Vec::new();
    for (index, job) in pending.iter().enumerate() {
        let store = store.clone();
        let job = *job;
        finishes.push(tokio::spawn(async move {
            let attempt = format!("a{index}");
            store
                .finish_job(job, fence(&attempt, 1), AttemptEnd::Success)
                .await
                .unwrap()
        }));
    }
    let mut started = Vec::new();
    for finish in finishes {
        started.extend(finish.await.unwrap().newly_pending);
    }
    assert_eq!(
        started,
        vec![JobId(4)],
        "the next stage starts exactly once"
    );
    let jobs = store.jobs_of(pipeline_id).await.unwrap();
    assert_eq!(jobs[3].status, JobStatus::Pending);
    assert_eq!(
        store.pipeline(pipeline_id).await.unwrap().unwrap().status,
        PipelineStatus::Running
    );
}

pub async fn a_delayed_job_starts_when_the_clock_says_so(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs[1].when = When::Delayed;
    definition.jobs[1].start_in_seconds = Some(300);
    let (_, pending) = started(&store, &definition).await;
    let result = store
        .finish_job(pending[0], fence("a1", 1), AttemptEnd::Success)
        .await
        .unwrap();
    assert!(result.newly_pending.is_empty());
    let delayed = store.job(JobId(2)).await.unwrap().unwrap();
    assert_eq!(delayed.status, JobStatus::Scheduled);
    assert_eq!(
        delayed.scheduled_at.as_deref(),
        Some("2026-12-01T12:05:00.000Z")
    );
    harness.clock.advance(time::Duration::seconds(299));
    assert!(store.start_due_jobs().await.unwrap().is_empty());
    harness.clock.advance(time::Duration::seconds(1));
    assert_eq!(store.start_due_jobs().await.unwrap(), vec![JobId(2)]);
}

pub async fn a_manual_job_played_reopens_the_finished_pipeline(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs[1].when = When::Manual;
    definition.jobs[1].allow_failure = true;
    let (pipeline_id, pending) = started(&store, &definition).await;
    store
        .finish_job(pending[0], fence("a1", 1), AttemptEnd::Success)
        .await
        .unwrap();
    let finished = store.pipeline(pipeline_id).await.unwrap().unwrap();
    assert_eq!(finished.status, PipelineStatus::Success);
    assert!(matches!(
        store.play_job(pending[0]).await,
        Err(StoreError::Refused(_))
    ));
    assert_eq!(store.play_job(JobId(2)).await.unwrap(), vec![JobId(2)]);
    let reopened = store.pipeline(pipeline_id).await.unwrap().unwrap();
    assert_eq!(reopened.status, PipelineStatus::Running);
    assert!(matches!(
        store.play_job(JobId(99)).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn an_exit_code_in_allow_failure_exit_codes_lets_the_pipeline_go_on(harness: Harness) {
    let store = harness.store;
    let mut definition = pipeline();
    definition.jobs[0].allow_failure_exit_codes = vec![137];
    let (_, pending) = started(&store, &definition).await;
    let result = store
        .finish_job(pending[0], fence("a1", 1), script_failure(137))
        .await
        .unwrap();
    assert_eq!(result.newly_pending.len(), 1, "the next stage starts");
}
