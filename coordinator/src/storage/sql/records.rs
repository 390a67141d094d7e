//! A job's records: its log (appended at offsets, then sealed) and its
//! artifact archive. Each write is fenced inside its transaction: it lands
//! only while the job is running under the caller's attempt and lease epoch,
//! so a token whose attempt has ended (or a copy that lost its lease) changes
//! nothing, even when it races the final status. A sealed log takes no more
//! bytes; an archive, once recorded by an attempt, is never replaced.
//!
//! Authentication (the job token) is the caller's; this module only fences.

use super::{id, SqlStore};
use crate::storage::{
    ended, AppendResult, Fence, NewArtifact, RecordStore, StoreError, StoreResult,
};
use async_trait::async_trait;
use osprey_shared::{JobId, JobStatus};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

/// Log chunks read per query by `read_log`.
const CHUNKS_PER_READ: i64 = 64;

/// The fields a fenced write looks at, read inside its transaction.
struct Current {
    attempt: i64,
    log_size: i64,
    log_sealed: bool,
    log_sha256: Option<String>,
    artifact_attempt: Option<i64>,
}

impl SqlStore {
    /// Reads the job's current attempt (locking its row) and refuses a write
    /// from any other, or from an attempt that has ended.
    async fn current(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: JobId,
        fence: Fence<'_>,
    ) -> StoreResult<Current> {
        let row: Option<AnyRow> = sqlx::query(&format!(
            "SELECT status, attempt_id, lease_epoch, attempt, log_size, log_sealed, log_sha256, \
             artifact_attempt FROM jobs WHERE id = $1{}",
            self.job_lock_suffix()
        ))
        .bind(id(job.0))
        .fetch_optional(&mut **tx)
        .await?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("job {job} not found")))?;
        let attempt_id: Option<String> = row.try_get("attempt_id")?;
        let lease_epoch: i64 = row.try_get("lease_epoch")?;
        if attempt_id.as_deref() != Some(fence.attempt_id)
            || lease_epoch as u64 != fence.lease_epoch
        {
            return Err(StoreError::StaleLease(format!(
                "attempt {} (epoch {}) is no longer job {job}'s current attempt; kill it",
                fence.attempt_id, fence.lease_epoch
            )));
        }
        let status: JobStatus = crate::storage::rows::parsed(&row, "status")?;
        ended(job, status)?;
        Ok(Current {
            attempt: row.try_get("attempt")?,
            log_size: row.try_get("log_size")?,
            log_sealed: crate::storage::rows::flag(&row, "log_sealed")?,
            log_sha256: row.try_get("log_sha256")?,
            artifact_attempt: row.try_get("artifact_attempt")?,
        })
    }
}

fn artifact_open(job: JobId, row: &Current) -> StoreResult<()> {
    if row.artifact_attempt == Some(row.attempt) {
        return Err(StoreError::Closed(format!(
            "job {job} has already recorded its artifacts; an archive is never replaced"
        )));
    }
    Ok(())
}

#[async_trait]
impl RecordStore for SqlStore {
    async fn append_log(
        &self,
        job: JobId,
        fence: Fence<'_>,
        offset: u64,
        data: &[u8],
        max_size: u64,
    ) -> StoreResult<AppendResult> {
        let mut write = self.write().await?;
        let row = self.current(&mut write.tx, job, fence).await?;
        if row.log_sealed {
            return Err(StoreError::Closed(format!(
                "the log of job {job} is sealed; it takes no more bytes"
            )));
        }
        let size = row.log_size as u64;
        let end = offset + data.len() as u64;
        if offset > size {
            return Ok(AppendResult::Gap(size));
        }
        if end <= size {
            return Ok(AppendResult::Duplicate(size));
        }
        if size >= max_size {
            return Err(StoreError::LimitExceeded(format!(
                "job log limit of {max_size} bytes exceeded"
            )));
        }
        // Up to the limit the log is kept whole: a chunk that crosses it is
        // stored in part, and the answer's offset says how much.
        let end = end.min(max_size);
        let fresh = data[(size - offset) as usize..(end - offset) as usize].to_vec();
        write.log_bytes(fresh.len());
        sqlx::query(
            "INSERT INTO log_chunks (job_id, attempt, \"offset\", data) VALUES ($1, $2, $3, $4)",
        )
        .bind(id(job.0))
        .bind(row.attempt)
        .bind(id(size))
        .bind(fresh)
        .execute(&mut *write.tx)
        .await?;
        sqlx::query("UPDATE jobs SET log_size = $1 WHERE id = $2")
            .bind(id(end))
            .bind(id(job.0))
            .execute(&mut *write.tx)
            .await?;
        write.commit().await?;
        Ok(AppendResult::Appended(end))
    }

