//! `/api/v1/projects/...` and `/api/v1/tokens`: projects, their pipelines,
//! variables, schedules and trigger, and API tokens.

use super::{json_body, ApiResult, Caller};
use crate::core::Core;
use crate::error::CoreError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use osprey_shared::api::{
    CreateProject, CreateSchedule, CreateToken, PipelineFilter, Role, RunPipeline, SetVariable,
    TriggerPipeline, UpdateProject,
};
use osprey_shared::pipeline::Variable;
use osprey_shared::plan::PipelineSource;
use serde::Deserialize;

pub fn routes() -> Router<Core> {
    Router::new()
        .route("/api/v1/projects", post(create_project).get(list_projects))
        .route(
            "/api/v1/projects/{name}",
            get(show_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route(
            "/api/v1/projects/{name}/webhook-secret",
            post(rotate_secret),
        )
        .route(
            "/api/v1/projects/{name}/pipelines",
            post(run_pipeline).get(list_pipelines),
        )
        .route("/api/v1/projects/{name}/trigger", post(trigger_pipeline))
        .route("/api/v1/projects/{name}/variables", get(list_variables))
        .route(
            "/api/v1/projects/{name}/variables/{key}",
            put(set_variable).delete(delete_variable),
        )
        .route(
            "/api/v1/projects/{name}/schedules",
            post(create_schedule).get(list_schedules),
        )
        .route(
            "/api/v1/projects/{name}/schedules/{id}",
            delete(delete_schedule),
        )
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
}

async fn create_project(
    State(core): State<Core>,
    caller: Caller,
    body: Result<Json<CreateProject>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin, None)?;
    let created = core.create_project(json_body(body)?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_projects(State(core): State<Core>, caller: Caller) -> ApiResult<impl IntoResponse> {
    let rows = core.store().projects().await.map_err(CoreError::from)?;
    let views: Vec<_> = rows
        .iter()
        .filter(|row| caller.0.sees(row.id))
        .map(|row| core.project_view(row))
        .collect();
    Ok(Json(views))
}

/// The project a path names, if the caller may act on it with `role`.
pub(super) async fn project_for(
    core: &Core,
    caller: &Caller,
    name: &str,
    role: Role,
) -> Result<crate::storage::ProjectRow, CoreError> {
    let project = core.project(name).await?;
    caller.require(role, Some(project.id))?;
    Ok(project)
}

async fn show_project(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Read).await?;
    Ok(Json(core.project_view(&project)))
}

async fn update_project(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<UpdateProject>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    project_for(&core, &caller, &name, Role::Admin).await?;
    Ok(Json(core.update_project(&name, json_body(body)?).await?))
}

async fn delete_project(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin, None)?;
    core.delete_project(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_secret(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    project_for(&core, &caller, &name, Role::Admin).await?;
    Ok(Json(core.rotate_webhook_secret(&name).await?))
}

async fn run_pipeline(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<RunPipeline>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Run).await?;
    let request = json_body(body)?;
    let created = core
        .create_for_project(
            &project,
            &request.git_ref,
            request.variables,
            PipelineSource::Api,
            &caller.0.who(),
            None,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created.view)))
}

async fn list_pipelines(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
    Query(filter): Query<PipelineFilter>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Read).await?;
    Ok(Json(core.project_pipelines(&project, &filter).await?))
}

/// GitLab's pipeline trigger API: the token in the body (or as a bearer),
/// a ref and variables; the pipeline's source is `trigger`.
async fn trigger_pipeline(
    State(core): State<Core>,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<TriggerPipeline>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let request = json_body(body)?;
    let token = request.token.as_deref().or(super::caller::bearer(&headers));
    let principal = core.authenticate(token, None).await?;
    let caller = Caller(principal);
    let project = project_for(&core, &caller, &name, Role::Run).await?;
    let variables = request
        .variables
        .into_iter()
        .map(|(key, value)| Variable { key, value })
        .collect();
    let created = core
        .create_for_project(
            &project,
            &request.git_ref,
            variables,
            PipelineSource::Trigger,
            &caller.0.who(),
            None,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created.view)))
}

async fn list_variables(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    Ok(Json(core.variables(&project).await?))
}

async fn set_variable(
    State(core): State<Core>,
    caller: Caller,
    Path((name, key)): Path<(String, String)>,
    body: Result<Json<SetVariable>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    Ok(Json(
        core.set_variable(&project, &key, json_body(body)?).await?,
    ))
}

#[derive(Deserialize)]
struct ScopeQuery {
    env_scope: Option<String>,
}

async fn delete_variable(
    State(core): State<Core>,
    caller: Caller,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<ScopeQuery>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    let scope = query.env_scope.unwrap_or_else(|| "*".to_owned());
    core.delete_variable(&project, &key, &scope).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_schedule(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<CreateSchedule>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    let created = core.create_schedule(&project, json_body(body)?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_schedules(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Read).await?;
    Ok(Json(core.schedules(&project).await?))
}

async fn delete_schedule(
    State(core): State<Core>,
    caller: Caller,
    Path((name, id)): Path<(String, u64)>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    core.delete_schedule(&project, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_token(
    State(core): State<Core>,
    caller: Caller,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin, None)?;
    let created = core.create_token(json_body(body)?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_tokens(State(core): State<Core>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin, None)?;
    Ok(Json(core.tokens().await?))
}

async fn revoke_token(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin, None)?;
    core.revoke_token(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
