//! The forms: each checks the session's CSRF token, then the caller's role
//! exactly as the API route of the same action does, and answers with a
//! redirect to the page that shows the result.

use super::session::WebCaller;
use super::WebResult;
use crate::core::Core;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use osprey_shared::api::Role;
use osprey_shared::plan::PipelineSource;
use osprey_shared::{JobId, PipelineId};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// A job's form: from the pipeline page it carries `back=pipeline`, and
/// the answer returns there rather than to the job's page.
#[derive(Deserialize)]
pub struct JobForm {
    csrf: Option<String>,
    back: Option<String>,
}

impl JobForm {
    async fn target(&self, core: &Core, id: JobId) -> WebResult<String> {
        if self.back.as_deref() == Some("pipeline") {
            if let Some(job) = core.store().job(id).await? {
                return Ok(format!("/pipelines/{}", job.pipeline_id().0));
            }
        }
        Ok(format!("/jobs/{}", id.0))
    }
}

#[derive(Deserialize)]
pub struct RunForm {
    csrf: Option<String>,
    #[serde(default, rename = "ref")]
    git_ref: String,
}

#[derive(Deserialize)]
pub struct RollbackForm {
    csrf: Option<String>,
    /// The deployment to roll back to (none: the one before the latest).
    deployment: Option<i64>,
}

/// Runs a pipeline for a ref of the project (source `web`, as GitLab's
/// "Run pipeline" button).
pub async fn run_pipeline(
    State(core): State<Core>,
    caller: WebCaller,
    Path(name): Path<String>,
    Form(form): Form<RunForm>,
) -> WebResult<Response> {
    caller.check_csrf(form.csrf.as_deref())?;
    let project = core.project(&name).await?;
    caller.principal.require(Role::Run, Some(project.id))?;
    let git_ref = match form.git_ref.trim() {
        "" => project.default_branch.clone(),
        given => given.to_owned(),
    };
    let created = core
        .create_for_project(
            &project,
            &git_ref,
            Vec::new(),
            PipelineSource::Web,
            &caller.who(),
            None,
        )
        .await?;
    Ok(Redirect::to(&format!("/pipelines/{}", created.view.id.0)).into_response())
}

pub async fn cancel_pipeline(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    caller.check_csrf(form.csrf.as_deref())?;
    let id = PipelineId(id);
    caller.pipeline(&core, id, Role::Run).await?;
    core.cancel_pipeline(id).await?;
    Ok(Redirect::to(&format!("/pipelines/{}", id.0)).into_response())
}

pub async fn retry_pipeline(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    caller.check_csrf(form.csrf.as_deref())?;
    let id = PipelineId(id);
    caller.pipeline(&core, id, Role::Run).await?;
    core.retry_pipeline(id).await?;
    Ok(Redirect::to(&format!("/pipelines/{}", id.0)).into_response())
}

pub async fn play_job(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
    Form(form): Form<JobForm>,
) -> WebResult<Response> {
    caller.check_csrf(form.csrf.as_deref())?;
    let id = JobId(id);
    caller.job(&core, id, Role::Run).await?;
    core.play_job(id).await?;
    Ok(Redirect::to(&form.target(&core, id).await?).into_response())
}

pub async fn retry_job(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
    Form(form): Form<JobForm>,
) -> WebResult<Response> {
    caller.check_csrf(form.csrf.as_deref())?;
    let id = JobId(id);
    caller.job(&core, id, Role::Run).await?;
    core.retry_job(id).await?;
    Ok(Redirect::to(&form.target(&core, id).await?).into_response())
}

pub async fn rollback(
    State(core): State<Core>,
    caller: WebCaller,
    Path((name, environment)): Path<(String, String)>,
    Form(form): Form<RollbackForm>,
) -> WebResult<Response> {
    caller.check_csrf(form.csrf.as_deref())?;
    let project = core.project(&name).await?;
    caller.principal.require(Role::Run, Some(project.id))?;
    let deployment = core
        .rollback(&project, &environment, form.deployment, &caller.who())
        .await?;
    Ok(Redirect::to(&format!("/pipelines/{}", deployment.pipeline)).into_response())
}
