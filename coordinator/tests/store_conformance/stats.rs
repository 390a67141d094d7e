//! What the store tells the metrics: counts by status, and each commit
//! with the jobs it finished and the log bytes it stored, once.

use super::{running_job, script_failure, Harness, FENCE};
use osprey_coordinator::storage::AttemptEnd;
use osprey_coordinator::storage::{Commit, FinishedJob, StatusCounts, StoreObserver};
use osprey_shared::{FailureReason, JobId, JobStatus, PipelineStatus};
use std::sync::{Arc, Mutex};

/// Every commit as reported, minus its timing.
#[derive(Default)]
struct Recorder {
    commits: Mutex<Vec<(Vec<FinishedJob>, u64)>>,
}

impl StoreObserver for Recorder {
    fn committed(&self, commit: &Commit<'_>) {
        self.commits
            .lock()
            .unwrap()
            .push((commit.finished.to_vec(), commit.log_bytes));
    }
}

impl Recorder {
    fn finished(&self) -> Vec<FinishedJob> {
        let commits = self.commits.lock().unwrap();
        commits.iter().flat_map(|(jobs, _)| jobs.clone()).collect()
    }

    fn log_bytes(&self) -> u64 {
        self.commits
            .lock()
            .unwrap()
            .iter()
            .map(|(_, bytes)| bytes)
            .sum()
    }
}

fn sorted(mut counts: StatusCounts) -> StatusCounts {
    counts.jobs.sort_by_key(|(status, _)| status.as_str());
    counts.pipelines.sort_by_key(|(status, _)| status.as_str());
    counts
}

pub async fn status_counts_group_jobs_and_pipelines_by_status(harness: Harness) {
    let store = harness.store;
    assert_eq!(
        store.status_counts().await.unwrap(),
        StatusCounts::default()
    );
    let job = running_job(&store).await;
    assert_eq!(
        sorted(store.status_counts().await.unwrap()),
        StatusCounts {
            jobs: vec![(JobStatus::Created, 1), (JobStatus::Running, 1)],
            pipelines: vec![(PipelineStatus::Running, 1)],
        }
    );
    store
        .finish_job(job, FENCE, script_failure(2))
        .await
        .unwrap();
    assert_eq!(
        sorted(store.status_counts().await.unwrap()),
        StatusCounts {
            jobs: vec![(JobStatus::Failed, 1), (JobStatus::Skipped, 1)],
            pipelines: vec![(PipelineStatus::Failed, 1)],
        }
    );
}

pub async fn commits_report_finished_jobs_once_and_stored_log_bytes(harness: Harness) {
    let store = harness.store;
    let recorder = Arc::new(Recorder::default());
    store.observe(recorder.clone());
    let job = running_job(&store).await;
    assert!(recorder.finished().is_empty());

    store
        .append_log(job, FENCE, 0, b"hello", 1 << 20)
        .await
        .unwrap();
    // Resent with more: only the new bytes are stored, and counted.
    store
        .append_log(job, FENCE, 0, b"hello world", 1 << 20)
        .await
        .unwrap();
    store
        .append_log(job, FENCE, 0, b"hello", 1 << 20)
        .await
        .unwrap();
    assert_eq!(recorder.log_bytes(), 11);

    harness.clock.advance(time::Duration::seconds(3));
    store
        .finish_job(job, FENCE, AttemptEnd::Success)
        .await
        .unwrap();
    // A replayed end changes nothing stored, so it reports nothing.
    store
        .finish_job(job, FENCE, AttemptEnd::Success)
        .await
        .unwrap();
    assert_eq!(
        recorder.finished(),
        vec![FinishedJob {
            status: JobStatus::Success,
            failure: None,
            ran_for: Some(std::time::Duration::from_secs(3)),
        }]
    );

    assert!(store
        .assign_job(JobId(2), super::assignment("attempt-2", 1))
        .await
        .unwrap());
    store
        .finish_job(JobId(2), super::fence("attempt-2", 1), script_failure(1))
        .await
        .unwrap();
    let finished = recorder.finished();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert_eq!(finished[1].status, JobStatus::Failed);
    assert_eq!(finished[1].failure, Some(FailureReason::ScriptFailure));
    assert!(recorder.commits.lock().unwrap().len() > 5);
}
