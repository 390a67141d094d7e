//! Deployments on SQL: recorded with their pipeline, kept in step with
//! their jobs inside each job's transaction ([`SqlStore::consequences`]),
//! which also writes the notifications a change makes — so an event and
//! its notification are stored together or not at all.

use super::{id, SqlStore};
use crate::engine::{Event, PipelineState};
use crate::storage::deployments::*;
use crate::storage::{FinishResult, NewPipeline, StoreError, StoreResult};
use async_trait::async_trait;
use osprey_shared::api::{format_time, NotifyEvent};
use osprey_shared::pipeline::JobDef;
use osprey_shared::{Failure, FailureReason, JobId, JobStatus, PipelineId, PipelineStatus};
use sqlx::{Any, Transaction};

type Tx = Transaction<'static, Any>;

/// What a transition needs of its pipeline beyond the state machine's view.
#[derive(Debug, Clone)]
pub(crate) struct PipelineMeta {
    pub project_id: Option<i64>,
    pub git_ref: String,
    pub source: String,
    pub triggered_by: Option<String>,
}

/// The run a rollback starts: the deployment it goes back to, and who.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rollback<'a> {
    pub of: i64,
    pub job: JobId,
    pub triggered_by: &'a str,
}

pub(super) const DEPLOYMENT_COLUMNS: &str = "d.id, d.project_id, d.iid, d.environment_id, \
    e.name AS environment, d.action, d.pipeline_id, d.job_id, j.name AS job_name, d.sha, d.git_ref, \
    d.tag, d.status, d.source, d.triggered_by, d.rollback_of, d.reason, d.url, d.auto_stop_in, \
    d.on_stop, d.created_at, d.started_at, d.finished_at";
const DEPLOYMENT_FROM: &str = "deployments d JOIN environments e ON e.id = d.environment_id \
    JOIN jobs j ON j.id = d.job_id";
const ENVIRONMENT_COLUMNS: &str =
    "id, project_id, name, slug, tier, url, state, auto_stop_at, created_at, updated_at";

/// A deployment as a transition sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Current {
    id: i64,
    job_id: i64,
    environment_id: i64,
    action: String,
    status: String,
    url: Option<String>,
    auto_stop_in: Option<i64>,
}

