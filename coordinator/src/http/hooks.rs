//! `POST /hooks/{project}`: push webhooks of GitLab, GitHub and Gitea or
//! Forgejo. No API token: the forge's signature (or GitLab's token) is
//! checked on the raw body before anything is parsed; the push is recorded
//! and answered `202` at once, its pipeline made in the background.

use super::ApiResult;
use axum::extract::DefaultBodyLimit;

/// Largest webhook body (GitHub caps its payloads at 25 MB; a push of
/// many commits is far below this).
const MAX_HOOK_BODY: usize = 16 << 20;
use crate::core::Core;
use crate::error::CoreError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};

pub fn routes() -> Router<Core> {
    Router::new().route(
        "/hooks/{project}",
        post(receive).layer(DefaultBodyLimit::max(MAX_HOOK_BODY)),
    )
}

async fn receive(
    State(core): State<Core>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            CoreError::PayloadTooLarge(format!("webhook body larger than {MAX_HOOK_BODY} bytes"))
        } else {
            CoreError::InvalidArgument(rejection.body_text())
        }
    })?;
    let answer = core.handle_hook(&project, &headers, &body).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}
