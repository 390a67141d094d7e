//! `osprey-agent exec shell|docker "JOB NAME" [--var K=V]... [--docker-image IMAGE]
//! [--config FILE] [--docker-volume SRC:DST[:ro]]... [--docker-privileged]`:
//! runs one job of the current git repository's `.gitlab-ci.yml` here, with no
//! coordinator, streaming its log to stdout; the process exits with the job's
//! result. `--docker-image` is the image of a job that names none; the Docker
//! settings are those of the `--config` file (the agent's TOML), if given,
//! with the volumes and privileged flag added.
//!
//! The file goes through the coordinator's front end and planner: `include:`
//! (local files, read from the working tree), `rules:`, `only`/`except` and
//! `workflow:` are evaluated for the ref checked out (the branch, or the tag
//! when `HEAD` is detached exactly at one) with the predefined variables the
//! coordinator would set, and `--var`s as pipeline variables. A job the rules
//! leave out on that ref is an error.
//!
//! As `gitlab-runner exec` did, the job runs on the committed state: `HEAD` is
//! cloned into a temporary directory (removed afterwards), so uncommitted
//! changes are not seen and the working tree is never touched. Only the job
//! itself runs: no other job, so no `needs:`/`dependencies:` artifacts, no
//! artifact upload, and `when:` / `allow_failure:` are not consulted.

use crate::config::{ExecArgs, ExecutorKind};
use crate::executor::docker::DockerExecutor;
use crate::executor::shell::ShellExecutor;
use crate::executor::{Executor, Outcome, PreparedJob};
use anyhow::{bail, Context};
use osprey_shared::pipeline::{JobDef, Pipeline, Variable};
use osprey_shared::plan::{PipelineSource, Plan, PlanContext};
use osprey_shared::variables::predefined::{
    id_predefined, job_predefined, pipeline_predefined, project_facts, Facts, Ids, JobFacts,
    ProjectFacts,
};
use osprey_shared::yaml::DirectoryLoader;
use osprey_shared::JobId;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The timeout of a job that sets none (GitLab's project default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Between SIGTERM and SIGKILL on Ctrl-C or timeout.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// `CI_SERVER_URL` of a local run. There is no coordinator, so the URLs a
/// job sees (`CI_PROJECT_URL`, `CI_JOB_URL`...) name this placeholder.
const LOCAL_SERVER_URL: &str = "http://localhost";

/// Runs the job and returns the process exit status: 0 on success, the
/// script's exit code on a script failure, 1 on another failure, 124 on
/// timeout, 130 when interrupted.
pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let repo = git(Path::new("."), &["rev-parse", "--show-toplevel"])
        .await
        .context("exec runs inside a git repository")?;
    let repo = PathBuf::from(repo);
    let file = repo.join(".gitlab-ci.yml");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let checkout = Checkout::of(&repo).await?;
    let project_name = repo
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".to_owned());
    let project = project_facts(
        &repo.display().to_string(),
        Some(&project_name),
        LOCAL_SERVER_URL,
        None,
    );
    let variables = parse_vars(&args.vars)?;
    let (pipeline, defined) = plan_pipeline(&repo, &text, &checkout, &project, variables)?;
    let Some(job) = pipeline.jobs.iter().find(|job| job.name == args.job_name) else {
        bail!(
            "{}",
            missing_job(&args.job_name, &defined, &pipeline, &checkout)
        );
    };
    let work = std::env::temp_dir().join(format!("osprey-exec-{}", uuid::Uuid::new_v4()));
    let project_dir = work.join(&project_name);
    let result = async {
        clone(&repo, &project_dir, &checkout.sha).await?;
        let prepared = prepare(&pipeline, job, &project_dir, &project, &checkout);
        execute(&args, &prepared).await
    }
    .await;
    if let Err(error) = std::fs::remove_dir_all(&work) {
        tracing::debug!(%error, dir = %work.display(), "removing the exec work dir failed");
    }
    result
}

async fn execute(args: &ExecArgs, job: &PreparedJob) -> anyhow::Result<i32> {
    let executor: Box<dyn Executor> = match args.executor {
        ExecutorKind::Shell => Box::new(ShellExecutor::new()),
        ExecutorKind::Docker => {
            let config = args.docker_config()?;
            let executor = DockerExecutor::new(config)?.with_agent_name("osprey-exec");
            executor.check_engine().await?;
            Box::new(executor)
        }
    };
    let cancel = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let printer = async {
        let mut stdout = tokio::io::stdout();
        while let Some(chunk) = receiver.recv().await {
            // A closed stdout (`| head`) must not stop the job.
            let _ = stdout.write_all(&chunk).await;
            let _ = stdout.flush().await;
        }
    };
    let watch = async {
        tokio::select! {
            _ = interrupt.recv() => cancel.cancel(),
            _ = terminate.recv() => cancel.cancel(),
            () = cancel.cancelled() => {}
        }
    };
    let job_run = async {
        let outcome = executor.run(job, sender, cancel.clone()).await;
        // Ends the signal watch once the job is over.
        cancel.cancel();
        outcome
    };
    let (outcome, (), ()) = tokio::join!(job_run, printer, watch);
    let code = match &outcome {
        Outcome::Success => {
            eprintln!("Job succeeded");
            0
        }
        Outcome::Failed { exit_code, reason } => {
            eprintln!("ERROR: Job failed: {reason}");
            match exit_code {
                Some(code) if *code != 0 => *code,
                _ => 1,
            }
        }
        Outcome::TimedOut => {
            eprintln!("ERROR: Job failed: job timeout");
            124
        }
        Outcome::Canceled => {
            eprintln!("ERROR: Job canceled");
            130
        }
    };
    Ok(code)
}

