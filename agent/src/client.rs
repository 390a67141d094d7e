//! The agent's side of the gRPC contract: the channel (plain or TLS), the
//! bearer-token interceptor, and [`CoordinatorApi`], the narrow trait the job
//! runner calls for job-scoped RPCs, so tests can put a fake behind it. Errors
//! are classified once here ([`CallError`]) so every caller retries the same way.

use crate::credentials::Credentials;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use osprey_proto::v1::agent_service_client::AgentServiceClient;
use osprey_proto::v1::{
    self as pb, upload_artifact_request, AttemptRef, DownloadArtifactRequest, RegisterRequest,
    SealLogRequest, UpdateStatusRequest, UploadArtifactRequest,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// Largest data chunk of an artifact upload.
pub const ARTIFACT_CHUNK: usize = 1 << 20;

/// The authenticated client of every call but `Register`.
pub type AgentClient = AgentServiceClient<InterceptedService<Channel, BearerAuth>>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid coordinator url {url}: {source}")]
    Url {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("cannot read tls ca {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid tls settings: {0}")]
    Tls(tonic::transport::Error),
    #[error("agent token is not valid metadata")]
    Token,
}

/// A lazily connected channel: it (re)connects on use, so a coordinator that
/// is down shows up as `UNAVAILABLE` answers, which callers retry.
pub fn channel(url: &str, tls_ca: Option<&Path>) -> Result<Channel, ConnectError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|source| ConnectError::Url {
            url: url.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        // Detects a dead peer on the long-lived session stream.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let tls = match trust(url, tls_ca) {
        Trust::Plain => None,
        Trust::PublicRoots => Some(ClientTlsConfig::new().with_webpki_roots()),
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Ca {
                path: path.to_owned(),
                source,
            })?;
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        }
    };
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(ConnectError::Tls)?;
    }
    Ok(endpoint.connect_lazy())
}

/// Which certificates the agent trusts for a coordinator url.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust<'a> {
    /// `http://`: no TLS, so no CA is read even when one is configured.
    Plain,
    /// `https://` without `tls_ca`: the public web PKI (Mozilla's roots,
    /// compiled in via `webpki-roots`, so no system store is needed).
    PublicRoots,
    /// `https://` with `tls_ca`: only the CA(s) in that PEM file, so a
    /// private CA cannot be bypassed by a publicly signed certificate.
    Ca(&'a Path),
}

/// Decides the trust for `url`; the scheme is compared case-insensitively
/// like every URI scheme.
pub fn trust<'a>(url: &str, tls_ca: Option<&'a Path>) -> Trust<'a> {
    let https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    match (https, tls_ca) {
        (false, _) => Trust::Plain,
        (true, None) => Trust::PublicRoots,
        (true, Some(path)) => Trust::Ca(path),
    }
}

/// Adds `authorization: Bearer <agent token>` to every call.
#[derive(Clone)]
pub struct BearerAuth {
    value: MetadataValue<Ascii>,
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(request)
    }
}

/// The authenticated client for `credentials`.
pub fn authenticated(
    channel: Channel,
    credentials: &Credentials,
) -> Result<AgentClient, ConnectError> {
    let value = format!("Bearer {}", credentials.agent_token)
        .parse()
        .map_err(|_| ConnectError::Token)?;
    Ok(AgentServiceClient::with_interceptor(
        channel,
        BearerAuth { value },
    ))
}

/// Calls `Register` once.
pub async fn register(channel: Channel, request: RegisterRequest) -> Result<Credentials, Status> {
    let response = AgentServiceClient::new(channel)
        .register(request)
        .await?
        .into_inner();
    Ok(Credentials {
        agent_id: response.agent_id,
        agent_token: response.agent_token,
    })
}

/// How a job-scoped call failed, in the terms callers act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// `FAILED_PRECONDITION stale lease` or `UNAUTHENTICATED`: the attempt is
    /// no longer ours; kill the copy and report nothing more.
    #[error("attempt fenced: {0}")]
    Fenced(String),
    /// `RESOURCE_EXHAUSTED`: a limit was hit (log size, artifact size).
    #[error("limit exceeded: {0}")]
    Exhausted(String),
    /// Worth retrying: coordinator down, restarting, or the network broke.
    #[error("transient: {0}")]
    Transient(String),
    /// Refused for good for another reason.
    #[error("refused: {0}")]
    Refused(String),
    /// A download ended cleanly with other bytes than its header announced:
    /// the stored archive is corrupt, and asking again gives the same bytes.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        let message = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::FailedPrecondition if status.message().starts_with("stale lease") => {
                Self::Fenced(message)
            }
            Code::Unauthenticated | Code::PermissionDenied => Self::Fenced(message),
            Code::ResourceExhausted => Self::Exhausted(message),
            Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled => Self::Transient(message),
            _ => Self::Refused(message),
        }
    }
}

/// Answer to an `AppendLog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReply {
    pub committed_offset: u64,
    pub outcome: pb::AppendOutcome,
}

