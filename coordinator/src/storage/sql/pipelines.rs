//! Pipelines and their jobs as recorded, and the reads the coordinator
//! makes of them.

use super::{id, Backend, SqlStore, Write};
use crate::engine::{Event, JobRules};
use crate::storage::rows::JOB_COLUMNS;
use crate::storage::{
    IdempotencyKey, JobRow, Keyed, NewPipeline, PipelineRow, PipelineStore, StoreError, StoreResult,
};
use async_trait::async_trait;
use osprey_shared::{JobId, JobStatus, PipelineId};

pub(super) const PIPELINE_COLUMNS: &str =
    "id, repo, git_ref, ref_is_tag, sha, status, definition, before_sha, \
    commit_message, default_branch, project_id, project, iid, source, variables, created_at";

impl Backend {
    /// The pipeline's definition with `jobs` emptied, as a column.
    fn definition_without_jobs(self) -> &'static str {
        match self {
            Backend::Sqlite => "json_set(definition, '$.jobs', json('[]')) AS definition",
            Backend::Postgres => {
                "jsonb_set(definition::jsonb, '{jobs}', '[]'::jsonb)::text AS definition"
            }
        }
    }
}

fn ids(rows: Vec<i64>) -> Vec<PipelineId> {
    rows.into_iter().map(|id| PipelineId(id as u64)).collect()
}