/// The job as an executor takes it: the predefined variables a coordinator
/// would give (pipeline and job ids 0), then the planned job's variables
/// (the file's, its rules', and the `--var`s, already expanded).
fn prepare(
    pipeline: &Pipeline,
    job: &JobDef,
    project_dir: &Path,
    project: &ProjectFacts,
    checkout: &Checkout,
) -> PreparedJob {
    let builds_dir = project_dir.parent().unwrap_or(project_dir);
    let mut predefined = checkout.predefined(project);
    predefined.extend(job_predefined(&JobFacts {
        name: &job.name,
        stage: &job.stage,
        node: job.node,
    }));
    predefined.extend(id_predefined(
        LOCAL_SERVER_URL,
        &Ids {
            pipeline_id: 0,
            pipeline_iid: 0,
            job_id: 0,
        },
    ));
    let mut env: Vec<(String, String)> = predefined.into_iter().map(|v| (v.key, v.value)).collect();
    let variables = pipeline.variables.iter().chain(&job.variables);
    env.extend(variables.map(|v| (v.key.clone(), v.value.clone())));
    env.push((
        "CI_PROJECT_DIR".to_owned(),
        project_dir.display().to_string(),
    ));
    env.push(("CI_BUILDS_DIR".to_owned(), builds_dir.display().to_string()));
    PreparedJob {
        job_id: JobId(0),
        job_name: job.name.clone(),
        project_name: project.name.clone(),
        project_dir: project_dir.to_owned(),
        env,
        files_dir: None,
        main_script: crate::script::main_script(&job.before_script, &job.script),
        after_script: crate::script::after_script(&job.after_script),
        image: job.image.clone(),
        services: job.services.clone(),
        timeout: job
            .timeout_seconds
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
        kill_grace: KILL_GRACE,
        stop_grace: Default::default(),
    }
}

/// What is checked out, as the coordinator would see a push of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checkout {
    /// The commit of `HEAD`.
    sha: String,
    /// Its message.
    message: String,
    /// Branch or tag name.
    git_ref: String,
    is_tag: bool,
    default_branch: Option<String>,
    /// Files changed by `HEAD` against its first parent; `None` for a root commit.
    changed_files: Option<Vec<String>>,
}

impl Checkout {
    async fn of(repo: &Path) -> anyhow::Result<Self> {
        let sha = git(repo, &["rev-parse", "HEAD"]).await?;
        let message = git(repo, &["log", "-1", "--format=%B", "HEAD"]).await?;
        let head = git(repo, &["rev-parse", "--abbrev-ref", "HEAD"]).await?;
        let (git_ref, is_tag) = if head != "HEAD" {
            (head, false)
        } else if let Ok(tag) = git(repo, &["describe", "--tags", "--exact-match", "HEAD"]).await {
            (tag, true)
        } else {
            // Detached away from any tag: no ref would trigger this commit.
            // GitLab's name for that case is the commit itself; "HEAD" keeps
            // rules on branch names false without failing jobs that have none.
            eprintln!("note: HEAD is detached and not at a tag; planning for the ref \"HEAD\"");
            (head, false)
        };
        let default_branch = default_branch(repo).await;
        let changed_files = match git(repo, &["rev-parse", "--verify", "--quiet", "HEAD^"]).await {
            Ok(_) => git(repo, &["diff", "--name-only", "HEAD^", "HEAD"])
                .await
                .ok()
                .map(|out| out.lines().map(str::to_owned).collect()),
            Err(_) => None,
        };
        Ok(Self {
            sha,
            message,
            git_ref,
            is_tag,
            default_branch,
            changed_files,
        })
    }

    /// The predefined variables the coordinator plans with, for a push of
    /// this checkout to a new branch (no commit before it).
    fn predefined(&self, project: &ProjectFacts) -> Vec<Variable> {
        pipeline_predefined(&Facts {
            git_ref: &self.git_ref,
            is_tag: self.is_tag,
            source: PipelineSource::Push.as_str(),
            default_branch: self.default_branch.as_deref(),
            sha: Some(&self.sha),
            before_sha: None,
            message: Some(&self.message),
            server_url: Some(LOCAL_SERVER_URL),
            project: Some(project),
        })
    }

    /// `branch main` or `tag v1.0`, for messages.
    fn describe(&self) -> String {
        let kind = if self.is_tag { "tag" } else { "branch" };
        format!("{kind} {}", self.git_ref)
    }
}

