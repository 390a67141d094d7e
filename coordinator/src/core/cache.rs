//! Caches of GitLab's `cache:` keyword: one tar per repository and key, kept
//! on disk under `DATA_DIR/cache/<sha256(repo)>/<sha256(key)>.tar`. Any
//! current attempt of a job whose pipeline runs on that repository may read
//! or replace one (authorised by its job token, as artifacts are); jobs of
//! other repositories never see it. Hashing both names keeps any key safe as
//! a file name.
//!
//! An upload is written to a temporary file beside the cache, its size and
//! sha256 checked against the trailer, then renamed over the cache: a crash
//! or a broken upload never leaves a half cache, and a reader that opened the
//! previous file keeps reading it whole. The transport adapter streams the
//! bytes; this module owns the names, the checks and the rename.
//!
//! The digest checked at upload is recorded in the stored file itself, as a
//! fixed trailer after the tar ([`RECORD_MAGIC`], size, sha256), so that the
//! record and the bytes are replaced by one rename. A download announces the
//! recorded digest, not one taken from the bytes on disk: a cache damaged
//! where it is stored no longer matches, and the agent finds out (as it does
//! for artifacts, whose digest is in the database). The trailer sits past the
//! tar's end-of-archive blocks, where tar readers do not look; files stored
//! before it existed are digested when opened, as they always were.

use super::attempts::AttemptKey;
use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::transfer::Received;
use osprey_shared::pipeline::cache_key_problem;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// Longest cache key accepted (the key is hashed for the file name; this only
/// bounds what a request may carry).
const MAX_KEY_BYTES: usize = 1024;

/// Suffix of upload files in progress; left-overs are removed at start-up.
const PART_SUFFIX: &str = "part";

/// Opens the trailer recording a stored cache's size and sha256.
const RECORD_MAGIC: &[u8; 8] = b"OSPCACH1";
/// Magic, size (u64, big-endian), raw sha256.
const RECORD_LEN: u64 = 8 + 8 + 32;

/// Where an upload writes, and the cache it replaces once verified.
#[derive(Debug)]
pub struct CacheUpload {
    pub part: PathBuf,
    target: PathBuf,
}

/// A cache opened for reading: the open file (at its start), its size and digest.
pub struct OpenCache {
    pub file: std::fs::File,
    pub size: u64,
    pub sha256: String,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn internal(context: &str) -> impl FnOnce(std::io::Error) -> CoreError + '_ {
    move |error| CoreError::Internal(format!("{context}: {error}"))
}

impl Core {
    fn cache_root(&self) -> PathBuf {
        self.settings().data_dir.join("cache")
    }

