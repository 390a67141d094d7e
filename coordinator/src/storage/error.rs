//! The store's error: what went wrong, in the domain's words. No driver
//! type appears here; a backend's own error is carried as text.

use crate::error::CoreError;

/// Failure of a store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    /// The call belongs to an attempt that is no longer the job's current one.
    #[error("stale lease: {0}")]
    StaleLease(String),
    /// The job token's attempt has ended.
    #[error("{0}")]
    AttemptEnded(String),
    /// The record is closed: a sealed log, an archive already recorded.
    #[error("{0}")]
    Closed(String),
    /// The event does not apply (a job that is not manual played).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// The record exists already (a project's name is taken).
    #[error("{0}")]
    Conflict(String),
    /// A stored value does not parse (a status no version wrote).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed (connection, constraint, I/O).
    #[error("database: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt(format!("column {index}: {source}"))
            }
            sqlx::Error::Decode(source) => StoreError::Corrupt(source.to_string()),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(format!("migration failed: {error}"))
    }
}

impl From<StoreError> for CoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(text) => CoreError::NotFound(text),
            StoreError::StaleLease(text) => CoreError::StaleLease(text),
            StoreError::AttemptEnded(text) => CoreError::PermissionDenied(text),
            StoreError::Closed(text) => CoreError::FailedPrecondition(text),
            StoreError::Refused(text) => CoreError::InvalidArgument(text),
            StoreError::LimitExceeded(text) => CoreError::ResourceExhausted(text),
            StoreError::Conflict(text) => CoreError::FailedPrecondition(text),
            error @ (StoreError::Corrupt(_) | StoreError::Backend(_)) => CoreError::Storage(error),
        }
    }
}
