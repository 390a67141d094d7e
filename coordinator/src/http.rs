//! The HTTP JSON API adapter (axum): parses requests, calls [`Core`], maps
//! errors through the shared code table. Shapes are `osprey_shared::api`.

use crate::core::Core;
use crate::error::CoreError;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use osprey_shared::api::{CreatePipeline, ErrorBody};
use osprey_shared::{JobId, PipelineId};
use serde::Deserialize;

/// The API's routes.
pub fn router(core: Core) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/pipelines", post(create_pipeline))
        .route("/api/v1/pipelines/{id}", get(show_pipeline))
        .route("/api/v1/pipelines/{id}/cancel", post(cancel_pipeline))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/log", get(job_log))
        .route("/api/v1/jobs/{id}/play", post(play_job))
        .route("/api/v1/agents", get(list_agents))
        .with_state(core)
}

/// An error as the API answers it.
struct ApiError(CoreError);

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        ApiError(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.code().http();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.0, "api request failed");
        }
        let errors = match &self.0 {
            CoreError::InvalidPipeline(errors) => errors.iter().map(ToString::to_string).collect(),
            CoreError::PipelineRefused { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: self.0.to_string(),
            errors,
        };
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn create_pipeline(
    State(core): State<Core>,
    body: Result<Json<CreatePipeline>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(request) =
        body.map_err(|rejection| CoreError::InvalidArgument(rejection.body_text()))?;
    let view = core
        .create_pipeline(&request.repo, &request.git_ref, request.variables)
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn show_pipeline(
    State(core): State<Core>,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(core.pipeline_view(PipelineId(id)).await?))
}

async fn cancel_pipeline(
    State(core): State<Core>,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(core.cancel_pipeline(PipelineId(id)).await?))
}

async fn show_job(State(core): State<Core>, Path(id): Path<u64>) -> ApiResult<impl IntoResponse> {
    Ok(Json(core.job_view(JobId(id)).await?))
}

async fn play_job(State(core): State<Core>, Path(id): Path<u64>) -> ApiResult<impl IntoResponse> {
    Ok(Json(core.play_job(JobId(id)).await?))
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    follow: bool,
}

async fn job_log(
    State(core): State<Core>,
    Path(id): Path<u64>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    let job = JobId(id);
    let body = if query.follow {
        core.job_view(job).await?;
        Body::from_stream(
            core.follow_log(job, query.offset)
                .map(|item| item.map_err(|error| std::io::Error::other(error.to_string()))),
        )
    } else {
        let mut out = Vec::new();
        let mut offset = query.offset;
        loop {
            let chunk = core.read_log(job, offset).await?;
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            out.extend_from_slice(&chunk);
        }
        Body::from(out)
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

async fn list_agents(State(core): State<Core>) -> ApiResult<impl IntoResponse> {
    Ok(Json(core.agents().await?))
}