/// `CI_DEFAULT_BRANCH`: the remote's default branch in a clone; else the
/// local branch `init.defaultBranch` names, else `main` or `master`, if it
/// exists. Never simply the branch checked out, which would make every
/// branch the default one.
async fn default_branch(repo: &Path) -> Option<String> {
    let remote_head = [
        "symbolic-ref",
        "--quiet",
        "--short",
        "refs/remotes/origin/HEAD",
    ];
    if let Ok(remote) = git(repo, &remote_head).await {
        if let Some(branch) = remote.split_once('/').map(|(_, branch)| branch) {
            return Some(branch.to_owned());
        }
    }
    let configured = git(repo, &["config", "init.defaultBranch"]).await.ok();
    let candidates = configured
        .into_iter()
        .chain(["main".to_owned(), "master".to_owned()]);
    for branch in candidates {
        let full = format!("refs/heads/{branch}");
        if git(repo, &["rev-parse", "--verify", "--quiet", &full])
            .await
            .is_ok()
        {
            return Some(branch);
        }
    }
    None
}

/// Parses `.gitlab-ci.yml` (includes from the working tree) and plans it for
/// the checkout, as the coordinator does for a push. Returns the planned
/// pipeline and the names of every job the file defines.
fn plan_pipeline(
    repo: &Path,
    text: &str,
    checkout: &Checkout,
    project: &ProjectFacts,
    variables: Vec<Variable>,
) -> anyhow::Result<(Pipeline, Vec<String>)> {
    let files = DirectoryLoader::new(repo);
    let definition = osprey_shared::yaml::parse_pipeline_with(".gitlab-ci.yml", text, &files)
        .map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("invalid .gitlab-ci.yml:\n{}", lines.join("\n"))
        })?;
    let context = PlanContext {
        git_ref: checkout.git_ref.clone(),
        is_tag: checkout.is_tag,
        source: PipelineSource::Push,
        changed_files: checkout.changed_files.clone(),
        files: &files,
        predefined: checkout.predefined(project),
        variables,
        project_variables: Vec::new(),
    };
    let defined: Vec<String> = definition
        .pipeline
        .jobs
        .iter()
        .map(|job| job.name.clone())
        .collect();
    let on = checkout.describe();
    match osprey_shared::plan::plan(&definition, &context) {
        Ok(Plan::Created { pipeline }) => Ok((pipeline, defined)),
        Ok(Plan::NotCreated { reason }) => {
            bail!("no pipeline on {on}, so no job runs: {reason}")
        }
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!("cannot plan .gitlab-ci.yml on {on}:\n{}", lines.join("\n"))
        }
    }
}

/// Why `name` is not in the planned pipeline: unknown, or left out by rules.
fn missing_job(name: &str, defined: &[String], planned: &Pipeline, checkout: &Checkout) -> String {
    if !defined.iter().any(|job| job == name) {
        return format!(
            "no job {name:?} in .gitlab-ci.yml; jobs: {}",
            defined.join(", ")
        );
    }
    let planned: Vec<&str> = planned.jobs.iter().map(|job| job.name.as_str()).collect();
    format!(
        "job {name:?} does not run on {}: its rules (rules, only/except) exclude it on {}; jobs on {}: {}",
        checkout.describe(),
        checkout.git_ref,
        checkout.git_ref,
        planned.join(", ")
    )
}

fn parse_vars(vars: &[String]) -> anyhow::Result<Vec<Variable>> {
    vars.iter()
        .enumerate()
        .map(|(index, var)| match var.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Variable {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            // Not repeated: a mistyped argument may be a secret value.
            _ => bail!("--var number {}: expected KEY=VALUE", index + 1),
        })
        .collect()
}

/// The same checkout as a job's on an agent (neutral git configuration):
/// the user's repository is cloned into a directory exec just made.
async fn clone(repo: &Path, into: &Path, sha: &str) -> anyhow::Result<()> {
    let mut log = Vec::new();
    let cloned = crate::workspace::checkout(&repo.to_string_lossy(), sha, into, &mut log).await;
    cloned
        .map(drop)
        .map_err(|error| anyhow::anyhow!("{error}\n{}", String::from_utf8_lossy(&log).trim()))
}

/// Runs git in `dir`; its trimmed stdout, or an error with its stderr.
async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .context("cannot run git")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_are_key_value() {
        let pairs: Vec<(String, String)> = parse_vars(&["A=1".into(), "B=x=y".into(), "C=".into()])
            .unwrap()
            .into_iter()
            .map(|v| (v.key, v.value))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "x=y".to_owned()),
                ("C".to_owned(), String::new())
            ]
        );
        assert!(parse_vars(&["novalue".into()]).is_err());
        assert!(parse_vars(&["=1".into()]).is_err());
        let err = parse_vars(&["A=1".into(), "=hunter22".into()]).unwrap_err();
        assert_eq!(err.to_string(), "--var number 2: expected KEY=VALUE");
    }
}