    fn cache_path(&self, repo: &str, key: &str) -> PathBuf {
        self.cache_root()
            .join(sha256_hex(repo))
            .join(format!("{}.tar", sha256_hex(key)))
    }

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
        let target = self.cache_path(&repo, key);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(internal("creating cache dir"))?;
        }
        // Unique per upload: two jobs may save the same key at once.
        let part = target.with_extension(format!(
            "{}.{}.{PART_SUFFIX}",
            attempt.attempt_id,
            uuid::Uuid::new_v4().simple()
        ));
        Ok(CacheUpload { part, target })
    }

    /// Finishes an upload whose checked bytes were written to `upload.part`
    /// (see [`crate::transfer::receive`]): replaces the cache. The part file
    /// is removed on any failure.
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
            tokio::fs::rename(&upload.part, &upload.target)
                .await
                .map_err(internal("storing cache"))
        }
        .await;
        if result.is_err() {
            self.abort_cache_upload(upload).await;
        } else {
            tracing::info!(job_id = %attempt.job, size = received.size, "cache stored");
        }
        result
    }

    /// Drops an upload that will not complete.
    pub async fn abort_cache_upload(&self, upload: &CacheUpload) {
        let _ = tokio::fs::remove_file(&upload.part).await;
    }

    /// Opens the cache `key` of `attempt`'s repository; `NotFound` when there
    /// is none. The digest is taken from the opened file, so a concurrent
    /// upload replacing the cache cannot mix two versions.
    pub async fn open_cache(&self, attempt: &AttemptKey, key: &str) -> CoreResult<OpenCache> {
        let repo = self.cache_repo(attempt, key).await?;
        let path = self.cache_path(&repo, key);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || digest_open(&path, &key))
            .await
            .map_err(|error| CoreError::Internal(format!("reading cache: {error}")))?
    }

    /// Removes uploads a crash left behind.
    pub(crate) async fn clean_cache_parts(&self) -> CoreResult<()> {
        let root = self.cache_root();
        tokio::task::spawn_blocking(move || remove_parts(&root))
            .await
            .map_err(|error| CoreError::Internal(format!("cleaning caches: {error}")))?
            .map_err(internal("cleaning caches"))
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

/// The size and sha256 recorded at the end of a stored cache of `length`
/// bytes, if it has a record that fits.
fn read_record(file: &mut std::fs::File, length: u64) -> std::io::Result<Option<(u64, String)>> {
    if length < RECORD_LEN {
        return Ok(None);
    }
    file.seek(std::io::SeekFrom::Start(length - RECORD_LEN))?;
    let mut record = [0u8; RECORD_LEN as usize];
    file.read_exact(&mut record)?;
    file.rewind()?;
    let (magic, rest) = record.split_at(8);
    let (size, sha256) = rest.split_at(8);
    let size = u64::from_be_bytes(size.try_into().expect("eight bytes"));
    if magic != RECORD_MAGIC || size != length - RECORD_LEN {
        return Ok(None);
    }
    Ok(Some((size, hex::encode(sha256))))
}

fn digest_open(path: &Path, key: &str) -> CoreResult<OpenCache> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(CoreError::NotFound(format!("no cache for key {key}")))
        }
        Err(error) => return Err(internal("opening cache")(error)),
    };
    let length = file.metadata().map_err(internal("opening cache"))?.len();
    if let Some((size, sha256)) =
        read_record(&mut file, length).map_err(internal("reading cache"))?
    {
        return Ok(OpenCache { file, size, sha256 });
    }
    // Stored before caches carried their record: digest the bytes.
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer).map_err(internal("reading cache"))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    file.rewind().map_err(internal("reading cache"))?;
    Ok(OpenCache {
        file,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

fn remove_parts(root: &Path) -> std::io::Result<()> {
    let repos = match std::fs::read_dir(root) {
        Ok(repos) => repos,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for repo in repos {
        let repo = repo?.path();
        if !repo.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&repo)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == PART_SUFFIX) {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_removed_and_caches_kept() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("abc");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("k.tar"), "cache").unwrap();
        std::fs::write(repo.join("k.attempt.1234.part"), "half").unwrap();
        remove_parts(dir.path()).unwrap();
        assert!(repo.join("k.tar").exists());
        assert!(!repo.join("k.attempt.1234.part").exists());
        remove_parts(&dir.path().join("missing")).unwrap();
    }

    #[tokio::test]
    async fn an_open_cache_announces_the_digest_recorded_at_upload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tar");
        std::fs::write(&path, b"abc").unwrap();
        let received = Received {
            size: 3,
            sha256: hex::encode(Sha256::digest(b"abc")),
        };
        append_record(&path, &received).await.unwrap();
        let mut open = digest_open(&path, "k").unwrap();
        assert_eq!(
            (open.size, open.sha256.as_str()),
            (3, received.sha256.as_str())
        );
        let mut head = vec![0u8; 3];
        open.file.read_exact(&mut head).unwrap();
        assert_eq!(head, b"abc", "the file is opened at the start of the tar");

        // Damage where it is stored: the announced digest no longer matches.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let open = digest_open(&path, "k").unwrap();
        assert_eq!(
            open.sha256, received.sha256,
            "the recorded digest, not the bytes'"
        );
        assert_ne!(open.sha256, hex::encode(Sha256::digest(&bytes[..3])));
    }

    #[test]
    fn an_open_cache_has_the_digest_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tar");
        assert!(matches!(
            digest_open(&path, "k"),
            Err(CoreError::NotFound(_))
        ));
        std::fs::write(&path, b"abc").unwrap();
        let mut open = digest_open(&path, "k").unwrap();
        assert_eq!(open.size, 3);
        assert_eq!(
            open.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut text = String::new();
        open.file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "abc");
    }
}
