//! The steps most tests take with a pipeline, one call each: create it from a
//! [`TestRepo`], run it to the end, read a job's log as text, find a job by
//! name and assert on statuses with the whole pipeline in the failure message.
//!
//! These panic instead of returning errors: a test that needs to look at a
//! refused request or ride out a restart uses the plain client in
//! [`crate::api`] and the waits in [`crate::wait`].

use crate::api::ApiClient;
use crate::git::TestRepo;
use crate::wait::describe_pipeline;
use osprey_shared::api::{JobView, PipelineView};
use osprey_shared::{JobId, JobStatus, PipelineId, PipelineStatus};
use std::time::Duration;

/// How long [`ApiClient::run_pipeline`] and [`ApiClient::wait_for_pipeline`]
/// wait for the end: as long as the slowest test pipeline was ever given, so
/// a loaded machine does not fail a test that would pass.
pub const PIPELINE_TIMEOUT: Duration = Duration::from_secs(120);

impl ApiClient {
    /// Creates the pipeline of `git_ref` in `repo` and returns it as created
    /// (jobs pending); panics with the coordinator's answer when refused.
    pub async fn start_pipeline(&self, repo: &TestRepo, git_ref: &str) -> PipelineView {
        self.create_pipeline(&repo.url(), git_ref)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "create a pipeline for {git_ref:?} of {}: {error} [{}]",
                    repo.url(),
                    self.context()
                )
            })
    }

    /// Creates the pipeline of `git_ref` and waits (up to
    /// [`PIPELINE_TIMEOUT`]) until it has finished, whatever its status.
    pub async fn run_pipeline(&self, repo: &TestRepo, git_ref: &str) -> PipelineView {
        let created = self.start_pipeline(repo, git_ref).await;
        self.wait_for_pipeline(created.id).await
    }

    /// [`ApiClient::wait_for_pipeline_finished`] with [`PIPELINE_TIMEOUT`].
    pub async fn wait_for_pipeline(&self, id: PipelineId) -> PipelineView {
        self.wait_for_pipeline_finished(id, PIPELINE_TIMEOUT).await
    }

    /// The whole stored log of a job, lossily decoded (invalid UTF-8 becomes
    /// U+FFFD); panics naming the job when it cannot be fetched.
    pub async fn job_log_text(&self, id: JobId) -> String {
        let log = self
            .job_log(id)
            .await
            .unwrap_or_else(|error| panic!("fetch the log of job {id}: {error}"));
        String::from_utf8_lossy(&log).into_owned()
    }
}

/// Looking into a pipeline's jobs by name, and asserting on statuses with a
/// summary of every job (see [`describe_pipeline`]) when the assertion fails.
pub trait PipelineExt {
    /// The job called `name`; panics listing the jobs when there is none.
    fn job(&self, name: &str) -> &JobView;

    /// Asserts the pipeline's status.
    fn assert_status(&self, status: PipelineStatus);

    /// Asserts the status of the job called `name`; returns the job.
    fn assert_job_status(&self, name: &str, status: JobStatus) -> &JobView;
}

impl PipelineExt for PipelineView {
    fn job(&self, name: &str) -> &JobView {
        self.jobs
            .iter()
            .find(|job| job.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.jobs.iter().map(|job| job.name.as_str()).collect();
                panic!("pipeline {} has no job {name:?}; jobs: {names:?}", self.id)
            })
    }

    #[track_caller]
    fn assert_status(&self, status: PipelineStatus) {
        assert_eq!(self.status, status, "{}", describe_pipeline(self));
    }

    #[track_caller]
    fn assert_job_status(&self, name: &str, status: JobStatus) -> &JobView {
        let job = self.job(name);
        assert_eq!(job.status, status, "{}", describe_pipeline(self));
        job
    }
}
