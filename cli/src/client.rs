//! A small typed client over the coordinator's HTTP API, and the way its
//! errors are shown to a person: an unreachable coordinator names the URL, an
//! HTTP error prints the body's `error` (and each lint line of `errors`).

use crate::args::SecretArg;
use anyhow::Context as _;
use osprey_shared::api::{CreatePipeline, ErrorBody, JobView, PipelineView};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
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
        write!(f, "{} ({})", self.body.error, self.status)?;
        if self.status == StatusCode::UNAUTHORIZED {
            f.write_str(": pass --token, OSPREY_TOKEN or ~/.config/osprey/token")?;
        }
        Ok(())
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

/// How to reach and authenticate to the coordinator.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer` on every request.
    pub token: Option<SecretArg>,
    /// Extra PEM root certificate(s) for an https:// coordinator.
    pub tls_ca: Option<PathBuf>,
}

/// Client of one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, options: &ClientOptions) -> anyhow::Result<Self> {
        let lower = base_url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            // reqwest would only say "URL scheme is not allowed".
            anyhow::bail!("--url must start with http:// or https:// (got {base_url})");
        }
        // reqwest's TLS takes rustls's process-wide provider: ring, as tonic
        // uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(token) = &options.token {
            let mut value = HeaderValue::try_from(format!("Bearer {}", token.0))
                // The message must not quote the token.
                .map_err(|_| {
                    anyhow::anyhow!("the API token holds characters an HTTP header cannot carry")
                })?;
            value.set_sensitive(true);
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(path) = &options.tls_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
            if certificates.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", path.display());
            }
            builder = builder.tls_certs_merge(certificates);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Creates a pipeline from a repository (`POST /api/v1/pipelines`).
    pub async fn create_pipeline(&self, request: &CreatePipeline) -> anyhow::Result<PipelineView> {
        self.create_pipeline_at("/api/v1/pipelines", request).await
    }

    /// Creates a pipeline by posting `request` to `path` under a fresh
    /// `Idempotency-Key`, retrying with the same key while the coordinator
    /// cannot be reached or the connection breaks before the answer: a retry
    /// of a request that did arrive gets the pipeline it created, never a
    /// second one.
    pub async fn create_pipeline_at(
        &self,
        path: &str,
        request: &impl Serialize,
    ) -> anyhow::Result<PipelineView> {
        let key = uuid::Uuid::new_v4().to_string();
        let mut delay = CREATE_RETRY_FIRST_DELAY;
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .post(self.url(path))
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

    /// `GET path` → JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.send(self.http.get(self.url(path))).await?;
        response.json().await.context("unreadable answer JSON")
    }

    /// `GET path?query` → JSON.
    pub async fn get_json_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &impl Serialize,
    ) -> anyhow::Result<T> {
        let response = self
            .send(self.http.get(self.url(path)).query(query))
            .await?;
        response.json().await.context("unreadable answer JSON")
    }

    /// `POST path` with a JSON body (or none) → JSON.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        response.json().await.context("unreadable answer JSON")
    }

    /// `PUT path` with a JSON body → JSON.
    pub async fn put_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> anyhow::Result<T> {
        let response = self.send(self.http.put(self.url(path)).json(body)).await?;
        response.json().await.context("unreadable answer JSON")
    }

    /// `DELETE path?query`; any success status (204) will do.
    pub async fn delete(&self, path: &str, query: &impl Serialize) -> anyhow::Result<()> {
        self.send(self.http.delete(self.url(path)).query(query))
            .await
            .map(drop)
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

/// One path segment, percent-encoded (all but `A-Z a-z 0-9 - . _ ~`).
pub fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("my-app.v2_x~"), "my-app.v2_x~");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn unauthorized_says_how_to_pass_a_token() {
        let error = HttpError {
            status: StatusCode::UNAUTHORIZED,
            body: ErrorBody {
                error: "missing or invalid API token".into(),
                errors: Vec::new(),
            },
        };
        assert_eq!(
            error.to_string(),
            "missing or invalid API token (401 Unauthorized): pass --token, OSPREY_TOKEN or ~/.config/osprey/token"
        );
        let forbidden = HttpError {
            status: StatusCode::FORBIDDEN,
            body: ErrorBody {
                error: "the token's role is read".into(),
                errors: Vec::new(),
            },
        };
        assert_eq!(
            forbidden.to_string(),
            "the token's role is read (403 Forbidden)"
        );
    }

    #[test]
    fn the_token_header_is_not_in_debug_output() {
        let options = ClientOptions {
            token: Some(SecretArg("tok-very-secret".into())),
            tls_ca: None,
        };
        let client = Client::new("http://127.0.0.1:1", &options).unwrap();
        assert!(!format!("{client:?}").contains("tok-very-secret"));
        assert!(!format!("{options:?}").contains("tok-very-secret"));
    }

    #[test]
    fn a_url_without_an_http_scheme_is_refused_with_the_flag_named() {
        let options = ClientOptions {
            token: None,
            tls_ca: None,
        };
        for url in ["127.0.0.1:8710", "ftp://127.0.0.1:8710"] {
            let error = Client::new(url, &options).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("--url must start with http:// or https:// (got {url})")
            );
        }
        assert!(Client::new("HTTPS://127.0.0.1:8710", &options).is_ok());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ClientOptions {
            token: None,
            tls_ca: Some(dir.path().join("nope.pem")),
        };
        let error = Client::new("https://127.0.0.1:1", &missing).unwrap_err();
        assert!(format!("{error:#}").contains("nope.pem"), "{error:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let options = ClientOptions {
            token: None,
            tls_ca: Some(empty),
        };
        assert!(Client::new("https://127.0.0.1:1", &options).is_err());
    }
}
