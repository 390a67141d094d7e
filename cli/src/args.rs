//! Command-line arguments (clap derive). Only shapes live here; behaviour is in
//! [`crate::commands`].

use clap::{Args as ClapArgs, Parser, Subcommand};
use std::path::PathBuf;

mod deployments;
mod projects;
pub use deployments::*;
pub use projects::*;

/// Command line for an Osprey coordinator.
#[derive(Debug, Parser)]
#[command(name = "osprey", version, about)]
pub struct Args {
    /// Base URL of the coordinator's HTTP API.
    #[arg(
        long,
        global = true,
        env = "OSPREY_URL",
        default_value = "http://127.0.0.1:8710"
    )]
    pub url: String,

    /// API token, sent as `Authorization: Bearer`. Without it (or
    /// `$OSPREY_TOKEN`), the file `$XDG_CONFIG_HOME/osprey/token` or
    /// `~/.config/osprey/token` is read if it exists.
    #[arg(long, global = true, env = "OSPREY_TOKEN", hide_env_values = true)]
    pub token: Option<SecretArg>,

    /// Extra PEM root certificate(s) trusted for an https:// coordinator.
    #[arg(long, global = true, env = "OSPREY_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// A secret given on the command line or in the environment: never shown
/// by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretArg(pub String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretArg([REDACTED])")
    }
}

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(SecretArg(text.to_owned()))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect and cancel pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Print the log of a job, or of every job of a pipeline.
    Logs(LogsArgs),
    /// Check a pipeline file locally (no coordinator needed).
    Lint(LintArgs),
    /// Act on one job.
    #[command(subcommand)]
    Job(JobCommand),
    /// Register, list, show and remove projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// A project's CI/CD variables (values are never shown).
    #[command(subcommand)]
    Var(VarCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// A project's pipeline schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// A project's environments: what is deployed, history, rollback, stop.
    #[command(subcommand)]
    Env(EnvCommand),
    /// A project's notification rules (email, webhooks) and deliveries.
    #[command(subcommand)]
    Notify(NotifyCommand),
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Start a manual job (`when: manual`).
    Play(JobIdArgs),
    /// Show one job.
    Show(JobShowArgs),
    /// Run a finished job again.
    Retry(JobShowArgs),
}

#[derive(Debug, ClapArgs)]
pub struct JobIdArgs {
    pub id: u64,
}

#[derive(Debug, ClapArgs)]
pub struct JobShowArgs {
    pub id: u64,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline for a repository and ref.
    Run(RunArgs),
    /// Show a pipeline and its jobs.
    Show(ShowArgs),
    /// Cancel a pipeline.
    Cancel(CancelArgs),
    /// List a project's pipelines, newest first.
    List(PipelineListArgs),
    /// Retry the failed and canceled jobs of a pipeline.
    Retry(ShowArgs),
}

#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    /// Local path (made absolute) or URL of the git repository.
    #[arg(long, required_unless_present = "project", conflicts_with = "project")]
    pub repo: Option<String>,
    /// A registered project (its repository, variables and numbering).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// Branch, tag or commit.
    #[arg(long = "ref")]
    pub git_ref: String,
    /// Follow the pipeline until it finishes; exit 0 only on success.
    #[arg(long)]
    pub wait: bool,
    /// Print the pipeline as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A pipeline variable `KEY=VALUE` (highest precedence); repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pipeline_variable)]
    pub variables: Vec<osprey_shared::pipeline::Variable>,
}

pub(crate) fn parse_pipeline_variable(
    text: &str,
) -> Result<osprey_shared::pipeline::Variable, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(osprey_shared::pipeline::Variable {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[derive(Debug, ClapArgs)]
pub struct PipelineListArgs {
    /// The project whose pipelines to list.
    #[arg(long, value_name = "NAME")]
    pub project: String,
    /// Only pipelines of this branch or tag.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Only pipelines with this status (running, success, failed...).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many (the coordinator's default is 20, at most 100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Print the pipelines as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct ShowArgs {
    pub id: u64,
    /// Print the pipeline as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct CancelArgs {
    pub id: u64,
}

#[derive(Debug, ClapArgs)]
pub struct LogsArgs {
    /// The job whose log to print.
    #[arg(required_unless_present = "pipeline", conflicts_with = "pipeline")]
    pub job_id: Option<u64>,
    /// Print the logs of every job of this pipeline, each line prefixed with its job.
    #[arg(long, value_name = "ID")]
    pub pipeline: Option<u64>,
    /// Keep streaming until the job (or every job) has finished.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, ClapArgs)]
pub struct LintArgs {
    /// The pipeline file.
    #[arg(default_value = ".gitlab-ci.yml")]
    pub file: PathBuf,
    /// Print the jobs the pipeline would have on --ref (includes are read
    /// relative to the file's folder, taken as the repository root).
    #[arg(long, requires = "git_ref")]
    pub plan: bool,
    /// Branch or tag name to plan for.
    #[arg(long = "ref", value_name = "REF", requires = "plan")]
    pub git_ref: Option<String>,
    /// The ref is a tag.
    #[arg(long, requires = "plan")]
    pub tag: bool,
    /// What starts the pipeline (CI_PIPELINE_SOURCE): push, web, api, schedule...
    #[arg(long, default_value = "push", requires = "plan")]
    pub source: String,
    /// A pipeline variable, as KEY=VALUE; repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE", requires = "plan")]
    pub vars: Vec<String>,
    /// A file changed by the push (for changes:); repeatable. Without any,
    /// changes are unknown and `changes:` is true, as GitLab does for new branches.
    #[arg(long = "changed", value_name = "PATH", requires = "plan")]
    pub changed: Vec<String>,
    /// The project's default branch (CI_DEFAULT_BRANCH).
    #[arg(long, default_value = "main", requires = "plan")]
    pub default_branch: String,
    /// Print the plan as JSON.
    #[arg(long, requires = "plan")]
    pub json: bool,
}
