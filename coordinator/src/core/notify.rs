//! Notifications: the rules of a project (`osprey notify`), the outbox's
//! views, and the worker that delivers what the store queued. A delivery
//! is tried until the receiver takes it, with doubling delays, for 24
//! hours; every try is recorded; a failing receiver only delays its own
//! notifications, never a pipeline.

mod report;

use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::notify::email::Mailer;
use crate::notify::webhook::{self, WebhookSender};
use crate::notify::DeliveryError;
use crate::secrets::notify_rule_aad;
use crate::storage::deployments::{AttemptOutcome, AttemptRow, NewRule, NotificationRow, RuleRow};
use crate::storage::ProjectRow;
use osprey_shared::api::{
    format_time, AttemptView, CreateNotification, DeliveryView, NotificationView, NotifyEvent,
};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a notification is retried.
const GIVE_UP_AFTER: time::Duration = time::Duration::hours(24);
/// The longest wait between two tries.
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// How often the worker looks for due notifications.
const POLL: Duration = Duration::from_millis(500);
/// Deliveries in flight at once.
const PARALLEL: usize = 16;
/// Lines of a failed job's log in a notification.
const LOG_TAIL_LINES: usize = 20;
/// Bytes read from the end of a failed job's log for its tail.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Notifications `osprey notify log` shows.
const LOG_LIMIT: u32 = 200;

fn invalid(text: impl Into<String>) -> CoreError {
    CoreError::InvalidArgument(text.into())
}

fn rule_view(row: &RuleRow) -> NotificationView {
    NotificationView {
        id: row.id,
        kind: row.kind.clone(),
        target: osprey_shared::redact::url_credentials(&row.target).into_owned(),
        on: row.events.clone(),
        ref_glob: row.ref_glob.clone(),
        signed: row.secret.is_some(),
        created_at: row.created_at.clone(),
    }
}

/// The wait before try `n + 1` after `n` failed tries: `first`, doubling,
/// at most an hour.
fn retry_delay(first: Duration, failed_tries: u32) -> Duration {
    let factor = 2u32.saturating_pow(failed_tries.saturating_sub(1).min(20));
    first.saturating_mul(factor).min(MAX_RETRY)
}

impl Core {
    pub async fn add_notification(
        &self,
        project: &ProjectRow,
        request: CreateNotification,
    ) -> CoreResult<NotificationView> {
        let (kind, target) = match (&request.email, &request.webhook) {
            (Some(address), None) => {
                address
                    .parse::<lettre::Address>()
                    .map_err(|error| invalid(format!("e-mail address {address:?}: {error}")))?;
                ("email", address.clone())
            }
            (None, Some(url)) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|error| invalid(format!("webhook URL: {error}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid("a webhook URL must start with http:// or https://"));
                }
                ("webhook", url.clone())
            }
            _ => return Err(invalid("give exactly one of email and webhook")),
        };
        if request.on.is_empty() {
            return Err(invalid("a rule needs at least one event (on)"));
        }
        if request.on.contains(&NotifyEvent::Test) {
            return Err(invalid("test is not an event a rule can be on"));
        }
        if request.secret.is_some() && kind == "email" {
            return Err(invalid("a secret signs webhooks; an e-mail rule has none"));
        }
        if let Some(glob) = &request.ref_glob {
            globset::Glob::new(glob).map_err(|error| invalid(format!("ref glob: {error}")))?;
        }
        if let Some(secret) = &request.secret {
            webhook::signing_key(secret).map_err(|error| invalid(error.to_string()))?;
        }
        let secret = request.secret.as_ref().map(|secret| {
            self.keyring()
                .encrypt(secret.as_bytes(), &notify_rule_aad(project.id, &target))
        });
        let mut events = request.on.clone();
        events.sort();
        events.dedup();
        let row = self
            .store()
            .insert_rule(&NewRule {
                project_id: project.id,
                kind,
                target: &target,
                events: &events,
                ref_glob: request.ref_glob.as_deref(),
                secret: secret.as_deref(),
            })
            .await?;
        Ok(rule_view(&row))
    }

    pub async fn notifications(&self, project: &ProjectRow) -> CoreResult<Vec<NotificationView>> {
        let rows = self.store().rules_of(project.id).await?;
        Ok(rows.iter().map(rule_view).collect())
    }

    pub async fn remove_notification(&self, project: &ProjectRow, id: i64) -> CoreResult<()> {
        if !self.store().delete_rule(project.id, id).await? {
            return Err(CoreError::NotFound(format!(
                "project {} has no notification rule {id}",
                project.name
            )));
        }
        Ok(())
    }

