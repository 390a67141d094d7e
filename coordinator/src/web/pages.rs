//! The pages: what each shows is read with the caller's rights, and each
//! form is offered only when the caller's role allows it.

use super::graph::{self, GraphJob};
use super::session::WebCaller;
use super::view::*;
use super::{live, render, WebResult};
use crate::core::Core;
use crate::error::CoreError;
use crate::storage::{JobRow, PipelineQuery};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use osprey_shared::api::Role;
use osprey_shared::{JobId, PipelineId};
use serde::Deserialize;

/// Pipelines per page of a project's list.
const PAGE_SIZE: u32 = 25;
/// Refs shown per project on the home page.
const REFS_PER_PROJECT: u32 = 8;
/// How much of a log a job page shows first; the rest loads on demand.
pub(super) const LOG_TAIL_BYTES: u64 = 256 << 10;
/// The statuses the project page filters by.
const STATUSES: &[&str] = &[
    "created", "pending", "running", "manual", "success", "failed", "canceled",
];

fn chrome(caller: &WebCaller, title: impl Into<String>) -> Chrome {
    Chrome {
        title: title.into(),
        who: caller.who(),
        csrf: caller.csrf.clone(),
    }
}

fn may(caller: &WebCaller, role: Role, project: Option<i64>) -> bool {
    caller.principal.require(role, project).is_ok()
}

pub async fn home(State(core): State<Core>, caller: WebCaller) -> WebResult<Response> {
    let mut projects = Vec::new();
    for row in core.store().projects().await? {
        if !caller.principal.sees(row.id) {
            continue;
        }
        let mut refs = Vec::new();
        for pipeline in core
            .store()
            .latest_pipelines_by_ref(row.id, REFS_PER_PROJECT)
            .await?
        {
            refs.push(PipelineLine::of(&core.pipeline_view(pipeline.id()).await?));
        }
        projects.push(ProjectSummary {
            name: row.name,
            repo: row.repo,
            refs,
        });
    }
    let mut recent = Vec::new();
    if may(&caller, Role::Admin, None) {
        for pipeline in core.store().recent_pipelines(None, 10).await? {
            recent.push(PipelineLine::of(&core.pipeline_view(pipeline.id()).await?));
        }
    }
    Ok(render(&HomePage {
        chrome: chrome(&caller, "Projects"),
        projects,
        recent,
    }))
}

#[derive(Deserialize)]
pub struct ProjectQuery {
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    status: String,
    before: Option<u64>,
}

pub async fn project(
    State(core): State<Core>,
    caller: WebCaller,
    Path(name): Path<String>,
    Query(query): Query<ProjectQuery>,
) -> WebResult<Response> {
    let project = core.project(&name).await?;
    caller.principal.require(Role::Read, Some(project.id))?;
    let status = (!query.status.is_empty()).then_some(query.status.as_str());
    if let Some(status) = status {
        if !STATUSES.contains(&status) {
            return Err(
                CoreError::InvalidArgument(format!("no pipeline status {status:?}")).into(),
            );
        }
    }
    let rows = core
        .store()
        .project_pipelines(
            project.id,
            PipelineQuery {
                git_ref: (!query.git_ref.is_empty()).then_some(query.git_ref.as_str()),
                status,
                before: query.before.map(|id| id as i64),
                limit: PAGE_SIZE,
            },
        )
        .await?;
    let mut pipelines = Vec::with_capacity(rows.len());
    for row in &rows {
        pipelines.push(PipelineLine::of(&core.pipeline_view(row.id()).await?));
    }
    let next_page = (rows.len() == PAGE_SIZE as usize)
        .then(|| rows.last().map(|row| row.id().0))
        .flatten()
        .map(|last| {
            let encode = |value: &str| super::session::encode_next(value);
            format!(
                "/projects/{}?ref={}&status={}&before={last}",
                encode(&project.name),
                encode(&query.git_ref),
                encode(&query.status)
            )
        });
    Ok(render(&ProjectPage {
        chrome: chrome(&caller, project.name.clone()),
        can_run: may(&caller, Role::Run, Some(project.id)),
        name: project.name,
        repo: project.repo,
        default_branch: project.default_branch,
        pipelines,
        filter_ref: query.git_ref,
        filter_status: query.status,
        next_page,
        statuses: STATUSES,
    }))
}

