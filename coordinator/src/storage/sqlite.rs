//! The SQLite store (the embedded default). WAL mode with `synchronous=NORMAL`:
//! a committed transaction survives a crash of the process (kill -9); writes are
//! serialised by one lock so transactions never fail with SQLITE_BUSY.

use super::rows::{AgentRow, JobRow, PipelineRow};
use crate::engine::{self, Effect, JobState};
use crate::error::{CoreError, CoreResult};
use osprey_shared::api::format_time;
use osprey_shared::pipeline::Pipeline;
use osprey_shared::{JobId, JobStatus, PipelineId, PipelineStatus};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

const JOB_COLUMNS: &str = "id, pipeline_id, name, stage, stage_index, status, allow_failure, when_, \
    definition, agent_id, agent_name, attempt_id, lease_epoch, job_token_sha256, cancel_requested, \
    started_at, finished_at, exit_code, failure_reason, log_size, log_sealed, artifact_size, artifact_sha256";

/// The coordinator's durable state.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
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

/// What a job's final status change did to its pipeline.
#[derive(Debug, Default)]
pub struct FinishResult {
    /// The status stored after the call (a final status never changes).
    pub stored: Option<JobStatus>,
    /// Jobs the state machine made pending.
    pub newly_pending: Vec<JobId>,
}