/// A finished artifact archive on disk, with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// The job-scoped calls, each carrying the attempt's fencing triple.
pub trait CoordinatorApi: Send + Sync + 'static {
    fn append_log(
        &self,
        attempt: AttemptRef,
        offset: u64,
        data: Bytes,
    ) -> BoxFuture<'_, Result<AppendReply, CallError>>;
    /// Returns whether the coordinator sealed the log (false: size or digest differ).
    fn seal_log(
        &self,
        attempt: AttemptRef,
        size: u64,
        sha256: String,
    ) -> BoxFuture<'_, Result<bool, CallError>>;
    fn update_status(&self, request: UpdateStatusRequest) -> BoxFuture<'_, Result<(), CallError>>;
    fn upload_artifact<'a>(
        &'a self,
        attempt: AttemptRef,
        archive: &'a ArchiveFile,
    ) -> BoxFuture<'a, Result<(), CallError>>;
    /// Downloads `source_job`'s archive to `dest`, verified; `Ok(false)` when it has none.
    fn download_artifact<'a>(
        &'a self,
        attempt: AttemptRef,
        source_job: u64,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<bool, CallError>>;
    /// Saves `archive` as the cache `key` of the job's repository. The default
    /// refuses, so fakes that do not exercise caches need not implement it.
    fn upload_cache<'a>(
        &'a self,
        attempt: AttemptRef,
        key: &'a str,
        archive: &'a ArchiveFile,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        let _ = (attempt, key, archive);
        Box::pin(async { Err(CallError::Refused("caches are not supported here".into())) })
    }
    /// Downloads the cache `key` of the job's repository to `dest`, verified;
    /// `Ok(false)` when there is none (the default: never any).
    fn download_cache<'a>(
        &'a self,
        attempt: AttemptRef,
        key: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        let _ = (attempt, key, dest);
        Box::pin(async { Ok(false) })
    }
}

/// [`CoordinatorApi`] over the real gRPC client.
#[derive(Clone)]
pub struct GrpcApi {
    pub client: AgentClient,
}

impl CoordinatorApi for GrpcApi {
    fn append_log(
        &self,
        attempt: AttemptRef,
        offset: u64,
        data: Bytes,
    ) -> BoxFuture<'_, Result<AppendReply, CallError>> {
        Box::pin(async move {
            let request = pb::AppendLogRequest {
                attempt: Some(attempt),
                offset,
                data,
            };
            let response = self.client.clone().append_log(request).await?.into_inner();
            Ok(AppendReply {
                committed_offset: response.committed_offset,
                outcome: response.outcome(),
            })
        })
    }

    fn seal_log(
        &self,
        attempt: AttemptRef,
        size: u64,
        sha256: String,
    ) -> BoxFuture<'_, Result<bool, CallError>> {
        Box::pin(async move {
            let request = SealLogRequest {
                attempt: Some(attempt),
                size,
                sha256,
            };
            Ok(self
                .client
                .clone()
                .seal_log(request)
                .await?
                .into_inner()
                .sealed)
        })
    }

    fn update_status(&self, request: UpdateStatusRequest) -> BoxFuture<'_, Result<(), CallError>> {
        Box::pin(async move {
            self.client.clone().update_status(request).await?;
            Ok(())
        })
    }

    fn upload_artifact<'a>(
        &'a self,
        attempt: AttemptRef,
        archive: &'a ArchiveFile,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let file = tokio::fs::File::open(&archive.path)
                .await
                .map_err(|err| CallError::Refused(format!("cannot open archive: {err}")))?;
            let header = UploadArtifactRequest {
                part: Some(upload_artifact_request::Part::Header(pb::ArtifactHeader {
                    attempt: Some(attempt),
                })),
            };
            let trailer = UploadArtifactRequest {
                part: Some(upload_artifact_request::Part::Trailer(
                    pb::ArtifactTrailer {
                        size: archive.size,
                        sha256: archive.sha256.clone(),
                    },
                )),
            };
            let data = file_chunks(file, |chunk| UploadArtifactRequest {
                part: Some(upload_artifact_request::Part::Data(chunk)),
            });
            let stream = futures::stream::iter([header])
                .chain(data)
                .chain(futures::stream::iter([trailer]));
            let response = self
                .client
                .clone()
                .upload_artifact(stream)
                .await?
                .into_inner();
            check_stored(archive, response.size, &response.sha256)
        })
    }

    fn download_artifact<'a>(
        &'a self,
        attempt: AttemptRef,
        source_job: u64,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        Box::pin(async move {
            let request = DownloadArtifactRequest {
                attempt: Some(attempt),
                source_job_id: source_job,
            };
            let mut stream = match self.client.clone().download_artifact(request).await {
                Ok(response) => response.into_inner(),
                Err(status) if status.code() == Code::NotFound => return Ok(false),
                Err(status) => return Err(status.into()),
            };
            let local =
                |err: std::io::Error| CallError::Refused(format!("cannot write archive: {err}"));
            let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
            let mut hasher = crate::artifacts::Sha256Writer::default();
            let mut expected = None;
            while let Some(message) = stream.message().await? {
                match message.part {
                    Some(pb::download_artifact_response::Part::Header(header)) => {
                        expected = Some(header)
                    }
                    Some(pb::download_artifact_response::Part::Data(data)) => {
                        hasher.update(&data);
                        file.write_all(&data).await.map_err(local)?;
                    }
                    None => {}
                }
            }
            file.flush().await.map_err(local)?;
            let (size, sha256) = hasher.finish();
            check_downloaded(
                expected.map(|header| (header.size, header.sha256)),
                size,
                &sha256,
            )
            .map(|()| true)
        })
    }

    fn upload_cache<'a>(
        &'a self,
        attempt: AttemptRef,
        key: &'a str,
        archive: &'a ArchiveFile,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(crate::cache::upload(&self.client, attempt, key, archive))
    }

    fn download_cache<'a>(
        &'a self,
        attempt: AttemptRef,
        key: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        Box::pin(crate::cache::download(&self.client, attempt, key, dest))
    }
}

