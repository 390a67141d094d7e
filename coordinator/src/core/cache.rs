//! Caches of GitLab's `cache:` keyword: one tar per repository and key, kept
//! in the artifact store as `cache/<sha256(repo)>/<sha256(key)>.tar` (with the
//! default file store, that is `DATA_DIR/cache/...`, where caches always
//! were). Any current attempt of a job whose pipeline runs on that repository
//! may read or replace one (authorised by its job token, as artifacts are);
//! jobs of other repositories never see it. Hashing both names keeps any key
//! safe as an object name.
//!
//! An upload is received into a local part file, its size and sha256 checked
//! against the trailer, and only then put in the store, which replaces the
//! object atomically (the last writer wins): a crash or a broken upload never
//! leaves a half cache, and a reader that opened the previous version keeps
//! reading it whole. The transport adapter streams the bytes; this module
//! owns the names, the checks and the put.
//!
//! The digest checked at upload is recorded in the stored object itself, as a
//! fixed trailer after the tar ([`RECORD_MAGIC`], size, sha256), so that the
//! record and the bytes are replaced by one put. A download announces the
//! recorded digest, not one taken from the stored bytes: a cache damaged
//! where it is stored no longer matches, and the agent finds out (as it does
//! for artifacts, whose digest is in the database). The trailer sits past the
//! tar's end-of-archive blocks, where tar readers do not look; objects stored
//! before it existed are digested when opened, as they always were.

use super::attempts::{store_error, AttemptKey};
use super::Core;
use crate::artifact_store::{ArtifactStore, ObjectReader};
use crate::error::{CoreError, CoreResult};
use crate::transfer::Received;
use osprey_shared::pipeline::cache_key_problem;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// Longest cache key accepted (the key is hashed for the file name; this only
/// bounds what a request may carry).
const MAX_KEY_BYTES: usize = 1024;

/// Opens the trailer recording a stored cache's size and sha256.
const RECORD_MAGIC: &[u8; 8] = b"OSPCACH1";
/// Magic, size (u64, big-endian), raw sha256.
const RECORD_LEN: u64 = 8 + 8 + 32;

/// Where an upload writes, and the object it replaces once verified.
#[derive(Debug)]
pub struct CacheUpload {
    pub part: PathBuf,
    object: String,
}

/// A cache opened for reading: a reader at its start (send only `size`
/// bytes: the record follows), its size and digest.
pub struct OpenCache {
    pub reader: ObjectReader,
    pub size: u64,
    pub sha256: String,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn internal(context: &str) -> impl FnOnce(std::io::Error) -> CoreError + '_ {
    move |error| CoreError::Internal(format!("{context}: {error}"))
}

/// The store key of the cache `key` of repository `repo`.
fn cache_object(repo: &str, key: &str) -> String {
    format!("cache/{}/{}.tar", sha256_hex(repo), sha256_hex(key))
}

impl Core {
    /// Authorises `attempt` and returns the repository of its pipeline.
    async fn cache_repo(&self, attempt: &AttemptKey, key: &str) -> CoreResult<String> {
        if let Some(problem) = cache_key_problem(key) {
            return Err(CoreError::InvalidArgument(format!(
                "cache key {key:?} {problem}"
            )));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(CoreError::InvalidArgument(format!(
                "cache key longer than {MAX_KEY_BYTES} bytes"
            )));
        }
        let job = self.authorize(attempt).await?;
        let pipeline = self
            .store()
            .pipeline(job.pipeline_id())
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("pipeline of job {}", attempt.job)))?;
        Ok(pipeline.repo)
    }

    /// Starts a cache upload: returns where to write the archive while it arrives.
    pub async fn begin_cache_upload(
        &self,
        attempt: &AttemptKey,
        key: &str,
    ) -> CoreResult<CacheUpload> {
        let repo = self.cache_repo(attempt, key).await?;
        // Unique per upload: two jobs may save the same key at once.
        let part = self.upload_part(&format!("cache-{}-{}", attempt.job, attempt.attempt_id));
        Ok(CacheUpload {
            part,
            object: cache_object(&repo, key),
        })
    }

    /// Finishes an upload whose checked bytes were written to `upload.part`:
    /// records its digest after the tar and puts it over the cache. The part
    /// file is removed either way.
    pub async fn finish_cache_upload(
        &self,
        attempt: &AttemptKey,
        upload: &CacheUpload,
        received: &Received,
    ) -> CoreResult<()> {
        let result = async {
            // Still the current attempt: a fenced copy must not write.
            self.authorize(attempt).await?;
            append_record(&upload.part, received).await?;
            self.artifact_store()
                .put(&upload.object, &upload.part)
                .await
                .map_err(store_error)
        }
        .await;
        self.abort_cache_upload(upload).await;
        if result.is_ok() {
            tracing::info!(job_id = %attempt.job, size = received.size, "cache stored");
        }
        result
    }

    /// Drops the local file of an upload (done or not).
    pub async fn abort_cache_upload(&self, upload: &CacheUpload) {
        let _ = tokio::fs::remove_file(&upload.part).await;
    }

    /// Opens the cache `key` of `attempt`'s repository; `NotFound` when there
    /// is none. The record and the reader come from one version of the
    /// object, so a concurrent upload replacing the cache cannot mix two.
    pub async fn open_cache(&self, attempt: &AttemptKey, key: &str) -> CoreResult<OpenCache> {
        let repo = self.cache_repo(attempt, key).await?;
        open_stored(self.artifact_store(), &cache_object(&repo, key), key).await
    }
}

