//! The store's behaviour on a real SQLite file: migrations on an empty
//! database, log offsets, fencing, and the state machine run in transactions.

use super::*;
use crate::error::CoreError;
use osprey_shared::pipeline::{Artifacts, JobDef, Pipeline, When};
use osprey_shared::{JobId, JobStatus, PipelineId, PipelineStatus};

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

/// The attempt [`running_job`] assigns.
const FENCE: Fence<'static> = Fence {
    attempt_id: "attempt-1",
    lease_epoch: 1,
};

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
        store
            .append_log(job, FENCE, 0, b"hello ", 1 << 20)
            .await
            .unwrap(),
        AppendResult::Appended(6)
    );
    assert_eq!(
        store
            .append_log(job, FENCE, 0, b"hello ", 1 << 20)
            .await
            .unwrap(),
        AppendResult::Duplicate(6)
    );
    assert_eq!(
        store
            .append_log(job, FENCE, 9, b"gap", 1 << 20)
            .await
            .unwrap(),
        AppendResult::Gap(6)
    );
    // An overlapping resend stores only its new tail.
    assert_eq!(
        store
            .append_log(job, FENCE, 3, b"lo world", 1 << 20)
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
        store.append_log(job, FENCE, 11, b"!?", 12).await.unwrap(),
        AppendResult::Appended(12)
    );
    assert!(matches!(
        store.append_log(job, FENCE, 12, b"too much", 12).await,
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
    let first = Fence {
        attempt_id: "a1",
        lease_epoch: 1,
    };
    store
        .append_log(job, first, 0, b"first try\n", 1 << 20)
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
        .set_artifact(job, FENCE, 10, "abc", Some(past), "artifacts/1/a.tar")
        .await
        .unwrap();
    store
        .finish_job(job, "attempt-1", 1, JobStatus::Success, Some(0), None)
        .await
        .unwrap();
    let later = JobId(2);
    assert!(store
        .assign_job(later, "agent", "agent-1", "attempt-2", 1, "hash")
        .await
        .unwrap());
    let fence = Fence {
        attempt_id: "attempt-2",
        lease_epoch: 1,
    };
    store
        .set_artifact(later, fence, 10, "def", None, "artifacts/2/b.tar")
        .await
        .unwrap();
    assert_eq!(
        store.expire_artifacts().await.unwrap(),
        vec![(job, Some("artifacts/1/a.tar".to_owned()))]
    );
    assert!(store
        .job(job)
        .await
        .unwrap()
        .unwrap()
        .artifact_size
        .is_none());
    assert!(store
        .job(later)
        .await
        .unwrap()
        .unwrap()
        .artifact_size
        .is_some());
    assert!(store.expire_artifacts().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_sealed_log_takes_no_bytes_and_a_seal_is_repeatable_only_as_it_was() {
    let (_dir, store) = store().await;
    let job = running_job(&store).await;
    store
        .append_log(job, FENCE, 0, b"abc", 1 << 20)
        .await
        .unwrap();
    assert!(
        !store.seal_log(job, FENCE, 2, "d1").await.unwrap(),
        "a seal for another size"
    );
    assert!(store.seal_log(job, FENCE, 3, "d3").await.unwrap());
    assert!(store.seal_log(job, FENCE, 3, "D3").await.unwrap(), "repeat");
    assert!(matches!(
        store.seal_log(job, FENCE, 3, "other").await,
        Err(CoreError::FailedPrecondition(_))
    ));
    assert!(matches!(
        store.append_log(job, FENCE, 3, b"more", 1 << 20).await,
        Err(CoreError::FailedPrecondition(_))
    ));
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.log_size, 3);
}

#[tokio::test]
async fn an_ended_attempt_writes_nothing_and_an_archive_is_recorded_once() {
    let (_dir, store) = store().await;
    let job = running_job(&store).await;
    store
        .set_artifact(job, FENCE, 1, "first", None, "artifacts/1/first.tar")
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_artifact(job, FENCE, 2, "second", None, "artifacts/1/second.tar")
            .await,
        Err(CoreError::FailedPrecondition(_))
    ));
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(
        row.artifact_key.as_deref(),
        Some("artifacts/1/first.tar"),
        "a refused archive is never recorded"
    );
    assert!(store.check_artifact_open(job, FENCE).await.is_err());
    store
        .finish_job(job, "attempt-1", 1, JobStatus::Success, Some(0), None)
        .await
        .unwrap();
    assert!(matches!(
        store.append_log(job, FENCE, 0, b"late", 1 << 20).await,
        Err(CoreError::PermissionDenied(_))
    ));
    assert!(matches!(
        store.seal_log(job, FENCE, 0, "x").await,
        Err(CoreError::PermissionDenied(_))
    ));
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.log_size, 0);
    assert_eq!(row.artifact_sha256.as_deref(), Some("first"));
}

#[tokio::test]
async fn a_key_creates_one_pipeline_and_refuses_another_request() {
    let (_dir, store) = store().await;
    let key = IdempotencyKey {
        key: "k-1",
        request_sha256: "r-1",
    };
    let details = CommitDetails::default();
    let create = |key| {
        let store = store.clone();
        let details = details.clone();
        async move {
            store
                .create_pipeline_keyed(
                    &NewPipeline {
                        repo: "/repo",
                        git_ref: "master",
                        ref_is_tag: false,
                        sha: "abc",
                        pipeline: &pipeline(),
                        details: &details,
                    },
                    key,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(store.keyed_pipeline(key).await.unwrap(), None);
    let Keyed::Created(id, _) = create(key).await else {
        panic!("the first request creates");
    };
    assert_eq!(create(key).await, Keyed::Replayed(id));
    assert_eq!(
        store.keyed_pipeline(key).await.unwrap(),
        Some(Keyed::Replayed(id))
    );
    let other = IdempotencyKey {
        request_sha256: "r-2",
        ..key
    };
    assert_eq!(create(other).await, Keyed::Mismatch);
    assert!(store
        .pipeline(PipelineId(id.0 + 1))
        .await
        .unwrap()
        .is_none());
}
