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
    attempt, coverage, scheduled_at, artifact_attempt, artifact_key";

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
        sqlx::migrate!("./migrations/sqlite")
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
        self.create_pipeline_with(&NewPipeline {
            repo,
            git_ref,
            ref_is_tag,
            sha,
            pipeline,
            details: &CommitDetails::default(),
        })
        .await
    }

    /// [`Store::create_pipeline`] with what jobs learn of the commit.
    pub async fn create_pipeline_with(
        &self,
        new: &NewPipeline<'_>,
    ) -> CoreResult<(PipelineId, Vec<JobId>)> {
        let (_guard, mut tx) = self.write().await?;
        let created = insert_pipeline(&mut tx, new).await?;
        tx.commit().await?;
        Ok(created)
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

    /// The pipeline with its definition's `jobs` left out (`[]`). Each job's
    /// definition is in its own row, and the pipeline's copy of them all is
    /// jobs × what they share (inherited variables, `default:`): too much to
    /// read and decode for every offer.
    pub async fn pipeline_without_jobs(&self, id: PipelineId) -> CoreResult<Option<PipelineRow>> {
        Ok(sqlx::query_as::<_, PipelineRow>(
            "SELECT id, repo, git_ref, ref_is_tag, sha, status, \
             json_set(definition, '$.jobs', json('[]')) AS definition, before_sha, commit_message, \
             default_branch FROM pipelines WHERE id = ?",
        )
        .bind(id.0 as i64)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The jobs of a pipeline with empty `definition`s: enough to choose
    /// artifact sources without reading every job's scripts and variables.
    pub async fn jobs_of_without_definitions(
        &self,
        pipeline: PipelineId,
    ) -> CoreResult<Vec<JobRow>> {
        let columns = JOB_COLUMNS.replacen("definition", "'' AS definition", 1);
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {columns} FROM jobs WHERE pipeline_id = ? ORDER BY stage_index, position"
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
}

/// A pipeline to record, with what its jobs learn of the commit.
pub struct NewPipeline<'a> {
    pub repo: &'a str,
    pub git_ref: &'a str,
    pub ref_is_tag: bool,
    pub sha: &'a str,
    pub pipeline: &'a Pipeline,
    pub details: &'a CommitDetails,
}

/// Inserts a pipeline and its jobs and starts it, in the caller's
/// transaction; returns its id and the jobs that became pending.
pub(super) async fn insert_pipeline(
    tx: &mut Transaction<'_, Sqlite>,
    new: &NewPipeline<'_>,
) -> CoreResult<(PipelineId, Vec<JobId>)> {
    let definition = serde_json::to_string(new.pipeline)
        .map_err(|error| CoreError::Internal(format!("encoding pipeline: {error}")))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO pipelines (repo, git_ref, ref_is_tag, sha, status, definition, created_at, \
         before_sha, commit_message, default_branch) \
         VALUES (?, ?, ?, ?, 'created', ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(new.repo)
    .bind(new.git_ref)
    .bind(new.ref_is_tag)
    .bind(new.sha)
    .bind(definition)
    .bind(now())
    .bind(&new.details.before_sha)
    .bind(&new.details.message)
    .bind(&new.details.default_branch)
    .fetch_one(&mut **tx)
    .await?;
    for (position, job) in new.pipeline.jobs.iter().enumerate() {
        let stage_index = new.pipeline.stage_index(&job.stage).ok_or_else(|| {
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
        .execute(&mut **tx)
        .await?;
    }
    let pipeline_id = PipelineId(id as u64);
    let pending = super::lifecycle::advance_in(tx, pipeline_id).await?;
    Ok((pipeline_id, pending))
}