    /// Queues a test notification for a rule, about the project's latest
    /// pipeline if it has one.
    pub async fn test_notification(
        &self,
        project: &ProjectRow,
        id: i64,
    ) -> CoreResult<DeliveryView> {
        let rule = self
            .store()
            .rule(id)
            .await?
            .filter(|rule| rule.project_id == project.id)
            .ok_or_else(|| CoreError::NotFound(format!("no notification rule {id}")))?;
        let latest = self
            .store()
            .project_pipelines(
                project.id,
                crate::storage::PipelineQuery {
                    limit: 1,
                    ..Default::default()
                },
            )
            .await?;
        let pipeline = latest.first().map(|row| row.id);
        let row = self
            .store()
            .enqueue_notification(&rule, NotifyEvent::Test, pipeline)
            .await?;
        self.delivery_view(&row).await
    }

    /// A project's notifications with their tries, newest first.
    pub async fn deliveries(&self, project: &ProjectRow) -> CoreResult<Vec<DeliveryView>> {
        let rows = self.store().notifications_of(project.id, LOG_LIMIT).await?;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let attempts = self.store().attempts_of(&ids).await?;
        let rules = self.store().rules_of(project.id).await?;
        Ok(rows
            .iter()
            .map(|row| delivery_view(row, rules.iter().find(|r| r.id == row.rule_id), &attempts))
            .collect())
    }