/// Appends the record of what was received to the upload's file.
async fn append_record(part: &Path, received: &Received) -> CoreResult<()> {
    use tokio::io::AsyncWriteExt;
    let sha256 = hex::decode(&received.sha256)
        .ok()
        .filter(|raw| raw.len() == 32)
        .ok_or_else(|| CoreError::Internal("a received digest is not sha256 hex".to_owned()))?;
    let mut record = Vec::with_capacity(RECORD_LEN as usize);
    record.extend_from_slice(RECORD_MAGIC);
    record.extend_from_slice(&received.size.to_be_bytes());
    record.extend_from_slice(&sha256);
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(part)
        .await
        .map_err(internal("recording cache digest"))?;
    file.write_all(&record)
        .await
        .map_err(internal("recording cache digest"))?;
    file.sync_all()
        .await
        .map_err(internal("recording cache digest"))
}

/// The size and sha256 recorded in `tail`, the last [`RECORD_LEN`] bytes of
/// a stored cache of `length` bytes, if it has a record that fits.
fn parse_record(tail: &[u8], length: u64) -> Option<(u64, String)> {
    if length < RECORD_LEN || tail.len() as u64 != RECORD_LEN {
        return None;
    }
    let (magic, rest) = tail.split_at(8);
    let (size, sha256) = rest.split_at(8);
    let size = u64::from_be_bytes(size.try_into().expect("eight bytes"));
    if magic != RECORD_MAGIC || size != length - RECORD_LEN {
        return None;
    }
    Some((size, hex::encode(sha256)))
}

async fn open_stored(store: &dyn ArtifactStore, object: &str, key: &str) -> CoreResult<OpenCache> {
    let not_found = || CoreError::NotFound(format!("no cache for key {key}"));
    let stored = store
        .get_with_tail(object, RECORD_LEN)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    if let Some((size, sha256)) = parse_record(&stored.tail, stored.size) {
        return Ok(OpenCache {
            reader: stored.reader,
            size,
            sha256,
        });
    }
    // Stored before caches carried their record: digest the bytes, then
    // open again to send them. Were it replaced in between, the digest
    // would not match and the agent would treat it as no cache.
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut reader = stored.reader;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = reader
            .read(&mut buffer)
            .await
            .map_err(internal("reading cache"))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    let stored = store
        .get(object)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    Ok(OpenCache {
        reader: stored.reader,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact_store::file::FileStore;

    async fn read_all(open: OpenCache) -> Vec<u8> {
        let mut bytes = Vec::new();
        open.reader
            .take(open.size)
            .read_to_end(&mut bytes)
            .await
            .unwrap();
        bytes
    }

    #[tokio::test]
    async fn an_open_cache_announces_the_digest_recorded_at_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("store"));
        let part = dir.path().join("upload.part");
        std::fs::write(&part, b"abc").unwrap();
        let received = Received {
            size: 3,
            sha256: hex::encode(Sha256::digest(b"abc")),
        };
        append_record(&part, &received).await.unwrap();
        store.put("cache/r/k.tar", &part).await.unwrap();
        let open = open_stored(&store, "cache/r/k.tar", "k").await.unwrap();
        assert_eq!(
            (open.size, open.sha256.as_str()),
            (3, received.sha256.as_str())
        );
        assert_eq!(
            read_all(open).await,
            b"abc",
            "opened at the start of the tar"
        );

        // Damage where it is stored: the announced digest no longer matches.
        let path = dir.path().join("store/cache/r/k.tar");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let open = open_stored(&store, "cache/r/k.tar", "k").await.unwrap();
        assert_eq!(
            open.sha256, received.sha256,
            "the recorded digest, not the bytes'"
        );
        assert_ne!(open.sha256, hex::encode(Sha256::digest(&bytes[..3])));
    }

    #[tokio::test]
    async fn an_open_cache_has_the_digest_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().to_owned());
        assert!(matches!(
            open_stored(&store, "cache/r/k.tar", "k").await,
            Err(CoreError::NotFound(_))
        ));
        // A cache stored before records existed, where caches always were.
        std::fs::create_dir_all(dir.path().join("cache/r")).unwrap();
        std::fs::write(dir.path().join("cache/r/k.tar"), b"abc").unwrap();
        let open = open_stored(&store, "cache/r/k.tar", "k").await.unwrap();
        assert_eq!(open.size, 3);
        assert_eq!(
            open.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(read_all(open).await, b"abc");
    }

    #[test]
    fn a_record_must_match_the_length_it_ends() {
        let mut tail = RECORD_MAGIC.to_vec();
        tail.extend_from_slice(&3u64.to_be_bytes());
        tail.extend_from_slice(&[7u8; 32]);
        assert_eq!(
            parse_record(&tail, 3 + RECORD_LEN),
            Some((3, hex::encode([7u8; 32])))
        );
        assert_eq!(parse_record(&tail, 4 + RECORD_LEN), None);
        assert_eq!(parse_record(&tail[1..], 3 + RECORD_LEN), None);
        tail[0] = b'X';
        assert_eq!(parse_record(&tail, 3 + RECORD_LEN), None);
    }
}