impl SqlStore {
    /// Records the environments and deployments of a new pipeline's jobs
    /// (`jobs`: each job's id and definition), in its transaction.
    pub(super) async fn record_deployments(
        &self,
        tx: &mut Tx,
        pipeline: i64,
        new: &NewPipeline<'_>,
        jobs: &[(i64, &JobDef)],
    ) -> StoreResult<()> {
        let Some((project, _)) = new.origin.project else {
            return Ok(());
        };
        let now = self.now_text();
        for (job, definition) in jobs {
            let Some(environment) = &definition.environment else {
                continue;
            };
            if !matches!(environment.action.as_str(), "start" | "stop") {
                continue;
            }
            let tier = environment
                .tier
                .clone()
                .unwrap_or_else(|| osprey_shared::plan::guess_tier(&environment.name).to_owned());
            let slug = osprey_shared::plan::environment_slug(&environment.name);
            let environment_id: i64 = sqlx::query_scalar(
                "INSERT INTO environments (project_id, name, slug, tier, url, state, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'available', $6, $6) \
                 ON CONFLICT (project_id, name) DO UPDATE SET tier = $4, \
                 url = COALESCE($5, environments.url), updated_at = $6 RETURNING id",
            )
            .bind(project)
            .bind(&environment.name)
            .bind(&slug)
            .bind(&tier)
            .bind(&environment.url)
            .bind(&now)
            .fetch_one(&mut **tx)
            .await?;
            let triggered_by = new.origin.triggered_by.unwrap_or(new.origin.source);
            self.insert_deployment(
                tx,
                NewDeployment {
                    project,
                    environment_id,
                    action: &environment.action,
                    pipeline,
                    job: *job,
                    sha: new.sha,
                    git_ref: new.git_ref,
                    tag: new.ref_is_tag,
                    status: "created",
                    source: new.origin.source,
                    triggered_by,
                    rollback_of: None,
                    url: environment.url.as_deref(),
                    auto_stop_in: environment.auto_stop_in.map(|s| s as i64),
                    on_stop: environment.on_stop.as_deref(),
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn insert_deployment(&self, tx: &mut Tx, new: NewDeployment<'_>) -> StoreResult<i64> {
        // Deployments are numbered per project; the project's row is
        // locked by the pipeline's numbering (or SQLite's writer lock).
        let iid = if new.action == "start" {
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(iid) FROM deployments WHERE project_id = $1")
                    .bind(new.project)
                    .fetch_one(&mut **tx)
                    .await?;
            Some(last.unwrap_or(0) + 1)
        } else {
            None
        };
        Ok(sqlx::query_scalar(
            "INSERT INTO deployments (project_id, iid, environment_id, action, pipeline_id, job_id, \
             sha, git_ref, tag, status, source, triggered_by, rollback_of, url, auto_stop_in, on_stop, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             RETURNING id",
        )
        .bind(new.project)
        .bind(iid)
        .bind(new.environment_id)
        .bind(new.action)
        .bind(new.pipeline)
        .bind(new.job)
        .bind(new.sha)
        .bind(new.git_ref)
        .bind(i64::from(new.tag))
        .bind(new.status)
        .bind(new.source)
        .bind(new.triggered_by)
        .bind(new.rollback_of)
        .bind(new.url)
        .bind(new.auto_stop_in)
        .bind(new.on_stop)
        .bind(self.now_text())
        .fetch_one(&mut **tx)
        .await?)
    }

    /// What a transition of a project's pipeline changes beyond its jobs:
    /// deployments follow their jobs (a job run again is a new
    /// deployment), environments are updated or stopped, and every
    /// notification the change makes is queued.
    pub(super) async fn consequences(
        &self,
        tx: &mut Tx,
        meta: &PipelineMeta,
        before: &PipelineState,
        after: &PipelineState,
        rollback: Option<&Rollback<'_>>,
    ) -> StoreResult<()> {
        let Some(project) = meta.project_id else {
            return Ok(());
        };
        let changed: Vec<(JobStatus, &crate::engine::JobState)> = before
            .jobs
            .iter()
            .zip(&after.jobs)
            .filter(|(old, new)| old.status != new.status)
            .map(|(old, new)| (old.status, new))
            .collect();
        let mut events: Vec<(NotifyEvent, Option<i64>)> = Vec::new();
        if !changed.is_empty() {
            let current: Vec<Current> = sqlx::query_as(
                "SELECT id, job_id, environment_id, action, status, url, auto_stop_in \
                 FROM deployments WHERE pipeline_id = $1 ORDER BY id",
            )
            .bind(id(after.id.0))
            .fetch_all(&mut **tx)
            .await?;
            let now = self.now_text();
            for (old, job) in &changed {
                if job.status == JobStatus::Manual {
                    events.push((NotifyEvent::ManualWaiting, None));
                }
                let job_id = id(job.id.0);
                let Some(deployment) = current.iter().rev().find(|d| d.job_id == job_id) else {
                    continue;
                };
                let status = deployment_status(job.status);
                let run_again = old.is_finished() && !job.status.is_finished();
                let deployment_id = if run_again {
                    let rollback = rollback.filter(|rollback| rollback.job == job.id);
                    self.run_again(tx, meta, project, deployment.id, status, rollback)
                        .await?
                } else {
                    let started = (job.status == JobStatus::Running).then(|| now.clone());
                    let finished = job.status.is_finished().then(|| now.clone());
                    sqlx::query(
                        "UPDATE deployments SET status = $1, started_at = COALESCE($2, started_at), \
                         finished_at = COALESCE($3, finished_at), \
                         reason = CASE WHEN $4 THEN $5 ELSE reason END WHERE id = $6",
                    )
                    .bind(status)
                    .bind(started)
                    .bind(finished)
                    .bind(job.failure_kind == Some(FailureReason::ForwardDeploymentFailure))
                    .bind(OUTDATED)
                    .bind(deployment.id)
                    .execute(&mut **tx)
                    .await?;
                    deployment.id
                };
                if status == deployment.status || !job.status.is_finished() {
                    continue;
                }
                match (deployment.action.as_str(), status) {
                    ("start", "success") => {
                        let stop_at = deployment.auto_stop_in.map(|seconds| {
                            format_time(self.now() + time::Duration::seconds(seconds))
                        });
                        sqlx::query(
                            "UPDATE environments SET state = 'available', url = COALESCE($1, url), \
                             auto_stop_at = $2, updated_at = $3 WHERE id = $4",
                        )
                        .bind(&deployment.url)
                        .bind(stop_at)
                        .bind(&now)
                        .bind(deployment.environment_id)
                        .execute(&mut **tx)
                        .await?;
                        events.push((NotifyEvent::DeploymentSuccess, Some(deployment_id)));
                    }
                    ("start", "failed") => {
                        events.push((NotifyEvent::DeploymentFailed, Some(deployment_id)));
                    }
                    ("stop", "success") => {
                        self.mark_stopped(tx, deployment.environment_id).await?;
                    }
                    _ => {}
                }
            }
        }
        if before.status != after.status {
            match after.status {
                PipelineStatus::Failed => events.push((NotifyEvent::PipelineFailed, None)),
                PipelineStatus::Success => {
                    events.push((NotifyEvent::PipelineSuccess, None));
                    let previous: Option<String> = sqlx::query_scalar(
                        "SELECT status FROM pipelines WHERE project_id = $1 AND git_ref = $2 \
                         AND id < $3 AND status IN ('success', 'failed') ORDER BY id DESC LIMIT 1",
                    )
                    .bind(project)
                    .bind(&meta.git_ref)
                    .bind(id(after.id.0))
                    .fetch_optional(&mut **tx)
                    .await?;
                    if previous.as_deref() == Some("failed") {
                        events.push((NotifyEvent::PipelineFixed, None));
                    }
                }
                _ => {}
            }
        }
        if !events.is_empty() {
            self.queue_notifications(tx, project, meta, after.id, &events)
                .await?;
        }
        Ok(())
    }

    /// A new deployment for a job run again (a retry, or a rollback's run).
    async fn run_again(
        &self,
        tx: &mut Tx,
        meta: &PipelineMeta,
        project: i64,
        previous: i64,
        status: &str,
        rollback: Option<&Rollback<'_>>,
    ) -> StoreResult<i64> {
        let row = self
            .deployment_in(tx, previous)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("deployment {previous} vanished")))?;
        let (source, triggered_by, rollback_of) = match rollback {
            Some(rollback) => ("rollback", rollback.triggered_by, Some(rollback.of)),
            None => (
                meta.source.as_str(),
                meta.triggered_by.as_deref().unwrap_or(meta.source.as_str()),
                None,
            ),
        };
        self.insert_deployment(
            tx,
            NewDeployment {
                project,
                environment_id: row.environment_id,
                action: &row.action,
                pipeline: row.pipeline_id,
                job: row.job_id,
                sha: &row.sha,
                git_ref: &row.git_ref,
                tag: row.tag,
                status,
                source,
                triggered_by,
                rollback_of,
                url: row.url.as_deref(),
                auto_stop_in: row.auto_stop_in,
                on_stop: row.on_stop.as_deref(),
            },
        )
        .await
    }

    async fn mark_stopped(&self, tx: &mut Tx, environment: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE environments SET state = 'stopped', auto_stop_at = NULL, updated_at = $1 \
             WHERE id = $2",
        )
        .bind(self.now_text())
        .bind(environment)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn deployment_in(
        &self,
        tx: &mut Tx,
        deployment: i64,
    ) -> StoreResult<Option<DeploymentRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM {DEPLOYMENT_FROM} WHERE d.id = $1"
        ))
        .bind(deployment)
        .fetch_optional(&mut **tx)
        .await?)
    }

    async fn deployments_where(
        &self,
        filter: &str,
        value: i64,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM {DEPLOYMENT_FROM} WHERE {filter} = $1 \
             ORDER BY d.id DESC LIMIT $2"
        ))
        .bind(value)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A deployment to insert.
