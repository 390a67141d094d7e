//! A job's records: its log (appended at offsets, then sealed) and its
//! artifact archive. Each write is fenced inside its transaction: it lands
//! only while the job is running under the caller's attempt and lease epoch,
//! so a token whose attempt has ended (or a copy that lost its lease) changes
//! nothing, even when it races the final status. A sealed log takes no more
//! bytes; an archive, once recorded by an attempt, is never replaced.
//!
//! Authentication (the job token) is the caller's; this module only fences.

use super::sqlite::{now, Store};
use crate::error::{CoreError, CoreResult};
use osprey_shared::{JobId, JobStatus};
use sqlx::{Sqlite, Transaction};

/// What `append_log` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    Appended(u64),
    Duplicate(u64),
    Gap(u64),
}

/// The attempt a job-scoped write claims to come from.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub attempt_id: &'a str,
    pub lease_epoch: u64,
}

/// The fields a fenced write looks at, read inside its transaction.
#[derive(sqlx::FromRow)]
struct Current {
    status: String,
    attempt_id: Option<String>,
    lease_epoch: i64,
    attempt: i64,
    log_size: i64,
    log_sealed: bool,
    log_sha256: Option<String>,
    artifact_attempt: Option<i64>,
}

/// Reads the job's current attempt and refuses a write from any other, or
/// from an attempt that has ended.
async fn current(
    tx: &mut Transaction<'_, Sqlite>,
    job: JobId,
    fence: Fence<'_>,
) -> CoreResult<Current> {
    let row: Option<Current> = sqlx::query_as(
        "SELECT status, attempt_id, lease_epoch, attempt, log_size, log_sealed, log_sha256, \
         artifact_attempt FROM jobs WHERE id = ?",
    )
    .bind(job.0 as i64)
    .fetch_optional(&mut **tx)
    .await?;
    let row = row.ok_or_else(|| CoreError::NotFound(format!("job {job} not found")))?;
    if row.attempt_id.as_deref() != Some(fence.attempt_id)
        || row.lease_epoch as u64 != fence.lease_epoch
    {
        return Err(CoreError::StaleLease(format!(
            "attempt {} (epoch {}) is no longer job {job}'s current attempt; kill it",
            fence.attempt_id, fence.lease_epoch
        )));
    }
    ended(job, &row.status)?;
    Ok(row)
}

/// Refuses a call for a job whose attempt is no longer running: its job
/// token died with the attempt's final status (or with its retry).
pub(crate) fn ended(job: JobId, status: &str) -> CoreResult<()> {
    let status: JobStatus = status.parse().unwrap_or(JobStatus::Failed);
    if status == JobStatus::Running {
        return Ok(());
    }
    Err(CoreError::PermissionDenied(format!(
        "the job token of job {job} is no longer valid: its attempt has ended (job is {status})"
    )))
}

