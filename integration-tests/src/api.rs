//! A small typed client over the coordinator's HTTP API, returning the
//! `osprey_shared::api` types. Errors are values (tests assert on 422s and
//! ride out a restarting coordinator); the wait helpers are in [`crate::wait`].

use osprey_shared::api::{AgentView, CreatePipeline, ErrorBody, JobView, PipelineView};
use osprey_shared::{JobId, PipelineId};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A failed API call.
#[derive(Debug)]
pub enum ApiError {
    /// No HTTP answer (refused, reset, timeout).
    Transport(reqwest::Error),
    /// An answer with an error status.
    Status { status: u16, body: String },
    /// An answer whose body is not the expected JSON.
    Decode { body: String, error: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Transport(_) | ApiError::Decode { .. } => None,
        }
    }

    /// Asserts this is an error answer with `status` and an `ErrorBody`;
    /// returns the body.
    #[track_caller]
    pub fn assert_refused(&self, status: u16) -> ErrorBody {
        assert_eq!(self.status(), Some(status), "{self}");
        self.error_body()
            .unwrap_or_else(|| panic!("no ErrorBody: {self}"))
    }

    /// The `ErrorBody` of an error answer, when it has one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        match self {
            ApiError::Status { body, .. } => serde_json::from_str(body).ok(),
            ApiError::Transport(_) | ApiError::Decode { .. } => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport(error) => write!(f, "transport error: {error:?}"),
            ApiError::Status { status, body } => write!(f, "HTTP {status}: {body}"),
            ApiError::Decode { body, error } => write!(f, "bad JSON ({error}): {body}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// Client of one coordinator's HTTP API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    /// Appended to the panic messages of wait helpers (the cluster's temp dir).
    context: Arc<str>,
    /// Sent as `Authorization: Bearer` (the test admin token by default).
    token: Option<Arc<str>>,
}

impl ApiClient {
    pub fn new(base_url: &str) -> Self {
        Self::with_context(base_url, "")
    }

    /// `context` is added to wait failures, e.g. where process output is kept.
    pub fn with_context(base_url: &str, context: &str) -> Self {
        // reqwest's TLS (enabled in the workspace by object_store) takes
        // rustls's process-wide provider: ring, as tonic uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("build the HTTP client");
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            context: context.into(),
            token: Some(crate::cluster::ADMIN_TOKEN.into()),
        }
    }

    /// The same client presenting `token` (`None`: no token at all).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(Into::into),
            ..self.clone()
        }
    }

    /// A request to `path` with the client's token: for calls this client
    /// has no method for (`send` it with [`ApiClient::call`]).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request; an error status is an [`ApiError::Status`].
    pub async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        // `request` added the token already; a second header would be sent.
        checked(request.send().await.map_err(ApiError::Transport)?).await
    }

    /// Sends a JSON request and decodes the JSON answer.
    pub async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        json(self.call(request).await?).await
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub async fn healthz(&self) -> Result<String, ApiError> {
        let response = self.send(self.http.get(self.url("/healthz"))).await?;
        response.text().await.map_err(ApiError::Transport)
    }

    pub async fn create_pipeline(
        &self,
        repo: &str,
        git_ref: &str,
    ) -> Result<PipelineView, ApiError> {
        self.create_pipeline_with(repo, git_ref, &[]).await
    }

    /// Creates a pipeline with pipeline variables (`KEY`, `VALUE`).
    pub async fn create_pipeline_with(
        &self,
        repo: &str,
        git_ref: &str,
        variables: &[(&str, &str)],
    ) -> Result<PipelineView, ApiError> {
        let body = CreatePipeline {
            repo: repo.to_owned(),
            project: None,
            git_ref: git_ref.to_owned(),
            variables: variables
                .iter()
                .map(|(key, value)| osprey_shared::pipeline::Variable {
                    key: (*key).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
        };
        let request = self.http.post(self.url("/api/v1/pipelines")).json(&body);
        json(self.send(request).await?).await
    }

    pub async fn pipeline(&self, id: PipelineId) -> Result<PipelineView, ApiError> {
        let request = self.http.get(self.url(&format!("/api/v1/pipelines/{id}")));
        json(self.send(request).await?).await
    }

    pub async fn cancel(&self, id: PipelineId) -> Result<PipelineView, ApiError> {
        let request = self
            .http
            .post(self.url(&format!("/api/v1/pipelines/{id}/cancel")));
        json(self.send(request).await?).await
    }

    pub async fn job(&self, id: JobId) -> Result<JobView, ApiError> {
        let request = self.http.get(self.url(&format!("/api/v1/jobs/{id}")));
        json(self.send(request).await?).await
    }

    pub async fn agents(&self) -> Result<Vec<AgentView>, ApiError> {
        json(self.send(self.http.get(self.url("/api/v1/agents"))).await?).await
    }

    /// The stored log bytes of a job from `offset` to the current end.
    pub async fn job_log_from(&self, id: JobId, offset: u64) -> Result<Vec<u8>, ApiError> {
        let request = self
            .http
            .get(self.url(&format!("/api/v1/jobs/{id}/log?offset={offset}")));
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(ApiError::Transport)?;
        Ok(bytes.to_vec())
    }

    /// The whole stored log of a job.
    pub async fn job_log(&self, id: JobId) -> Result<Vec<u8>, ApiError> {
        self.job_log_from(id, 0).await
    }

    /// Starts following a job's log from `offset`; read the body with
    /// `Response::chunk` until it ends (once the job has finished).
    pub async fn follow_log(&self, id: JobId, offset: u64) -> Result<reqwest::Response, ApiError> {
        let request = self.http.get(self.url(&format!(
            "/api/v1/jobs/{id}/log?offset={offset}&follow=true"
        )));
        self.send(request).await
    }

    /// Follows a job's log until the body ends; returns every byte received.
    pub async fn follow_log_to_end(&self, id: JobId) -> Result<Vec<u8>, ApiError> {
        let mut response = self.follow_log(id, 0).await?;
        let mut log = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(ApiError::Transport)? {
            log.extend_from_slice(&chunk);
        }
        Ok(log)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        checked(request.send().await.map_err(ApiError::Transport)?).await
    }
}

/// The response when its status is a success, else an [`ApiError::Status`].
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ApiError::Status {
        status: status.as_u16(),
        body,
    })
}

async fn json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, ApiError> {
    let body = response.text().await.map_err(ApiError::Transport)?;
    serde_json::from_str(&body).map_err(|error| ApiError::Decode {
        body,
        error: error.to_string(),
    })
}

/// Parsed `started_at` / `finished_at` of a job.
pub trait JobTimes {
    fn started(&self) -> OffsetDateTime;
    fn finished(&self) -> OffsetDateTime;
}

impl JobTimes for JobView {
    fn started(&self) -> OffsetDateTime {
        parse_time(&self.name, "started_at", self.started_at.as_deref())
    }

    fn finished(&self) -> OffsetDateTime {
        parse_time(&self.name, "finished_at", self.finished_at.as_deref())
    }
}

fn parse_time(job: &str, field: &str, value: Option<&str>) -> OffsetDateTime {
    let value = value.unwrap_or_else(|| panic!("job {job} has no {field}"));
    OffsetDateTime::parse(value, &Rfc3339)
        .unwrap_or_else(|error| panic!("job {job}: {field} {value:?} is not RFC 3339: {error}"))
}
