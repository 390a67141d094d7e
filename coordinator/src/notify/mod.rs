//! Notifications: what happened ([`Report`], gathered by the delivery
//! worker from the store) turned into an e-mail ([`email`]) or a signed
//! GitLab-shaped webhook ([`webhook`]). Which events make a notification,
//! and the outbox that makes delivery durable, are the store's and
//! `core::notify`'s; this module only renders and sends.

pub mod email;
pub mod webhook;

#[cfg(test)]
mod tests;

use osprey_shared::api::NotifyEvent;

/// Everything a notification says, gathered when it is first delivered.
#[derive(Debug, Clone)]
pub struct Report {
    pub event: NotifyEvent,
    /// The Standard Webhooks `webhook-id` (also the e-mail's Message-ID
    /// local part): the same on every try.
    pub webhook_id: String,
    pub project: ProjectFacts,
    pub pipeline: PipelineFacts,
    /// In stage order, then file order.
    pub jobs: Vec<JobFacts>,
    /// For deployment events.
    pub deployment: Option<DeploymentFacts>,
}

#[derive(Debug, Clone)]
pub struct ProjectFacts {
    pub id: i64,
    pub name: String,
    /// The repository URL or path.
    pub repo: String,
    /// The project's page (web UI once there is one, else the API URL).
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct PipelineFacts {
    pub id: i64,
    pub iid: Option<i64>,
    pub git_ref: String,
    pub tag: bool,
    pub sha: String,
    pub before_sha: Option<String>,
    /// push, api, web, schedule, trigger.
    pub source: String,
    /// The pipeline's status when the event happened.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<f64>,
    /// The first line of the commit message.
    pub commit_title: Option<String>,
    pub commit_message: Option<String>,
    /// Stage names in order.
    pub stages: Vec<String>,
    /// Where to look at it (web UI page, else `{external}/api/v1/pipelines/{id}`).
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct JobFacts {
    pub id: i64,
    pub name: String,
    pub stage: String,
    pub status: String,
    pub when: String,
    pub manual: bool,
    pub allow_failure: bool,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<f64>,
    pub failure_reason: Option<String>,
    pub agent_name: Option<String>,
    /// `(name, action, tier)` of its `environment:`.
    pub environment: Option<(String, String, Option<String>)>,
    /// For a failed job: the last 20 lines of its log as stored (the agent
    /// masked the values of masked variables before sending them).
    pub log_tail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeploymentFacts {
    pub id: i64,
    pub status: String,
    /// RFC 3339.
    pub status_changed_at: String,
    pub environment: String,
    pub environment_slug: String,
    pub environment_tier: String,
    pub environment_url: Option<String>,
    pub job_id: i64,
    pub job_name: String,
    /// `{external}/api/v1/jobs/{id}`.
    pub job_url: String,
    pub rollback_of: Option<i64>,
}

/// Why a try did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered, but not with 2xx (or the SMTP server refused).
    #[error("{detail}")]
    Refused { status: Option<u16>, detail: String },
    /// No answer: connection, TLS, timeout.
    #[error("{0}")]
    Unreachable(String),
    /// The rule or the message cannot work (a bad address, a bad URL); no
    /// retry will help.
    #[error("{0}")]
    Invalid(String),
}
