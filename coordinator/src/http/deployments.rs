//! `/api/v1/projects/{name}/environments`, `/api/v1/deployments/{id}`,
//! `/api/v1/projects/{name}/notifications`, `/api/v1/projects/{name}/deliveries`
//! and `/api/v1/deliveries/{id}`: environments with their deployments and
//! rollback, notification rules and the delivery log.

use super::projects::project_for;
use super::{json_body, ApiResult, Caller};
use crate::core::Core;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use osprey_shared::api::{CreateNotification, Role, Rollback};

pub fn routes() -> Router<Core> {
    Router::new()
        .route(
            "/api/v1/projects/{name}/environments",
            get(list_environments),
        )
        .route(
            "/api/v1/projects/{name}/environments/{env}/deployments",
            get(environment_history),
        )
        .route(
            "/api/v1/projects/{name}/environments/{env}/rollback",
            post(rollback),
        )
        .route(
            "/api/v1/projects/{name}/environments/{env}/stop",
            post(stop_environment),
        )
        .route("/api/v1/deployments/{id}", get(show_deployment))
        .route(
            "/api/v1/projects/{name}/notifications",
            post(add_notification).get(list_notifications),
        )
        .route(
            "/api/v1/projects/{name}/notifications/{id}",
            delete(remove_notification),
        )
        .route(
            "/api/v1/projects/{name}/notifications/{id}/test",
            post(test_notification),
        )
        .route("/api/v1/projects/{name}/deliveries", get(list_deliveries))
        .route("/api/v1/deliveries/{id}", get(show_delivery))
        .route("/api/v1/deliveries/{id}/redeliver", post(redeliver))
}

async fn list_environments(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Read).await?;
    Ok(Json(core.environments(&project).await?))
}

async fn environment_history(
    State(core): State<Core>,
    caller: Caller,
    Path((name, env)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Read).await?;
    Ok(Json(core.environment_history(&project, &env).await?))
}

async fn rollback(
    State(core): State<Core>,
    caller: Caller,
    Path((name, env)): Path<(String, String)>,
    body: Result<Json<Rollback>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Run).await?;
    let request = json_body(body)?;
    let created = core
        .rollback(&project, &env, request.to, &caller.0.who())
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn stop_environment(
    State(core): State<Core>,
    caller: Caller,
    Path((name, env)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Run).await?;
    Ok(Json(core.stop_environment(&project, &env).await?))
}

async fn show_deployment(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let row = core.deployment(id).await?;
    caller.require(Role::Read, Some(row.project_id))?;
    Ok(Json(crate::core::deployment_view(&row)))
}

async fn add_notification(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<CreateNotification>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    let created = core.add_notification(&project, json_body(body)?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_notifications(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Read).await?;
    Ok(Json(core.notifications(&project).await?))
}

async fn remove_notification(
    State(core): State<Core>,
    caller: Caller,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    core.remove_notification(&project, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test_notification(
    State(core): State<Core>,
    caller: Caller,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Admin).await?;
    let queued = core.test_notification(&project, id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

async fn list_deliveries(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let project = project_for(&core, &caller, &name, Role::Read).await?;
    Ok(Json(core.deliveries(&project).await?))
}

async fn show_delivery(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let row = core.notification_row(id).await?;
    caller.require(Role::Read, Some(row.project_id))?;
    Ok(Json(core.delivery_view(&row).await?))
}

async fn redeliver(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let row = core.notification_row(id).await?;
    caller.require(Role::Admin, Some(row.project_id))?;
    Ok((StatusCode::ACCEPTED, Json(core.redeliver(&row).await?)))
}
