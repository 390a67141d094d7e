//! `osprey pipeline run|show|cancel`.

use crate::args::{CancelArgs, RunArgs, ShowArgs};
use crate::client::{Client, Unreachable};
use crate::render;
use anyhow::Context as _;
use osprey_shared::api::{CreatePipeline, PipelineView};
use osprey_shared::{JobId, JobStatus, PipelineStatus};
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often `--wait` polls the pipeline.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long `--wait` rides out an unreachable coordinator (e.g. a restart).
const UNREACHABLE_GRACE: Duration = Duration::from_secs(60);

pub async fn run(client: &Client, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let request = CreatePipeline {
        repo: resolve_repo(&args.repo)?,
        project: None,
        git_ref: args.git_ref.clone(),
        variables: args.variables.clone(),
    };
    let pipeline = client.create_pipeline(&request).await?;
    if !args.wait {
        if args.json {
            print_json(&pipeline)?;
        } else {
            println!("{}", render::summary(&pipeline));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // With --json stdout carries only the final JSON; progress goes to stderr.
    let progress = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    progress(render::summary(&pipeline));
    let finished = follow(client, pipeline, &progress).await?;
    if args.json {
        print_json(&finished)?;
    } else {
        print!("{}", render::table(&finished));
    }
    Ok(exit_code_for(finished.status))
}

pub async fn show(client: &Client, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let pipeline = client.pipeline(args.id).await?;
    if args.json {
        print_json(&pipeline)?;
    } else {
        print!("{}", render::table(&pipeline));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(client: &Client, args: &CancelArgs) -> anyhow::Result<ExitCode> {
    let pipeline = client.cancel_pipeline(args.id).await?;
    println!(
        "pipeline {} cancel requested (status {})",
        pipeline.id, pipeline.status
    );
    Ok(ExitCode::SUCCESS)
}

/// Polls until the pipeline is finished, reporting every job status (or
/// agent) change as it is seen.
async fn follow(
    client: &Client,
    mut pipeline: PipelineView,
    progress: &impl Fn(String),
) -> anyhow::Result<PipelineView> {
    let mut seen: HashMap<JobId, (JobStatus, Option<String>)> = HashMap::new();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        for job in &pipeline.jobs {
            let now = (job.status, job.agent.clone());
            if seen.get(&job.id) != Some(&now) {
                progress(render::job_change(job));
                seen.insert(job.id, now);
            }
        }
        if pipeline.status.is_finished() {
            return Ok(pipeline);
        }
        if pipeline.status == PipelineStatus::Manual {
            // Blocked: nothing moves until someone plays a manual job.
            let manual: Vec<String> = pipeline
                .jobs
                .iter()
                .filter(|job| job.status == JobStatus::Manual)
                .map(|job| format!("osprey job play {}  # {}", job.id, job.name))
                .collect();
            progress(format!(
                "[{}] pipeline {} waits for a manual job:\n  {}",
                render::clock(),
                pipeline.id,
                manual.join("\n  ")
            ));
            return Ok(pipeline);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        match client.pipeline(pipeline.id.0).await {
            Ok(latest) => {
                if unreachable_since.take().is_some() {
                    progress(format!("[{}] coordinator reachable again", render::clock()));
                }
                pipeline = latest;
            }
            Err(error) if error.is::<Unreachable>() => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    progress(format!("[{}] {error}; retrying", render::clock()));
                    Instant::now()
                });
                if since.elapsed() > UNREACHABLE_GRACE {
                    return Err(error);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

fn exit_code_for(status: PipelineStatus) -> ExitCode {
    match status {
        PipelineStatus::Success => ExitCode::SUCCESS,
        PipelineStatus::Created
        | PipelineStatus::Pending
        | PipelineStatus::Running
        | PipelineStatus::Failed
        | PipelineStatus::Canceled
        | PipelineStatus::Manual => ExitCode::FAILURE,
    }
}

fn print_json(pipeline: &PipelineView) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(pipeline).context("cannot encode the pipeline")?;
    println!("{text}");
    Ok(())
}

/// A local path becomes absolute (the coordinator and agents do not share our
/// working directory); anything that looks like a URL is sent as given.
fn resolve_repo(repo: &str) -> anyhow::Result<String> {
    let path = Path::new(repo);
    if !path.exists() && looks_like_url(repo) {
        return Ok(repo.to_owned());
    }
    let absolute = match path.canonicalize() {
        Ok(canonical) => canonical,
        Err(_) => std::path::absolute(path)
            .with_context(|| format!("cannot make {repo} an absolute path"))?,
    };
    absolute
        .into_os_string()
        .into_string()
        .map_err(|path| anyhow::anyhow!("repository path {path:?} is not UTF-8"))
}

/// `scheme://...` or scp-like `user@host:path`.
fn looks_like_url(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    match repo.split_once(':') {
        Some((host, _)) => !host.is_empty() && !host.contains('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_sent_as_given() {
        assert!(looks_like_url("https://example.com/repo.git"));
        assert!(looks_like_url("git@example.com:group/repo.git"));
        assert!(!looks_like_url("some/dir"));
        assert!(!looks_like_url("./a:b"));
        assert_eq!(
            resolve_repo("file:///srv/repo").unwrap(),
            "file:///srv/repo"
        );
    }

    #[test]
    fn local_paths_become_absolute() {
        let resolved = resolve_repo("no-such-dir/repo").unwrap();
        assert!(Path::new(&resolved).is_absolute(), "{resolved}");
        assert!(resolved.ends_with("no-such-dir/repo"));
    }
}