impl SqlStore {
    /// Inserts a pipeline and its jobs and starts it, in the caller's
    /// transaction; returns its id and the jobs that became pending.
    pub(super) async fn insert_pipeline(
        &self,
        write: &mut Write<'_>,
        new: &NewPipeline<'_>,
    ) -> StoreResult<(PipelineId, Vec<JobId>)> {
        let tx = &mut write.tx;
        let definition = serde_json::to_string(new.pipeline)
            .map_err(|error| StoreError::Backend(format!("encoding pipeline: {error}")))?;
        let origin = &new.origin;
        let iid = match origin.project {
            Some((project, _)) => Some(self.next_iid(tx, project).await?),
            None => None,
        };
        let variables = if origin.variables.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(origin.variables)
                    .map_err(|error| StoreError::Backend(format!("encoding variables: {error}")))?,
            )
        };
        let pipeline: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (repo, git_ref, ref_is_tag, sha, status, definition, created_at, \
             before_sha, commit_message, default_branch, project_id, project, iid, source, variables, \
             triggered_by) \
             VALUES ($1, $2, $3, $4, 'created', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
        )
        .bind(new.repo)
        .bind(new.git_ref)
        .bind(i64::from(new.ref_is_tag))
        .bind(new.sha)
        .bind(definition)
        .bind(self.now_text())
        .bind(&new.details.before_sha)
        .bind(&new.details.message)
        .bind(&new.details.default_branch)
        .bind(origin.project.map(|(id, _)| id))
        .bind(origin.project.map(|(_, name)| name))
        .bind(iid)
        .bind(origin.source)
        .bind(variables)
        .bind(origin.triggered_by)
        .fetch_one(&mut **tx)
        .await?;
        if let Some(event) = origin.trigger_event {
            if !self.close_event(tx, event, pipeline).await? {
                return Err(StoreError::Conflict(format!(
                    "trigger event {event} has its pipeline already"
                )));
            }
        }
        let mut deploying = Vec::new();
        for (position, job) in new.pipeline.jobs.iter().enumerate() {
            let stage_index = new.pipeline.stage_index(&job.stage).ok_or_else(|| {
                StoreError::Refused(format!(
                    "job {} is in unknown stage {}",
                    job.name, job.stage
                ))
            })?;
            let definition = serde_json::to_string(job)
                .map_err(|error| StoreError::Backend(format!("encoding job: {error}")))?;
            let rules = serde_json::to_string(&JobRules::of(job))
                .map_err(|error| StoreError::Backend(format!("encoding job: {error}")))?;
            let job_id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (pipeline_id, position, name, stage, stage_index, status, allow_failure, \
                 when_, definition, resource_group, interruptible, rules) \
                 VALUES ($1, $2, $3, $4, $5, 'created', $6, $7, $8, $9, $10, $11) RETURNING id",
            )
            .bind(pipeline)
            .bind(position as i64)
            .bind(&job.name)
            .bind(&job.stage)
            .bind(stage_index as i64)
            .bind(i64::from(job.allow_failure))
            .bind(job.when.as_str())
            .bind(definition)
            .bind(&job.resource_group)
            .bind(i64::from(job.interruptible))
            .bind(rules)
            .fetch_one(&mut **tx)
            .await?;
            if job.environment.is_some() {
                deploying.push((job_id, job));
            }
        }
        self.record_deployments(tx, pipeline, new, &deploying)
            .await?;
        let pipeline = PipelineId(pipeline as u64);
        let applied = self.transact_in(write, pipeline, &Event::Advance).await?;
        Ok((pipeline, applied.queued()))
    }

    async fn jobs_where(
        &self,
        columns: &str,
        filter: &str,
        value: i64,
    ) -> StoreResult<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {columns} FROM jobs WHERE {filter} = $1 ORDER BY stage_index, position"
        ))
        .bind(value)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl PipelineStore for SqlStore {
    async fn create_pipeline_with(
        &self,
        new: &NewPipeline<'_>,
    ) -> StoreResult<(PipelineId, Vec<JobId>)> {
        let mut write = self.write().await?;
        let created = self.insert_pipeline(&mut write, new).await?;
        write.commit().await?;
        self.hand_over_groups().await?;
        Ok(created)
    }

    async fn keyed_pipeline(&self, key: IdempotencyKey<'_>) -> StoreResult<Option<Keyed>> {
        self.keyed(key).await
    }

    async fn create_pipeline_keyed(
        &self,
        new: &NewPipeline<'_>,
        key: IdempotencyKey<'_>,
    ) -> StoreResult<Keyed> {
        self.create_keyed(new, key).await
    }

    async fn last_sha(&self, repo: &str, git_ref: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT sha FROM pipelines WHERE repo = $1 AND git_ref = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(repo)
        .bind(git_ref)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn pipeline(&self, pipeline: PipelineId) -> StoreResult<Option<PipelineRow>> {
        Ok(sqlx::query_as::<_, PipelineRow>(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE id = $1"
        ))
        .bind(id(pipeline.0))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn pipeline_without_jobs(
        &self,
        pipeline: PipelineId,
    ) -> StoreResult<Option<PipelineRow>> {
        let columns =
            PIPELINE_COLUMNS.replacen("definition", self.backend.definition_without_jobs(), 1);
        Ok(sqlx::query_as::<_, PipelineRow>(&format!(
            "SELECT {columns} FROM pipelines WHERE id = $1"
        ))
        .bind(id(pipeline.0))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn jobs_of(&self, pipeline: PipelineId) -> StoreResult<Vec<JobRow>> {
        self.jobs_where(JOB_COLUMNS, "pipeline_id", id(pipeline.0))
            .await
    }

    async fn jobs_of_without_definitions(&self, pipeline: PipelineId) -> StoreResult<Vec<JobRow>> {
        let columns = JOB_COLUMNS.replacen("definition", "'' AS definition", 1);
        self.jobs_where(&columns, "pipeline_id", id(pipeline.0))
            .await
    }

    async fn job(&self, job: JobId) -> StoreResult<Option<JobRow>> {
        Ok(self.jobs_where(JOB_COLUMNS, "id", id(job.0)).await?.pop())
    }

    async fn jobs_with_status(&self, status: JobStatus) -> StoreResult<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 ORDER BY id"
        ))
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn recent_pipelines(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PipelineRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE ($1 IS NULL OR id < $1) \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn unfinished_pipelines(&self) -> StoreResult<Vec<PipelineId>> {
        Ok(ids(sqlx::query_scalar(
            "SELECT id FROM pipelines WHERE status NOT IN ('success', 'failed', 'canceled') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?))
    }

    async fn redundant_pipelines(
        &self,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> StoreResult<Vec<PipelineId>> {
        Ok(ids(sqlx::query_scalar(
            "SELECT id FROM pipelines WHERE repo = $1 AND git_ref = $2 AND sha <> $3 \
             AND status NOT IN ('success', 'failed', 'canceled') ORDER BY id",
        )
        .bind(repo)
        .bind(git_ref)
        .bind(sha)
        .fetch_all(&self.pool)
        .await?))
    }
}
