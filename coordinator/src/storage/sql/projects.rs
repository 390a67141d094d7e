//! [`ProjectStore`] on SQL: projects, variables, tokens, schedules, refs
//! and trigger events. Every value column of a variable holds an envelope
//! the caller encrypted; nothing here sees a secret.

use super::{Backend, SqlStore};
use crate::storage::projects::*;
use crate::storage::{PipelineRow, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::{Any, Transaction};

const PROJECT_COLUMNS: &str = "id, name, repo, default_branch, protected_refs, poll_seconds, \
    registry, webhook_secret, created_at, polled_at";
const VARIABLE_COLUMNS: &str =
    "id, project_id, key, env_scope, value, masked, protected, file, raw, updated_at";
const TOKEN_COLUMNS: &str =
    "id, token_sha256, role, project_id, description, created_at, expires_at, last_used_at";
const SCHEDULE_COLUMNS: &str = "id, project_id, cron, timezone, git_ref, variables, description, \
    next_run_at, last_pipeline_id, created_at";
const EVENT_COLUMNS: &str = "id, project_id, source, git_ref, ref_is_tag, before_sha, after_sha, \
    variables, dedupe_key, state, pipeline_id, error, schedule_id";

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|error| StoreError::Backend(format!("encoding: {error}")))
}

impl SqlStore {
    /// Records an event unless its dedupe key was seen; true if recorded.
    async fn insert_event(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &NewTriggerEvent<'_>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO trigger_events (project_id, source, git_ref, ref_is_tag, before_sha, \
             after_sha, variables, dedupe_key, state, created_at, schedule_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(event.project_id)
        .bind(event.source)
        .bind(event.git_ref)
        .bind(i64::from(event.ref_is_tag))
        .bind(event.before_sha)
        .bind(event.after_sha)
        .bind(event.variables)
        .bind(event.dedupe_key)
        .bind(self.now_text())
        .bind(event.schedule_id)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The next pipeline number of a project, under a lock on the project's
    /// row (PostgreSQL; SQLite's writer lock serialises anyway).
    pub(super) async fn next_iid(
        &self,
        tx: &mut Transaction<'static, Any>,
        project_id: i64,
    ) -> StoreResult<i64> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM projects WHERE id = $1 FOR UPDATE")
                .bind(project_id)
                .execute(&mut **tx)
                .await?;
        }
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(iid) FROM pipelines WHERE project_id = $1")
                .bind(project_id)
                .fetch_one(&mut **tx)
                .await?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Marks the event a new pipeline answers, in the pipeline's
    /// transaction: false if it was handled already.
    pub(super) async fn close_event(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: i64,
        pipeline: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE trigger_events SET state = $1, pipeline_id = $2 WHERE id = $3 AND state = 'pending'",
        )
        .bind(EVENT_CREATED)
        .bind(pipeline)
        .bind(event)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE schedules SET last_pipeline_id = $1 \
             WHERE id = (SELECT schedule_id FROM trigger_events WHERE id = $2)",
        )
        .bind(pipeline)
        .bind(event)
        .execute(&mut **tx)
        .await?;
        Ok(true)
    }
}

