//! What the store keeps of deployments and notifications: the environments
//! of a project, a deployment per run of a job with `environment:` (its
//! status follows the job's in the job's own transaction), notification
//! rules, and the outbox — each notification written in the transaction of
//! the event that makes it, with its delivery attempts.

use super::rows::flag;
use super::{FinishResult, StoreResult};
use async_trait::async_trait;
use osprey_shared::api::NotifyEvent;
use osprey_shared::{JobId, JobStatus};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRow {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub slug: String,
    pub tier: String,
    pub url: Option<String>,
    /// `available` or `stopped`.
    pub state: String,
    pub auto_stop_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A deployment (or, with `action` `stop`, the run of a stop job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRow {
    pub id: i64,
    pub project_id: i64,
    pub iid: Option<i64>,
    pub environment_id: i64,
    /// The environment's name.
    pub environment: String,
    /// `start` or `stop`.
    pub action: String,
    pub pipeline_id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub sha: String,
    pub git_ref: String,
    pub tag: bool,
    pub status: String,
    pub source: String,
    pub triggered_by: String,
    pub rollback_of: Option<i64>,
    pub reason: Option<String>,
    pub url: Option<String>,
    pub auto_stop_in: Option<i64>,
    pub on_stop: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A notification rule; `secret` is an encrypted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    pub id: i64,
    pub project_id: i64,
    /// `email` or `webhook`.
    pub kind: String,
    pub target: String,
    pub events: Vec<NotifyEvent>,
    pub ref_glob: Option<String>,
    pub secret: Option<String>,
    pub created_at: String,
}

/// One notification of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: i64,
    pub project_id: i64,
    pub rule_id: i64,
    pub event: NotifyEvent,
    pub pipeline_id: Option<i64>,
    pub deployment_id: Option<i64>,
    pub webhook_id: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// The webhook body, rendered at the first try and sent as is after.
    pub body: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub notification_id: i64,
    pub at: String,
    pub ok: bool,
    pub status: Option<i64>,
    pub detail: String,
    pub millis: i64,
}

/// A rule to record.
#[derive(Debug, Clone)]
pub struct NewRule<'a> {
    pub project_id: i64,
    pub kind: &'a str,
    pub target: &'a str,
    pub events: &'a [NotifyEvent],
    pub ref_glob: Option<&'a str>,
    pub secret: Option<&'a str>,
}

/// What a delivery try leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time (RFC 3339).
    RetryAt(String),
    /// Given up: `failed`, until someone redelivers it.
    GiveUp,
}

/// The deployment status a job's status gives (GitLab's: `blocked` for a
/// manual job).
pub fn deployment_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Created
        | JobStatus::Pending
        | JobStatus::Scheduled
        | JobStatus::WaitingForResource => "created",
        JobStatus::Manual => "blocked",
        JobStatus::Running => "running",
        JobStatus::Success => "success",
        JobStatus::Failed => "failed",
        JobStatus::Canceled => "canceled",
        JobStatus::Skipped => "skipped",
    }
}

/// Why a deploy job did not run: a newer pipeline deployed already.
pub const OUTDATED: &str = "outdated deployment";

/// Environments and deployments.
#[async_trait]
pub trait DeploymentStore: Send + Sync + std::fmt::Debug {
    async fn environments(&self, project_id: i64) -> StoreResult<Vec<EnvironmentRow>>;
    async fn environment(&self, project_id: i64, name: &str)
        -> StoreResult<Option<EnvironmentRow>>;
    /// An environment's deployments (not its stop jobs), newest first.
    async fn deployments(&self, environment_id: i64, limit: u32)
        -> StoreResult<Vec<DeploymentRow>>;
    async fn deployment(&self, id: i64) -> StoreResult<Option<DeploymentRow>>;
    /// The environment's latest successful deployment.
    async fn last_success(&self, environment_id: i64) -> StoreResult<Option<DeploymentRow>>;
    /// The latest deployment of a job (its current run).
    async fn deployment_of_job(&self, job: JobId) -> StoreResult<Option<DeploymentRow>>;
    /// Runs the deploy job of `target` again as a new deployment with
    /// `rollback_of` set; returns it and the jobs made pending.
    async fn rollback(
        &self,
        target: &DeploymentRow,
        triggered_by: &str,
    ) -> StoreResult<(DeploymentRow, Vec<JobId>)>;
    /// Fails a pending deploy job with [`OUTDATED`] when a newer pipeline's
    /// deployment to its environment has succeeded (not a rollback's run);
    /// `None` if it may run.
    async fn prevent_outdated(&self, job: JobId) -> StoreResult<Option<FinishResult>>;
    /// Marks an environment stopped (no stop job, or none to run).
    async fn stop_environment(&self, environment_id: i64) -> StoreResult<()>;
    /// Environments whose `auto_stop_at` has passed, each claimed (its
    /// `auto_stop_at` cleared) so that it is stopped once.
    async fn claim_auto_stops(&self) -> StoreResult<Vec<EnvironmentRow>>;
}