pub async fn environments(
    State(core): State<Core>,
    caller: WebCaller,
    Path(name): Path<String>,
) -> WebResult<Response> {
    let project = core.project(&name).await?;
    caller.principal.require(Role::Read, Some(project.id))?;
    let mut environments = Vec::new();
    for environment in core.environments(&project).await? {
        let history = core
            .environment_history(&project, &environment.name)
            .await?;
        environments.push(EnvironmentBlock {
            deployments: history
                .iter()
                .map(|deployment| DeploymentLine {
                    id: deployment.id,
                    iid: deployment.iid,
                    status: deployment.status.clone(),
                    short_sha: short_sha(&deployment.sha),
                    git_ref: deployment.git_ref.clone(),
                    pipeline: deployment.pipeline,
                    job: deployment.job,
                    job_name: deployment.job_name.clone(),
                    triggered_by: deployment.triggered_by.clone(),
                    rollback_of: deployment.rollback_of,
                    created: short_time(&deployment.created_at),
                    rollback_target: deployment.status == "success",
                })
                .collect(),
            name: environment.name,
            tier: environment.tier,
            state: environment.state,
            url: environment.url,
        });
    }
    Ok(render(&EnvironmentsPage {
        chrome: chrome(&caller, format!("{} · environments", project.name)),
        can_deploy: may(&caller, Role::Run, Some(project.id)),
        project: project.name,
        environments,
    }))
}

/// The graph's view of a pipeline's jobs (needs come from their definitions).
pub(super) fn graph_jobs(rows: &[JobRow], views: &[osprey_shared::api::JobView]) -> Vec<GraphJob> {
    rows.iter()
        .zip(views)
        .map(|(row, view)| {
            let needs = row
                .definition()
                .ok()
                .and_then(|definition| definition.needs)
                .map(|needs| needs.into_iter().map(|need| need.job).collect());
            let duration = job_duration(view);
            let detail = match (&view.agent, duration.is_empty()) {
                (Some(agent), false) => format!("{duration} · {agent}"),
                (Some(agent), true) => agent.clone(),
                (None, _) => duration,
            };
            GraphJob {
                id: view.id.0,
                name: view.name.clone(),
                stage: view.stage.clone(),
                stage_index: row.stage_index.max(0) as usize,
                needs,
                status: view.status.as_str().to_owned(),
                detail,
            }
        })
        .collect()
}

pub async fn pipeline(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
) -> WebResult<Response> {
    let id = PipelineId(id);
    let project = caller.pipeline(&core, id, Role::Read).await?.project_id;
    let (view, rows) = core.pipeline_with_rows(id).await?;
    let svg = graph::render_svg(&graph_jobs(&rows, &view.jobs));
    Ok(render(&PipelinePage {
        chrome: chrome(&caller, format!("Pipeline #{}", id.0)),
        pipeline: PipelineLine::of(&view),
        graph: svg,
        jobs: view.jobs.iter().map(JobLine::of).collect(),
        can_run: may(&caller, Role::Run, project),
    }))
}

pub async fn job(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
) -> WebResult<Response> {
    let id = JobId(id);
    let (row, pipeline_row) = caller.job(&core, id, Role::Read).await?;
    let project = pipeline_row.project_id;
    let view = core.job_view(id).await?;
    let pipeline = core.pipeline_view(row.pipeline_id()).await?;
    let finished = view.status.is_finished();
    let size = row.log_size.max(0) as u64;
    let tail = live::render_window(
        &core,
        id,
        size.saturating_sub(LOG_TAIL_BYTES),
        size,
        finished,
    )
    .await?;
    Ok(render(&JobPage {
        chrome: chrome(&caller, format!("{} · job #{}", view.name, id.0)),
        job: JobLine::of(&view),
        pipeline: PipelineLine::of(&pipeline),
        log_html: tail.html,
        log_start: tail.start,
        stream_from: tail.end,
        finished,
        has_artifacts: row.artifact_size.is_some(),
        can_run: may(&caller, Role::Run, project),
    }))
}

pub async fn agents(State(core): State<Core>, caller: WebCaller) -> WebResult<Response> {
    caller.principal.require(Role::Admin, None)?;
    let running = core
        .store()
        .jobs_with_status(osprey_shared::JobStatus::Running)
        .await?;
    let agents = core
        .agents()
        .await?
        .into_iter()
        .map(|agent| AgentLine {
            running: running
                .iter()
                .filter(|job| agent.running.contains(&job.id()))
                .map(|job| (job.id().0, job.name.clone()))
                .collect(),
            last_seen: if agent.connected {
                "now".to_owned()
            } else {
                agent
                    .last_seen_at
                    .as_deref()
                    .map(short_time)
                    .unwrap_or_else(|| "never".to_owned())
            },
            name: agent.name,
            tags: agent.tags.join(", "),
            executor: agent.executor,
            concurrency: agent.concurrency,
            connected: agent.connected,
        })
        .collect();
    Ok(render(&AgentsPage {
        chrome: chrome(&caller, "Agents"),
        agents,
    }))
}
