//! Registered agents.

use super::SqlStore;
use crate::storage::{AgentRow, AgentStore, NewAgent, StoreResult};
use async_trait::async_trait;

fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

#[async_trait]
impl AgentStore for SqlStore {
    async fn insert_agent(&self, agent: NewAgent<'_>) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO agents (id, name, token_sha256, tags, run_untagged, executor, concurrency, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(agent.id)
        .bind(agent.name)
        .bind(agent.token_sha256)
        .bind(tags_json(agent.tags))
        .bind(i64::from(agent.run_untagged))
        .bind(agent.executor)
        .bind(i64::from(agent.concurrency))
        .bind(self.now_text())
        .execute(&mut *write.tx)
        .await?;
        write.commit().await
    }

    async fn agent_by_token(&self, token_sha256: &str) -> StoreResult<Option<AgentRow>> {
        Ok(sqlx::query_as::<_, AgentRow>(
            "SELECT id, name, tags, run_untagged, executor, concurrency, last_seen_at FROM agents WHERE token_sha256 = $1",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn update_agent(
        &self,
        id: &str,
        tags: &[String],
        run_untagged: bool,
        concurrency: u32,
    ) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "UPDATE agents SET tags = $1, run_untagged = $2, concurrency = $3, last_seen_at = $4 \
             WHERE id = $5",
        )
        .bind(tags_json(tags))
        .bind(i64::from(run_untagged))
        .bind(i64::from(concurrency))
        .bind(self.now_text())
        .bind(id)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await
    }

    async fn agents(&self) -> StoreResult<Vec<AgentRow>> {
        Ok(sqlx::query_as::<_, AgentRow>(
            "SELECT id, name, tags, run_untagged, executor, concurrency, last_seen_at FROM agents ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn touch_agent(&self, id: &str) -> StoreResult<()> {
        let mut write = self.write().await?;
        sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
            .bind(self.now_text())
            .bind(id)
            .execute(&mut *write.tx)
            .await?;
        write.commit().await
    }
}
