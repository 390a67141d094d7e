//! The SQLite store (the embedded default). WAL mode with `synchronous=NORMAL`:
//! a committed transaction survives a crash of the process (kill -9); writes are
//! serialised by one lock so transactions never fail with SQLITE_BUSY.

use super::rows::{AgentRow, JobRow, PipelineRow};
use crate::error::{CoreError, CoreResult};
use osprey_shared::api::format_time;
use osprey_shared::pipeline::Pipeline;
use osprey_shared::{JobId, JobStatus, PipelineId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

pub(super) const JOB_COLUMNS: &str = "id, pipeline_id, name, stage, stage_index, status, allow_failure, when_, \
    definition, agent_id, agent_name, attempt_id, lease_epoch, job_token_sha256, cancel_requested, \
    started_at, finished_at, exit_code, failure_reason, log_size, log_sealed, artifact_size, artifact_sha256, \
    attempt, coverage, scheduled_at";

/// The coordinator's durable state.
#[derive(Clone)]
pub struct Store {
    pub(super) pool: SqlitePool,
    pub(super) write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// What jobs learn of a pipeline's commit beyond its sha.
#[derive(Debug, Clone, Default)]
pub struct CommitDetails {
    /// The ref's commit at its previous pipeline (`CI_COMMIT_BEFORE_SHA`).
    pub before_sha: Option<String>,
    /// The full commit message (`CI_COMMIT_MESSAGE`).
    pub message: Option<String>,
    /// The repository's default branch (`CI_DEFAULT_BRANCH`).
    pub default_branch: Option<String>,
}

/// A new agent to record.
pub struct NewAgent<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub token_sha256: &'a str,
    pub tags: &'a [String],
    pub run_untagged: bool,
    pub executor: &'a str,
    pub concurrency: u32,
}

/// What `append_log` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    Appended(u64),
    Duplicate(u64),
    Gap(u64),
}

pub(super) fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

