//! A small typed client over the coordinator's HTTP API, and the way its
//! errors are shown to a person: an unreachable coordinator names the URL, an
//! HTTP error prints the body's `error` (and each lint line of `errors`).

use anyhow::Context as _;
use osprey_shared::api::{CreatePipeline, ErrorBody, JobView, PipelineView};
use reqwest::StatusCode;
use std::fmt;
use std::time::Duration;

/// The coordinator could not be reached at all (refused, DNS, timeout).
#[derive(Debug)]
pub struct Unreachable {
    pub url: String,
    pub source: reqwest::Error,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the coordinator at {}: {}",
            self.url,
            error_chain(&self.source)
        )
    }
}

impl std::error::Error for Unreachable {}

/// The coordinator answered with an error status.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.body.error, self.status)
    }
}

impl std::error::Error for HttpError {}

/// Prints an error for a person: the message chain, then any lint lines.
pub fn report_error(error: &anyhow::Error) {
    eprintln!("error: {error:#}");
    if let Some(http) = error.downcast_ref::<HttpError>() {
        for line in &http.body.errors {
            eprintln!("{line}");
        }
    }
}

/// Joins an error and its sources with `: ` (reqwest hides the useful part,
/// e.g. "Connection refused", in the sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Tries of `POST /api/v1/pipelines` (0.5 + 1 + 2 + 4 s of waits between).
const CREATE_ATTEMPTS: u32 = 5;
const CREATE_RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);

/// A failure after which the request may or may not have arrived: nothing
/// answered (refused, reset, cut before the response).
fn retryable(error: &reqwest::Error) -> bool {
    error.is_connect() || (error.is_request() && error.status().is_none())
}

/// Client of one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        // reqwest's TLS (enabled in the workspace by object_store) takes
        // rustls's process-wide provider: ring, as tonic uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Creates a pipeline under a fresh `Idempotency-Key`, retrying with the
    /// same key while the coordinator cannot be reached or the connection
    /// breaks before the answer: a retry of a request that did arrive gets
    /// the pipeline it created, never a second one.
    pub async fn create_pipeline(&self, request: &CreatePipeline) -> anyhow::Result<PipelineView> {
        let key = uuid::Uuid::new_v4().to_string();
        let mut delay = CREATE_RETRY_FIRST_DELAY;
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .post(self.url("/api/v1/pipelines"))
                .header("Idempotency-Key", &key)
                .json(request)
                .send()
                .await;
            let response = match sent {
                Err(source) if attempt < CREATE_ATTEMPTS && retryable(&source) => {
                    eprintln!(
                        "warning: {}; retrying in {delay:?} (attempt {} of {CREATE_ATTEMPTS})",
                        error_chain(&source),
                        attempt + 1
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                    continue;
                }
                sent => self.check(sent).await?,
            };
            return response.json().await.context("unreadable pipeline JSON");
        }
    }

    pub async fn pipeline(&self, id: u64) -> anyhow::Result<PipelineView> {
        let response = self
            .send(self.http.get(self.url(&format!("/api/v1/pipelines/{id}"))))
            .await?;
        response.json().await.context("unreadable pipeline JSON")
    }

    pub async fn cancel_pipeline(&self, id: u64) -> anyhow::Result<PipelineView> {
        let response = self
            .send(
                self.http
                    .post(self.url(&format!("/api/v1/pipelines/{id}/cancel"))),
            )
            .await?;
        response.json().await.context("unreadable pipeline JSON")
    }

    pub async fn play_job(&self, id: u64) -> anyhow::Result<JobView> {
        let response = self
            .send(self.http.post(self.url(&format!("/api/v1/jobs/{id}/play"))))
            .await?;
        response.json().await.context("unreadable job JSON")
    }

    pub async fn job(&self, id: u64) -> anyhow::Result<JobView> {
        let response = self
            .send(self.http.get(self.url(&format!("/api/v1/jobs/{id}"))))
            .await?;
        response.json().await.context("unreadable job JSON")
    }

    /// The log of a job from byte 0; with `follow` the body streams until the
    /// job has finished. Read it with `Response::chunk`.
    pub async fn job_log(&self, job_id: u64, follow: bool) -> anyhow::Result<reqwest::Response> {
        let mut path = format!("/api/v1/jobs/{job_id}/log?offset=0");
        if follow {
            path.push_str("&follow=true");
        }
        self.send(self.http.get(self.url(&path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; maps transport failures to [`Unreachable`] and error
    /// statuses to [`HttpError`].
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        self.check(request.send().await).await
    }

    /// What [`Client::send`] makes of a request's outcome.
    async fn check(
        &self,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> anyhow::Result<reqwest::Response> {
        let response = sent.map_err(|source| {
            if source.is_connect() || source.is_timeout() {
                anyhow::Error::new(Unreachable {
                    url: self.base.clone(),
                    source,
                })
            } else {
                anyhow::anyhow!("request to {} failed: {}", self.base, error_chain(&source))
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| ErrorBody {
            error: if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text.trim().to_owned()
            },
            errors: Vec::new(),
        });
        Err(HttpError { status, body }.into())
    }
}
