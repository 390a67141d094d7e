//! Signing in: the API token a user types is kept in an HttpOnly,
//! SameSite=Strict cookie and checked on every request as a bearer token
//! would be. Forms carry a CSRF token derived from the session's token
//! (an HMAC of it), so it needs no server state, holds across restarts and
//! coordinators, and a page that cannot read the cookie cannot forge it.

use super::{render, view, WebError, WebResult};
use crate::core::{Core, Principal};
use crate::error::CoreError;
use crate::storage::{JobRow, PipelineRow};
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use osprey_shared::api::Role;
use osprey_shared::{JobId, PipelineId};
use serde::Deserialize;
use sha2::Sha256;
use std::net::IpAddr;

/// The cookie that holds the signed-in user's API token (base64url).
pub const SESSION_COOKIE: &str = "osprey_session";
/// How long a browser keeps the session: the token's own expiry still rules.
const SESSION_MAX_AGE_SECS: u64 = 30 * 24 * 3600;

/// The CSRF token of a session: HMAC-SHA256 of a fixed label, keyed by the
/// session's API token, in hex.
pub fn csrf_token(api_token: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(api_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"osprey web csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

/// The signed-in caller of a page or form.
#[derive(Debug, Clone)]
pub struct WebCaller {
    pub principal: Principal,
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// Whether it came with the cookie (forms then need the CSRF token) or
    /// an `Authorization` header (which no other site can make a browser send).
    pub by_cookie: bool,
}

impl WebCaller {
    /// Refuses a cookie-authenticated form without this session's CSRF token.
    pub fn check_csrf(&self, sent: Option<&str>) -> WebResult<()> {
        if !self.by_cookie {
            return Ok(());
        }
        let expected = self.csrf.as_bytes();
        let ok = sent
            .is_some_and(|sent| subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), expected).into());
        if ok {
            Ok(())
        } else {
            Err(WebError::Core(CoreError::PermissionDenied(
                "the form's CSRF token is missing or wrong: reload the page and try again"
                    .to_owned(),
            )))
        }
    }

    /// A pipeline the caller may `role` (one it may not see is "not found").
    pub async fn pipeline(
        &self,
        core: &Core,
        id: PipelineId,
        role: Role,
    ) -> WebResult<PipelineRow> {
        let pipeline = core
            .store()
            .pipeline_without_jobs(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("pipeline {id} not found")))?;
        self.principal.require(role, pipeline.project_id)?;
        Ok(pipeline)
    }

    /// A job the caller may `role`, by its pipeline's project, and that pipeline.
    pub async fn job(
        &self,
        core: &Core,
        id: JobId,
        role: Role,
    ) -> WebResult<(JobRow, PipelineRow)> {
        let job = core
            .store()
            .job(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {id} not found")))?;
        let pipeline = self.pipeline(core, job.pipeline_id(), role).await?;
        Ok((job, pipeline))
    }

    /// Who the principal is, as pipelines and deployments record it.
    pub fn who(&self) -> String {
        self.principal.who()
    }
}

/// The peer address of a request, as the listener recorded it.
pub struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(crate::http::peer(parts)))
    }
}

/// The session cookie's token, if the request has one.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .and_then(|(_, value)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(value.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

impl FromRequestParts<Core> for WebCaller {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, core: &Core) -> Result<Self, Self::Rejection> {
        let bearer = crate::http::bearer(&parts.headers).map(str::to_owned);
        let by_cookie = bearer.is_none();
        let token = bearer.or_else(|| cookie_token(&parts.headers));
        let next = parts
            .uri
            .path_and_query()
            .map(|path| path.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let Some(token) = token else {
            return Err(WebError::SignIn { next });
        };
        match core
            .authenticate(Some(&token), crate::http::peer(parts))
            .await
        {
            Ok(principal) => Ok(WebCaller {
                principal,
                csrf: csrf_token(&token),
                by_cookie,
            }),
            // A revoked or expired token in the cookie: sign in again.
            Err(CoreError::Unauthenticated(_)) if by_cookie => Err(WebError::SignIn { next }),
            Err(error) => Err(error.into()),
        }
    }
}

/// Where to go after signing in: a path of this site only, never another
/// site (`//host`, `\\host`, `https:…`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// `next` as a query value.
pub(super) fn encode_next(next: &str) -> String {
    percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_page(Query(query): Query<NextQuery>) -> Response {
    render(&view::LoginPage {
        next: safe_next(query.next.as_deref()),
        error: None,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// Checks the token as the API would; on success sets the cookie and goes on.
pub async fn login(
    State(core): State<Core>,
    Peer(peer): Peer,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    match core.authenticate(Some(token), peer).await {
        Ok(_) => {
            let secure = if core.settings().server_url.starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
            let cookie = format!(
                "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE_SECS}{secure}"
            );
            let mut response = Redirect::to(&next).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(error) => {
            let status = match &error {
                CoreError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            let message = match error {
                CoreError::Throttled { message, .. } => message,
                _ => "That token is not valid (or it expired).".to_owned(),
            };
            let page = view::LoginPage {
                next,
                error: Some(message),
            };
            (status, render(&page)).into_response()
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// Forgets the session cookie (the token itself stays valid: revoke it in
/// the API to end it everywhere).
pub async fn logout(caller: WebCaller, Form(form): Form<CsrfForm>) -> WebResult<Response> {
    caller.check_csrf(form.csrf.as_deref())?;
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/pipelines/3?x=1")), "/pipelines/3?x=1");
        for hostile in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "evil",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_are_stable() {
        assert_eq!(csrf_token("a-token"), csrf_token("a-token"));
        assert_ne!(csrf_token("a-token"), csrf_token("b-token"));
        assert_eq!(csrf_token("a-token").len(), 64);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("osp_secret");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={value}; x=y")).unwrap(),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("osp_secret"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("osprey_session=%%%"),
        );
        assert_eq!(cookie_token(&headers), None);
    }
}
