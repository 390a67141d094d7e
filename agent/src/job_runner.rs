//! One confirmed attempt from start to final status: report RUNNING, check out
//! the source, fetch the dependencies' artifacts, restore caches, run the
//! executor, save caches, upload artifacts on success, seal the log, report
//! the final state, clean up. The order at the end is fixed by the protocol: scripts, upload, `SealLog`,
//! `UpdateStatus`. Every call is retried with backoff until it succeeds; a
//! stale-lease answer fences the attempt: the executor is stopped and nothing
//! more is reported.

use crate::artifacts;
use crate::cache::{CacheJob, Fenced};
use crate::client::{AppendReply, CallError, CoordinatorApi};
use crate::executor::{Executor, Outcome, OutputSink, PreparedJob};
use crate::git_cache::options::GitOptions;
use crate::git_cache::GitCache;
use crate::lease::Leases;
use crate::log_stream::{LogEndpoint, LogStream, ShipperSettings};
use crate::mask::Masker;
use crate::registry::{Registry, RunningJob, StopCause};
use crate::retry::{with_backoff, GaveUp};
use crate::workspace::{self, AttemptDirs, RunningRecord, WorkDir};
use bytes::Bytes;
use futures::future::BoxFuture;
use osprey_proto::v1::{
    ArtifactWhen, AttemptRef, FailureKind, JobAssignment, JobSpec, JobState, UpdateStatusRequest,
};
use osprey_shared::{Failure, FailureReason};
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How long a dependency download keeps retrying before the job fails.
const DOWNLOAD_RETRY_LIMIT: Duration = Duration::from_secs(300);

/// What every attempt of this agent shares.
pub struct RunnerContext<A> {
    pub api: Arc<A>,
    pub executor: Arc<dyn Executor>,
    pub work: WorkDir,
    pub registry: Arc<Registry>,
    pub agent_name: String,
    pub tags: Vec<String>,
    pub executor_name: &'static str,
    pub job_timeout: Duration,
    /// Caps every job's timeout (GitLab Runner's `maximum_timeout`).
    pub max_job_timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub shipper: ShipperSettings,
    /// Lease deadlines of the running attempts (renewed by the session,
    /// enforced by the lease watchdog).
    pub leases: Arc<Leases>,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    /// The repositories' mirrors and the build slots.
    pub git: GitCache,
}

/// The final report of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalState {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub reason: String,
    /// Why, as GitLab classifies it (with `Failed` only).
    pub kind: Option<FailureReason>,
}

impl FinalState {
    fn failed(failure: Failure) -> Self {
        Self {
            state: JobState::Failed,
            exit_code: None,
            reason: failure.message,
            kind: Some(failure.reason),
        }
    }
}

/// Registers a confirmed assignment (record on disk, slot in the registry)
/// and returns the future that runs it to its end.
pub fn start<A: CoordinatorApi>(
    ctx: Arc<RunnerContext<A>>,
    assignment: JobAssignment,
) -> Result<impl Future<Output = ()> + Send + 'static, std::io::Error> {
    let spec = assignment.spec.clone().unwrap_or_default();
    // Keyed by the dir name: two names that map to one dir share its slots.
    let slot = ctx
        .git
        .take_slot(&workspace::project_dir_name(&spec.project_name));
    let dirs = ctx.work.attempt(
        spec.job_id,
        &assignment.attempt_id,
        &spec.project_name,
        slot.slot,
    );
    let record = RunningRecord {
        job_id: spec.job_id,
        attempt_id: assignment.attempt_id.clone(),
        lease_epoch: assignment.lease_epoch,
        job_token: assignment.job_token.clone(),
        pgid: None,
    };
    let stored = record.store(&dirs.record);
    // A masked file variable's value is its file's content: masked as well.
    let mut masked: Vec<String> = spec
        .variables
        .iter()
        .filter(|variable| variable.masked)
        .map(|variable| variable.value.clone())
        .collect();
    masked.push(assignment.job_token.clone());
    // The failure reason is reported and logged outside the job log, masked too.
    let redactor = Masker::new(masked.clone());
    let stream = LogStream::new(dirs.spool.clone(), masked, ctx.shipper)
        .with_backlog(ctx.metrics.spool_backlog());
    let job = Arc::new(RunningJob::new(record, dirs.clone(), stream.acked()));
    ctx.registry.insert(job.clone());
    if let Err(err) = stored {
        ctx.registry.remove(&job.attempt_id);
        return Err(err);
    }
    let attempt = AttemptRef {
        job_id: spec.job_id,
        attempt_id: assignment.attempt_id.clone(),
        lease_epoch: assignment.lease_epoch,
        job_token: assignment.job_token,
    };
    let span =
        tracing::info_span!("job", job_id = spec.job_id, attempt_id = %assignment.attempt_id);
    let run = run_attempt(ctx, job, attempt, spec, dirs, stream, redactor);
    Ok(async move {
        run.await;
        // Only now, the attempt's dirs cleaned up, may the next job of the
        // project take this build dir.
        drop(slot);
    }
    .instrument(span))
}

