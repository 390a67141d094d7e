//! JSON shapes of environments, deployments and notifications
//! (`/api/v1/projects/{name}/environments`, `/api/v1/deployments/{id}`,
//! `/api/v1/projects/{name}/notifications`, `/api/v1/projects/{name}/deliveries`,
//! `/api/v1/deliveries/{id}`). Fields are only ever added.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An environment of a project, as `osprey env list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentView {
    pub id: i64,
    pub name: String,
    /// `CI_ENVIRONMENT_SLUG`.
    pub slug: String,
    /// production, staging, testing, development, other.
    pub tier: String,
    pub url: Option<String>,
    /// `available` or `stopped`.
    pub state: String,
    /// When `auto_stop_in` stops it (RFC 3339), if it will.
    pub auto_stop_at: Option<String>,
    /// Its last successful deployment.
    pub last_deployment: Option<DeploymentView>,
    pub created_at: String,
}

/// One deployment: a deploy job's run against an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentView {
    pub id: i64,
    /// Its number within the project.
    pub iid: i64,
    pub environment: String,
    /// created, running, success, failed, canceled, skipped.
    pub status: String,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub tag: bool,
    pub pipeline: i64,
    pub job: i64,
    pub job_name: String,
    /// push, schedule, api, web, trigger, rollback.
    pub source: String,
    /// Who or what started it: `token:NAME`, `admin`, `schedule:ID`, `push`.
    pub triggered_by: String,
    /// The deployment a rollback re-ran.
    pub rollback_of: Option<i64>,
    /// Why it did not run (`outdated deployment`), if it did not.
    pub reason: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// `POST /api/v1/projects/{name}/environments/{env}/rollback` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rollback {
    /// The deployment to go back to; default: the successful one before the
    /// last successful one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

/// An event a notification rule can be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    PipelineFailed,
    /// The first success after a failure on the same ref.
    PipelineFixed,
    PipelineSuccess,
    DeploymentSuccess,
    DeploymentFailed,
    /// A job waits for someone to play it.
    ManualWaiting,
    /// `osprey notify test`.
    Test,
}

impl NotifyEvent {
    /// The events a rule can name (`test` is not one).
    pub const RULES: [NotifyEvent; 6] = [
        NotifyEvent::PipelineFailed,
        NotifyEvent::PipelineFixed,
        NotifyEvent::PipelineSuccess,
        NotifyEvent::DeploymentSuccess,
        NotifyEvent::DeploymentFailed,
        NotifyEvent::ManualWaiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::PipelineFailed => "pipeline_failed",
            NotifyEvent::PipelineFixed => "pipeline_fixed",
            NotifyEvent::PipelineSuccess => "pipeline_success",
            NotifyEvent::DeploymentSuccess => "deployment_success",
            NotifyEvent::DeploymentFailed => "deployment_failed",
            NotifyEvent::ManualWaiting => "manual_waiting",
            NotifyEvent::Test => "test",
        }
    }

    /// A deployment event (its webhook is a Deployment Hook).
    pub fn is_deployment(self) -> bool {
        matches!(
            self,
            NotifyEvent::DeploymentSuccess | NotifyEvent::DeploymentFailed
        )
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotifyEvent {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NotifyEvent::RULES
            .into_iter()
            .chain([NotifyEvent::Test])
            .find(|event| event.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = NotifyEvent::RULES.iter().map(|e| e.as_str()).collect();
                format!(
                    "unknown event {text:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// `POST /api/v1/projects/{name}/notifications` body: exactly one of
/// `email` and `webhook`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateNotification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// An `http://` or `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The Standard Webhooks signing secret (`whsec_` + base64, or any
    /// text, used as its bytes). Stored encrypted, never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// At least one event.
    pub on: Vec<NotifyEvent>,
    /// Only for refs matching this glob (`main`, `v*`); default: every ref.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_glob: Option<String>,
}

/// A notification rule as the API shows it (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: i64,
    /// `email` or `webhook`.
    pub kind: String,
    /// The address or the URL.
    pub target: String,
    pub on: Vec<NotifyEvent>,
    #[serde(rename = "ref")]
    pub ref_glob: Option<String>,
    pub signed: bool,
    pub created_at: String,
}

/// One notification in the outbox, with its delivery attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub id: i64,
    /// The rule it was made for.
    pub rule: i64,
    pub event: NotifyEvent,
    /// `email` or `webhook`.
    pub kind: String,
    pub target: String,
    pub pipeline: Option<i64>,
    pub deployment: Option<i64>,
    /// `pending` (waiting for its next try), `delivered`, or `failed`
    /// (given up after 24 hours; `osprey notify redeliver` tries again).
    pub state: String,
    /// The Standard Webhooks `webhook-id`: the receiver's idempotency key.
    pub webhook_id: String,
    pub attempts: Vec<AttemptView>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

/// One try to deliver a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    pub at: String,
    /// True when the receiver took it (HTTP 2xx, SMTP accepted).
    pub ok: bool,
    /// The HTTP status, if any.
    pub status: Option<u16>,
    /// What went wrong, or the start of the receiver's answer.
    pub detail: String,
    pub millis: u64,
}
