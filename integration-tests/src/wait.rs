//! Waiting for states, never for fixed times: each helper polls with a short
//! interval and fails with what it waited for and the last state it saw.

use crate::api::ApiClient;
use osprey_shared::api::{JobView, PipelineView};
use osprey_shared::{JobId, JobStatus, PipelineId};
use std::future::Future;
use std::time::{Duration, Instant};

/// Between two probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `probe` until it returns `Ok`, or panics after `timeout` naming
/// `what` and the last `Err` (a description of the state seen).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

impl ApiClient {
    fn context_suffix(&self) -> String {
        if self.context().is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.context())
        }
    }

    /// Waits until the pipeline is success, failed or canceled. Rides out API
    /// errors (e.g. a restarting coordinator) until the timeout.
    pub async fn wait_for_pipeline_finished(
        &self,
        id: PipelineId,
        timeout: Duration,
    ) -> PipelineView {
        let what = format!("pipeline {id} to finish{}", self.context_suffix());
        wait_for(&what, timeout, || async {
            match self.pipeline(id).await {
                Ok(pipeline) if pipeline.status.is_finished() => Ok(pipeline),
                Ok(pipeline) => Err(describe_pipeline(&pipeline)),
                Err(error) => Err(error.to_string()),
            }
        })
        .await
    }

    /// Waits until the job has `status`. Fails at once if the job finishes
    /// with another status (finished statuses never change).
    pub async fn wait_for_job_status(
        &self,
        job: JobId,
        status: JobStatus,
        timeout: Duration,
    ) -> JobView {
        let what = format!("job {job} to be {status}{}", self.context_suffix());
        wait_for(&what, timeout, || async {
            match self.job(job).await {
                Ok(view) if view.status == status => Ok(view),
                Ok(view) if view.status.is_finished() => {
                    panic!("{what}: the job finished as {}: {view:?}", view.status)
                }
                Ok(view) => Err(format!("{view:?}")),
                Err(error) => Err(error.to_string()),
            }
        })
        .await
    }

    /// Waits until `check` holds for the job.
    pub async fn wait_for_job(
        &self,
        job: JobId,
        what: &str,
        timeout: Duration,
        check: impl Fn(&JobView) -> bool,
    ) -> JobView {
        let what = format!("job {job}: {what}{}", self.context_suffix());
        wait_for(&what, timeout, || async {
            match self.job(job).await {
                Ok(view) if check(&view) => Ok(view),
                Ok(view) => Err(format!("{view:?}")),
                Err(error) => Err(error.to_string()),
            }
        })
        .await
    }

    /// Waits until the job's stored log contains `needle`; returns the log.
    pub async fn wait_for_log_containing(
        &self,
        job: JobId,
        needle: &str,
        timeout: Duration,
    ) -> Vec<u8> {
        let what = format!(
            "the log of job {job} to contain {needle:?}{}",
            self.context_suffix()
        );
        wait_for(&what, timeout, || async {
            match self.job_log(job).await {
                Ok(log) if contains(&log, needle.as_bytes()) => Ok(log),
                Ok(log) => Err(format!("{} bytes: ...{}", log.len(), tail(&log, 300))),
                Err(error) => Err(error.to_string()),
            }
        })
        .await
    }
}

/// `pipeline 3 running: build=success test=running(agent-1)`.
pub fn describe_pipeline(pipeline: &PipelineView) -> String {
    let jobs: Vec<String> = pipeline
        .jobs
        .iter()
        .map(|job| {
            let mut text = format!("{}={}", job.name, job.status);
            if let Some(agent) = &job.agent {
                text.push_str(&format!("({agent})"));
            }
            if let Some(reason) = job.failure_reason.as_ref().or(job.pending_reason.as_ref()) {
                text.push_str(&format!("[{reason}]"));
            }
            text
        })
        .collect();
    format!(
        "pipeline {} {}: {}",
        pipeline.id,
        pipeline.status,
        jobs.join(" ")
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The last `max` bytes, lossily decoded, for failure messages.
pub fn tail(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(max)..]).into_owned()
}