async fn run_attempt<A: CoordinatorApi>(
    ctx: Arc<RunnerContext<A>>,
    job: Arc<RunningJob>,
    attempt: AttemptRef,
    spec: JobSpec,
    dirs: AttemptDirs,
    mut stream: LogStream,
    redactor: Masker,
) {
    tracing::info!(name = %spec.name, "job started");
    let started = std::time::Instant::now();
    let endpoint = AttemptLog {
        api: &*ctx.api,
        attempt: attempt.clone(),
    };
    let sink = stream.sink();
    let (log, result) = tokio::join!(
        stream.run(&endpoint, &job.fenced),
        drive(&ctx, &job, &attempt, &spec, &dirs, sink)
    );
    let finished = async {
        let mut final_state = result?;
        final_state.reason = redactor.redact(&final_state.reason);
        let log = match log {
            Ok(log) if !log.fenced => log,
            Ok(_) => return Err(GaveUp::Fenced),
            Err(err) => {
                tracing::error!(error = %err, "log spool failed");
                return Err(GaveUp::Failed(CallError::Refused(err.to_string())));
            }
        };
        if log.truncated {
            tracing::warn!(
                accepted = log.size,
                written = log.written,
                "log cut at the coordinator's limit"
            );
        }
        let spool = dirs.spool.clone();
        let size = log.size;
        let digest =
            tokio::task::spawn_blocking(move || artifacts::digest_file(&spool, Some(size)))
                .await
                .map_err(|err| std::io::Error::other(err.to_string()))
                .and_then(|digest| digest);
        match digest {
            Ok((size, sha256)) => {
                let sealed = with_backoff("seal log", &job.fenced, None, || {
                    ctx.api.seal_log(attempt.clone(), size, sha256.clone())
                })
                .await;
                match sealed {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(size, "coordinator holds a different log; marked cut")
                    }
                    Err(GaveUp::Fenced) => return Err(GaveUp::Fenced),
                    Err(err) => tracing::error!(error = %err, "cannot seal log"),
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot digest log spool; not sealed"),
        }
        report(&ctx, &job, &attempt, &final_state).await?;
        tracing::info!(state = ?final_state.state, reason = %final_state.reason, "job finished");
        Ok(())
    };
    match finished.await {
        Ok(()) => {}
        Err(GaveUp::Fenced) => {
            tracing::warn!("attempt fenced; local copy stopped, nothing more reported")
        }
        Err(GaveUp::Failed(err)) => {
            tracing::error!(error = %err, "cannot report the end of the job")
        }
    }
    ctx.registry.remove(&job.attempt_id);
    ctx.metrics.job_finished(started.elapsed());
    dirs.remove();
    crate::git_cache::worktree::forget_credentials(&dirs.project_dir, &spec.repo_url);
    let _ = std::fs::remove_file(&dirs.record);
}

async fn report<A: CoordinatorApi>(
    ctx: &RunnerContext<A>,
    job: &RunningJob,
    attempt: &AttemptRef,
    state: &FinalState,
) -> Result<(), GaveUp> {
    let request = UpdateStatusRequest {
        attempt: Some(attempt.clone()),
        state: state.state.into(),
        exit_code: state.exit_code,
        failure_reason: state.reason.clone(),
        failure_kind: state
            .kind
            .map_or(FailureKind::Unspecified, FailureKind::from)
            .into(),
    };
    with_backoff("update status", &job.fenced, None, || {
        ctx.api.update_status(request.clone())
    })
    .await
}

/// Runs the job and returns its final state, having written its story to the log.
async fn drive<A: CoordinatorApi>(
    ctx: &RunnerContext<A>,
    job: &RunningJob,
    attempt: &AttemptRef,
    spec: &JobSpec,
    dirs: &AttemptDirs,
    log: OutputSink,
) -> Result<FinalState, GaveUp> {
    let running = FinalState {
        state: JobState::Running,
        exit_code: None,
        reason: String::new(),
        kind: None,
    };
    report(ctx, job, attempt, &running).await?;
    let say = |text: String| {
        let log = log.clone();
        async move {
            let _ = log.send(Bytes::from(text)).await;
        }
    };
    say(format!(
        "Running with osprey-agent {} on {} (executor {})\n",
        env!("CARGO_PKG_VERSION"),
        ctx.agent_name,
        ctx.executor_name
    ))
    .await;
    let state = match run_steps(ctx, job, attempt, spec, dirs, &log).await {
        Ok(state) => state,
        Err(Step::Fenced) => return Err(GaveUp::Fenced),
        Err(Step::Canceled) => stopped_state(job),
        Err(Step::Failed(failure)) => {
            say(format!("ERROR: {}\n", failure.message)).await;
            FinalState::failed(failure)
        }
    };
    let summary = match state.state {
        JobState::Success => "Job succeeded\n".to_owned(),
        JobState::Canceled => "Job canceled\n".to_owned(),
        _ => match state.exit_code {
            Some(code) => format!("ERROR: Job failed: exit code {code}\n"),
            None => format!("ERROR: Job failed: {}\n", state.reason),
        },
    };
    say(summary).await;
    Ok(state)
}

enum Step {
    Fenced,
    Canceled,
    Failed(Failure),
}

/// The state of a job stopped by its cancel token.
fn stopped_state(job: &RunningJob) -> FinalState {
    match job.stop_cause() {
        Some(StopCause::Shutdown) => FinalState::failed(Failure::new(
            FailureReason::RunnerSystemFailure,
            "agent shutdown",
        )),
        _ => FinalState {
            state: JobState::Canceled,
            exit_code: None,
            reason: "canceled".to_owned(),
            kind: None,
        },
    }
}

/// Runs `step` unless the job is stopped first.
async fn unless_stopped<T>(job: &RunningJob, step: impl Future<Output = T>) -> Result<T, Step> {
    tokio::select! {
        value = step => Ok(value),
        () = job.cancel.cancelled() => Err(if job.fenced.is_cancelled() { Step::Fenced } else { Step::Canceled }),
    }
}

async fn run_steps<A: CoordinatorApi>(
    ctx: &RunnerContext<A>,
    job: &RunningJob,
    attempt: &AttemptRef,
    spec: &JobSpec,
    dirs: &AttemptDirs,
    log: &OutputSink,
) -> Result<FinalState, Step> {
    let say = |text: String| async move {
        let _ = log.send(Bytes::from(text)).await;
    };
    // The agent's own archives and downloads: no job reads them.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dirs.scratch_dir)
        .map_err(|err| {
            Step::Failed(Failure::new(
                FailureReason::RunnerSystemFailure,
                format!("cannot create {}: {err}", dirs.scratch_dir.display()),
            ))
        })?;
    let options = GitOptions::from_spec(spec).map_err(|err| {
        Step::Failed(Failure::new(
            FailureReason::ScriptFailure,
            format!("invalid checkout variable: {err}"),
        ))
    })?;
    let mut git_output = Vec::new();
    let checkout = ctx.git.checkout(
        &spec.repo_url,
        &spec.commit_sha,
        &dirs.project_dir,
        &options,
        &mut git_output,
    );
    let checked_out = unless_stopped(job, checkout).await?;
    if let Ok(done) = &checked_out {
        say(format!("{}\n", done.summary)).await;
    }
    if !git_output.is_empty() {
        let _ = log.send(Bytes::from(git_output)).await;
    }
    // Kept in memory: once the script ran, nothing the job can write may
    // decide what "tracked" means.
    let tracked = Arc::new(
        checked_out
            .map_err(|err| {
                Step::Failed(Failure::new(
                    FailureReason::RunnerSystemFailure,
                    format!("source checkout failed: {err}"),
                ))
            })?
            .tracked,
    );

    for (index, dependency) in spec.dependencies.iter().enumerate() {
        say(format!(
            "Downloading artifacts of {} (job {})\n",
            dependency.job_name, dependency.job_id
        ))
        .await;
        let fetched = unless_stopped(
            job,
            fetch_dependency(ctx, job, attempt, dependency.job_id, dirs, index),
        )
        .await?;
        match fetched {
            Ok(0) => say(format!("No artifacts for {}\n", dependency.job_name)).await,
            Ok(count) => say(format!("Extracted {count} entries\n")).await,
            Err(Step::Failed(failure)) => {
                return Err(Step::Failed(Failure::new(
                    failure.reason,
                    format!(
                        "artifact download of {} failed: {}",
                        dependency.job_name, failure.message
                    ),
                )))
            }
            Err(other) => return Err(other),
        }
    }

    let caches = CacheJob {
        api: &*ctx.api,
        attempt,
        fenced: &job.fenced,
        dirs,
        log,
        tracked: &tracked,
    };
    unless_stopped(job, caches.restore(&spec.caches))
        .await?
        .map_err(|Fenced| Step::Fenced)?;

    // Written just before the scripts and removed right after them, whatever
    // their end (a fenced or canceled job included: the guard drops here).
    let files = write_file_variables(spec, dirs).map_err(|err| {
        Step::Failed(Failure::new(
            FailureReason::RunnerSystemFailure,
            err.to_string(),
        ))
    })?;
    let prepared = prepare(ctx, spec, dirs, job.stop_grace.clone(), files.as_ref());
    let outcome = run_executor(ctx, job, &prepared, log.clone()).await;
    drop(files);
    if job.fenced.is_cancelled() {
        return Err(Step::Fenced);
    }
    let state = match outcome {
        Outcome::Success => FinalState {
            state: JobState::Success,
            exit_code: None,
            reason: String::new(),
            kind: None,
        },
        Outcome::Failed { exit_code, reason } => FinalState {
            state: JobState::Failed,
            exit_code,
            reason,
            // The script ran and exited non-zero, or the executor failed
            // around it (image, service, container).
            kind: Some(if exit_code.is_some() {
                FailureReason::ScriptFailure
            } else {
                FailureReason::RunnerSystemFailure
            }),
        },
        Outcome::Canceled => stopped_state(job),
        Outcome::TimedOut => {
            say(format!(
                "ERROR: Job timed out after {}s\n",
                prepared.timeout.as_secs()
            ))
            .await;
            FinalState::failed(Failure::new(
                FailureReason::JobExecutionTimeout,
                "job timeout",
            ))
        }
    };
    // GitLab saves caches after after_script and before the artifacts; a
    // canceled job saves nothing.
    if matches!(state.state, JobState::Success | JobState::Failed) && !spec.caches.is_empty() {
        let succeeded = state.state == JobState::Success;
        unless_stopped(job, caches.save(&spec.caches, succeeded))
            .await?
            .map_err(|Fenced| Step::Fenced)?;
    }
    if uploads_artifacts(spec, &state) {
        match upload_artifacts(ctx, job, attempt, spec, dirs, &tracked, log).await {
            Ok(()) => {}
            // A failed job stays failed for its own reason, not the upload's.
            Err(Step::Failed(failure)) if state.state == JobState::Failed => {
                let _ = log
                    .send(Bytes::from(format!("WARNING: {}\n", failure.message)))
                    .await;
            }
            Err(other) => return Err(other),
        }
    }
    Ok(state)
}

/// Whether `artifacts:when` asks for an upload after this result. Canceled
/// jobs never upload, as in GitLab; a timeout is a failure.
fn uploads_artifacts(spec: &JobSpec, state: &FinalState) -> bool {
    if spec.artifact_paths.is_empty() && !spec.artifact_untracked {
        return false;
    }
    let (succeeded, failed) = (
        state.state == JobState::Success,
        state.state == JobState::Failed,
    );
    match spec.artifact_when() {
        ArtifactWhen::Unspecified | ArtifactWhen::OnSuccess => succeeded,
        ArtifactWhen::OnFailure => failed,
        ArtifactWhen::Always => succeeded || failed,
    }
}

/// Runs the executor; a `CancelJob` grace shorter than the executor's is
/// enforced here by SIGKILL to the recorded process group.
async fn run_executor<A: CoordinatorApi>(
    ctx: &RunnerContext<A>,
    job: &RunningJob,
    prepared: &PreparedJob,
    log: OutputSink,
) -> Outcome {
    let enforce_grace = async {
        job.cancel.cancelled().await;
        if let Some(StopCause::Canceled { grace }) = job.stop_cause() {
            if grace < ctx.kill_grace {
                tokio::time::sleep(grace).await;
                if let Some(pgid) = job.pgid() {
                    workspace::kill_group(pgid);
                }
            }
        }
        std::future::pending::<()>().await;
    };
    // A fenced shell job (lease lost, or abandoned by the coordinator) stops
    // here rather than in the executor, which would run `after_script` after
    // the cancel: another agent may already run the job, so nothing more of
    // this copy may run. Dropping the executor's future kills the script's
    // shell (kill_on_drop) and starts nothing new; the rest of its group gets
    // SIGTERM, then SIGKILL after the grace. A Docker job takes the
    // executor's cancel path, which stops and removes its containers and runs
    // no `after_script` after a cancel.
    let lost = async {
        job.fenced.cancelled().await;
        if ctx.executor_name != "shell" {
            std::future::pending::<()>().await;
        }
    };
    let ended = tokio::select! {
        outcome = ctx.executor.run(prepared, log, job.cancel.clone()) => Some(outcome),
        () = enforce_grace => Some(unreachable_outcome()),
        () = lost => None,
    };
    match ended {
        Some(outcome) => outcome,
        None => {
            lost::stop_group(ctx, job).await;
            Outcome::Canceled
        }
    }
}

fn unreachable_outcome() -> Outcome {
    // `enforce_grace` never completes; this keeps the select total without a panic.
    Outcome::Failed {
        exit_code: None,
        reason: "internal error".to_owned(),
    }
}

/// `AppendLog` of one attempt.
struct AttemptLog<'a, A> {
    api: &'a A,
    attempt: AttemptRef,
}

impl<A: CoordinatorApi> LogEndpoint for AttemptLog<'_, A> {
    fn append(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<AppendReply, CallError>> {
        self.api.append_log(self.attempt.clone(), offset, data)
    }
}

mod lost;
mod prepare;
#[cfg(test)]
#[path = "job_runner_tests.rs"]
mod tests;
mod transfers;

use prepare::{prepare, write_file_variables};
use transfers::{fetch_dependency, upload_artifacts};
