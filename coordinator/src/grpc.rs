//! The gRPC adapter: converts wire messages, calls [`Core`], maps errors.
//! No scheduling or state transitions live here.

use crate::core::{AttemptKey, Core};
use crate::engine::AttemptEnd;
use crate::error::CoreError;
use crate::storage::AppendResult;
use crate::tasks::Tasks;
use crate::throttle::{FailureThrottle, ThrottleSettings};
use crate::transfer::{self, UploadPart};
use futures::{Stream, StreamExt};
use osprey_proto::v1::{self, agent_message, agent_service_server::AgentService};
use osprey_shared::{Failure, FailureReason, JobId, JobStatus};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long an agent has to send `Hello` after opening a session.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `osprey.v1.AgentService` over a [`Core`].
pub struct AgentGrpc {
    core: Core,
    tasks: Tasks,
    max_artifact_bytes: u64,
    /// Wrong registration tokens per peer address.
    registrations: FailureThrottle,
}

impl AgentGrpc {
    pub fn new(core: Core, tasks: Tasks, max_artifact_bytes: u64) -> Self {
        AgentGrpc {
            core,
            tasks,
            max_artifact_bytes,
            registrations: FailureThrottle::new(ThrottleSettings::default()),
        }
    }
}

fn attempt_key(attempt: Option<v1::AttemptRef>) -> Result<AttemptKey, Status> {
    let attempt = attempt.ok_or_else(|| Status::invalid_argument("attempt is required"))?;
    Ok(AttemptKey {
        job: JobId(attempt.job_id),
        attempt_id: attempt.attempt_id,
        lease_epoch: attempt.lease_epoch,
        job_token: attempt.job_token,
    })
}

fn job_status(state: v1::JobState) -> Result<JobStatus, Status> {
    match state {
        v1::JobState::Running => Ok(JobStatus::Running),
        v1::JobState::Success => Ok(JobStatus::Success),
        v1::JobState::Failed => Ok(JobStatus::Failed),
        v1::JobState::Canceled => Ok(JobStatus::Canceled),
        v1::JobState::Unspecified => Err(Status::invalid_argument("state is required")),
    }
}

