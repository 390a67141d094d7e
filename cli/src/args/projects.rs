//! Arguments of the project-level commands: `project`, `var`, `token` and
//! `schedule`.

use crate::duration::parse_duration;
use clap::{Args as ClapArgs, Subcommand};
use osprey_shared::api::Role;
use osprey_shared::pipeline::Variable;

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Register a project (prints its webhook URL and secret, once).
    Add(ProjectAddArgs),
    /// List the projects.
    List(JsonArgs),
    /// Show one project.
    Show(ProjectNameArgs),
    /// Remove a project.
    Rm(ProjectNameArgs),
    /// Make a new webhook secret (the old one stops working).
    RotateWebhookSecret(ProjectNameArgs),
}

#[derive(Debug, ClapArgs)]
pub struct ProjectAddArgs {
    /// `[a-z0-9][a-z0-9._-]*`, at most 64 characters.
    pub name: String,
    /// URL or local path (made absolute) of the git repository.
    #[arg(long, value_name = "URL_OR_PATH")]
    pub repo: String,
    /// Default: main.
    #[arg(long, value_name = "BRANCH")]
    pub default_branch: Option<String>,
    /// Comma-separated patterns of protected branches and tags (`*` is a
    /// wildcard), e.g. 'main,release/*,v*'. Default: the default branch.
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub protected_refs: Option<Vec<String>>,
    /// Poll the repository for new commits this often (30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub poll: Option<u64>,
    /// Container registry of the project: HOST[/PATH] (CI_REGISTRY...).
    #[arg(long, value_name = "HOST[/PATH]")]
    pub registry: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct ProjectNameArgs {
    pub name: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct JsonArgs {
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum VarCommand {
    /// Set a variable; its value is read from standard input (one trailing
    /// newline is dropped), never from the command line.
    Set(VarSetArgs),
    /// List a project's variables (keys, scopes and flags; no values).
    List(VarListArgs),
    /// Remove a variable.
    Rm(VarRmArgs),
}

#[derive(Debug, ClapArgs)]
pub struct VarSetArgs {
    pub project: String,
    pub key: String,
    /// Hide the value in job logs (at least 8 characters, one line, no spaces).
    #[arg(long)]
    pub masked: bool,
    /// Only pipelines of protected branches and tags get it.
    #[arg(long)]
    pub protected: bool,
    /// The job gets a file holding the value; the variable is its path.
    #[arg(long)]
    pub file: bool,
    /// The environment(s) it is for: *, a name, or a wildcard (review/*).
    #[arg(long, value_name = "SCOPE")]
    pub env_scope: Option<String>,
    /// Do not expand `$VAR` references in the value.
    #[arg(long)]
    pub raw: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct VarListArgs {
    pub project: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct VarRmArgs {
    pub project: String,
    pub key: String,
    /// The scope of the variable to remove (default *).
    #[arg(long, value_name = "SCOPE")]
    pub env_scope: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it alone on stdout (shown once).
    Create(TokenCreateArgs),
    /// List the tokens (never the tokens themselves).
    List(JsonArgs),
    /// Revoke a token.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, ClapArgs)]
pub struct TokenCreateArgs {
    /// Limit the token to one project (default: every project).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// read, run or admin (each includes the ones before).
    #[arg(long)]
    pub role: Role,
    /// Lifetime (30d, 12h, 90m...); default: until revoked.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<u64>,
    #[arg(long)]
    pub description: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct TokenRevokeArgs {
    pub id: u64,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule that runs a pipeline on a ref.
    Add(ScheduleAddArgs),
    /// List a project's schedules.
    List(ScheduleListArgs),
    /// Remove a schedule.
    Rm(ScheduleRmArgs),
}

#[derive(Debug, ClapArgs)]
pub struct ScheduleAddArgs {
    pub project: String,
    /// 5 fields (minute hour day month weekday), 6 with seconds first, or @daily...
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// Branch or tag to run.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: String,
    /// A pipeline variable `KEY=VALUE`; repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = super::parse_pipeline_variable)]
    pub variables: Vec<Variable>,
    /// IANA time zone of the cron expression (default UTC).
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct ScheduleListArgs {
    pub project: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct ScheduleRmArgs {
    pub project: String,
    pub id: u64,
}