/// Notification rules and the outbox.
#[async_trait]
pub trait NotifyStore: Send + Sync + std::fmt::Debug {
    async fn insert_rule(&self, rule: &NewRule<'_>) -> StoreResult<RuleRow>;
    async fn rules_of(&self, project_id: i64) -> StoreResult<Vec<RuleRow>>;
    async fn rule(&self, id: i64) -> StoreResult<Option<RuleRow>>;
    async fn delete_rule(&self, project_id: i64, id: i64) -> StoreResult<bool>;

    /// Queues a notification by hand (`osprey notify test`).
    async fn enqueue_notification(
        &self,
        rule: &RuleRow,
        event: NotifyEvent,
        pipeline_id: Option<i64>,
    ) -> StoreResult<NotificationRow>;
    /// Pending notifications whose next try is due, oldest first.
    async fn due_notifications(&self, limit: u32) -> StoreResult<Vec<NotificationRow>>;
    async fn notification(&self, id: i64) -> StoreResult<Option<NotificationRow>>;
    /// A project's notifications, newest first.
    async fn notifications_of(
        &self,
        project_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRow>>;
    async fn attempts_of(&self, notifications: &[i64]) -> StoreResult<Vec<AttemptRow>>;
    /// Keeps the body of the first try, unless one is kept already;
    /// returns the body to send.
    async fn keep_body(&self, id: i64, body: &str) -> StoreResult<String>;
    /// Records a try and what follows from it.
    async fn record_attempt(
        &self,
        attempt: &AttemptRow,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()>;
    /// Makes a notification pending again, due now. False if unknown.
    async fn redeliver(&self, id: i64) -> StoreResult<bool>;
}

impl<'r> sqlx::FromRow<'r, AnyRow> for EnvironmentRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(EnvironmentRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            slug: row.try_get("slug")?,
            tier: row.try_get("tier")?,
            url: row.try_get("url")?,
            state: row.try_get("state")?,
            auto_stop_at: row.try_get("auto_stop_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for DeploymentRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(DeploymentRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            iid: row.try_get("iid")?,
            environment_id: row.try_get("environment_id")?,
            environment: row.try_get("environment")?,
            action: row.try_get("action")?,
            pipeline_id: row.try_get("pipeline_id")?,
            job_id: row.try_get("job_id")?,
            job_name: row.try_get("job_name")?,
            sha: row.try_get("sha")?,
            git_ref: row.try_get("git_ref")?,
            tag: flag(row, "tag")?,
            status: row.try_get("status")?,
            source: row.try_get("source")?,
            triggered_by: row.try_get("triggered_by")?,
            rollback_of: row.try_get("rollback_of")?,
            reason: row.try_get("reason")?,
            url: row.try_get("url")?,
            auto_stop_in: row.try_get("auto_stop_in")?,
            on_stop: row.try_get("on_stop")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

fn decode<T>(column: &str, result: Result<T, String>) -> sqlx::Result<T> {
    result.map_err(|error| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: error.into(),
    })
}

impl<'r> sqlx::FromRow<'r, AnyRow> for RuleRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        let events: String = row.try_get("events")?;
        Ok(RuleRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            kind: row.try_get("kind")?,
            target: row.try_get("target")?,
            events: decode(
                "events",
                serde_json::from_str(&events).map_err(|error| error.to_string()),
            )?,
            ref_glob: row.try_get("ref_glob")?,
            secret: row.try_get("secret")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for NotificationRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        let event: String = row.try_get("event")?;
        Ok(NotificationRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            rule_id: row.try_get("rule_id")?,
            event: decode("event", event.parse())?,
            pipeline_id: row.try_get("pipeline_id")?,
            deployment_id: row.try_get("deployment_id")?,
            webhook_id: row.try_get("webhook_id")?,
            state: row.try_get("state")?,
            body: row.try_get("body")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            created_at: row.try_get("created_at")?,
            delivered_at: row.try_get("delivered_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for AttemptRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(AttemptRow {
            notification_id: row.try_get("notification_id")?,
            at: row.try_get("at")?,
            ok: flag(row, "ok")?,
            status: row.try_get("status")?,
            detail: row.try_get("detail")?,
            millis: row.try_get("millis")?,
        })
    }
}