impl Store {
    /// Appends `data` at `offset` to a job's log, storing only bytes past the
    /// committed end; never more than `max_size` in all, never after the seal.
    pub async fn append_log(
        &self,
        job: JobId,
        fence: Fence<'_>,
        offset: u64,
        data: &[u8],
        max_size: u64,
    ) -> CoreResult<AppendResult> {
        let (_guard, mut tx) = self.write().await?;
        let row = current(&mut tx, job, fence).await?;
        if row.log_sealed {
            return Err(CoreError::FailedPrecondition(format!(
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
            return Err(CoreError::ResourceExhausted(format!(
                "job log limit of {max_size} bytes exceeded"
            )));
        }
        // Up to the limit the log is kept whole: a chunk that crosses it is
        // stored in part, and the answer's offset says how much.
        let end = end.min(max_size);
        let fresh = &data[(size - offset) as usize..(end - offset) as usize];
        sqlx::query("INSERT INTO log_chunks (job_id, attempt, offset, data) VALUES (?, ?, ?, ?)")
            .bind(job.0 as i64)
            .bind(row.attempt)
            .bind(size as i64)
            .bind(fresh)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE jobs SET log_size = ? WHERE id = ?")
            .bind(end as i64)
            .bind(job.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AppendResult::Appended(end))
    }

    /// The stored log bytes from `offset`, at most `limit` of them.
    pub async fn read_log(&self, job: JobId, offset: u64, limit: usize) -> CoreResult<Vec<u8>> {
        let chunks: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT offset, data FROM log_chunks WHERE job_id = ? \
             AND attempt = (SELECT attempt FROM jobs WHERE id = ?) \
             AND offset + length(data) > ? ORDER BY offset",
        )
        .bind(job.0 as i64)
        .bind(job.0 as i64)
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for (chunk_offset, data) in chunks {
            let skip = offset.saturating_sub(chunk_offset as u64) as usize;
            out.extend_from_slice(&data[skip.min(data.len())..]);
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        Ok(out)
    }

    /// Seals the log of `size` bytes with digest `sha256` (computed by the
    /// caller from the stored bytes). False if the log grew meanwhile. A
    /// repeated seal with the same size and digest is answered true again
    /// (the agent retries a seal whose answer it lost); any other is refused.
    pub async fn seal_log(
        &self,
        job: JobId,
        fence: Fence<'_>,
        size: u64,
        sha256: &str,
    ) -> CoreResult<bool> {
        let (_guard, mut tx) = self.write().await?;
        let row = current(&mut tx, job, fence).await?;
        if row.log_sealed {
            let same = row.log_size as u64 == size
                && row
                    .log_sha256
                    .as_deref()
                    .is_some_and(|stored| stored.eq_ignore_ascii_case(sha256));
            return if same {
                Ok(true)
            } else {
                Err(CoreError::FailedPrecondition(format!(
                    "the log of job {job} is already sealed"
                )))
            };
        }
        if row.log_size as u64 != size {
            return Ok(false);
        }
        sqlx::query("UPDATE jobs SET log_sealed = 1, log_sha256 = ? WHERE id = ?")
            .bind(sha256)
            .bind(job.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Refuses early an upload that [`Store::set_artifact`] would refuse.
    pub async fn check_artifact_open(&self, job: JobId, fence: Fence<'_>) -> CoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let row = current(&mut tx, job, fence).await?;
        artifact_open(job, &row)
    }

    /// Records a job's archive, already stored under `key` in the artifact
    /// store; `expires_at` (RFC 3339) from `expire_in`. Refused (and the
    /// caller deletes the object) when the attempt has ended or has already
    /// recorded one: the checks run under the write lock, so two uploads of
    /// one attempt cannot both be recorded.
    pub async fn set_artifact(
        &self,
        job: JobId,
        fence: Fence<'_>,
        size: u64,
        sha256: &str,
        expires_at: Option<String>,
        key: &str,
    ) -> CoreResult<()> {
        let (_guard, mut tx) = self.write().await?;
        let row = current(&mut tx, job, fence).await?;
        artifact_open(job, &row)?;
        sqlx::query(
            "UPDATE jobs SET artifact_size = ?, artifact_sha256 = ?, artifact_expires_at = ?, \
             artifact_attempt = ?, artifact_key = ? WHERE id = ?",
        )
        .bind(size as i64)
        .bind(sha256)
        .bind(expires_at)
        .bind(row.attempt)
        .bind(key)
        .bind(job.0 as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the archives whose `expire_in` has passed; returns their jobs
    /// and store keys (`None`: the legacy key) so the objects can be deleted
    /// after the row: a crash in between leaves an orphan object, never a
    /// row pointing at nothing.
    pub async fn expire_artifacts(&self) -> CoreResult<Vec<(JobId, Option<String>)>> {
        let (_guard, mut tx) = self.write().await?;
        // RETURNING gives the new values (NULL), so the keys are read first,
        // in the same transaction under the write lock.
        let cutoff = now();
        let expired: Vec<(i64, Option<String>)> =
            sqlx::query_as("SELECT id, artifact_key FROM jobs WHERE artifact_expires_at <= ?")
                .bind(&cutoff)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE jobs SET artifact_size = NULL, artifact_sha256 = NULL, artifact_expires_at = NULL, \
             artifact_key = NULL WHERE artifact_expires_at <= ?",
        )
        .bind(&cutoff)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(expired
            .into_iter()
            .map(|(id, key)| (JobId(id as u64), key))
            .collect())
    }
}

fn artifact_open(job: JobId, row: &Current) -> CoreResult<()> {
    if row.artifact_attempt == Some(row.attempt) {
        return Err(CoreError::FailedPrecondition(format!(
            "job {job} has already recorded its artifacts; an archive is never replaced"
        )));
    }
    Ok(())
}
