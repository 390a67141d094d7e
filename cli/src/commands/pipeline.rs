//! `osprey pipeline run|show|cancel|list|retry`.

use crate::args::{CancelArgs, PipelineListArgs, RunArgs, ShowArgs};
use crate::client::{Client, Unreachable};
use crate::render;
use anyhow::Context as _;
use osprey_shared::api::{CreatePipeline, PipelineFilter, PipelineView, RunPipeline};
use osprey_shared::{JobId, JobStatus, PipelineStatus};
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often `--wait` polls the pipeline.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long `--wait` rides out an unreachable coordinator (e.g. a restart).
pub(super) const UNREACHABLE_GRACE: Duration = Duration::from_secs(60);

/// Where `pipeline run` posts, and what.
#[derive(Debug)]
pub enum RunRequest {
    /// `POST /api/v1/pipelines`.
    Repo(CreatePipeline),
    /// `POST /api/v1/projects/{name}/pipelines`.
    Project { name: String, body: RunPipeline },
}

/// The request of `pipeline run`: exactly one of `--repo` and `--project`
/// (clap enforces it).
pub fn run_request(args: &RunArgs) -> anyhow::Result<RunRequest> {
    match (&args.project, &args.repo) {
        (Some(name), None) => Ok(RunRequest::Project {
            name: name.clone(),
            body: RunPipeline {
                git_ref: args.git_ref.clone(),
                variables: args.variables.clone(),
            },
        }),
        (None, Some(repo)) => Ok(RunRequest::Repo(CreatePipeline {
            repo: resolve_run_repo(repo)?,
            project: None,
            git_ref: args.git_ref.clone(),
            variables: args.variables.clone(),
        })),
        _ => anyhow::bail!("give exactly one of --repo and --project"),
    }
}

