//! The HTTP JSON API adapter (axum): parses requests, calls [`Core`], maps
//! errors through the shared code table. Shapes are `osprey_shared::api`.
//!
//! A request body over [`MAX_REQUEST_BODY`] is answered `413` (the limit is
//! read as the body arrives, so a huge body costs at most that much).
//! `POST /api/v1/pipelines` honours an `Idempotency-Key` header: a retry
//! with the same key and body answers the first request's pipeline with the
//! same `201` and `Idempotent-Replayed: true`; another body gets `422`.
//!
//! Every route but `/healthz` and `/hooks/{project}` takes a [`Caller`]: the
//! principal of its `Authorization: Bearer` token (401 without a valid one),
//! whose role and project each handler checks (403).

mod caller;
mod deployments;
mod hooks;
mod metrics;
mod projects;

pub use caller::Caller;
pub(crate) use caller::{bearer, peer};

use crate::core::Core;
use crate::error::CoreError;
use crate::storage::IdempotencyKey;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use osprey_shared::api::{CreatePipeline, ErrorBody, Role};
use osprey_shared::{JobId, PipelineId};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Largest request body: a pipeline request is a repository, a ref and
/// variables, far below this.
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// Longest `Idempotency-Key` (Stripe allows 255 characters).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The API's routes.
pub fn router(core: Core) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/pipelines", post(create_pipeline))
        .route("/api/v1/pipelines/{id}", get(show_pipeline))
        .route("/api/v1/pipelines/{id}/cancel", post(cancel_pipeline))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/log", get(job_log))
        .route("/api/v1/jobs/{id}/play", post(play_job))
        .route("/api/v1/pipelines/{id}/retry", post(retry_pipeline))
        .route("/api/v1/jobs/{id}/retry", post(retry_job))
        .route("/api/v1/agents", get(list_agents))
        .merge(projects::routes())
        .merge(deployments::routes())
        .merge(hooks::routes())
        .merge(crate::web::router())
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(core)
}

/// An error as the API answers it.
pub struct ApiError(CoreError);

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
        let mut response = (status, Json(body)).into_response();
        if let CoreError::Throttled { retry_after, .. } = &self.0 {
            let seconds = retry_after.as_secs().max(1).to_string();
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, or the API's error for a bad or oversized one.
pub(crate) fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, CoreError> {
    body.map(|Json(value)| value).map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            CoreError::PayloadTooLarge(format!("request body larger than {MAX_REQUEST_BODY} bytes"))
        } else {
            CoreError::InvalidArgument(rejection.body_text())
        }
    })
}

async fn create_pipeline(
    State(core): State<Core>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<CreatePipeline>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let request = json_body(body)?;
    let key = idempotency_key(&headers)?;
    // The digest of the request as parsed, so the same request with other
    // whitespace or field order still matches its key.
    let digest = hex::encode(Sha256::digest(
        serde_json::to_vec(&request).unwrap_or_default(),
    ));
    let key = key.as_deref().map(|key| IdempotencyKey {
        key,
        request_sha256: &digest,
    });
    let created = match &request.project {
        Some(name) => {
            let project = core.project(name).await?;
            caller.require(Role::Run, Some(project.id))?;
            core.create_for_project(
                &project,
                &request.git_ref,
                request.variables,
                osprey_shared::plan::PipelineSource::Api,
                &caller.0.who(),
                key,
            )
            .await?
        }
        None => {
            // A bare repository path reads the coordinator's host: admins only.
            caller.require(Role::Admin, None)?;
            core.create_pipeline_once(&request.repo, &request.git_ref, request.variables, key)
                .await?
        }
    };
    let mut response = (StatusCode::CREATED, Json(created.view)).into_response();
    if created.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, CoreError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY
                && key.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .ok_or_else(|| {
            CoreError::InvalidArgument(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

async fn show_pipeline(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    caller
        .require_pipeline(&core, Role::Read, PipelineId(id))
        .await?;
    Ok(Json(core.pipeline_view(PipelineId(id)).await?))
}

async fn cancel_pipeline(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    caller
        .require_pipeline(&core, Role::Run, PipelineId(id))
        .await?;
    Ok(Json(core.cancel_pipeline(PipelineId(id)).await?))
}

async fn retry_pipeline(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    caller
        .require_pipeline(&core, Role::Run, PipelineId(id))
        .await?;
    Ok(Json(core.retry_pipeline(PipelineId(id)).await?))
}

async fn show_job(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    caller.require_job(&core, Role::Read, JobId(id)).await?;
    Ok(Json(core.job_view(JobId(id)).await?))
}

async fn play_job(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    caller.require_job(&core, Role::Run, JobId(id)).await?;
    Ok(Json(core.play_job(JobId(id)).await?))
}

async fn retry_job(
    State(core): State<Core>,
    caller: Caller,
    Path(id): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    caller.require_job(&core, Role::Run, JobId(id)).await?;
    Ok(Json(core.retry_job(JobId(id)).await?))
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
    caller: Caller,
    Path(id): Path<u64>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    let job = JobId(id);
    caller.require_job(&core, Role::Read, job).await?;
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

async fn list_agents(State(core): State<Core>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin, None)?;
    Ok(Json(core.agents().await?))
}
