//! The coordinator's error type and the one code table that maps it to both
//! gRPC status codes and HTTP statuses, so the two never disagree.

use osprey_shared::yaml::LintError;

/// Failure of a coordinator operation.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("invalid pipeline: {} error(s)", .0.len())]
    InvalidPipeline(Vec<LintError>),
    /// The file is valid but no pipeline results on this ref (workflow
    /// rules, no job left, or a planning error such as a variable cycle).
    #[error("pipeline not created: {reason}")]
    PipelineRefused { reason: String, errors: Vec<String> },
    #[error("{0}")]
    Unauthenticated(String),
    /// The call belongs to an attempt that is no longer the job's current one.
    #[error("stale lease: {0}")]
    StaleLease(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// The credential is genuine but no longer grants this: a job token
    /// whose attempt has ended.
    #[error("{0}")]
    PermissionDenied(String),
    /// The call is well-formed but the record it would change is closed: a
    /// sealed log, an artifact already recorded.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many failed attempts from one address; try again after the delay.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: std::time::Duration,
    },
    /// An `Idempotency-Key` seen before with another request.
    #[error("{0}")]
    IdempotencyMismatch(String),
    /// The request body is larger than the API accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("storage: {0}")]
    Storage(crate::storage::StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Error kinds, each with one gRPC and one HTTP meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    InvalidArgument,
    Unprocessable,
    Unauthenticated,
    PermissionDenied,
    FailedPrecondition,
    ResourceExhausted,
    /// Rate limited: gRPC `RESOURCE_EXHAUSTED`, HTTP 429.
    TooManyRequests,
    /// HTTP 413; on gRPC the same `RESOURCE_EXHAUSTED` as any limit.
    PayloadTooLarge,
    Internal,
}

impl ErrorCode {
    pub fn grpc(self) -> tonic::Code {
        match self {
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::InvalidArgument | ErrorCode::Unprocessable => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::ResourceExhausted
            | ErrorCode::TooManyRequests
            | ErrorCode::PayloadTooLarge => tonic::Code::ResourceExhausted,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    pub fn http(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
            ErrorCode::ResourceExhausted | ErrorCode::PayloadTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl CoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::NotFound(_) => ErrorCode::NotFound,
            CoreError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            CoreError::InvalidPipeline(_)
            | CoreError::PipelineRefused { .. }
            | CoreError::IdempotencyMismatch(_) => ErrorCode::Unprocessable,
            CoreError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            CoreError::StaleLease(_) | CoreError::FailedPrecondition(_) => {
                ErrorCode::FailedPrecondition
            }
            CoreError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            CoreError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            CoreError::Throttled { .. } => ErrorCode::TooManyRequests,
            CoreError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            CoreError::Storage(_) | CoreError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<CoreError> for tonic::Status {
    fn from(error: CoreError) -> Self {
        if matches!(error.code(), ErrorCode::Internal) {
            tracing::error!(error = %error, "internal error");
        }
        let mut status = tonic::Status::new(error.code().grpc(), error.to_string());
        if let CoreError::Throttled { retry_after, .. } = &error {
            // As gRPC's retry-pushback header: whole milliseconds.
            if let Ok(value) = retry_after.as_millis().to_string().parse() {
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", value);
            }
        }
        status
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
