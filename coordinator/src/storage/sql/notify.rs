//! [`NotifyStore`] on SQL: notification rules, and the outbox a
//! transition writes into ([`SqlStore::queue_notifications`]) and the
//! delivery worker reads from.

use super::deployments::PipelineMeta;
use super::SqlStore;
use crate::storage::deployments::*;
use crate::storage::{StoreError, StoreResult};
use async_trait::async_trait;
use osprey_shared::api::NotifyEvent;
use osprey_shared::PipelineId;
use sqlx::{Any, Transaction};

const RULE_COLUMNS: &str = "id, project_id, kind, target, events, ref_glob, secret, created_at";
const NOTIFICATION_COLUMNS: &str = "id, project_id, rule_id, event, pipeline_id, deployment_id, \
    webhook_id, state, body, next_attempt_at, created_at, delivered_at";

/// Whether a rule's ref glob takes `git_ref` (no glob: every ref).
pub(crate) fn ref_matches(glob: Option<&str>, git_ref: &str) -> bool {
    match glob {
        None => true,
        Some(glob) => globset::Glob::new(glob)
            .map(|glob| glob.compile_matcher().is_match(git_ref))
            .unwrap_or(false),
    }
}

fn new_webhook_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

impl SqlStore {
    /// Queues, in the transaction of the change that made them, one
    /// notification per event and rule that wants it.
    pub(super) async fn queue_notifications(
        &self,
        tx: &mut Transaction<'static, Any>,
        project: i64,
        meta: &PipelineMeta,
        pipeline: PipelineId,
        events: &[(NotifyEvent, Option<i64>)],
    ) -> StoreResult<()> {
        let rules: Vec<RuleRow> = sqlx::query_as(&format!(
            "SELECT {RULE_COLUMNS} FROM notification_rules WHERE project_id = $1 ORDER BY id"
        ))
        .bind(project)
        .fetch_all(&mut **tx)
        .await?;
        let now = self.now_text();
        for rule in rules
            .iter()
            .filter(|rule| ref_matches(rule.ref_glob.as_deref(), &meta.git_ref))
        {
            for (event, deployment) in events {
                if !rule.events.contains(event) {
                    continue;
                }
                self.insert_notification(
                    tx,
                    rule,
                    *event,
                    Some(pipeline.0 as i64),
                    *deployment,
                    &now,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn insert_notification(
        &self,
        tx: &mut Transaction<'static, Any>,
        rule: &RuleRow,
        event: NotifyEvent,
        pipeline: Option<i64>,
        deployment: Option<i64>,
        now: &str,
    ) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO notifications (project_id, rule_id, event, pipeline_id, deployment_id, \
             webhook_id, state, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING id",
        )
        .bind(rule.project_id)
        .bind(rule.id)
        .bind(event.as_str())
        .bind(pipeline)
        .bind(deployment)
        .bind(new_webhook_id())
        .bind(now)
        .fetch_one(&mut **tx)
        .await?)
    }

    async fn rules_where(&self, column: &str, value: i64) -> StoreResult<Vec<RuleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {RULE_COLUMNS} FROM notification_rules WHERE {column} = $1 ORDER BY id"
        ))
        .bind(value)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn notification_rows_where(
        &self,
        filter: &str,
        value: i64,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE {filter} = $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(value)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl NotifyStore for SqlStore {
    async fn insert_rule(&self, rule: &NewRule<'_>) -> StoreResult<RuleRow> {
        let events = serde_json::to_string(rule.events)
            .map_err(|error| StoreError::Backend(format!("encoding events: {error}")))?;
        let mut write = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO notification_rules (project_id, kind, target, events, ref_glob, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(rule.project_id)
        .bind(rule.kind)
        .bind(rule.target)
        .bind(events)
        .bind(rule.ref_glob)
        .bind(rule.secret)
        .bind(self.now_text())
        .fetch_one(&mut *write.tx)
        .await?;
        let row = sqlx::query_as(&format!(
            "SELECT {RULE_COLUMNS} FROM notification_rules WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *write.tx)
        .await?;
        write.commit().await?;
        Ok(row)
    }

    async fn rules_of(&self, project_id: i64) -> StoreResult<Vec<RuleRow>> {
        self.rules_where("project_id", project_id).await
    }

    async fn rule(&self, rule: i64) -> StoreResult<Option<RuleRow>> {
        Ok(self.rules_where("id", rule).await?.into_iter().next())
    }

    async fn delete_rule(&self, project_id: i64, rule: i64) -> StoreResult<bool> {
        let mut write = self.write().await?;
        let done = sqlx::query("DELETE FROM notification_rules WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(rule)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn enqueue_notification(
        &self,
        rule: &RuleRow,
        event: NotifyEvent,
        pipeline_id: Option<i64>,
    ) -> StoreResult<NotificationRow> {
        let mut write = self.write().await?;
        let now = self.now_text();
        let id = self
            .insert_notification(&mut write.tx, rule, event, pipeline_id, None, &now)
            .await?;
        write.commit().await?;
        self.notification(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("notification {id} vanished")))
    }

    async fn due_notifications(&self, limit: u32) -> StoreResult<Vec<NotificationRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE state = 'pending' \
             AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(self.now_text())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn notification(&self, notification: i64) -> StoreResult<Option<NotificationRow>> {
        Ok(self
            .notification_rows_where("id", notification, 1)
            .await?
            .into_iter()
            .next())
    }

    async fn notifications_of(
        &self,
        project_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRow>> {
        self.notification_rows_where("project_id", project_id, limit)
            .await
    }

    async fn attempts_of(&self, notifications: &[i64]) -> StoreResult<Vec<AttemptRow>> {
        if notifications.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = notifications.iter().map(i64::to_string).collect();
        Ok(sqlx::query_as(&format!(
            "SELECT notification_id, at, ok, status, detail, millis FROM notification_attempts \
             WHERE notification_id IN ({}) ORDER BY id",
            list.join(", ")
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn keep_body(&self, notification: i64, body: &str) -> StoreResult<String> {
        let mut write = self.write().await?;
        sqlx::query("UPDATE notifications SET body = $1 WHERE id = $2 AND body IS NULL")
            .bind(body)
            .bind(notification)
            .execute(&mut *write.tx)
            .await?;
        let kept: Option<String> =
            sqlx::query_scalar("SELECT body FROM notifications WHERE id = $1")
                .bind(notification)
                .fetch_one(&mut *write.tx)
                .await?;
        write.commit().await?;
        Ok(kept.unwrap_or_else(|| body.to_owned()))
    }

    async fn record_attempt(
        &self,
        attempt: &AttemptRow,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO notification_attempts (notification_id, at, ok, status, detail, millis) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(attempt.notification_id)
        .bind(&attempt.at)
        .bind(i64::from(attempt.ok))
        .bind(attempt.status)
        .bind(&attempt.detail)
        .bind(attempt.millis)
        .execute(&mut *write.tx)
        .await?;
        let (state, next, delivered) = match outcome {
            AttemptOutcome::Delivered => ("delivered", None, Some(attempt.at.as_str())),
            AttemptOutcome::RetryAt(at) => ("pending", Some(at.as_str()), None),
            AttemptOutcome::GiveUp => ("failed", None, None),
        };
        sqlx::query(
            "UPDATE notifications SET state = $1, next_attempt_at = $2, delivered_at = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(next)
        .bind(delivered)
        .bind(attempt.notification_id)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await
    }

    async fn redeliver(&self, notification: i64) -> StoreResult<bool> {
        let mut write = self.write().await?;
        let done = sqlx::query(
            "UPDATE notifications SET state = 'pending', next_attempt_at = $1, delivered_at = NULL \
             WHERE id = $2",
        )
        .bind(self.now_text())
        .bind(notification)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
