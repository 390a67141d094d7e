//! The store's behaviour on a real SQLite file: migrations on an empty
//! database, log offsets, fencing, and the state machine run in transactions.

use super::*;
use crate::error::CoreError;
use osprey_shared::pipeline::{Artifacts, JobDef, Pipeline, When};
use osprey_shared::{JobId, JobStatus, PipelineStatus};

fn job(name: &str, stage: &str) -> JobDef {
    JobDef {
        name: name.into(),
        stage: stage.into(),
        before_script: vec![],
        script: vec!["true".into()],
        after_script: vec![],
        tags: vec![],
        allow_failure: false,
        when: When::OnSuccess,
        variables: vec![],
        artifacts: Artifacts::default(),
        image: None,
        services: vec![],
        timeout_seconds: None,
        ..JobDef::default()
    }
}

fn pipeline() -> Pipeline {
    Pipeline {
        stages: vec![".pre".into(), "build".into(), "test".into(), ".post".into()],
        variables: vec![],
        jobs: vec![job("compile", "build"), job("unit", "test")],
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    (dir, store)
}

async fn running_job(store: &Store) -> JobId {
    let (_, pending) = store
        .create_pipeline("/repo", "master", false, "abc", &pipeline())
        .await
        .unwrap();
    assert_eq!(pending, vec![JobId(1)], "only the first stage starts");
    assert!(store
        .assign_job(JobId(1), "agent", "agent-1", "attempt-1", 1, "hash")
        .await
        .unwrap());
    JobId(1)
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_reopen() {
    let (dir, store) = store().await;
    drop(store);
    Store::open(dir.path())
        .await
        .expect("reopening runs no migration twice");
}

#[tokio::test]
async fn log_appends_are_offset_checked_and_stored_once() {
    let (_dir, store) = store().await;
    let job = running_job(&store).await;
    assert_eq!(
        store.append_log(job, 0, b"hello ", 1 << 20).await.unwrap(),
        AppendResult::Appended(6)
    );
    assert_eq!(
        store.append_log(job, 0, b"hello ", 1 << 20).await.unwrap(),
        AppendResult::Duplicate(6)
    );
    assert_eq!(
        store.append_log(job, 9, b"gap", 1 << 20).await.unwrap(),
        AppendResult::Gap(6)
    );
    // An overlapping resend stores only its new tail.
    assert_eq!(
        store
            .append_log(job, 3, b"lo world", 1 << 20)
            .await
            .unwrap(),
        AppendResult::Appended(11)
    );
    assert_eq!(
        store.read_log(job, 0, usize::MAX).await.unwrap(),
        b"hello world"
    );
    assert_eq!(store.read_log(job, 4, 3).await.unwrap(), b"o w");
    // A chunk crossing the limit is kept up to it; the next is refused.
    assert_eq!(
        store.append_log(job, 11, b"!?", 12).await.unwrap(),
        AppendResult::Appended(12)
    );
    assert!(matches!(
        store.append_log(job, 12, b"too much", 12).await,
        Err(CoreError::ResourceExhausted(_))
    ));
    assert_eq!(
        store.read_log(job, 0, usize::MAX).await.unwrap(),
        b"hello world!"
    );
}

#[tokio::test]
async fn finishing_a_job_is_fenced_and_advances_the_pipeline() {
    let (_dir, store) = store().await;
    let job = running_job(&store).await;
    assert!(matches!(
        store
            .finish_job(job, "attempt-1", 0, JobStatus::Success, Some(0), None)
            .await,
        Err(CoreError::StaleLease(_))
    ));
    let result = store
        .finish_job(job, "attempt-1", 1, JobStatus::Success, Some(0), None)
        .await
        .unwrap();
    assert_eq!(result.newly_pending, vec![JobId(2)]);
    // Twice-safe: a repeat changes nothing, a different final status is ignored.
    let again = store
        .finish_job(job, "attempt-1", 1, JobStatus::Failed, Some(1), None)
        .await
        .unwrap();
    assert_eq!(again.stored, Some(JobStatus::Success));
    assert!(again.newly_pending.is_empty());
}

#[tokio::test]
async fn an_expired_lease_fails_the_job_as_agent_lost_and_fences_the_attempt() {
    let (_dir, store) = store().await;
    let job = running_job(&store).await;
    store.expire_lease(job, "attempt-1", 1).await.unwrap();
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.status(), JobStatus::Failed);
    assert_eq!(row.failure_reason.as_deref(), Some("agent lost"));
    assert_eq!(row.lease_epoch, 2);
    assert!(matches!(
        store
            .finish_job(job, "attempt-1", 1, JobStatus::Success, Some(0), None)
            .await,
        Err(CoreError::StaleLease(_))
    ));
    let pipeline = store.pipeline(row.pipeline_id()).await.unwrap().unwrap();
    assert_eq!(pipeline.status(), PipelineStatus::Failed);
    let later = store.job(JobId(2)).await.unwrap().unwrap();
    assert_eq!(later.status(), JobStatus::Skipped);
}

#[tokio::test]
async fn cancel_ends_waiting_jobs_and_marks_running_ones() {
    let (_dir, store) = store().await;
    let job = running_job(&store).await;
    let pipeline = store.job(job).await.unwrap().unwrap().pipeline_id();
    let running = store.cancel_pipeline(pipeline).await.unwrap();
    assert_eq!(running.len(), 1);
    assert!(running[0].cancel_requested);
    assert_eq!(
        store.job(JobId(2)).await.unwrap().unwrap().status(),
        JobStatus::Canceled
    );
    store
        .finish_job(
            job,
            "attempt-1",
            1,
            JobStatus::Canceled,
            None,
            Some("canceled"),
        )
        .await
        .unwrap();
    let pipeline = store.pipeline(pipeline).await.unwrap().unwrap();
    assert_eq!(pipeline.status(), PipelineStatus::Canceled);
}

#[tokio::test]
async fn a_retried_failure_becomes_a_new_attempt_with_its_own_log() {
    let (_dir, store) = store().await;
    let mut definition = pipeline();
    definition.jobs[0].retry.max = 1;
    let (_, pending) = store
        .create_pipeline("/repo", "master", false, "abc", &definition)
        .await
        .unwrap();
    let job = pending[0];
    assert!(store
        .assign_job(job, "agent", "agent-1", "a1", 1, "hash")
        .await
        .unwrap());
    store
        .append_log(job, 0, b"first try\n", 1 << 20)
        .await
        .unwrap();
    let result = store
        .finish_job(
            job,
            "a1",
            1,
            JobStatus::Failed,
            Some(1),
            Some("script failure"),
        )
        .await
        .unwrap();
    assert_eq!(result.stored, Some(JobStatus::Pending));
    assert_eq!(result.newly_pending, vec![job]);

    assert!(store
        .assign_job(job, "agent", "agent-1", "a2", 2, "hash")
        .await
        .unwrap());
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.attempt, 2);
    assert!(
        store.read_log(job, 0, 1 << 20).await.unwrap().is_empty(),
        "a fresh log"
    );
    let result = store
        .finish_job(
            job,
            "a2",
            2,
            JobStatus::Failed,
            Some(1),
            Some("script failure"),
        )
        .await
        .unwrap();
    assert_eq!(result.stored, Some(JobStatus::Failed), "max 1 retry");
}

