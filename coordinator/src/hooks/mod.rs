//! Push hooks from forges (`POST /hooks/{project}`): tells GitLab, GitHub,
//! Gitea and Forgejo apart by their headers, verifies the request with the
//! project's webhook secret on the raw body, and only then reads the push
//! out of the JSON. No I/O; the HTTP handler owns the body limit, the
//! project lookup and what a push starts.

mod payload;
mod verify;

use http::HeaderMap;
use std::fmt;
use time::OffsetDateTime;

/// Signing as each forge signs, for tests that send hooks.
pub mod signing {
    pub use super::verify::{sign_gitea, sign_github, sign_standard_webhook};
}

/// The forge a hook came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forge {
    GitLab,
    GitHub,
    Gitea,
    Forgejo,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitLab => "gitlab",
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
        }
    }
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A push of one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Branch or tag name, without `refs/heads/` or `refs/tags/`.
    pub git_ref: String,
    pub is_tag: bool,
    /// The ref's commit before the push; `None` for a new ref.
    pub before: Option<String>,
    /// The ref's commit after the push (zeros when deleted).
    pub after: String,
    /// The ref was deleted.
    pub deleted: bool,
    /// The forge's id of this delivery, the same when it redelivers.
    pub delivery: Option<String>,
    /// The repository's clone URLs the payload names (HTTP first).
    pub clone_urls: Vec<String>,
    pub forge: Forge,
}

/// What a verified hook asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    Push(Push),
    /// Not a push (ping, issues, a new branch's `create`...): why.
    Ignored(String),
}

/// Why a hook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// Unknown forge, or a missing or wrong signature or token (401).
    #[error("hook refused: {0}")]
    Unauthorized(String),
    /// Verified, but not a payload we can read (400).
    #[error("bad hook payload: {0}")]
    BadPayload(String),
}

/// Verifies and reads a hook request at the current time.
pub fn parse_hook(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<HookEvent, HookError> {
    parse_hook_at(headers, body, secret, OffsetDateTime::now_utc())
}

/// [`parse_hook`] with the clock given (Standard Webhooks timestamps are
/// checked against `now`).
pub fn parse_hook_at(
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    now: OffsetDateTime,
) -> Result<HookEvent, HookError> {
    let (forge, event) = detect(headers)?;
    if secret.is_empty() {
        // An empty HMAC key is one anybody can sign with.
        return Err(HookError::Unauthorized(
            "the project has no webhook secret".to_owned(),
        ));
    }
    match forge {
        Forge::Gitea | Forge::Forgejo => verify::verify_gitea(forge, headers, body, secret)?,
        Forge::GitHub => verify::verify_github(headers, body, secret)?,
        Forge::GitLab => verify::verify_gitlab(headers, body, secret, now)?,
    }
    let delivery = delivery(forge, headers);
    let push = match (forge, event.as_str()) {
        (Forge::GitHub | Forge::Gitea | Forge::Forgejo, "push") => {
            payload::parse_push(forge, body, delivery)?
        }
        (Forge::GitLab, "Push Hook" | "Tag Push Hook") => {
            payload::parse_push(forge, body, delivery)?
        }
        (Forge::Gitea | Forge::Forgejo, "create") => {
            match payload::parse_gitea_create(forge, body, delivery)? {
                Some(push) => push,
                None => {
                    return Ok(HookEvent::Ignored(format!(
                        "{forge} create event of a branch (its push event starts pipelines)"
                    )))
                }
            }
        }
        (_, other) => {
            return Ok(HookEvent::Ignored(format!(
                "{forge} event {other:?} is not a push"
            )));
        }
    };
    Ok(HookEvent::Push(push))
}

/// The forge and its event name, from the headers. Gitea and Forgejo also
/// send GitHub's headers, so they are looked for first.
fn detect(headers: &HeaderMap) -> Result<(Forge, String), HookError> {
    let candidates = [
        ("X-Forgejo-Event", Forge::Forgejo),
        ("X-Gitea-Event", Forge::Gitea),
        ("X-GitHub-Event", Forge::GitHub),
        ("X-Gitlab-Event", Forge::GitLab),
    ];
    for (name, forge) in candidates {
        if let Some(event) = verify::header(headers, name)? {
            return Ok((forge, event.to_owned()));
        }
    }
    Err(HookError::Unauthorized(
        "unknown forge: no X-Gitlab-Event, X-GitHub-Event, X-Gitea-Event or X-Forgejo-Event header"
            .to_owned(),
    ))
}

/// The forge's delivery id: stable across redeliveries where the forge has one.
fn delivery(forge: Forge, headers: &HeaderMap) -> Option<String> {
    let names: &[&str] = match forge {
        Forge::GitHub => &["X-GitHub-Delivery"],
        Forge::Gitea => &["X-Gitea-Delivery"],
        Forge::Forgejo => &["X-Forgejo-Delivery", "X-Gitea-Delivery"],
        // Idempotency-Key (= webhook-id) stays the same when GitLab retries.
        Forge::GitLab => &["Idempotency-Key", "webhook-id", "X-Gitlab-Event-UUID"],
    };
    names
        .iter()
        .filter_map(|name| verify::header(headers, name).ok().flatten())
        .find(|value| !value.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
