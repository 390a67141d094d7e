//! `GET /metrics`: the Prometheus scrape. Who may scrape: with
//! `--metrics-token` set, whoever presents it as `Authorization: Bearer`
//! (compared in constant time); without it, a loopback peer (a Prometheus
//! or an agent on the same host) or a caller with the admin API token.
//! Everyone else gets 401 and learns nothing of the metrics.

use super::caller::{bearer, peer};
use super::ApiError;
use crate::core::Core;
use crate::error::CoreError;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use osprey_shared::api::Role;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// What the access rule makes of a request before any token lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Allowed,
    /// Allowed if the bearer token is the admin API token.
    NeedsAdmin,
    Denied,
}

/// The access rule (module doc) for a request presenting `presented`
/// from `peer`, when the metrics token is `expected`.
pub(super) fn access(
    expected: Option<&str>,
    presented: Option<&str>,
    peer: Option<IpAddr>,
) -> Access {
    match expected {
        Some(expected) => match presented {
            // Digests first: equal lengths, so the compare says nothing of
            // the token's length either.
            Some(presented)
                if bool::from(
                    Sha256::digest(presented.as_bytes())
                        .ct_eq(&Sha256::digest(expected.as_bytes())),
                ) =>
            {
                Access::Allowed
            }
            _ => Access::Denied,
        },
        None if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) => Access::Allowed,
        None if presented.is_some() => Access::NeedsAdmin,
        None => Access::Denied,
    }
}

pub(super) async fn metrics(State(core): State<Core>, parts: Parts) -> Result<Response, ApiError> {
    let presented = bearer(&parts.headers);
    let peer = peer(&parts);
    let allowed = match access(core.settings().metrics_token.as_deref(), presented, peer) {
        Access::Allowed => true,
        Access::NeedsAdmin => {
            let principal = core.authenticate(presented, peer).await?;
            principal.require(Role::Admin, None).is_ok()
        }
        Access::Denied => false,
    };
    if !allowed {
        return Err(CoreError::Unauthenticated(
            "/metrics needs the metrics token (or, without one, a loopback peer or the admin token)"
                .to_owned(),
        )
        .into());
    }
    let text = core.render_metrics().await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::{access, Access};
    use std::net::IpAddr;

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn a_configured_token_is_all_that_counts() {
        let token = Some("scrape-secret");
        assert_eq!(
            access(token, Some("scrape-secret"), ip("10.0.0.1")),
            Access::Allowed
        );
        assert_eq!(access(token, Some("wrong"), ip("10.0.0.1")), Access::Denied);
        // Not even loopback gets in without it.
        assert_eq!(access(token, None, ip("127.0.0.1")), Access::Denied);
        assert_eq!(access(token, Some(""), ip("127.0.0.1")), Access::Denied);
    }

    #[test]
    fn without_a_token_loopback_or_an_admin_may_scrape() {
        assert_eq!(access(None, None, ip("127.0.0.1")), Access::Allowed);
        assert_eq!(access(None, None, ip("::1")), Access::Allowed);
        assert_eq!(access(None, None, ip("::ffff:127.0.0.1")), Access::Allowed);
        assert_eq!(access(None, Some("t"), ip("10.0.0.1")), Access::NeedsAdmin);
        assert_eq!(access(None, None, ip("10.0.0.1")), Access::Denied);
        assert_eq!(access(None, None, None), Access::Denied);
    }
}