#[tokio::test]
async fn one_job_of_a_resource_group_runs_at_a_time_across_pipelines() {
    let (_dir, store) = store().await;
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
        .assign_job(first[0], "agent", "agent-1", "a1", 1, "hash")
        .await
        .unwrap());
    let result = store
        .finish_job(first[0], "a1", 1, JobStatus::Success, None, None)
        .await
        .unwrap();
    assert!(
        result.newly_pending.contains(&waiting[0].id()),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_exit_code_in_allow_failure_exit_codes_lets_the_pipeline_go_on() {
    let (_dir, store) = store().await;
    let mut definition = pipeline();
    definition.jobs[0].allow_failure_exit_codes = vec![137];
    let (_, pending) = store
        .create_pipeline("/repo", "master", false, "abc", &definition)
        .await
        .unwrap();
    assert!(store
        .assign_job(pending[0], "agent", "agent-1", "a1", 1, "hash")
        .await
        .unwrap());
    let result = store
        .finish_job(
            pending[0],
            "a1",
            1,
            JobStatus::Failed,
            Some(137),
            Some("script failure"),
        )
        .await
        .unwrap();
    assert_eq!(result.newly_pending.len(), 1, "the next stage starts");
}

#[tokio::test]
async fn expired_artifacts_are_forgotten_and_kept_ones_stay() {
    let (_dir, store) = store().await;
    let job = running_job(&store).await;
    let past = osprey_shared::api::format_time(
        time::OffsetDateTime::now_utc() - time::Duration::seconds(1),
    );
    store
        .set_artifact(job, 10, "abc", Some(past))
        .await
        .unwrap();
    store.set_artifact(JobId(2), 10, "def", None).await.unwrap();
    assert_eq!(store.expire_artifacts().await.unwrap(), vec![job]);
    assert!(store
        .job(job)
        .await
        .unwrap()
        .unwrap()
        .artifact_size
        .is_none());
    assert!(store
        .job(JobId(2))
        .await
        .unwrap()
        .unwrap()
        .artifact_size
        .is_some());
    assert!(store.expire_artifacts().await.unwrap().is_empty());
}
