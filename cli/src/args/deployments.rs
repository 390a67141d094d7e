//! Arguments of `env` (a project's environments and deployments) and
//! `notify` (its notification rules and deliveries).

use crate::args::SecretArg;
use clap::{Args as ClapArgs, Subcommand};
use osprey_shared::api::NotifyEvent;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List a project's environments with their last deployment.
    List(EnvListArgs),
    /// An environment's deployments, newest first.
    History(EnvArgs),
    /// Deploy again what an environment had before (re-runs that deploy job).
    Rollback(EnvRollbackArgs),
    /// Stop an environment (its `on_stop` job runs, if it has one).
    Stop(EnvArgs),
}

#[derive(Debug, ClapArgs)]
pub struct EnvListArgs {
    pub project: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct EnvArgs {
    pub project: String,
    /// The environment's name (`production`, `review/feature-x`...).
    pub env: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct EnvRollbackArgs {
    pub project: String,
    pub env: String,
    /// The deployment to go back to (its ID in `env history`); default: the
    /// successful one before the last successful one.
    #[arg(long, value_name = "DEPLOYMENT_ID")]
    pub to: Option<i64>,
    /// Follow the new deployment until it ends; exit 0 only on success.
    #[arg(long)]
    pub wait: bool,
    /// Print the deployment (the final one with --wait) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Add a rule: send an email or call a webhook on some events.
    Add(NotifyAddArgs),
    /// List a project's rules (never their secrets).
    List(NotifyProjectArgs),
    /// Remove a rule.
    Rm(NotifyRmArgs),
    /// Send a `test` event through a rule now.
    Test(NotifyRuleArgs),
    /// A project's notifications and their delivery attempts, newest first.
    Log(NotifyProjectArgs),
    /// Try a delivery again (one that failed for good, or any other).
    Redeliver(DeliveryArgs),
}

#[derive(Debug, ClapArgs)]
pub struct NotifyAddArgs {
    pub project: String,
    /// Send an email to this address.
    #[arg(
        long,
        value_name = "ADDR",
        required_unless_present = "webhook",
        conflicts_with = "webhook"
    )]
    pub email: Option<String>,
    /// POST a JSON event to this http:// or https:// URL.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Sign webhook calls with this Standard Webhooks secret. It shows in
    /// `ps` and shell history: prefer --secret-file or
    /// $OSPREY_WEBHOOK_SECRET.
    #[arg(long, value_name = "SECRET", conflicts_with_all = ["email", "secret_file"])]
    pub secret: Option<SecretArg>,
    /// Read the signing secret from this file (`-`: standard input); one
    /// trailing newline is dropped.
    #[arg(long, value_name = "FILE", conflicts_with = "email")]
    pub secret_file: Option<PathBuf>,
    /// Comma-separated events: pipeline_failed, pipeline_fixed,
    /// pipeline_success, deployment_success, deployment_failed,
    /// manual_waiting.
    #[arg(
        long,
        value_name = "EVENTS",
        required = true,
        value_delimiter = ',',
        value_parser = parse_rule_event
    )]
    pub on: Vec<NotifyEvent>,
    /// Only for refs matching this glob (`main`, `v*`); default: every ref.
    #[arg(long = "ref", value_name = "GLOB")]
    pub ref_glob: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One event of `--on`: one a rule can name (`test` is sent by `notify test`).
pub(crate) fn parse_rule_event(text: &str) -> Result<NotifyEvent, String> {
    let event: NotifyEvent = text.trim().parse()?;
    if !NotifyEvent::RULES.contains(&event) {
        return Err(format!(
            "{event:?} is not an event a rule can be on (`osprey notify test` sends one)",
            event = event.as_str()
        ));
    }
    Ok(event)
}

#[derive(Debug, ClapArgs)]
pub struct NotifyProjectArgs {
    pub project: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct NotifyRuleArgs {
    pub project: String,
    /// The rule's ID (see `notify list`).
    pub id: i64,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct NotifyRmArgs {
    pub project: String,
    /// The rule's ID (see `notify list`).
    pub id: i64,
}

#[derive(Debug, ClapArgs)]
pub struct DeliveryArgs {
    /// The delivery's ID (see `notify log`).
    pub id: i64,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}