    /// A notification, with the project it belongs to.
    pub async fn notification_row(&self, id: i64) -> CoreResult<NotificationRow> {
        self.store()
            .notification(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("notification {id} not found")))
    }

    pub async fn delivery_view(&self, row: &NotificationRow) -> CoreResult<DeliveryView> {
        let attempts = self.store().attempts_of(&[row.id]).await?;
        let rule = self.store().rule(row.rule_id).await?;
        Ok(delivery_view(row, rule.as_ref(), &attempts))
    }

    /// Delivers a notification again (same body, same webhook id).
    pub async fn redeliver(&self, row: &NotificationRow) -> CoreResult<DeliveryView> {
        self.store().redeliver(row.id).await?;
        let row = self.notification_row(row.id).await?;
        self.delivery_view(&row).await
    }

    /// Delivers due notifications until `stop`.
    pub async fn run_notifier(&self, stop: CancellationToken) {
        let mailer = match &self.settings().notify.smtp_url {
            Some(url) => match Mailer::new(&url.0, &self.settings().notify.smtp_from) {
                Ok(mailer) => Some(mailer),
                Err(error) => {
                    tracing::error!(error = %error, "--smtp-url is unusable: e-mail notifications fail");
                    None
                }
            },
            None => None,
        };
        let sender = match WebhookSender::new() {
            Ok(sender) => sender,
            Err(error) => {
                tracing::error!(error = %error, "cannot build the webhook client");
                return;
            }
        };
        let channels = std::sync::Arc::new((mailer, sender));
        let mut in_flight: HashSet<i64> = HashSet::new();
        let mut tasks: JoinSet<i64> = JoinSet::new();
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Ok(id) = done {
                    in_flight.remove(&id);
                }
            }
            if in_flight.len() < PARALLEL {
                match self.store().due_notifications(PARALLEL as u32 * 2).await {
                    Ok(due) => {
                        for row in due {
                            if in_flight.len() >= PARALLEL || !in_flight.insert(row.id) {
                                continue;
                            }
                            let core = self.clone();
                            let channels = channels.clone();
                            tasks.spawn(async move {
                                let id = row.id;
                                if let Err(error) = core.deliver(&row, &channels.0, &channels.1).await {
                                    tracing::warn!(notification = id, error = %error, "delivery not recorded");
                                }
                                id
                            });
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "reading the outbox failed"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        tasks.shutdown().await;
    }

    /// One try of one notification, recorded with what follows from it.
    async fn deliver(
        &self,
        row: &NotificationRow,
        mailer: &Option<Mailer>,
        sender: &WebhookSender,
    ) -> CoreResult<()> {
        let started = Instant::now();
        let rule = self.store().rule(row.rule_id).await?;
        let result = match &rule {
            None => Err(DeliveryError::Invalid("its rule was removed".to_owned())),
            Some(rule) => self.send(row, rule, mailer, sender).await,
        };
        let now = OffsetDateTime::now_utc();
        let tries = self.store().attempts_of(&[row.id]).await?.len() as u32 + 1;
        let (ok, status, detail) = match &result {
            Ok(status) => (true, *status, "delivered".to_owned()),
            Err(DeliveryError::Refused { status, detail }) => (false, *status, detail.clone()),
            Err(error) => (false, None, error.to_string()),
        };
        let created = OffsetDateTime::parse(&row.created_at, &Rfc3339).unwrap_or(now);
        let outcome = match &result {
            Ok(_) => AttemptOutcome::Delivered,
            Err(DeliveryError::Invalid(_)) => AttemptOutcome::GiveUp,
            Err(_) if now - created >= GIVE_UP_AFTER => AttemptOutcome::GiveUp,
            Err(_) => {
                let wait = retry_delay(self.settings().notify.first_retry, tries);
                AttemptOutcome::RetryAt(format_time(now + wait))
            }
        };
        match &outcome {
            AttemptOutcome::Delivered => {
                tracing::info!(notification = row.id, event = %row.event, "notification delivered")
            }
            AttemptOutcome::RetryAt(at) => {
                tracing::warn!(notification = row.id, tries, next = %at, detail = %detail, "notification not delivered; will retry")
            }
            AttemptOutcome::GiveUp => {
                tracing::error!(notification = row.id, tries, detail = %detail, "notification given up")
            }
        }
        let attempt = AttemptRow {
            notification_id: row.id,
            at: format_time(now),
            ok,
            status: status.map(i64::from),
            detail: detail.chars().take(500).collect(),
            millis: started.elapsed().as_millis() as i64,
        };
        self.store().record_attempt(&attempt, &outcome).await?;
        // A notification whose rule is gone has no channel left to count.
        if let Some(rule) = &rule {
            self.metrics()
                .notification(channel_of(rule), result_of(&outcome));
        }
        Ok(())
    }

    async fn send(
        &self,
        row: &NotificationRow,
        rule: &RuleRow,
        mailer: &Option<Mailer>,
        sender: &WebhookSender,
    ) -> Result<Option<u16>, DeliveryError> {
        let report = self.report(row).await.map_err(|error| {
            DeliveryError::Unreachable(format!("gathering the report: {error}"))
        })?;
        match rule.kind.as_str() {
            "email" => {
                let mailer = mailer.as_ref().ok_or_else(|| {
                    DeliveryError::Invalid("the coordinator has no --smtp-url".to_owned())
                })?;
                mailer.send(&rule.target, &report).await.map(|()| None)
            }
            _ => {
                let body = webhook::payload(&report).to_string();
                let body = self
                    .store()
                    .keep_body(row.id, &body)
                    .await
                    .map_err(|error| DeliveryError::Unreachable(error.to_string()))?;
                let secret = match &rule.secret {
                    Some(envelope) => {
                        let plain = self
                            .keyring()
                            .decrypt(envelope, &notify_rule_aad(rule.project_id, &rule.target))
                            .map_err(|error| {
                                DeliveryError::Invalid(format!("its secret: {error}"))
                            })?;
                        Some(String::from_utf8_lossy(&plain).into_owned())
                    }
                    None => None,
                };
                sender
                    .send(&rule.target, secret.as_deref(), &report, body.as_bytes())
                    .await
                    .map(Some)
            }
        }
    }
}

/// The metrics' channel of a rule (`email`; anything else is a webhook, as
/// `send` treats it).
fn channel_of(rule: &RuleRow) -> crate::metrics::NotifyChannel {
    match rule.kind.as_str() {
        "email" => crate::metrics::NotifyChannel::Email,
        _ => crate::metrics::NotifyChannel::Webhook,
    }
}

fn result_of(outcome: &AttemptOutcome) -> crate::metrics::NotifyResult {
    match outcome {
        AttemptOutcome::Delivered => crate::metrics::NotifyResult::Delivered,
        AttemptOutcome::RetryAt(_) => crate::metrics::NotifyResult::Retry,
        AttemptOutcome::GiveUp => crate::metrics::NotifyResult::Failed,
    }
}

fn delivery_view(
    row: &NotificationRow,
    rule: Option<&RuleRow>,
    attempts: &[AttemptRow],
) -> DeliveryView {
    DeliveryView {
        id: row.id,
        rule: row.rule_id,
        event: row.event,
        kind: rule.map(|rule| rule.kind.clone()).unwrap_or_default(),
        target: rule
            .map(|rule| osprey_shared::redact::url_credentials(&rule.target).into_owned())
            .unwrap_or_default(),
        pipeline: row.pipeline_id,
        deployment: row.deployment_id,
        state: row.state.clone(),
        webhook_id: row.webhook_id.clone(),
        attempts: attempts
            .iter()
            .filter(|attempt| attempt.notification_id == row.id)
            .map(|attempt| AttemptView {
                at: attempt.at.clone(),
                ok: attempt.ok,
                status: attempt.status.and_then(|status| u16::try_from(status).ok()),
                detail: attempt.detail.clone(),
                millis: attempt.millis.max(0) as u64,
            })
            .collect(),
        next_attempt_at: row.next_attempt_at.clone(),
        created_at: row.created_at.clone(),
        delivered_at: row.delivered_at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retries_double_up_to_an_hour() {
        let first = Duration::from_secs(10);
        assert_eq!(retry_delay(first, 1), Duration::from_secs(10));
        assert_eq!(retry_delay(first, 2), Duration::from_secs(20));
        assert_eq!(retry_delay(first, 4), Duration::from_secs(80));
        assert_eq!(retry_delay(first, 30), Duration::from_secs(3600));
    }
}