/// An archive as a stream of upload messages of up to [`ARTIFACT_CHUNK`]
/// bytes, each made by `wrap`. Whole chunks are filled so the count of
/// messages stays small; a read error ends the stream early, which the
/// coordinator's size and digest check then refuses.
pub(crate) fn file_chunks<T>(
    file: tokio::fs::File,
    wrap: impl Fn(Vec<u8>) -> T + Send + 'static,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(Some((file, wrap)), |state| async move {
        let (mut file, wrap) = state?;
        let mut chunk = vec![0; ARTIFACT_CHUNK];
        let mut filled = 0;
        while filled < chunk.len() {
            match file.read(&mut chunk[filled..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        if filled == 0 {
            return None;
        }
        chunk.truncate(filled);
        let message = wrap(chunk);
        Some((message, Some((file, wrap))))
    })
}

/// Whether a finished download is what its header (`expected` size and
/// sha256) announced. A torn transfer ends the gRPC stream with an error,
/// which the caller retries; a stream that ended cleanly with other bytes
/// means the stored archive no longer matches its digest, which no retry
/// mends: [`CallError::Corrupt`], at once.
pub(crate) fn check_downloaded(
    expected: Option<(u64, String)>,
    size: u64,
    sha256: &str,
) -> Result<(), CallError> {
    match expected {
        Some((want_size, want_sha))
            if want_size == size && want_sha.eq_ignore_ascii_case(sha256) =>
        {
            Ok(())
        }
        Some((want_size, want_sha)) => Err(CallError::Corrupt(format!(
            "its sha256 digest did not match: downloaded {size} bytes with sha256 {sha256}, \
             the coordinator recorded {want_size} bytes with sha256 {want_sha}"
        ))),
        None => Err(CallError::Transient("download without header".into())),
    }
}

/// Whether the coordinator stored exactly the archive that was sent.
pub(crate) fn check_stored(
    archive: &ArchiveFile,
    size: u64,
    sha256: &str,
) -> Result<(), CallError> {
    if sha256 != archive.sha256 || size != archive.size {
        return Err(CallError::Transient(format!(
            "coordinator stored {size} bytes with sha256 {sha256}, sent {} bytes with sha256 {}",
            archive.size, archive.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_other_than_its_header_is_corrupt_and_one_without_a_header_transient() {
        let sha = "ab".repeat(32);
        assert_eq!(
            check_downloaded(Some((3, sha.clone())), 3, &sha.to_uppercase()),
            Ok(())
        );
        let error = check_downloaded(Some((3, sha.clone())), 3, &"cd".repeat(32)).unwrap_err();
        assert!(matches!(error, CallError::Corrupt(_)), "{error}");
        assert!(
            error.to_string().contains("digest did not match"),
            "{error}"
        );
        let short = check_downloaded(Some((3, sha.clone())), 2, &sha).unwrap_err();
        assert!(matches!(short, CallError::Corrupt(_)), "{short}");
        assert!(matches!(
            check_downloaded(None, 3, &sha),
            Err(CallError::Transient(_))
        ));
    }

    #[test]
    fn https_trusts_the_ca_when_given_and_the_public_roots_otherwise() {
        let ca = Path::new("/etc/osprey/ca.pem");
        assert_eq!(trust("https://ci.example.com", Some(ca)), Trust::Ca(ca));
        assert_eq!(trust("HTTPS://ci.example.com", None), Trust::PublicRoots);
        assert_eq!(trust("http://ci.example.com", Some(ca)), Trust::Plain);
        assert_eq!(trust("http://ci.example.com", None), Trust::Plain);
    }

    #[tokio::test]
    async fn an_http_url_does_not_read_the_ca_file() {
        let missing = Path::new("/nonexistent/osprey-ca.pem");
        assert!(channel("http://127.0.0.1:1", Some(missing)).is_ok());
        assert!(matches!(
            channel("https://127.0.0.1:1", Some(missing)),
            Err(ConnectError::Ca { .. })
        ));
    }

    #[tokio::test]
    async fn https_without_a_ca_builds_a_tls_channel() {
        // Before the public roots were compiled in, this was a plain-text
        // channel to an https url, which no TLS server answers.
        assert!(channel("https://ci.example.com:8710", None).is_ok());
    }
}
