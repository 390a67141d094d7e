//! [`StatsStore`] on SQL: two `GROUP BY status` counts, the same text on
//! SQLite and PostgreSQL, and the observer that [`super::Write::commit`]
//! reports to.

use super::SqlStore;
use crate::storage::observe::{StatsStore, StatusCounts, StoreObserver};
use crate::storage::{StoreError, StoreResult};
use async_trait::async_trait;
use std::str::FromStr;
use std::sync::Arc;

/// `(status, count)` rows of a `GROUP BY status` query, parsed.
fn parse_counts<T: FromStr>(rows: Vec<(String, i64)>, what: &str) -> StoreResult<Vec<(T, u64)>> {
    rows.into_iter()
        .map(|(status, count)| {
            let parsed = status
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("{what} status {status:?}")))?;
            Ok((parsed, u64::try_from(count).unwrap_or(0)))
        })
        .collect()
}

#[async_trait]
impl StatsStore for SqlStore {
    async fn status_counts(&self) -> StoreResult<StatusCounts> {
        let jobs: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        let pipelines: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM pipelines GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        Ok(StatusCounts {
            jobs: parse_counts(jobs, "job")?,
            pipelines: parse_counts(pipelines, "pipeline")?,
        })
    }

    fn observe(&self, observer: Arc<dyn StoreObserver>) {
        *self
            .observer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(observer);
    }
}
