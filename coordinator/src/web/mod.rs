//! The web UI: server-rendered pages (askama) on the coordinator's own
//! port, live updates over Server-Sent Events, sign-in with an API token in
//! an HttpOnly cookie and CSRF tokens on every form.
//!
//! Every page but `/login` needs a signed-in browser (or an
//! `Authorization: Bearer` header); a signed-out browser is sent to the
//! sign-in page. What a page shows and what a form may do are the API's own
//! checks ([`crate::core::Principal::require`]): the UI adds no rights.

mod actions;
pub mod ansi;
pub mod graph;
mod live;
mod pages;
mod session;
mod view;

pub(crate) use ansi::escape_html;
pub use session::{csrf_token, SESSION_COOKIE};

use crate::core::Core;
use crate::error::CoreError;
use askama::Template;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

/// Largest form body: a ref name, a deployment id and a CSRF token.
const MAX_FORM_BODY: usize = 16 << 10;

/// The pages, their forms, their live streams and the static assets.
pub fn router() -> Router<Core> {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/projects/{name}", get(pages::project))
        .route("/projects/{name}/pipelines", post(actions::run_pipeline))
        .route("/projects/{name}/environments", get(pages::environments))
        .route(
            "/projects/{name}/environments/{environment}/rollback",
            post(actions::rollback),
        )
        .route("/pipelines/{id}", get(pages::pipeline))
        .route("/pipelines/{id}/events", get(live::pipeline_events))
        .route("/pipelines/{id}/cancel", post(actions::cancel_pipeline))
        .route("/pipelines/{id}/retry", post(actions::retry_pipeline))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/log/events", get(live::log_events))
        .route("/jobs/{id}/log.html", get(live::log_window))
        .route("/jobs/{id}/raw", get(live::raw_log))
        .route("/jobs/{id}/artifacts", get(live::artifacts))
        .route("/jobs/{id}/play", post(actions::play_job))
        .route("/jobs/{id}/retry", post(actions::retry_job))
        .route("/agents", get(pages::agents))
        .route("/assets/app.css", get(asset_css))
        .route("/assets/app.js", get(asset_js))
        .layer(DefaultBodyLimit::max(MAX_FORM_BODY))
}

/// What a page handler fails with: a signed-out browser goes to the
/// sign-in page, anything else is an error page with the API's status.
#[derive(Debug)]
pub enum WebError {
    SignIn { next: String },
    Core(CoreError),
}

impl From<CoreError> for WebError {
    fn from(error: CoreError) -> Self {
        WebError::Core(error)
    }
}

impl From<crate::storage::StoreError> for WebError {
    fn from(error: crate::storage::StoreError) -> Self {
        WebError::Core(error.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn { next } => {
                let target = format!("/login?next={}", session::encode_next(&next));
                Redirect::to(&target).into_response()
            }
            WebError::Core(error) => {
                let status = error.code().http();
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(error = %error, "web request failed");
                }
                let page = view::ErrorPage {
                    status: status.as_u16(),
                    message: error.to_string(),
                };
                (status, render(&page)).into_response()
            }
        }
    }
}

pub type WebResult<T> = Result<T, WebError>;

/// Headers of every page: no caching of what a token showed, scripts and
/// styles only from this server (inline `style` attributes carry the log's
/// 256-colour and truecolour spans), never framed.
pub(crate) const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::CACHE_CONTROL, "no-store"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
];

/// A template as an HTML response (a template error is a 500 with a log line).
pub(crate) fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => (SECURITY_HEADERS, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "rendering a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

async fn asset_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../assets/app.css"),
    )
}

async fn asset_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../assets/app.js"),
    )
}