    async fn read_log(&self, job: JobId, offset: u64, limit: usize) -> StoreResult<Vec<u8>> {
        let attempt: Option<i64> = sqlx::query_scalar("SELECT attempt FROM jobs WHERE id = $1")
            .bind(id(job.0))
            .fetch_optional(&self.pool)
            .await?;
        let Some(attempt) = attempt else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut at = offset;
        // Chunks are contiguous and never overlap: the first is the one that
        // holds `offset`, the rest follow in order; read a page at a time
        // and stop at `limit`.
        while out.len() < limit {
            let chunks: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT \"offset\", data FROM log_chunks WHERE job_id = $1 AND attempt = $2 \
                 AND \"offset\" + length(data) > $3 ORDER BY \"offset\" LIMIT $4",
            )
            .bind(id(job.0))
            .bind(attempt)
            .bind(id(at))
            .bind(CHUNKS_PER_READ)
            .fetch_all(&self.pool)
            .await?;
            let full_page = chunks.len() as i64 == CHUNKS_PER_READ;
            for (chunk_offset, data) in chunks {
                let skip = at.saturating_sub(chunk_offset as u64) as usize;
                let take = &data[skip.min(data.len())..];
                let room = limit - out.len();
                out.extend_from_slice(&take[..take.len().min(room)]);
                at = chunk_offset as u64 + data.len() as u64;
                if out.len() >= limit {
                    break;
                }
            }
            if !full_page {
                break;
            }
        }
        Ok(out)
    }

    async fn seal_log(
        &self,
        job: JobId,
        fence: Fence<'_>,
        size: u64,
        sha256: &str,
    ) -> StoreResult<bool> {
        let mut write = self.write().await?;
        let row = self.current(&mut write.tx, job, fence).await?;
        if row.log_sealed {
            let same = row.log_size as u64 == size
                && row
                    .log_sha256
                    .as_deref()
                    .is_some_and(|stored| stored.eq_ignore_ascii_case(sha256));
            return if same {
                Ok(true)
            } else {
                Err(StoreError::Closed(format!(
                    "the log of job {job} is already sealed"
                )))
            };
        }
        if row.log_size as u64 != size {
            return Ok(false);
        }
        sqlx::query("UPDATE jobs SET log_sealed = 1, log_sha256 = $1 WHERE id = $2")
            .bind(sha256)
            .bind(id(job.0))
            .execute(&mut *write.tx)
            .await?;
        write.commit().await?;
        Ok(true)
    }

    async fn check_artifact_open(&self, job: JobId, fence: Fence<'_>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let row = self.current(&mut tx, job, fence).await?;
        artifact_open(job, &row)
    }

    async fn set_artifact(
        &self,
        job: JobId,
        fence: Fence<'_>,
        artifact: NewArtifact<'_>,
    ) -> StoreResult<()> {
        let mut write = self.write().await?;
        let row = self.current(&mut write.tx, job, fence).await?;
        artifact_open(job, &row)?;
        sqlx::query(
            "UPDATE jobs SET artifact_size = $1, artifact_sha256 = $2, artifact_expires_at = $3, \
             artifact_attempt = $4, artifact_key = $5 WHERE id = $6",
        )
        .bind(id(artifact.size))
        .bind(artifact.sha256)
        .bind(artifact.expires_at)
        .bind(row.attempt)
        .bind(artifact.key)
        .bind(id(job.0))
        .execute(&mut *write.tx)
        .await?;
        write.commit().await
    }

    async fn expire_artifacts(&self) -> StoreResult<Vec<(JobId, Option<String>)>> {
        let mut write = self.write().await?;
        // The archives of the pipelines of each environment's last 10
        // successful deployments stay whatever their `expire_in`, so that a
        // rollback has them.
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT id, artifact_key FROM jobs WHERE artifact_expires_at <= $1 \
             AND pipeline_id NOT IN (SELECT pipeline_id FROM (SELECT pipeline_id, ROW_NUMBER() \
               OVER (PARTITION BY environment_id ORDER BY id DESC) AS n FROM deployments \
               WHERE status = 'success' AND action = 'start') AS recent WHERE n <= 10) \
             ORDER BY id",
        )
        .bind(self.now_text())
        .fetch_all(&mut *write.tx)
        .await?;
        for (job, _) in &rows {
            sqlx::query(
                "UPDATE jobs SET artifact_size = NULL, artifact_sha256 = NULL, artifact_expires_at = NULL, \
                 artifact_key = NULL WHERE id = $1",
            )
            .bind(job)
            .execute(&mut *write.tx)
            .await?;
        }
        write.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(job, key)| (JobId(job as u64), key))
            .collect())
    }
}