#[async_trait]
impl ProjectStore for SqlStore {
    async fn insert_project(&self, row: &ProjectRow) -> StoreResult<ProjectRow> {
        let mut write = self.write().await?;
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
            .bind(&row.name)
            .fetch_optional(&mut *write.tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "a project named {:?} exists already",
                row.name
            )));
        }
        let created_at = self.now_text();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO projects (name, repo, default_branch, protected_refs, poll_seconds, \
             registry, webhook_secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&row.name)
        .bind(&row.repo)
        .bind(&row.default_branch)
        .bind(json(&row.protected_refs)?)
        .bind(row.poll_seconds)
        .bind(&row.registry)
        .bind(&row.webhook_secret)
        .bind(&created_at)
        .fetch_one(&mut *write.tx)
        .await?;
        write.commit().await?;
        Ok(ProjectRow {
            id,
            created_at,
            polled_at: None,
            ..row.clone()
        })
    }

    async fn project_by_name(&self, name: &str) -> StoreResult<Option<ProjectRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn project_by_id(&self, id: i64) -> StoreResult<Option<ProjectRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn projects(&self) -> StoreResult<Vec<ProjectRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn update_project(&self, row: &ProjectRow) -> StoreResult<()> {
        let write = self.write().await?;
        let mut write = write;
        sqlx::query(
            "UPDATE projects SET repo = $1, default_branch = $2, protected_refs = $3, \
             poll_seconds = $4, registry = $5, webhook_secret = $6 WHERE id = $7",
        )
        .bind(&row.repo)
        .bind(&row.default_branch)
        .bind(json(&row.protected_refs)?)
        .bind(row.poll_seconds)
        .bind(&row.registry)
        .bind(&row.webhook_secret)
        .bind(row.id)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await
    }

    async fn delete_project(&self, id: i64) -> StoreResult<()> {
        let mut write = self.write().await?;
        for table in [
            "project_variables",
            "api_tokens",
            "schedules",
            "project_refs",
            "trigger_events",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE project_id = $1"))
                .bind(id)
                .execute(&mut *write.tx)
                .await?;
        }
        sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await
    }

    async fn project_pipelines(
        &self,
        project_id: i64,
        query: PipelineQuery<'_>,
    ) -> StoreResult<Vec<PipelineRow>> {
        let columns = super::pipelines::PIPELINE_COLUMNS;
        Ok(sqlx::query_as(&format!(
            "SELECT {columns} FROM pipelines WHERE project_id = $1 \
             AND ($2 IS NULL OR git_ref = $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        ))
        .bind(project_id)
        .bind(query.git_ref)
        .bind(query.status)
        .bind(query.before)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn latest_pipelines_by_ref(
        &self,
        project_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<PipelineRow>> {
        let columns = super::pipelines::PIPELINE_COLUMNS;
        Ok(sqlx::query_as(&format!(
            "SELECT {columns} FROM pipelines WHERE id IN (SELECT MAX(id) FROM pipelines \
             WHERE project_id = $1 GROUP BY git_ref) ORDER BY id DESC LIMIT $2"
        ))
        .bind(project_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn put_variable(&self, row: &VariableRow) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO project_variables (project_id, key, env_scope, value, masked, protected, \
             file, raw, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (project_id, key, env_scope) DO UPDATE SET value = excluded.value, \
             masked = excluded.masked, protected = excluded.protected, file = excluded.file, \
             raw = excluded.raw, updated_at = excluded.updated_at",
        )
        .bind(row.project_id)
        .bind(&row.key)
        .bind(&row.env_scope)
        .bind(&row.value)
        .bind(i64::from(row.masked))
        .bind(i64::from(row.protected))
        .bind(i64::from(row.file))
        .bind(i64::from(row.raw))
        .bind(self.now_text())
        .execute(&mut *write.tx)
        .await?;
        write.commit().await
    }

    async fn variables_of(&self, project_id: i64) -> StoreResult<Vec<VariableRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VARIABLE_COLUMNS} FROM project_variables WHERE project_id = $1 ORDER BY key, env_scope"
        ))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn all_variables(&self) -> StoreResult<Vec<VariableRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VARIABLE_COLUMNS} FROM project_variables ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_variable_value(&self, id: i64, envelope: &str) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query("UPDATE project_variables SET value = $1 WHERE id = $2")
            .bind(envelope)
            .bind(id)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await
    }

    async fn delete_variable(&self, project_id: i64, key: &str, scope: &str) -> StoreResult<bool> {
        let mut write = self.write().await?;
        let done = sqlx::query(
            "DELETE FROM project_variables WHERE project_id = $1 AND key = $2 AND env_scope = $3",
        )
        .bind(project_id)
        .bind(key)
        .bind(scope)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_token(&self, token: &NewToken<'_>) -> StoreResult<TokenRow> {
        let mut write = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (token_sha256, role, project_id, description, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(token.token_sha256)
        .bind(token.role)
        .bind(token.project_id)
        .bind(token.description)
        .bind(self.now_text())
        .bind(token.expires_at)
        .fetch_one(&mut *write.tx)
        .await?;
        let row = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *write.tx)
        .await?;
        write.commit().await?;
        Ok(row)
    }

    async fn token_by_hash(&self, token_sha256: &str) -> StoreResult<Option<TokenRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = $1"
        ))
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn touch_token(&self, id: i64) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(self.now_text())
            .bind(id)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await
    }

    async fn delete_token(&self, id: i64) -> StoreResult<bool> {
        let mut write = self.write().await?;
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_schedule(&self, schedule: &NewSchedule<'_>) -> StoreResult<ScheduleRow> {
        let mut write = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO schedules (project_id, cron, timezone, git_ref, variables, description, \
             next_run_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(schedule.project_id)
        .bind(schedule.cron)
        .bind(schedule.timezone)
        .bind(schedule.git_ref)
        .bind(schedule.variables)
        .bind(schedule.description)
        .bind(schedule.next_run_at)
        .bind(self.now_text())
        .fetch_one(&mut *write.tx)
        .await?;
        let row = sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *write.tx)
        .await?;
        write.commit().await?;
        Ok(row)
    }

    async fn schedules_of(&self, project_id: i64) -> StoreResult<Vec<ScheduleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE project_id = $1 ORDER BY id"
        ))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn delete_schedule(&self, project_id: i64, id: i64) -> StoreResult<bool> {
        let mut write = self.write().await?;
        let done = sqlx::query("DELETE FROM schedules WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn due_schedules(&self, now: &str) -> StoreResult<Vec<ScheduleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE next_run_at <= $1 ORDER BY next_run_at"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn claim_schedule(
        &self,
        id: i64,
        due: &str,
        next: &str,
        event: &NewTriggerEvent<'_>,
    ) -> StoreResult<bool> {
        let mut write = self.write().await?;
        let moved =
            sqlx::query("UPDATE schedules SET next_run_at = $1 WHERE id = $2 AND next_run_at = $3")
                .bind(next)
                .bind(id)
                .bind(due)
                .execute(&mut *write.tx)
                .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        self.insert_event(&mut write.tx, event).await?;
        write.commit().await?;
        Ok(true)
    }

    async fn project_refs(&self, project_id: i64) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT git_ref, sha FROM project_refs WHERE project_id = $1 ORDER BY git_ref",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn record_push(
        &self,
        project_id: i64,
        full_ref: &str,
        sha: Option<&str>,
        event: Option<&NewTriggerEvent<'_>>,
    ) -> StoreResult<bool> {
        let mut write = self.write().await?;
        match sha {
            Some(sha) => {
                sqlx::query(
                    "INSERT INTO project_refs (project_id, git_ref, sha) VALUES ($1, $2, $3) \
                     ON CONFLICT (project_id, git_ref) DO UPDATE SET sha = excluded.sha",
                )
                .bind(project_id)
                .bind(full_ref)
                .bind(sha)
                .execute(&mut *write.tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM project_refs WHERE project_id = $1 AND git_ref = $2")
                    .bind(project_id)
                    .bind(full_ref)
                    .execute(&mut *write.tx)
                    .await?;
            }
        }
        let recorded = match event {
            Some(event) => self.insert_event(&mut write.tx, event).await?,
            None => false,
        };
        write.commit().await?;
        Ok(recorded)
    }

    async fn set_polled(&self, project_id: i64) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query("UPDATE projects SET polled_at = $1 WHERE id = $2")
            .bind(self.now_text())
            .bind(project_id)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await
    }

    async fn pending_events(&self) -> StoreResult<Vec<TriggerEventRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM trigger_events WHERE state = 'pending' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn trigger_event(&self, id: i64) -> StoreResult<Option<TriggerEventRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM trigger_events WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn refuse_event(&self, id: i64, error: &str) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "UPDATE trigger_events SET state = $1, error = $2 WHERE id = $3 AND state = 'pending'",
        )
        .bind(EVENT_REFUSED)
        .bind(error)
        .bind(id)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await
    }
}
