//! `Idempotency-Key` of `POST /api/v1/pipelines`: the key is recorded with
//! the pipeline it created, in the transaction that creates it, so a client
//! that lost the answer (a cut connection, a coordinator killed mid-request)
//! and retries with the same key gets that pipeline instead of a second one.
//! Keys are kept for [`KEY_LIFETIME`]; a key reused with another request body
//! is refused.

use super::{id, Backend, SqlStore};
use crate::storage::{IdempotencyKey, Keyed, NewPipeline, StoreResult, KEY_LIFETIME};
use osprey_shared::api::format_time;
use osprey_shared::PipelineId;

fn answer(seen: (String, i64), key: IdempotencyKey<'_>) -> Keyed {
    let (digest, pipeline) = seen;
    if digest == key.request_sha256 {
        Keyed::Replayed(PipelineId(pipeline as u64))
    } else {
        Keyed::Mismatch
    }
}

impl SqlStore {
    fn oldest_kept(&self) -> String {
        format_time(self.now() - KEY_LIFETIME)
    }

    pub(super) async fn keyed(&self, key: IdempotencyKey<'_>) -> StoreResult<Option<Keyed>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT request_sha256, pipeline_id FROM idempotency_keys WHERE key = $1 AND created_at > $2",
        )
        .bind(key.key)
        .bind(self.oldest_kept())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|seen| answer(seen, key)))
    }

    /// The check and the record are in the pipeline's transaction: two
    /// requests racing with one key create one pipeline (on PostgreSQL the
    /// loser waits on the key's advisory lock, then sees the winner's row).
    pub(super) async fn create_keyed(
        &self,
        new: &NewPipeline<'_>,
        key: IdempotencyKey<'_>,
    ) -> StoreResult<Keyed> {
        let mut write = self.write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("osprey.idempotency.{}", key.key))
                .execute(&mut *write.tx)
                .await?;
        }
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
            .bind(self.oldest_kept())
            .execute(&mut *write.tx)
            .await?;
        let seen: Option<(String, i64)> = sqlx::query_as(
            "SELECT request_sha256, pipeline_id FROM idempotency_keys WHERE key = $1",
        )
        .bind(key.key)
        .fetch_optional(&mut *write.tx)
        .await?;
        if let Some(seen) = seen {
            return Ok(answer(seen, key));
        }
        let (pipeline, pending) = self.insert_pipeline(&mut write, new).await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (key, request_sha256, pipeline_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(key.key)
        .bind(key.request_sha256)
        .bind(id(pipeline.0))
        .bind(self.now_text())
        .execute(&mut *write.tx)
        .await?;
        write.commit().await?;
        Ok(Keyed::Created(pipeline, pending))
    }
}
