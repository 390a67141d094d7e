//! Where artifact archives and caches are kept: a narrow object store
//! (`put` a verified local file under a key, `get` a stream back, `delete`,
//! `list`) behind [`ArtifactStore`], with a local directory ([`file`]) and an
//! S3-compatible bucket ([`s3`]) as backends. The store owns bytes only:
//! which key holds what, digests, authorisation and expiry belong to the
//! callers (`core::attempts`, `core::cache`). Every `put` is atomic: a reader
//! sees the whole previous object or the whole new one, never a part.
//!
//! Keys are relative `/`-separated paths made by the coordinator
//! (`artifacts/{job}/{attempt}-{uuid}.tar`, `cache/{sha}/{sha}.tar`); both
//! backends refuse anything else ([`validate_key`]) rather than trust them.

pub mod file;
pub mod s3;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// A stream of an object's bytes.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send + Unpin>>;

/// Errors of an artifact store; they name the key, never the backend's types.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactStoreError {
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("invalid artifact store {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("artifact store {operation} of {key:?} failed: {message}")]
    Backend {
        operation: &'static str,
        key: String,
        message: String,
    },
}

impl ArtifactStoreError {
    pub(crate) fn backend(
        operation: &'static str,
        key: &str,
        error: impl std::fmt::Display,
    ) -> Self {
        ArtifactStoreError::Backend {
            operation,
            key: key.to_owned(),
            message: error.to_string(),
        }
    }
}

pub type ArtifactStoreResult<T> = Result<T, ArtifactStoreError>;

/// An object opened for reading: its length, the last bytes asked for (see
/// [`ArtifactStore::get_with_tail`]) and a reader at its start.
pub struct StoredObject {
    pub size: u64,
    pub tail: Vec<u8>,
    pub reader: ObjectReader,
}

/// Keeps objects by key. Shared as `Arc<dyn ArtifactStore>`.
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores the bytes of the local file `source` as `key`, replacing any
    /// object there atomically (the last writer wins). The file is streamed,
    /// never held whole in memory, and left where it is.
    async fn put(&self, key: &str, source: &Path) -> ArtifactStoreResult<()>;

    /// Opens `key` with its last `tail` bytes read (fewer if it is shorter),
    /// all of one version of the object even if it is being replaced;
    /// `None` when there is no such object.
    async fn get_with_tail(
        &self,
        key: &str,
        tail: u64,
    ) -> ArtifactStoreResult<Option<StoredObject>>;

    /// Opens `key` for reading; `None` when there is no such object.
    async fn get(&self, key: &str) -> ArtifactStoreResult<Option<StoredObject>> {
        self.get_with_tail(key, 0).await
    }

    /// Deletes `key`; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> ArtifactStoreResult<()>;

    /// The keys under `prefix` (a key prefix ending in `/`), in no order.
    async fn list(&self, prefix: &str) -> ArtifactStoreResult<Vec<String>>;
}

/// Which store `--artifact-store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactStoreConfig {
    /// `file:///PATH`: a local directory.
    File(PathBuf),
    /// `s3://BUCKET/PREFIX`: a bucket, keys under `PREFIX/` (may be empty);
    /// endpoint, region and credentials from the `AWS_*` environment.
    S3 { bucket: String, prefix: String },
}

impl ArtifactStoreConfig {
    /// Parses `file:///PATH` or `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> ArtifactStoreResult<Self> {
        let invalid = |reason: &str| ArtifactStoreError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("a file store needs an absolute path: file:///PATH"));
            }
            return Ok(ArtifactStoreConfig::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("an S3 store needs a bucket: s3://BUCKET/PREFIX"));
            }
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty() {
                validate_key(prefix)
                    .map_err(|_| invalid("the S3 prefix is not a clean relative path"))?;
            }
            return Ok(ArtifactStoreConfig::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        Err(invalid("expected file:///PATH or s3://BUCKET/PREFIX"))
    }

    /// Opens the store (an S3 store checks nothing over the network here).
    pub fn open(&self) -> ArtifactStoreResult<Arc<dyn ArtifactStore>> {
        Ok(match self {
            ArtifactStoreConfig::File(root) => Arc::new(file::FileStore::new(root.clone())),
            ArtifactStoreConfig::S3 { bucket, prefix } => {
                Arc::new(s3::S3Store::from_env(bucket, prefix)?)
            }
        })
    }
}

/// Refuses keys that are not clean relative paths: empty, absolute, with
/// `.`/`..`/empty segments, backslashes or control characters.
pub fn validate_key(key: &str) -> ArtifactStoreResult<()> {
    let refuse = |reason| {
        Err(ArtifactStoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return refuse("empty");
    }
    if key.starts_with('/') {
        return refuse("absolute");
    }
    if key.chars().any(|c| c == '\\' || c.is_control()) {
        return refuse("backslash or control character");
    }
    if key
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return refuse("empty, `.` or `..` segment");
    }
    Ok(())
}

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_are_refused() {
        assert_eq!(
            ArtifactStoreConfig::parse("file:///srv/osprey").unwrap(),
            ArtifactStoreConfig::File(PathBuf::from("/srv/osprey"))
        );
        assert_eq!(
            ArtifactStoreConfig::parse("s3://bucket/ci/osprey/").unwrap(),
            ArtifactStoreConfig::S3 {
                bucket: "bucket".to_owned(),
                prefix: "ci/osprey".to_owned()
            }
        );
        assert_eq!(
            ArtifactStoreConfig::parse("s3://bucket").unwrap(),
            ArtifactStoreConfig::S3 {
                bucket: "bucket".to_owned(),
                prefix: String::new()
            }
        );
        for bad in [
            "file://relative",
            "s3:///prefix",
            "s3://b/../x",
            "http://x",
            "",
        ] {
            assert!(ArtifactStoreConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_clean_relative_keys_pass() {
        validate_key("artifacts/1/a-b.tar").unwrap();
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a/",
            "a\\b",
            "a\nb",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }
}