fn now() -> String {
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

    async fn write(
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
        let definition = serde_json::to_string(pipeline)
            .map_err(|error| CoreError::Internal(format!("encoding pipeline: {error}")))?;
        let (_guard, mut tx) = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (repo, git_ref, ref_is_tag, sha, status, definition, created_at) \
             VALUES (?, ?, ?, ?, 'created', ?, ?) RETURNING id",
        )
        .bind(repo)
        .bind(git_ref)
        .bind(ref_is_tag)
        .bind(sha)
        .bind(definition)
        .bind(now())
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
                "INSERT INTO jobs (pipeline_id, position, name, stage, stage_index, status, allow_failure, when_, definition) \
                 VALUES (?, ?, ?, ?, ?, 'created', ?, ?, ?)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&job.name)
            .bind(&job.stage)
            .bind(stage_index as i64)
            .bind(job.allow_failure)
            .bind(job.when.as_str())
            .bind(definition)
            .execute(&mut *tx)
            .await?;
        }
        let pipeline_id = PipelineId(id as u64);
        let pending = advance_in(&mut tx, pipeline_id).await?;
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
            "SELECT id, repo, git_ref, ref_is_tag, sha, status, definition FROM pipelines WHERE id = ?",
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

    /// Jobs of the pipeline whose artifacts a job of stage `stage_index` gets:
    /// every successful earlier-stage job that stored an archive (GitLab's
    /// default without `dependencies:`).
    pub async fn artifact_sources(
        &self,
        pipeline: PipelineId,
        stage_index: i64,
    ) -> CoreResult<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE pipeline_id = ? AND stage_index < ? \
             AND status = 'success' AND artifact_size IS NOT NULL ORDER BY stage_index, position"
        ))
        .bind(pipeline.0 as i64)
        .bind(stage_index)
        .fetch_all(&self.pool)
        .await?)
    }

    // ------------------------------------------------------------ job lifecycle

    /// Records that an agent took the job: a new attempt with a bumped lease
    /// epoch. False if the job is no longer pending (canceled meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub async fn assign_job(
        &self,
        job: JobId,
        agent_id: &str,
        agent_name: &str,
        attempt_id: &str,
        lease_epoch: u64,
        token_sha256: &str,
    ) -> CoreResult<bool> {
        let (_guard, mut tx) = self.write().await?;
        let changed = sqlx::query(
            "UPDATE jobs SET status = 'running', agent_id = ?, agent_name = ?, attempt_id = ?, \
             lease_epoch = ?, job_token_sha256 = ?, started_at = ?, log_size = 0, log_sealed = 0 \
             WHERE id = ? AND status = 'pending'",
        )
        .bind(agent_id)
        .bind(agent_name)
        .bind(attempt_id)
        .bind(lease_epoch as i64)
        .bind(token_sha256)
        .bind(now())
        .bind(job.0 as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            sqlx::query("DELETE FROM log_chunks WHERE job_id = ?")
                .bind(job.0 as i64)
                .execute(&mut *tx)
                .await?;
            let pipeline: i64 = sqlx::query_scalar("SELECT pipeline_id FROM jobs WHERE id = ?")
                .bind(job.0 as i64)
                .fetch_one(&mut *tx)
                .await?;
            advance_in(&mut tx, PipelineId(pipeline as u64)).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Ends the current attempt of a running job with a final status, fenced
    /// by attempt and epoch, and advances its pipeline.
    pub async fn finish_job(
        &self,
        job: JobId,
        attempt_id: &str,
        lease_epoch: u64,
        status: JobStatus,
        exit_code: Option<i32>,
        reason: Option<&str>,
    ) -> CoreResult<FinishResult> {
        let (_guard, mut tx) = self.write().await?;
        let row: Option<(String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT status, pipeline_id, attempt_id, lease_epoch FROM jobs WHERE id = ?",
        )
        .bind(job.0 as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((current, pipeline, current_attempt, current_epoch)) = row else {
            return Err(CoreError::NotFound(format!("job {job} not found")));
        };
        if current_attempt.as_deref() != Some(attempt_id) || current_epoch as u64 != lease_epoch {
            return Err(CoreError::StaleLease(format!(
                "attempt {attempt_id} epoch {lease_epoch} is not job {job}'s current attempt"
            )));
        }
        let current: JobStatus = current.parse().unwrap_or(JobStatus::Failed);
        if current.is_finished() {
            return Ok(FinishResult {
                stored: Some(current),
                newly_pending: Vec::new(),
            });
        }
        sqlx::query(
            "UPDATE jobs SET status = ?, exit_code = ?, failure_reason = ?, finished_at = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(exit_code.map(i64::from))
        .bind(reason)
        .bind(now())
        .bind(job.0 as i64)
        .execute(&mut *tx)
        .await?;
        let newly_pending = advance_in(&mut tx, PipelineId(pipeline as u64)).await?;
        tx.commit().await?;
        Ok(FinishResult {
            stored: Some(status),
            newly_pending,
        })
    }

    /// A lease expired: fence the attempt (bump the epoch) and end the job —
    /// `canceled` if a cancel was under way, else `failed` with `agent lost`.
    pub async fn expire_lease(
        &self,
        job: JobId,
        attempt_id: &str,
        lease_epoch: u64,
    ) -> CoreResult<FinishResult> {
        let (_guard, mut tx) = self.write().await?;
        let row: Option<(i64, bool)> = sqlx::query_as(
            "SELECT pipeline_id, cancel_requested FROM jobs WHERE id = ? AND attempt_id = ? \
             AND lease_epoch = ? AND status = 'running'",
        )
        .bind(job.0 as i64)
        .bind(attempt_id)
        .bind(lease_epoch as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((pipeline, cancel_requested)) = row else {
            return Ok(FinishResult::default());
        };
        let (status, reason) = if cancel_requested {
            (JobStatus::Canceled, "canceled (agent did not confirm)")
        } else {
            (JobStatus::Failed, "agent lost")
        };
        sqlx::query(
            "UPDATE jobs SET status = ?, failure_reason = ?, finished_at = ?, lease_epoch = lease_epoch + 1 WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(now())
        .bind(job.0 as i64)
        .execute(&mut *tx)
        .await?;
        let newly_pending = advance_in(&mut tx, PipelineId(pipeline as u64)).await?;
        tx.commit().await?;
        Ok(FinishResult {
            stored: Some(status),
            newly_pending,
        })
    }

    /// Cancels a pipeline: waiting jobs end `canceled`; running jobs are marked
    /// and returned so their agents can be told.
    pub async fn cancel_pipeline(&self, pipeline: PipelineId) -> CoreResult<Vec<JobRow>> {
        let (_guard, mut tx) = self.write().await?;
        let jobs = job_states_in(&mut tx, pipeline).await?;
        let mut running = Vec::new();
        for effect in engine::cancel(&jobs) {
            match effect {
                Effect::CancelWaiting(job) => {
                    sqlx::query(
                        "UPDATE jobs SET status = 'canceled', finished_at = ? WHERE id = ?",
                    )
                    .bind(now())
                    .bind(job.0 as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                Effect::CancelRunning(job) => {
                    sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?")
                        .bind(job.0 as i64)
                        .execute(&mut *tx)
                        .await?;
                    running.push(job);
                }
                Effect::MakePending(_) | Effect::Skip(_) | Effect::SetPipelineStatus(_) => {}
            }
        }
        advance_in(&mut tx, pipeline).await?;
        let mut rows = Vec::new();
        for job in running {
            rows.push(
                sqlx::query_as::<_, JobRow>(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
                ))
                .bind(job.0 as i64)
                .fetch_one(&mut *tx)
                .await?,
            );
        }
        tx.commit().await?;
        Ok(rows)
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

    /// Re-runs the state machine of a pipeline (used at start).
    pub async fn advance(&self, pipeline: PipelineId) -> CoreResult<Vec<JobId>> {
        let (_guard, mut tx) = self.write().await?;
        let pending = advance_in(&mut tx, pipeline).await?;
        tx.commit().await?;
        Ok(pending)
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
        let size: i64 = sqlx::query_scalar("SELECT log_size FROM jobs WHERE id = ?")
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
        if end > max_size {
            return Err(CoreError::ResourceExhausted(format!(
                "job log limit of {max_size} bytes exceeded"
            )));
        }
        let fresh = &data[(size - offset) as usize..];
        sqlx::query("INSERT INTO log_chunks (job_id, offset, data) VALUES (?, ?, ?)")
            .bind(job.0 as i64)
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
            "SELECT offset, data FROM log_chunks WHERE job_id = ? AND offset + length(data) > ? ORDER BY offset",
        )
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

    pub async fn set_artifact(&self, job: JobId, size: u64, sha256: &str) -> CoreResult<()> {
        let (_guard, mut tx) = self.write().await?;
        sqlx::query("UPDATE jobs SET artifact_size = ?, artifact_sha256 = ? WHERE id = ?")
            .bind(size as i64)
            .bind(sha256)
            .bind(job.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn job_states_in(
    tx: &mut Transaction<'_, Sqlite>,
    pipeline: PipelineId,
) -> CoreResult<Vec<JobState>> {
    let rows: Vec<(i64, i64, String, bool, String)> = sqlx::query_as(
        "SELECT id, stage_index, status, allow_failure, when_ FROM jobs WHERE pipeline_id = ? ORDER BY stage_index, position",
    )
    .bind(pipeline.0 as i64)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, stage_index, status, allow_failure, when)| JobState {
            id: JobId(id as u64),
            stage_index: stage_index as usize,
            status: status.parse().unwrap_or(JobStatus::Failed),
            allow_failure,
            when: osprey_shared::pipeline::When::parse(&when)
                .unwrap_or(osprey_shared::pipeline::When::OnSuccess),
        })
        .collect())
}

/// Runs the state machine over one pipeline inside `tx` and applies its
/// effects; returns the jobs made pending.
async fn advance_in(
    tx: &mut Transaction<'_, Sqlite>,
    pipeline: PipelineId,
) -> CoreResult<Vec<JobId>> {
    let status: String = sqlx::query_scalar("SELECT status FROM pipelines WHERE id = ?")
        .bind(pipeline.0 as i64)
        .fetch_one(&mut **tx)
        .await?;
    let status: PipelineStatus = status.parse().unwrap_or(PipelineStatus::Failed);
    let jobs = job_states_in(tx, pipeline).await?;
    let mut pending = Vec::new();
    for effect in engine::advance(&jobs, status) {
        match effect {
            Effect::MakePending(job) => {
                sqlx::query("UPDATE jobs SET status = 'pending' WHERE id = ?")
                    .bind(job.0 as i64)
                    .execute(&mut **tx)
                    .await?;
                pending.push(job);
            }
            Effect::Skip(job) => {
                sqlx::query("UPDATE jobs SET status = 'skipped' WHERE id = ?")
                    .bind(job.0 as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            Effect::SetPipelineStatus(new_status) => {
                let finished_at = new_status.is_finished().then(now);
                sqlx::query("UPDATE pipelines SET status = ?, finished_at = ? WHERE id = ?")
                    .bind(new_status.as_str())
                    .bind(finished_at)
                    .bind(pipeline.0 as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            Effect::CancelWaiting(_) | Effect::CancelRunning(_) => {}
        }
    }
    Ok(pending)
}