struct NewDeployment<'a> {
    project: i64,
    environment_id: i64,
    action: &'a str,
    pipeline: i64,
    job: i64,
    sha: &'a str,
    git_ref: &'a str,
    tag: bool,
    status: &'a str,
    source: &'a str,
    triggered_by: &'a str,
    rollback_of: Option<i64>,
    url: Option<&'a str>,
    auto_stop_in: Option<i64>,
    on_stop: Option<&'a str>,
}

#[async_trait]
impl DeploymentStore for SqlStore {
    async fn environments(&self, project_id: i64) -> StoreResult<Vec<EnvironmentRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE project_id = $1 ORDER BY name"
        ))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn environment(
        &self,
        project_id: i64,
        name: &str,
    ) -> StoreResult<Option<EnvironmentRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE project_id = $1 AND name = $2"
        ))
        .bind(project_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn deployments(
        &self,
        environment_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentRow>> {
        self.deployments_where(
            "d.action = 'start' AND d.environment_id",
            environment_id,
            limit,
        )
        .await
    }

    async fn deployment(&self, deployment: i64) -> StoreResult<Option<DeploymentRow>> {
        Ok(self
            .deployments_where("d.id", deployment, 1)
            .await?
            .into_iter()
            .next())
    }

    async fn last_success(&self, environment_id: i64) -> StoreResult<Option<DeploymentRow>> {
        Ok(self
            .deployments_where(
                "d.action = 'start' AND d.status = 'success' AND d.environment_id",
                environment_id,
                1,
            )
            .await?
            .into_iter()
            .next())
    }

    async fn deployment_of_job(&self, job: JobId) -> StoreResult<Option<DeploymentRow>> {
        Ok(self
            .deployments_where("d.job_id", id(job.0), 1)
            .await?
            .into_iter()
            .next())
    }

    async fn rollback(
        &self,
        target: &DeploymentRow,
        triggered_by: &str,
    ) -> StoreResult<(DeploymentRow, Vec<JobId>)> {
        let job = JobId(target.job_id as u64);
        let event = Event::RetryRequested { jobs: vec![job] };
        let rollback = Rollback {
            of: target.id,
            job,
            triggered_by,
        };
        let mut write = self.write().await?;
        let applied = self
            .transact_as(
                &mut write,
                PipelineId(target.pipeline_id as u64),
                &event,
                Some(&rollback),
            )
            .await?;
        let created: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(id) FROM deployments WHERE job_id = $1 AND rollback_of = $2",
        )
        .bind(target.job_id)
        .bind(target.id)
        .fetch_one(&mut *write.tx)
        .await?;
        let created = created.ok_or_else(|| {
            StoreError::Refused(format!("job {job} did not run again for the rollback"))
        })?;
        let row = self
            .deployment_in(&mut write.tx, created)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("deployment {created} vanished")))?;
        write.commit().await?;
        Ok((row, applied.queued()))
    }

    async fn prevent_outdated(&self, job: JobId) -> StoreResult<Option<FinishResult>> {
        let Some(mine) = self.deployment_of_job(job).await? else {
            return Ok(None);
        };
        if mine.action != "start" || mine.rollback_of.is_some() {
            return Ok(None);
        }
        let newer: Option<i64> = sqlx::query_scalar(
            "SELECT pipeline_id FROM deployments WHERE environment_id = $1 AND action = 'start' \
             AND status = 'success' AND pipeline_id > $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(mine.environment_id)
        .bind(mine.pipeline_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(newer) = newer else {
            return Ok(None);
        };
        let failure = Failure::new(
            FailureReason::ForwardDeploymentFailure,
            format!(
                "{OUTDATED}: pipeline {newer} deployed to {} already",
                mine.environment
            ),
        );
        let event = Event::Prevented { job, failure };
        let pipeline = PipelineId(mine.pipeline_id as u64);
        let mut write = self.write().await?;
        let applied = match self.transact_in(&mut write, pipeline, &event).await {
            Ok(applied) => applied,
            // Taken or canceled meanwhile: not ours to fail.
            Err(StoreError::Refused(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        write.commit().await?;
        Ok(Some(FinishResult {
            stored: applied.state.job(job).map(|job| job.status),
            newly_pending: applied.queued(),
        }))
    }

    async fn stop_environment(&self, environment_id: i64) -> StoreResult<()> {
        let mut write = self.write().await?;
        self.mark_stopped(&mut write.tx, environment_id).await?;
        write.commit().await
    }

    async fn claim_auto_stops(&self) -> StoreResult<Vec<EnvironmentRow>> {
        let now = self.now_text();
        // Read first: nothing is due almost always, and that takes no lock.
        let due: Vec<EnvironmentRow> = sqlx::query_as(&format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE state = 'available' \
             AND auto_stop_at IS NOT NULL AND auto_stop_at <= $1 ORDER BY id"
        ))
        .bind(&now)
        .fetch_all(&self.pool)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut write = self.write().await?;
        let mut claimed = Vec::with_capacity(due.len());
        for environment in due {
            let done = sqlx::query(
                "UPDATE environments SET auto_stop_at = NULL WHERE id = $1 AND auto_stop_at IS NOT NULL",
            )
            .bind(environment.id)
            .execute(&mut *write.tx)
            .await?;
            if done.rows_affected() == 1 {
                claimed.push(environment);
            }
        }
        write.commit().await?;
        Ok(claimed)
    }
}