impl Store {
    /// Opens (creating if needed) `DIR/osprey.db` and applies the migrations.
    pub async fn open(data_dir: &Path) -> CoreResult<Store> {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("osprey.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|error| CoreError::Internal(format!("database migration failed: {error}")))?;
        Ok(Store {
            pool,
            write_lock: Default::default(),
        })
    }

    pub(super) async fn write(
        &self,
    ) -> CoreResult<(tokio::sync::MutexGuard<'_, ()>, Transaction<'_, Sqlite>)> {
        let guard = self.write_lock.lock().await;
        let tx = self.pool.begin().await?;
        Ok((guard, tx))
    }

    // ------------------------------------------------------------ agents

    pub async fn insert_agent(&self, agent: NewAgent<'_>) -> CoreResult<()> {
        let (_guard, mut tx) = self.write().await?;
        sqlx::query(
            "INSERT INTO agents (id, name, token_sha256, tags, run_untagged, executor, concurrency, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(agent.id)
        .bind(agent.name)
        .bind(agent.token_sha256)
        .bind(serde_json::to_string(agent.tags).unwrap_or_default())
        .bind(agent.run_untagged)
        .bind(agent.executor)
        .bind(i64::from(agent.concurrency))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn agent_by_token(&self, token_sha256: &str) -> CoreResult<Option<AgentRow>> {
        Ok(sqlx::query_as::<_, AgentRow>(
            "SELECT id, name, tags, run_untagged, executor, concurrency FROM agents WHERE token_sha256 = ?",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn update_agent(
        &self,
        id: &str,
        tags: &[String],
        run_untagged: bool,
        concurrency: u32,
    ) -> CoreResult<()> {
        let (_guard, mut tx) = self.write().await?;
        sqlx::query("UPDATE agents SET tags = ?, run_untagged = ?, concurrency = ? WHERE id = ?")
            .bind(serde_json::to_string(tags).unwrap_or_default())
            .bind(run_untagged)
            .bind(i64::from(concurrency))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn agents(&self) -> CoreResult<Vec<AgentRow>> {
        Ok(sqlx::query_as::<_, AgentRow>(
            "SELECT id, name, tags, run_untagged, executor, concurrency FROM agents ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    // ------------------------------------------------------------ pipelines

    /// Records a pipeline and its jobs and starts it; returns its id and the
    /// jobs that became pending.
    pub async fn create_pipeline(
        &self,
        repo: &str,
        git_ref: &str,
        ref_is_tag: bool,
        sha: &str,
        pipeline: &Pipeline,
    ) -> CoreResult<(PipelineId, Vec<JobId>)> {
        self.create_pipeline_with(
            repo,
            git_ref,
            ref_is_tag,
            sha,
            pipeline,
            &CommitDetails::default(),
        )
        .await
    }

    /// [`Store::create_pipeline`] with what jobs learn of the commit.
    pub async fn create_pipeline_with(
        &self,
        repo: &str,
        git_ref: &str,
        ref_is_tag: bool,
        sha: &str,
        pipeline: &Pipeline,
        details: &CommitDetails,
    ) -> CoreResult<(PipelineId, Vec<JobId>)> {
        let definition = serde_json::to_string(pipeline)
            .map_err(|error| CoreError::Internal(format!("encoding pipeline: {error}")))?;
        let (_guard, mut tx) = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (repo, git_ref, ref_is_tag, sha, status, definition, created_at, \
             before_sha, commit_message, default_branch) \
             VALUES (?, ?, ?, ?, 'created', ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(repo)
        .bind(git_ref)
        .bind(ref_is_tag)
        .bind(sha)
        .bind(definition)
        .bind(now())
        .bind(&details.before_sha)
        .bind(&details.message)
        .bind(&details.default_branch)
        .fetch_one(&mut *tx)
        .await?;
        for (position, job) in pipeline.jobs.iter().enumerate() {
            let stage_index = pipeline.stage_index(&job.stage).ok_or_else(|| {
                CoreError::Internal(format!(
                    "job {} is in unknown stage {}",
                    job.name, job.stage
                ))
            })?;
            let definition = serde_json::to_string(job)
                .map_err(|error| CoreError::Internal(format!("encoding job: {error}")))?;
            sqlx::query(
                "INSERT INTO jobs (pipeline_id, position, name, stage, stage_index, status, allow_failure, when_, \
                 definition, resource_group, interruptible) VALUES (?, ?, ?, ?, ?, 'created', ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&job.name)
            .bind(&job.stage)
            .bind(stage_index as i64)
            .bind(job.allow_failure)
            .bind(job.when.as_str())
            .bind(definition)
            .bind(&job.resource_group)
            .bind(job.interruptible)
            .execute(&mut *tx)
            .await?;
        }
        let pipeline_id = PipelineId(id as u64);
        let pending = super::lifecycle::advance_in(&mut tx, pipeline_id).await?;
        tx.commit().await?;
        Ok((pipeline_id, pending))
    }

    /// The commit of the latest pipeline of this ref, for `changes:`.
    pub async fn last_sha(&self, repo: &str, git_ref: &str) -> CoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT sha FROM pipelines WHERE repo = ? AND git_ref = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(repo)
        .bind(git_ref)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn pipeline(&self, id: PipelineId) -> CoreResult<Option<PipelineRow>> {
        Ok(sqlx::query_as::<_, PipelineRow>(
            "SELECT id, repo, git_ref, ref_is_tag, sha, status, definition, before_sha, commit_message, \
             default_branch FROM pipelines WHERE id = ?",
        )
        .bind(id.0 as i64)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn jobs_of(&self, pipeline: PipelineId) -> CoreResult<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE pipeline_id = ? ORDER BY stage_index, position"
        ))
        .bind(pipeline.0 as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn job(&self, id: JobId) -> CoreResult<Option<JobRow>> {
        Ok(
            sqlx::query_as::<_, JobRow>(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
                .bind(id.0 as i64)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn jobs_with_status(&self, status: JobStatus) -> CoreResult<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY id"
        ))
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Pipelines not yet finished, for re-advancing at start.
    pub async fn unfinished_pipelines(&self) -> CoreResult<Vec<PipelineId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM pipelines WHERE status NOT IN ('success', 'failed', 'canceled')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|id| PipelineId(id as u64)).collect())
    }

    /// Older unfinished pipelines of the same ref at another commit: the
    /// candidates for auto-cancel when a new pipeline starts.
    pub async fn redundant_pipelines(
        &self,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> CoreResult<Vec<PipelineId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM pipelines WHERE repo = ? AND git_ref = ? AND sha != ? \
             AND status NOT IN ('success', 'failed', 'canceled') ORDER BY id",
        )
        .bind(repo)
        .bind(git_ref)
        .bind(sha)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|id| PipelineId(id as u64)).collect())
    }

    // ------------------------------------------------------------ logs

    /// Appends `data` at `offset` to a job's log, storing only bytes past the
    /// committed end; never more than `max_size` in all.
    pub async fn append_log(
        &self,
        job: JobId,
        offset: u64,
        data: &[u8],
        max_size: u64,
    ) -> CoreResult<AppendResult> {
        let (_guard, mut tx) = self.write().await?;
        let (size, attempt): (i64, i64) =
            sqlx::query_as("SELECT log_size, attempt FROM jobs WHERE id = ?")
                .bind(job.0 as i64)
                .fetch_one(&mut *tx)
                .await?;
        let size = size as u64;
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
            .bind(attempt)
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

    pub async fn seal_log(&self, job: JobId, sha256: &str) -> CoreResult<()> {
        let (_guard, mut tx) = self.write().await?;
        sqlx::query("UPDATE jobs SET log_sealed = 1, log_sha256 = ? WHERE id = ?")
            .bind(sha256)
            .bind(job.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------ artifacts

    /// Records a job's archive; `expires_at` (RFC 3339) from `expire_in`.
    pub async fn set_artifact(
        &self,
        job: JobId,
        size: u64,
        sha256: &str,
        expires_at: Option<String>,
    ) -> CoreResult<()> {
        let (_guard, mut tx) = self.write().await?;
        sqlx::query(
            "UPDATE jobs SET artifact_size = ?, artifact_sha256 = ?, artifact_expires_at = ? WHERE id = ?",
        )
        .bind(size as i64)
        .bind(sha256)
        .bind(expires_at)
        .bind(job.0 as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the archives whose `expire_in` has passed; returns their jobs
    /// so their files can be deleted (after the row, so a crash in between
    /// leaves an orphan file, never a row pointing at nothing).
    pub async fn expire_artifacts(&self) -> CoreResult<Vec<JobId>> {
        let (_guard, mut tx) = self.write().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET artifact_size = NULL, artifact_sha256 = NULL, artifact_expires_at = NULL \
             WHERE artifact_expires_at <= ? RETURNING id",
        )
        .bind(now())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids.into_iter().map(|id| JobId(id as u64)).collect())
    }
}
