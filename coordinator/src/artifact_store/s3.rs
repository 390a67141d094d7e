//! The artifact store in an S3-compatible bucket, through `object_store`:
//! key `a/b.tar` is the object `PREFIX/a/b.tar`. Endpoint, region and
//! credentials come from the usual `AWS_*` variables (`AWS_ENDPOINT_URL`,
//! `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP=true` for a
//! plain-http endpoint); requests are path-style when an endpoint is set, as
//! S3-compatible servers expect.
//!
//! A put streams the file in [`PART_SIZE`] parts: one `PutObject` when it is
//! smaller, else a multipart upload (aborted on error), so an archive is
//! never whole in memory. Both are atomic in S3: the object appears whole
//! once completed. A get pins one version by its ETag (`If-Match`), so the
//! tail and the stream cannot come from two uploads of a replaced cache.

use super::{validate_key, ArtifactStore, ArtifactStoreError, ArtifactStoreResult, StoredObject};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Size of one part of a multipart upload (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once: memory per upload is about this many parts.
const PARTS_IN_FLIGHT: usize = 2;
/// Tries of a get whose object is replaced between its requests.
const GET_TRIES: usize = 3;

/// Objects in a bucket under a prefix.
#[derive(Debug)]
pub struct S3Store {
    store: Arc<dyn ObjectStore>,
    /// Empty, or a clean relative path without a trailing `/`.
    prefix: String,
}

impl S3Store {
    /// A store on `bucket` configured from the process's `AWS_*` environment.
    pub fn from_env(bucket: &str, prefix: &str) -> ArtifactStoreResult<Self> {
        let vars: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .collect();
        Self::with_env(bucket, prefix, &vars)
    }

    /// A store on `bucket` configured from these `AWS_*` variables only
    /// (tests give theirs without touching the process environment).
    pub fn with_env(
        bucket: &str,
        prefix: &str,
        vars: &[(String, String)],
    ) -> ArtifactStoreResult<Self> {
        // reqwest is built without a default provider (one provider, ring,
        // for the whole process: tonic's TLS uses it too). Already installed
        // is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        let mut endpoint_set = false;
        for (name, value) in vars {
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                endpoint_set |= matches!(key, AmazonS3ConfigKey::Endpoint) && !value.is_empty();
                builder = builder.with_config(key, value);
            }
        }
        if endpoint_set {
            builder = builder.with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|error| ArtifactStoreError::InvalidUrl {
                url: format!("s3://{bucket}/{prefix}"),
                reason: error.to_string(),
            })?;
        Ok(S3Store {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn location(&self, key: &str) -> ArtifactStoreResult<ObjectPath> {
        validate_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|error| ArtifactStoreError::backend("naming", key, error))
    }

    /// One attempt at a consistent get; `Ok(Err(()))` when the object
    /// changed between the requests.
    async fn try_get(
        &self,
        key: &str,
        location: &ObjectPath,
        tail: u64,
    ) -> ArtifactStoreResult<Result<Option<StoredObject>, ()>> {
        let meta = match self.store.head(location).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(Ok(None)),
            Err(error) => return Err(ArtifactStoreError::backend("get", key, error)),
        };
        let pinned = |range| GetOptions {
            if_match: meta.e_tag.clone(),
            range,
            ..Default::default()
        };
        let tail = tail.min(meta.size);
        let tail_bytes = if tail > 0 {
            let range = GetRange::Bounded(meta.size - tail..meta.size);
            match self.store.get_opts(location, pinned(Some(range))).await {
                Ok(result) => result
                    .bytes()
                    .await
                    .map_err(|error| ArtifactStoreError::backend("get", key, error))?
                    .to_vec(),
                Err(
                    object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
                ) => return Ok(Err(())),
                Err(error) => return Err(ArtifactStoreError::backend("get", key, error)),
            }
        } else {
            Vec::new()
        };
        let result = match self.store.get_opts(location, pinned(None)).await {
            Ok(result) => result,
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => return Ok(Err(())),
            Err(error) => return Err(ArtifactStoreError::backend("get", key, error)),
        };
        let size = result.meta.size;
        let stream = result.into_stream().map_err(std::io::Error::other);
        Ok(Ok(Some(StoredObject {
            size,
            tail: tail_bytes,
            reader: Box::pin(tokio_util::io::StreamReader::new(stream)),
        })))
    }
}

#[async_trait::async_trait]
impl ArtifactStore for S3Store {
    async fn put(&self, key: &str, source: &Path) -> ArtifactStoreResult<()> {
        let location = self.location(key)?;
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(|error| ArtifactStoreError::backend("put", key, error))?;
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            location,
            PART_SIZE,
        )
        .with_max_concurrency(PARTS_IN_FLIGHT);
        let written = async {
            tokio::io::copy(&mut file, &mut writer).await?;
            writer.shutdown().await
        }
        .await;
        if let Err(error) = written {
            // Drops the parts uploaded so far; the previous object stays.
            let _ = writer.abort().await;
            return Err(ArtifactStoreError::backend("put", key, error));
        }
        Ok(())
    }

    async fn get_with_tail(
        &self,
        key: &str,
        tail: u64,
    ) -> ArtifactStoreResult<Option<StoredObject>> {
        let location = self.location(key)?;
        for _ in 0..GET_TRIES {
            if let Ok(found) = self.try_get(key, &location, tail).await? {
                return Ok(found);
            }
        }
        Err(ArtifactStoreError::backend(
            "get",
            key,
            "the object kept changing while it was opened",
        ))
    }

    async fn delete(&self, key: &str) -> ArtifactStoreResult<()> {
        let location = self.location(key)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(ArtifactStoreError::backend("delete", key, error)),
        }
    }

    async fn list(&self, prefix: &str) -> ArtifactStoreResult<Vec<String>> {
        let trimmed = prefix.trim_end_matches('/');
        let location = if trimmed.is_empty() {
            (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()))
        } else {
            Some(self.location(trimmed)?)
        };
        let objects: Vec<_> = self
            .store
            .list(location.as_ref())
            .try_collect()
            .await
            .map_err(|error| ArtifactStoreError::backend("list", prefix, error))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(objects
            .into_iter()
            .filter_map(|meta| {
                meta.location
                    .as_ref()
                    .strip_prefix(strip.as_str())
                    .map(str::to_owned)
            })
            .collect())
    }
}
