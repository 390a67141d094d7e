//! The parts of forge payloads a push needs, read with serde (unknown
//! fields ignored) once the request is verified: GitLab's push and tag push
//! hooks, GitHub's and Gitea's `push`, Gitea's `create` of a tag.

use super::{Forge, HookError, Push};
use serde::Deserialize;

/// What GitLab, GitHub, Gitea and Forgejo push payloads share.
#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
    /// GitHub's flag for a deleted ref.
    #[serde(default)]
    deleted: Option<bool>,
    /// GitLab's project (its URLs).
    #[serde(default)]
    project: Option<Urls>,
    #[serde(default)]
    repository: Option<Urls>,
}

/// Gitea's `create` event: a branch or tag was created.
#[derive(Debug, Deserialize)]
struct CreatePayload {
    /// The short name (`v1.0`); some versions send `refs/tags/v1.0`.
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
    sha: String,
    #[serde(default)]
    repository: Option<Urls>,
}

/// Clone URLs in the shapes forges use.
#[derive(Debug, Default, Deserialize)]
struct Urls {
    /// GitLab.
    #[serde(default)]
    git_http_url: Option<String>,
    /// GitLab.
    #[serde(default)]
    git_ssh_url: Option<String>,
    /// GitLab's project.
    #[serde(default)]
    http_url: Option<String>,
    /// GitHub, Gitea.
    #[serde(default)]
    clone_url: Option<String>,
    /// GitHub, Gitea, GitLab's project.
    #[serde(default)]
    ssh_url: Option<String>,
}

impl Urls {
    fn push_into(self, urls: &mut Vec<String>) {
        for url in [
            self.git_http_url,
            self.http_url,
            self.clone_url,
            self.git_ssh_url,
            self.ssh_url,
        ]
        .into_iter()
        .flatten()
        {
            let url = url.trim().to_owned();
            if !url.is_empty() && !urls.contains(&url) {
                urls.push(url);
            }
        }
    }
}

fn bad(message: impl Into<String>) -> HookError {
    HookError::BadPayload(message.into())
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, HookError> {
    serde_json::from_slice(body)
        .map_err(|error| bad(format!("the payload is not the expected JSON: {error}")))
}

/// A commit id: 40 (SHA-1) or 64 (SHA-256) hex characters.
fn is_sha(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zeros(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b == b'0')
}

fn checked_sha(field: &str, text: &str) -> Result<String, HookError> {
    if is_sha(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(bad(format!("{field} is not a commit id: {text:?}")))
    }
}

/// `refs/heads/X` → (`X`, false), `refs/tags/X` → (`X`, true).
fn split_ref(full: &str) -> Result<(String, bool), HookError> {
    let (name, is_tag) = if let Some(name) = full.strip_prefix("refs/heads/") {
        (name, false)
    } else if let Some(name) = full.strip_prefix("refs/tags/") {
        (name, true)
    } else {
        return Err(bad(format!(
            "ref {full:?} is neither a branch (refs/heads/) nor a tag (refs/tags/)"
        )));
    };
    if name.is_empty() {
        return Err(bad(format!("ref {full:?} has no name")));
    }
    Ok((name.to_owned(), is_tag))
}

/// A push to one ref, from any forge's push payload.
pub(super) fn parse_push(
    forge: Forge,
    body: &[u8],
    delivery: Option<String>,
) -> Result<Push, HookError> {
    let payload: PushPayload = parse_json(body)?;
    let (git_ref, is_tag) = split_ref(&payload.git_ref)?;
    let after = payload
        .after
        .ok_or_else(|| bad("the payload has no \"after\" commit"))?;
    let after = checked_sha("after", &after)?;
    let before = match payload.before.as_deref() {
        None | Some("") => None,
        Some(zeros) if is_zeros(zeros) => None,
        Some(sha) => Some(checked_sha("before", sha)?),
    };
    let deleted = is_zeros(&after) || payload.deleted == Some(true);
    let mut clone_urls = Vec::new();
    for urls in [payload.project, payload.repository].into_iter().flatten() {
        urls.push_into(&mut clone_urls);
    }
    Ok(Push {
        git_ref,
        is_tag,
        before,
        after,
        deleted,
        delivery,
        clone_urls,
        forge,
    })
}

/// Gitea's `create` of a tag, as a push of the tag; `Ok(None)` for a new
/// branch (its `push` event says the same and more).
pub(super) fn parse_gitea_create(
    forge: Forge,
    body: &[u8],
    delivery: Option<String>,
) -> Result<Option<Push>, HookError> {
    let payload: CreatePayload = parse_json(body)?;
    if payload.ref_type != "tag" {
        return Ok(None);
    }
    let git_ref = if let Some(name) = payload.git_ref.strip_prefix("refs/tags/") {
        name.to_owned()
    } else if payload.git_ref.starts_with("refs/") {
        return Err(bad(format!(
            "tag ref {:?} is not under refs/tags/",
            payload.git_ref
        )));
    } else {
        payload.git_ref
    };
    if git_ref.is_empty() {
        return Err(bad("the created tag has no name"));
    }
    let mut clone_urls = Vec::new();
    if let Some(urls) = payload.repository {
        urls.push_into(&mut clone_urls);
    }
    Ok(Some(Push {
        git_ref,
        is_tag: true,
        before: None,
        after: checked_sha("sha", &payload.sha)?,
        deleted: false,
        delivery,
        clone_urls,
        forge,
    }))
}
