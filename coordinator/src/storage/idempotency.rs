//! `Idempotency-Key` of `POST /api/v1/pipelines`: the key is recorded with
//! the pipeline it created, in the transaction that creates it, so a client
//! that lost the answer (a cut connection, a coordinator killed mid-request)
//! and retries with the same key gets that pipeline instead of a second one.
//! Keys are kept for [`KEY_LIFETIME`]; a key reused with another request body
//! is refused.

use super::sqlite::{insert_pipeline, now, NewPipeline, Store};
use crate::error::CoreResult;
use osprey_shared::api::format_time;
use osprey_shared::{JobId, PipelineId};

/// How long a key is remembered (as Stripe's 24 hours).
pub const KEY_LIFETIME: time::Duration = time::Duration::hours(24);

/// A client's key and the digest of the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    pub request_sha256: &'a str,
}

/// What a keyed create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed {
    /// A new pipeline, with the jobs that became pending.
    Created(PipelineId, Vec<JobId>),
    /// The key was seen with the same request: its pipeline, untouched.
    Replayed(PipelineId),
    /// The key was seen with another request.
    Mismatch,
}

fn oldest_kept() -> String {
    format_time(time::OffsetDateTime::now_utc() - KEY_LIFETIME)
}

impl Store {
    /// The pipeline a live key created, if any (before any work is done).
    pub async fn keyed_pipeline(&self, key: IdempotencyKey<'_>) -> CoreResult<Option<Keyed>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT request_sha256, pipeline_id FROM idempotency_keys WHERE key = ? AND created_at > ?",
        )
        .bind(key.key)
        .bind(oldest_kept())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(digest, id)| {
            if digest == key.request_sha256 {
                Keyed::Replayed(PipelineId(id as u64))
            } else {
                Keyed::Mismatch
            }
        }))
    }

    /// [`Store::create_pipeline_with`] under a key: the check and the record
    /// are in the pipeline's transaction (under the write lock), so two
    /// requests racing with one key create one pipeline.
    pub async fn create_pipeline_keyed(
        &self,
        new: &NewPipeline<'_>,
        key: IdempotencyKey<'_>,
    ) -> CoreResult<Keyed> {
        let (_guard, mut tx) = self.write().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= ?")
            .bind(oldest_kept())
            .execute(&mut *tx)
            .await?;
        let seen: Option<(String, i64)> = sqlx::query_as(
            "SELECT request_sha256, pipeline_id FROM idempotency_keys WHERE key = ?",
        )
        .bind(key.key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((digest, id)) = seen {
            return Ok(if digest == key.request_sha256 {
                Keyed::Replayed(PipelineId(id as u64))
            } else {
                Keyed::Mismatch
            });
        }
        let (id, pending) = insert_pipeline(&mut tx, new).await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (key, request_sha256, pipeline_id, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(key.key)
        .bind(key.request_sha256)
        .bind(id.0 as i64)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Keyed::Created(id, pending))
    }
}
