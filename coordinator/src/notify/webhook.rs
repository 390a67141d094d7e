//! Webhook notifications: a GitLab-shaped JSON body ([`payload`]: a Pipeline
//! Hook, or a Deployment Hook for deployment events) signed the Standard
//! Webhooks way ([`sign`], [`verify`]) and POSTed by [`WebhookSender`].
//!
//! The body is rendered once by the caller and stored, so every retry sends
//! the same bytes under the same `webhook-id`; only `webhook-timestamp` and
//! the signature change between tries.

use super::email::short_sha;
use super::{DeliveryError, JobFacts, Report};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use osprey_shared::PipelineStatus;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// How long one delivery try may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many characters of a refusing answer are kept.
const DETAIL_CHARS: usize = 200;

/// GitLab's `before_sha` when there is none.
const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Which GitLab hook a report is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Pipeline,
    Deployment,
}

impl Hook {
    /// A deployment event is a Deployment Hook when it carries its
    /// deployment; everything else (and a deployment event without one,
    /// which the worker should not make) is a Pipeline Hook.
    fn of(report: &Report) -> Hook {
        if report.event.is_deployment() && report.deployment.is_some() {
            Hook::Deployment
        } else {
            Hook::Pipeline
        }
    }
}

/// The event headers of `report`'s webhook: `X-Gitlab-Event` (`Pipeline
/// Hook` or `Deployment Hook`, matching [`payload`]) and `X-Osprey-Event`
/// (the event name, which tells `pipeline_fixed` from `pipeline_success`).
pub fn event_headers(report: &Report) -> [(&'static str, &'static str); 2] {
    let gitlab = match Hook::of(report) {
        Hook::Pipeline => "Pipeline Hook",
        Hook::Deployment => "Deployment Hook",
    };
    [
        ("X-Gitlab-Event", gitlab),
        ("X-Osprey-Event", report.event.as_str()),
    ]
}

/// The JSON body of `report`'s webhook, shaped like GitLab's hook of the
/// same kind so receivers written for GitLab work, plus `osprey_event`.
pub fn payload(report: &Report) -> Value {
    match (Hook::of(report), &report.deployment) {
        (Hook::Deployment, Some(deployment)) => json!({
            "object_kind": "deployment",
            "status": deployment.status,
            "status_changed_at": gitlab_time(&deployment.status_changed_at),
            "deployment_id": deployment.id,
            "deployable_id": deployment.job_id,
            "deployable_url": deployment.job_url,
            "environment": deployment.environment,
            "environment_tier": deployment.environment_tier,
            "environment_slug": deployment.environment_slug,
            "environment_external_url": deployment.environment_url,
            "project": project(report),
            "short_sha": short_sha(&report.pipeline.sha),
            "user": null,
            "user_url": null,
            "commit_url": null,
            "commit_title": report.pipeline.commit_title,
            "ref": report.pipeline.git_ref,
            "osprey_event": report.event.as_str(),
        }),
        _ => pipeline_hook(report),
    }
}

fn pipeline_hook(report: &Report) -> Value {
    let pipeline = &report.pipeline;
    // GitLab's detailed status says `passed` where its status says `success`.
    let detailed_status = if pipeline.status == PipelineStatus::Success.as_str() {
        "passed"
    } else {
        pipeline.status.as_str()
    };
    json!({
        "object_kind": "pipeline",
        "object_attributes": {
            "id": pipeline.id,
            "iid": pipeline.iid,
            "name": null,
            "ref": pipeline.git_ref,
            "tag": pipeline.tag,
            "sha": pipeline.sha,
            "before_sha": pipeline.before_sha.as_deref().unwrap_or(ZERO_SHA),
            "source": pipeline.source,
            "status": pipeline.status,
            "detailed_status": detailed_status,
            "stages": pipeline.stages,
            "created_at": gitlab_time(&pipeline.created_at),
            "finished_at": pipeline.finished_at.as_deref().map(gitlab_time),
            // GitLab counts a pipeline's duration in whole seconds.
            "duration": pipeline.duration_seconds.map(|seconds| seconds.round() as i64),
            "queued_duration": null,
            "variables": [],
            "url": pipeline.url,
        },
        "merge_request": null,
        "user": null,
        "project": project(report),
        "commit": {
            "id": pipeline.sha,
            "message": pipeline.commit_message,
            "title": pipeline.commit_title,
            "timestamp": null,
            "url": null,
            "author": null,
        },
        "builds": report.jobs.iter().map(build).collect::<Vec<_>>(),
        "osprey_event": report.event.as_str(),
    })
}

fn build(job: &JobFacts) -> Value {
    let queued_duration = match (&job.created_at, &job.started_at) {
        (Some(created), Some(started)) => seconds_between(created, started),
        _ => None,
    };
    json!({
        "id": job.id,
        "stage": job.stage,
        "name": job.name,
        "status": job.status,
        "created_at": job.created_at.as_deref().map(gitlab_time),
        "started_at": job.started_at.as_deref().map(gitlab_time),
        "finished_at": job.finished_at.as_deref().map(gitlab_time),
        "duration": job.duration_seconds,
        "queued_duration": queued_duration,
        "failure_reason": job.failure_reason,
        "when": job.when,
        "manual": job.manual,
        "allow_failure": job.allow_failure,
        "user": null,
        "runner": job.agent_name.as_ref().map(|agent| json!({
            "id": null,
            "description": agent,
            "runner_type": "instance_type",
            "active": true,
            "is_shared": true,
            "tags": [],
        })),
        "artifacts_file": { "filename": null, "size": null },
        "environment": job.environment.as_ref().map(|(name, action, tier)| json!({
            "name": name,
            "action": action,
            "deployment_tier": tier,
        })),
    })
}