pub async fn run(client: &Client, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let pipeline = match run_request(args)? {
        RunRequest::Repo(request) => client.create_pipeline(&request).await?,
        RunRequest::Project { name, body } => {
            let path = format!("{}/pipelines", super::project::project_path(&name));
            client.create_pipeline_at(&path, &body).await?
        }
    };
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

pub async fn retry(client: &Client, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/pipelines/{}/retry", args.id);
    let pipeline: PipelineView = client.post_json(&path, None::<&()>).await?;
    if args.json {
        print_json(&pipeline)?;
    } else {
        println!("{}", render::summary(&pipeline));
    }
    Ok(ExitCode::SUCCESS)
}

/// The query of `pipeline list`.
pub fn list_filter(args: &PipelineListArgs) -> PipelineFilter {
    PipelineFilter {
        git_ref: args.git_ref.clone(),
        status: args.status.clone(),
        limit: args.limit,
        before: None,
    }
}

pub async fn list(client: &Client, args: &PipelineListArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}/pipelines", super::project::project_path(&args.project));
    let pipelines: Vec<PipelineView> = client.get_json_query(&path, &list_filter(args)).await?;
    if args.json {
        render::print_json(&pipelines)?;
    } else {
        print!("{}", list_table(&pipelines));
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(pipelines: &[PipelineView]) -> String {
    let rows: Vec<Vec<String>> = pipelines
        .iter()
        .map(|pipeline| {
            vec![
                pipeline.id.to_string(),
                render::or_dash(pipeline.iid),
                pipeline.status.to_string(),
                pipeline.git_ref.clone(),
                render::short_sha(&pipeline.sha).to_owned(),
                pipeline.source.clone(),
                render::or_dash(pipeline.created_at.as_ref()),
            ]
        })
        .collect();
    render::columns(
        &["ID", "IID", "STATUS", "REF", "SHA", "SOURCE", "CREATED"],
        &rows,
    )
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

/// [`resolve_repo`] for a pipeline to run now: a local path must be a git
/// repository (a work tree or a bare one), checked here so the error names
/// the directory the user gave.
pub(crate) fn resolve_run_repo(repo: &str) -> anyhow::Result<String> {
    let path = Path::new(repo);
    let url = !path.exists() && looks_like_url(repo);
    if !url && !is_git_repository(path) {
        anyhow::bail!("{repo} is not a git repository");
    }
    resolve_repo(repo)
}

/// A local path becomes absolute (the coordinator and agents do not share our
/// working directory); anything that looks like a URL is sent as given.
pub(crate) fn resolve_repo(repo: &str) -> anyhow::Result<String> {
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

/// A work tree (`.git`, a directory or a worktree's file) or a bare
/// repository (`HEAD`, `objects/` and `refs/`).
fn is_git_repository(path: &Path) -> bool {
    path.join(".git").exists()
        || (path.join("HEAD").is_file()
            && path.join("objects").is_dir()
            && path.join("refs").is_dir())
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

    use crate::args::{Args, Command, PipelineCommand};
    use clap::Parser;

    fn run_args(argv: &[&str]) -> Result<RunArgs, clap::Error> {
        match Args::try_parse_from(argv)?.command {
            Command::Pipeline(PipelineCommand::Run(args)) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_takes_exactly_one_of_repo_and_project() {
        let args = run_args(&[
            "osprey",
            "pipeline",
            "run",
            "--project",
            "widget",
            "--ref",
            "main",
            "--var",
            "A=1",
        ])
        .unwrap();
        match run_request(&args).unwrap() {
            RunRequest::Project { name, body } => {
                assert_eq!(name, "widget");
                assert_eq!(body.git_ref, "main");
                assert_eq!(body.variables.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let args = run_args(&[
            "osprey",
            "pipeline",
            "run",
            "--repo",
            "https://x/r.git",
            "--ref",
            "v1",
        ])
        .unwrap();
        assert!(
            matches!(run_request(&args).unwrap(), RunRequest::Repo(ref r) if r.repo == "https://x/r.git" && r.project.is_none())
        );
        assert!(run_args(&["osprey", "pipeline", "run", "--ref", "main"]).is_err());
        assert!(run_args(&[
            "osprey",
            "pipeline",
            "run",
            "--repo",
            "r",
            "--project",
            "p",
            "--ref",
            "main"
        ])
        .is_err());
    }

    #[test]
    fn list_filters_become_the_query() {
        let parsed = Args::try_parse_from([
            "osprey",
            "pipeline",
            "list",
            "--project",
            "widget",
            "--ref",
            "main",
            "--status",
            "failed",
            "--limit",
            "5",
            "--json",
        ])
        .unwrap();
        let Command::Pipeline(PipelineCommand::List(args)) = parsed.command else {
            panic!("not pipeline list");
        };
        assert!(args.json);
        let filter = list_filter(&args);
        let json = serde_json::to_value(&filter).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ref": "main", "status": "failed", "limit": 5})
        );
        assert!(Args::try_parse_from(["osprey", "pipeline", "list"]).is_err());
    }

    #[test]
    fn retry_commands_parse() {
        let parsed = Args::try_parse_from(["osprey", "pipeline", "retry", "12", "--json"]).unwrap();
        assert!(matches!(
            parsed.command,
            Command::Pipeline(PipelineCommand::Retry(ShowArgs { id: 12, json: true }))
        ));
        let parsed = Args::try_parse_from(["osprey", "job", "retry", "40"]).unwrap();
        assert!(
            matches!(parsed.command, Command::Job(crate::args::JobCommand::Retry(ref args)) if args.id == 40 && !args.json)
        );
    }

    #[test]
    fn local_repositories_become_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join(".git")).unwrap();
        let resolved = resolve_run_repo(work.to_str().unwrap()).unwrap();
        assert!(Path::new(&resolved).is_absolute(), "{resolved}");
        assert!(resolved.ends_with("work"), "{resolved}");

        let bare = dir.path().join("bare.git");
        std::fs::create_dir_all(bare.join("objects")).unwrap();
        std::fs::create_dir_all(bare.join("refs")).unwrap();
        std::fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert!(resolve_run_repo(bare.to_str().unwrap()).is_ok());
        assert_eq!(
            resolve_run_repo("https://x/r.git").unwrap(),
            "https://x/r.git"
        );
    }

    #[test]
    fn a_directory_that_is_not_a_git_repository_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let given = plain.to_str().unwrap();
        let error = resolve_run_repo(given).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{given} is not a git repository")
        );
        let error = resolve_run_repo("no-such-dir/repo").unwrap_err();
        assert_eq!(
            error.to_string(),
            "no-such-dir/repo is not a git repository"
        );
        // A project's repository is only resolved (it is read later).
        let resolved = resolve_repo("no-such-dir/repo").unwrap();
        assert!(Path::new(&resolved).is_absolute(), "{resolved}");
    }
}
