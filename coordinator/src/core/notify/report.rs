//! What a notification says: the report of its pipeline or deployment,
//! read from the store when it is sent (with the failed jobs' log tails),
//! for the e-mail and webhook senders.

use super::{LOG_TAIL_BYTES, LOG_TAIL_LINES};
use crate::core::Core;
use crate::error::{CoreError, CoreResult};
use crate::notify::{DeploymentFacts, JobFacts, PipelineFacts, ProjectFacts, Report};
use crate::storage::deployments::NotificationRow;
use osprey_shared::{JobStatus, PipelineId};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

impl Core {
    /// What a notification says, read from the store now.
    pub(super) async fn report(&self, row: &NotificationRow) -> CoreResult<Report> {
        let project = self
            .store()
            .project_by_id(row.project_id)
            .await?
            .ok_or_else(|| CoreError::NotFound("the project was removed".to_owned()))?;
        let server = self.settings().server_url.trim_end_matches('/').to_owned();
        let project_facts = ProjectFacts {
            id: project.id,
            name: project.name.clone(),
            repo: osprey_shared::redact::url_credentials(&project.repo).into_owned(),
            url: format!("{server}/api/v1/projects/{}", project.name),
        };
        let (pipeline, jobs) = match row.pipeline_id {
            Some(id) => self.pipeline_facts(PipelineId(id as u64), &server).await?,
            None => (
                PipelineFacts {
                    id: 0,
                    iid: None,
                    git_ref: project.default_branch.clone(),
                    tag: false,
                    sha: String::new(),
                    before_sha: None,
                    source: "api".to_owned(),
                    status: "test".to_owned(),
                    created_at: row.created_at.clone(),
                    finished_at: None,
                    duration_seconds: None,
                    commit_title: None,
                    commit_message: None,
                    stages: Vec::new(),
                    url: project_facts.url.clone(),
                },
                Vec::new(),
            ),
        };
        let deployment = match row.deployment_id {
            Some(id) => self.deployment_facts(id, &server).await?,
            None => None,
        };
        Ok(Report {
            event: row.event,
            webhook_id: row.webhook_id.clone(),
            project: project_facts,
            pipeline,
            jobs,
            deployment,
        })
    }

    async fn pipeline_facts(
        &self,
        id: PipelineId,
        server: &str,
    ) -> CoreResult<(PipelineFacts, Vec<JobFacts>)> {
        let row = self
            .store()
            .pipeline_without_jobs(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("pipeline {id} not found")))?;
        let stages = serde_json::from_str::<osprey_shared::pipeline::Pipeline>(&row.definition)
            .map(|definition| definition.stages)
            .unwrap_or_default();
        let rows = self.store().jobs_of(id).await?;
        let parse = |text: &Option<String>| {
            text.as_deref()
                .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
        };
        let seconds = |from: Option<OffsetDateTime>, to: Option<OffsetDateTime>| {
            from.zip(to)
                .map(|(from, to)| (to - from).as_seconds_f64().max(0.0))
        };
        let first_start = rows.iter().filter_map(|job| parse(&job.started_at)).min();
        let last_finish = rows.iter().filter_map(|job| job.finished_at.clone()).max();
        let mut jobs = Vec::with_capacity(rows.len());
        for job in &rows {
            let definition = job.definition().ok();
            let log_tail = if job.status == JobStatus::Failed {
                Some(self.log_tail(job.id(), job.log_size.max(0) as u64).await?)
            } else {
                None
            };
            jobs.push(JobFacts {
                id: job.id,
                name: job.name.clone(),
                stage: job.stage.clone(),
                status: job.status.as_str().to_owned(),
                when: job.when.as_str().to_owned(),
                manual: job.when == osprey_shared::pipeline::When::Manual,
                allow_failure: job.allow_failure,
                created_at: None,
                started_at: job.started_at.clone(),
                finished_at: job.finished_at.clone(),
                duration_seconds: seconds(parse(&job.started_at), parse(&job.finished_at)),
                failure_reason: job.failure_kind.map(|kind| kind.as_str().to_owned()),
                agent_name: job.agent_name.clone(),
                environment: definition
                    .and_then(|d| d.environment)
                    .map(|env| (env.name, env.action, env.tier)),
                log_tail,
            });
        }
        let title = row
            .commit_message
            .as_deref()
            .and_then(|message| message.lines().next())
            .map(str::to_owned);
        let facts = PipelineFacts {
            id: row.id as i64,
            iid: row.iid,
            git_ref: row.git_ref.clone(),
            tag: row.ref_is_tag,
            sha: row.sha.clone(),
            before_sha: row.before_sha.clone(),
            source: row.source.clone(),
            status: row.status.as_str().to_owned(),
            created_at: row.created_at.clone(),
            duration_seconds: seconds(first_start, parse(&last_finish)),
            finished_at: last_finish,
            commit_title: title,
            commit_message: row.commit_message.clone(),
            stages,
            url: format!("{server}/api/v1/pipelines/{}", row.id),
        };
        Ok((facts, jobs))
    }

    /// The last lines of a job's stored log (masked by its agent).
    async fn log_tail(&self, job: osprey_shared::JobId, size: u64) -> CoreResult<String> {
        let from = size.saturating_sub(LOG_TAIL_BYTES);
        let bytes = self
            .store()
            .read_log(job, from, LOG_TAIL_BYTES as usize)
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        // A cut first line is dropped unless it is all there is.
        let skip = usize::from(from > 0 && lines.len() > 1);
        let start = lines.len().saturating_sub(LOG_TAIL_LINES).max(skip);
        Ok(lines[start..].join("\n"))
    }

    async fn deployment_facts(&self, id: i64, server: &str) -> CoreResult<Option<DeploymentFacts>> {
        let Some(row) = self.store().deployment(id).await? else {
            return Ok(None);
        };
        let environment = self
            .store()
            .environment(row.project_id, &row.environment)
            .await?;
        Ok(Some(DeploymentFacts {
            id: row.id,
            status: row.status.clone(),
            status_changed_at: row
                .finished_at
                .clone()
                .or(row.started_at.clone())
                .unwrap_or(row.created_at.clone()),
            environment: row.environment.clone(),
            environment_slug: environment
                .as_ref()
                .map(|env| env.slug.clone())
                .unwrap_or_default(),
            environment_tier: environment
                .as_ref()
                .map(|env| env.tier.clone())
                .unwrap_or_default(),
            environment_url: row.url.clone().or(environment.and_then(|env| env.url)),
            job_id: row.job_id,
            job_name: row.job_name.clone(),
            job_url: format!("{server}/api/v1/jobs/{}", row.job_id),
            rollback_of: row.rollback_of,
        }))
    }
}
