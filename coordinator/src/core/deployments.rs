//! Environments and deployments: what `osprey env` shows and does. The
//! store records a deployment with its pipeline and keeps it in step with
//! its job; here are the reads, the rollback (the deploy job of an earlier
//! deployment run again, at its commit, with its pinned artifacts and
//! today's variables), stopping an environment (its `on_stop` job), the
//! `auto_stop_in` timer and the outdated-deployment guard.

use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::storage::deployments::{DeploymentRow, EnvironmentRow};
use crate::storage::ProjectRow;
use osprey_shared::api::{DeploymentView, EnvironmentView};
use osprey_shared::{JobId, JobStatus, PipelineId};

/// How many deployments `env history` shows.
const HISTORY_LIMIT: u32 = 100;

pub fn deployment_view(row: &DeploymentRow) -> DeploymentView {
    DeploymentView {
        id: row.id,
        iid: row.iid.unwrap_or(0),
        environment: row.environment.clone(),
        status: row.status.clone(),
        sha: row.sha.clone(),
        git_ref: row.git_ref.clone(),
        tag: row.tag,
        pipeline: row.pipeline_id,
        job: row.job_id,
        job_name: row.job_name.clone(),
        source: row.source.clone(),
        triggered_by: row.triggered_by.clone(),
        rollback_of: row.rollback_of,
        reason: row.reason.clone(),
        created_at: row.created_at.clone(),
        started_at: row.started_at.clone(),
        finished_at: row.finished_at.clone(),
    }
}

impl Core {
    async fn environment_view(&self, row: &EnvironmentRow) -> CoreResult<EnvironmentView> {
        let last = self.store().last_success(row.id).await?;
        Ok(EnvironmentView {
            id: row.id,
            name: row.name.clone(),
            slug: row.slug.clone(),
            tier: row.tier.clone(),
            url: row.url.clone(),
            state: row.state.clone(),
            auto_stop_at: row.auto_stop_at.clone(),
            last_deployment: last.as_ref().map(deployment_view),
            created_at: row.created_at.clone(),
        })
    }

    async fn environment_row(
        &self,
        project: &ProjectRow,
        name: &str,
    ) -> CoreResult<EnvironmentRow> {
        self.store()
            .environment(project.id, name)
            .await?
            .ok_or_else(|| {
                CoreError::NotFound(format!(
                    "project {} has no environment {name:?}",
                    project.name
                ))
            })
    }

    pub async fn environments(&self, project: &ProjectRow) -> CoreResult<Vec<EnvironmentView>> {
        let mut views = Vec::new();
        for row in self.store().environments(project.id).await? {
            views.push(self.environment_view(&row).await?);
        }
        Ok(views)
    }

    /// An environment's deployments, newest first.
    pub async fn environment_history(
        &self,
        project: &ProjectRow,
        name: &str,
    ) -> CoreResult<Vec<DeploymentView>> {
        let environment = self.environment_row(project, name).await?;
        let rows = self
            .store()
            .deployments(environment.id, HISTORY_LIMIT)
            .await?;
        Ok(rows.iter().map(deployment_view).collect())
    }

    /// A deployment, with the project it belongs to (for access checks).
    pub async fn deployment(&self, id: i64) -> CoreResult<DeploymentRow> {
        self.store()
            .deployment(id)
            .await?
            .filter(|row| row.action == "start")
            .ok_or_else(|| CoreError::NotFound(format!("deployment {id} not found")))
    }

    /// Runs the deploy job of `to` (default: the successful deployment
    /// before the latest successful one, at another commit) again, as a
    /// new deployment marked `rollback_of`.
    pub async fn rollback(
        &self,
        project: &ProjectRow,
        name: &str,
        to: Option<i64>,
        who: &str,
    ) -> CoreResult<DeploymentView> {
        let environment = self.environment_row(project, name).await?;
        let target = match to {
            Some(id) => self
                .store()
                .deployment(id)
                .await?
                .filter(|row| row.environment_id == environment.id && row.action == "start")
                .ok_or_else(|| {
                    CoreError::NotFound(format!("deployment {id} is not one of {name}'s"))
                })?,
            None => {
                let history = self
                    .store()
                    .deployments(environment.id, HISTORY_LIMIT)
                    .await?;
                previous_success(&history).cloned().ok_or_else(|| {
                    CoreError::FailedPrecondition(format!(
                        "{name} has no earlier successful deployment at another commit to roll back to"
                    ))
                })?
            }
        };
        let (created, pending) = self.store().rollback(&target, who).await?;
        tracing::info!(
            project = %project.name,
            environment = name,
            to = target.id,
            deployment = created.id,
            job_id = created.job_id,
            "rollback started"
        );
        self.enqueue(&pending).await?;
        Ok(deployment_view(&created))
    }

    /// Stops an environment: runs the `on_stop` job of its latest
    /// successful deployment (the environment is stopped when that job
    /// succeeds), or marks it stopped at once when there is none.
    pub async fn stop_environment(
        &self,
        project: &ProjectRow,
        name: &str,
    ) -> CoreResult<EnvironmentView> {
        let environment = self.environment_row(project, name).await?;
        self.stop(&environment).await?;
        let row = self.environment_row(project, name).await?;
        self.environment_view(&row).await
    }

    async fn stop(&self, environment: &EnvironmentRow) -> CoreResult<()> {
        let last = self.store().last_success(environment.id).await?;
        let stop_job = match last
            .as_ref()
            .and_then(|row| row.on_stop.as_ref().map(|job| (row, job)))
        {
            Some((row, job_name)) => self
                .store()
                .jobs_of_without_definitions(PipelineId(row.pipeline_id as u64))
                .await?
                .into_iter()
                .find(|job| &job.name == job_name),
            None => None,
        };
        let Some(job) = stop_job else {
            self.store().stop_environment(environment.id).await?;
            tracing::info!(environment = %environment.name, "environment stopped");
            return Ok(());
        };
        let pending = match job.status {
            JobStatus::Manual => self.store().play_job(job.id()).await?,
            status if status.is_finished() => {
                self.store()
                    .retry_jobs(job.pipeline_id(), &[job.id()])
                    .await?
            }
            // Running or about to: it stops the environment when it succeeds.
            _ => Vec::new(),
        };
        tracing::info!(environment = %environment.name, job_id = %job.id(), "stop job started");
        self.enqueue(&pending).await
    }

    /// Stops the environments whose `auto_stop_in` has run out.
    pub async fn auto_stop(&self) -> CoreResult<()> {
        for environment in self.store().claim_auto_stops().await? {
            tracing::info!(environment = %environment.name, "auto_stop_in ran out");
            self.stop(&environment).await?;
        }
        Ok(())
    }

    /// Fails a deploy job about to be assigned if a newer pipeline has
    /// deployed to its environment already; true if it did.
    pub(super) async fn prevent_outdated(&self, job: JobId) -> CoreResult<bool> {
        let Some(result) = self.store().prevent_outdated(job).await? else {
            return Ok(false);
        };
        tracing::info!(job_id = %job, "outdated deployment: not run");
        self.enqueue(&result.newly_pending).await?;
        self.notify();
        Ok(true)
    }
}

/// The rollback target: the latest successful deployment before the
/// latest successful one whose commit differs from it.
fn previous_success(history: &[DeploymentRow]) -> Option<&DeploymentRow> {
    let mut successes = history.iter().filter(|row| row.status == "success");
    let last = successes.next()?;
    successes.find(|row| row.sha != last.sha)
}
