//! The attempt's transfers: the artifacts of the jobs it depends on, down
//! and extracted; its own, collected and up. Each failure carries its
//! GitLab reason (`unmet_prerequisites` down, `runner_system_failure` up).

use super::{AttemptDirs, RunnerContext, RunningJob, Step, DOWNLOAD_RETRY_LIMIT};
use crate::archive;
use crate::artifacts::{self, TrackedFiles};
use crate::client::CoordinatorApi;
use crate::executor::OutputSink;
use crate::retry::{with_backoff, GaveUp};
use bytes::Bytes;
use osprey_proto::v1::{AttemptRef, JobSpec};
use osprey_shared::{Failure, FailureReason};
use std::sync::Arc;

/// Downloads and extracts one dependency's archive; returns the entries extracted.
pub(super) async fn fetch_dependency<A: CoordinatorApi>(
    ctx: &RunnerContext<A>,
    job: &RunningJob,
    attempt: &AttemptRef,
    source_job: u64,
    dirs: &AttemptDirs,
    index: usize,
) -> Result<usize, Step> {
    let failed = |err: &dyn std::fmt::Display| {
        Step::Failed(Failure::new(
            FailureReason::UnmetPrerequisites,
            err.to_string(),
        ))
    };
    std::fs::create_dir_all(&dirs.downloads).map_err(|err| failed(&err))?;
    let archive = dirs.downloads.join(format!("{index}-{source_job}.tar"));
    let downloaded = with_backoff(
        "download artifact",
        &job.fenced,
        Some(DOWNLOAD_RETRY_LIMIT),
        || {
            ctx.api
                .download_artifact(attempt.clone(), source_job, &archive)
        },
    )
    .await;
    match downloaded {
        Ok(true) => {}
        Ok(false) => return Ok(0),
        Err(GaveUp::Fenced) => return Err(Step::Fenced),
        Err(GaveUp::Failed(err)) => return Err(failed(&err)),
    }
    let project_dir = dirs.project_dir.clone();
    let extracted = tokio::task::spawn_blocking(move || archive::extract(&archive, &project_dir))
        .await
        .map_err(|err| failed(&err))?;
    extracted.map_err(|err| failed(&err))
}

pub(super) async fn upload_artifacts<A: CoordinatorApi>(
    ctx: &RunnerContext<A>,
    job: &RunningJob,
    attempt: &AttemptRef,
    spec: &JobSpec,
    dirs: &AttemptDirs,
    tracked: &Arc<TrackedFiles>,
    log: &OutputSink,
) -> Result<(), Step> {
    let say = |text: String| async move {
        let _ = log.send(Bytes::from(text)).await;
    };
    say("Uploading artifacts\n".to_owned()).await;
    let (project_dir, archive, untracked) = (
        dirs.project_dir.clone(),
        dirs.archive.clone(),
        spec.artifact_untracked,
    );
    let mut selection = artifacts::Selection {
        patterns: spec.artifact_paths.clone(),
        literal: Vec::new(),
        exclude: spec.artifact_exclude.clone(),
    };
    let tracked = tracked.clone();
    let collected = tokio::task::spawn_blocking(move || {
        if untracked {
            selection.literal = artifacts::untracked_files(&project_dir, &tracked)?;
        }
        artifacts::collect_selection(&project_dir, &selection, &archive)
            .map_err(|err| err.to_string())
    })
    .await
    .map_err(|err| upload_failed(&err))?
    .map_err(|err| upload_failed(&err))?;
    for warning in &collected.warnings {
        say(format!("WARNING: {warning}\n")).await;
    }
    let Some(archive) = collected.archive else {
        say("WARNING: no files to upload\n".to_owned()).await;
        return Ok(());
    };
    let uploaded = with_backoff("upload artifact", &job.fenced, None, || {
        ctx.api.upload_artifact(attempt.clone(), &archive)
    })
    .await;
    match uploaded {
        Ok(()) => {
            say(format!(
                "Uploaded {} entries, {} bytes\n",
                collected.entries.len(),
                archive.size
            ))
            .await;
            Ok(())
        }
        Err(GaveUp::Fenced) => Err(Step::Fenced),
        Err(GaveUp::Failed(err)) => Err(upload_failed(&err)),
    }
}

fn upload_failed(err: &dyn std::fmt::Display) -> Step {
    Step::Failed(Failure::new(
        FailureReason::RunnerSystemFailure,
        format!("artifact upload failed: {err}"),
    ))
}