fn project(report: &Report) -> Value {
    let project = &report.project;
    json!({
        "id": project.id,
        "name": project.name,
        "description": null,
        "web_url": project.url,
        "avatar_url": null,
        "git_ssh_url": null,
        "git_http_url": project.repo,
        "namespace": null,
        "visibility_level": null,
        "path_with_namespace": project.name,
        "default_branch": null,
        "ci_config_path": null,
    })
}

/// An RFC 3339 time as GitLab's hooks write it: `2016-08-12 15:23:28 UTC`.
/// Text that does not parse is passed on as it is.
fn gitlab_time(rfc3339: &str) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|time| time.to_offset(UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| rfc3339.to_owned())
}

fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let from = OffsetDateTime::parse(from, &Rfc3339).ok()?;
    let to = OffsetDateTime::parse(to, &Rfc3339).ok()?;
    Some((to - from).as_seconds_f64().max(0.0))
}

/// The HMAC key of a signing secret: the base64 after `whsec_` (Standard
/// Webhooks' form), else the secret's own bytes. `Invalid` when a `whsec_`
/// secret is not base64, so the API can refuse it when a rule is made.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, DeliveryError> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => {
            // Accept the secret with or without its `=` padding.
            let engine = GeneralPurpose::new(
                &alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            engine.decode(encoded).map_err(|error| {
                DeliveryError::Invalid(format!("the whsec_ secret is not base64: {error}"))
            })
        }
        None => Ok(secret.as_bytes().to_vec()),
    }
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

/// The Standard Webhooks `webhook-signature` of a try: `v1,` and the base64
/// HMAC-SHA256 of `{id}.{timestamp}.{body}`. A `whsec_` secret that is not
/// base64 is used as its bytes (the sender refuses such a secret first, see
/// [`signing_key`]).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = signing_key(secret).unwrap_or_else(|_| secret.as_bytes().to_vec());
    let tag = mac(&key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Whether `header` (one or more space-separated `v1,<base64>` signatures,
/// others ignored) holds a valid signature of this try. Compares in constant
/// time. Checking that `timestamp` is recent is the receiver's business.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Ok(key) = signing_key(secret) else {
        return false;
    };
    let expected = mac(&key, id, timestamp, body).finalize().into_bytes();
    header
        .split_whitespace()
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        // Every candidate is compared, so the time says nothing about which matched.
        .fold(false, |found, candidate| {
            found | bool::from(candidate.as_slice().ct_eq(expected.as_slice()))
        })
}

/// POSTs webhook bodies: 10 s per try, no redirects (a receiver that moved
/// must be updated, not followed), TLS with the Mozilla roots.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
}

impl WebhookSender {
    pub fn new() -> Result<WebhookSender, DeliveryError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| DeliveryError::Invalid(format!("TLS configuration: {error}")))?
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth();
        // This reqwest speaks HTTP/1.1 only (no `http2` feature).
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("osprey/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|error| DeliveryError::Invalid(format!("HTTP client: {error}")))?;
        Ok(WebhookSender { client })
    }

    /// One try: POSTs `body` (the stored rendering of [`payload`]) to `url`,
    /// signed when there is a secret. 2xx is `Ok(status)`; any other answer
    /// is `Refused` with the start of the answer's body.
    pub async fn send(
        &self,
        url: &str,
        secret: Option<&str>,
        report: &Report,
        body: &[u8],
    ) -> Result<u16, DeliveryError> {
        let target = reqwest::Url::parse(url)
            .map_err(|error| DeliveryError::Invalid(format!("webhook URL {url:?}: {error}")))?;
        if !matches!(target.scheme(), "http" | "https") {
            return Err(DeliveryError::Invalid(format!(
                "webhook URL {url:?}: not http or https"
            )));
        }
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let mut request = self
            .client
            .post(target)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &report.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(body.to_vec());
        if let Some(secret) = secret {
            signing_key(secret)?;
            request = request.header(
                "webhook-signature",
                sign(secret, &report.webhook_id, timestamp, body),
            );
        }
        for (name, value) in event_headers(report) {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        // Only the start of the answer is kept: read no more than that.
        let mut answer = Vec::new();
        while answer.len() < DETAIL_CHARS * 4 {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let detail: String = String::from_utf8_lossy(&answer)
            .chars()
            .take(DETAIL_CHARS)
            .collect();
        Err(DeliveryError::Refused {
            status: Some(status.as_u16()),
            detail,
        })
    }
}

fn request_error(error: reqwest::Error) -> DeliveryError {
    // The URL may hold a token or credentials: it stays out of details and logs.
    let error = error.without_url();
    if error.is_builder() {
        DeliveryError::Invalid(error.to_string())
    } else {
        // Connection refused, DNS, TLS, timeout: the receiver did not answer.
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        DeliveryError::Unreachable(detail)
    }
}