fn job_state(status: JobStatus) -> v1::JobState {
    match status {
        JobStatus::Running => v1::JobState::Running,
        JobStatus::Success => v1::JobState::Success,
        JobStatus::Failed => v1::JobState::Failed,
        JobStatus::Canceled => v1::JobState::Canceled,
        JobStatus::Created
        | JobStatus::Pending
        | JobStatus::Skipped
        | JobStatus::Manual
        | JobStatus::Scheduled
        | JobStatus::WaitingForResource => v1::JobState::Unspecified,
    }
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    /// Registration, slowed per peer address after a few wrong tokens (see
    /// [`crate::throttle`]): a blocked address is refused before its token
    /// is compared.
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let peer = request
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |address| address.ip());
        let now = Instant::now();
        if let Err(left) = self.registrations.check(peer, now) {
            tracing::debug!(%peer, "registration refused: address blocked");
            return Err(CoreError::Throttled {
                message: format!(
                    "too many failed registrations from {peer}; retry after {} ms",
                    left.as_millis().max(1)
                ),
                retry_after: left,
            }
            .into());
        }
        match self.core.register(request.into_inner()).await {
            Ok(registered) => {
                self.registrations.succeeded(peer);
                Ok(Response::new(registered))
            }
            Err(error @ CoreError::Unauthenticated(_)) => {
                let blocked = self.registrations.failed(peer, now);
                tracing::warn!(%peer, blocked_ms = blocked.map(|delay| delay.as_millis() as u64), "registration refused: wrong token");
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    type SessionStream = BoxStream<v1::CoordinatorMessage>;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let Some(v1::AgentMessage {
            kind: Some(agent_message::Kind::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first session message must be hello",
            ));
        };
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let handle = self.core.open_session(hello, sender).await?;
        let core = self.core.clone();
        let shutdown = self.tasks.token();
        // Reads the agent's messages until the stream ends or the coordinator
        // shuts down; closing the session drops the sender, ending the outbound stream.
        self.tasks.spawn("agent-session", async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    message = inbound.message() => match message {
                        Ok(Some(message)) => {
                            if let Err(error) = core.on_agent_message(&handle, message).await {
                                tracing::warn!(agent = %handle.agent_name, error = %error, "session message failed");
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::info!(agent = %handle.agent_name, error = %status.message(), "session stream broke");
                            break;
                        }
                    }
                }
            }
            core.close_session(&handle).await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            receiver,
        ))))
    }

    async fn append_log(
        &self,
        request: Request<v1::AppendLogRequest>,
    ) -> Result<Response<v1::AppendLogResponse>, Status> {
        let request = request.into_inner();
        let key = attempt_key(request.attempt)?;
        let result = self
            .core
            .append_log(&key, request.offset, &request.data)
            .await?;
        self.core.touch(&key);
        let (committed_offset, outcome) = match result {
            AppendResult::Appended(offset) => (offset, v1::AppendOutcome::Appended),
            AppendResult::Duplicate(offset) => (offset, v1::AppendOutcome::Duplicate),
            AppendResult::Gap(offset) => (offset, v1::AppendOutcome::Gap),
        };
        Ok(Response::new(v1::AppendLogResponse {
            committed_offset,
            outcome: outcome as i32,
        }))
    }

    async fn seal_log(
        &self,
        request: Request<v1::SealLogRequest>,
    ) -> Result<Response<v1::SealLogResponse>, Status> {
        let request = request.into_inner();
        let key = attempt_key(request.attempt)?;
        let (sealed, stored_size) = self
            .core
            .seal_log(&key, request.size, &request.sha256)
            .await?;
        Ok(Response::new(v1::SealLogResponse {
            sealed,
            stored_size,
        }))
    }

    async fn update_status(
        &self,
        request: Request<v1::UpdateStatusRequest>,
    ) -> Result<Response<v1::UpdateStatusResponse>, Status> {
        let request = request.into_inner();
        let state = job_status(request.state())?;
        let kind = request.failure_kind();
        let key = attempt_key(request.attempt)?;
        let message = (!request.failure_reason.is_empty()).then(|| request.failure_reason.clone());
        let end = match state {
            JobStatus::Success => Some(AttemptEnd::Success),
            JobStatus::Failed => Some(AttemptEnd::Failed {
                exit_code: request.exit_code,
                failure: Failure::new(
                    FailureReason::from(kind),
                    message.unwrap_or_else(|| "failed".to_owned()),
                ),
            }),
            JobStatus::Canceled => Some(AttemptEnd::Canceled { message }),
            _ => None,
        };
        let stored = self.core.update_status(&key, end).await?;
        Ok(Response::new(v1::UpdateStatusResponse {
            state: job_state(stored) as i32,
        }))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<v1::UploadArtifactRequest>>,
    ) -> Result<Response<v1::UploadArtifactResponse>, Status> {
        use v1::upload_artifact_request::Part;
        let mut inbound = request.into_inner();
        let Some(v1::UploadArtifactRequest {
            part: Some(Part::Header(header)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first upload message must be the header",
            ));
        };
        let key = attempt_key(header.attempt)?;
        let part_path = self.core.begin_artifact_upload(&key).await?;
        let parts = inbound.map(|message| message.map(UploadPart::from));
        let received =
            transfer::receive(parts, &part_path, self.max_artifact_bytes, "artifact").await?;
        self.core
            .finish_artifact_upload(&key, &part_path, &received)
            .await?;
        Ok(Response::new(v1::UploadArtifactResponse {
            size: received.size,
            sha256: received.sha256,
        }))
    }

    type DownloadArtifactStream = BoxStream<v1::DownloadArtifactResponse>;

    async fn download_artifact(
        &self,
        request: Request<v1::DownloadArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        use v1::download_artifact_response::Part;
        let request = request.into_inner();
        let key = attempt_key(request.attempt)?;
        let archive = self
            .core
            .open_artifact(&key, JobId(request.source_job_id))
            .await?;
        let stream = transfer::send(
            archive.reader,
            archive.size,
            archive.sha256,
            |header| v1::DownloadArtifactResponse {
                part: Some(Part::Header(header)),
            },
            |data| v1::DownloadArtifactResponse {
                part: Some(Part::Data(data)),
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn upload_cache(
        &self,
        request: Request<Streaming<v1::UploadCacheRequest>>,
    ) -> Result<Response<v1::UploadCacheResponse>, Status> {
        use v1::upload_cache_request::Part;
        let mut inbound = request.into_inner();
        let Some(v1::UploadCacheRequest {
            part: Some(Part::Header(header)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first upload message must be the header",
            ));
        };
        let key = attempt_key(header.attempt)?;
        let upload = self.core.begin_cache_upload(&key, &header.key).await?;
        let parts = inbound.map(|message| message.map(UploadPart::from));
        let received =
            transfer::receive(parts, &upload.part, self.max_artifact_bytes, "cache").await?;
        self.core
            .finish_cache_upload(&key, &upload, &received)
            .await?;
        Ok(Response::new(v1::UploadCacheResponse {
            size: received.size,
            sha256: received.sha256,
        }))
    }

    type DownloadCacheStream = BoxStream<v1::DownloadCacheResponse>;

    async fn download_cache(
        &self,
        request: Request<v1::DownloadCacheRequest>,
    ) -> Result<Response<Self::DownloadCacheStream>, Status> {
        use v1::download_cache_response::Part;
        let request = request.into_inner();
        let key = attempt_key(request.attempt)?;
        let cache = self.core.open_cache(&key, &request.key).await?;
        let stream = transfer::send(
            cache.reader,
            cache.size,
            cache.sha256,
            |header| v1::DownloadCacheResponse {
                part: Some(Part::Header(header)),
            },
            |data| v1::DownloadCacheResponse {
                part: Some(Part::Data(data)),
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
