//! Job-scoped calls of one attempt: log appends and seal, status updates,
//! artifact upload and download. Each is authorised by the attempt's job
//! token and fenced by its attempt id and lease epoch. A job token dies with
//! its attempt: once the attempt has a final status (or went back to pending
//! for a retry) every call with it is refused `PERMISSION_DENIED`, which the
//! agent treats as a fence. The agent uploads caches and artifacts and seals
//! the log before it reports the final status, so no normal job loses data.

use super::Core;
use crate::artifact_store::{ArtifactStoreError, ObjectReader};
use crate::auth::{hashes_equal, token_hash};
use crate::engine::AttemptEnd;
use crate::error::{CoreError, CoreResult};
use crate::storage::{AppendResult, Fence, JobRow, NewArtifact};
use crate::transfer::Received;
use osprey_shared::pipeline::ArtifactsExpiry;
use osprey_shared::{JobId, JobStatus};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Instant;

/// The fencing triple plus the job token, as every job-scoped call carries it.
#[derive(Debug, Clone)]
pub struct AttemptKey {
    pub job: JobId,
    pub attempt_id: String,
    pub lease_epoch: u64,
    pub job_token: String,
}

impl AttemptKey {
    /// The attempt half of the key, as storage fences its writes.
    pub(crate) fn fence(&self) -> Fence<'_> {
        Fence {
            attempt_id: &self.attempt_id,
            lease_epoch: self.lease_epoch,
        }
    }
}

impl Core {
    /// Checks the job token, that the attempt is the job's current one and
    /// that it is still running. Writes check the last two again inside
    /// their transaction (see `storage::records`), so a call racing the
    /// final status cannot land after it.
    pub(super) async fn authorize(&self, key: &AttemptKey) -> CoreResult<JobRow> {
        let job = self
            .store()
            .job(key.job)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {} not found", key.job)))?;
        let token_ok = job
            .job_token_sha256
            .as_deref()
            .is_some_and(|stored| hashes_equal(stored, &token_hash(&key.job_token)));
        if !token_ok {
            return Err(CoreError::Unauthenticated(format!(
                "job token is not valid for job {}",
                key.job
            )));
        }
        if job.attempt_id.as_deref() != Some(key.attempt_id.as_str())
            || job.lease_epoch as u64 != key.lease_epoch
        {
            return Err(CoreError::StaleLease(format!(
                "attempt {} (epoch {}) is no longer job {}'s current attempt; kill it",
                key.attempt_id, key.lease_epoch, key.job
            )));
        }
        crate::storage::ended(key.job, job.status)?;
        Ok(job)
    }

    /// Appends log bytes at an offset; see `AppendLogResponse` for the contract.
    pub async fn append_log(
        &self,
        key: &AttemptKey,
        offset: u64,
        data: &[u8],
    ) -> CoreResult<AppendResult> {
        self.authorize(key).await?;
        let result = self
            .store()
            .append_log(
                key.job,
                key.fence(),
                offset,
                data,
                self.settings().max_log_bytes,
            )
            .await?;
        if matches!(result, AppendResult::Appended(_)) {
            self.notify();
        }
        Ok(result)
    }

    /// Seals a log: true if the stored bytes have exactly this size and
    /// digest. A sealed log takes no more bytes (see `storage::records`).
    pub async fn seal_log(
        &self,
        key: &AttemptKey,
        size: u64,
        sha256: &str,
    ) -> CoreResult<(bool, u64)> {
        let job = self.authorize(key).await?;
        if job.log_sealed {
            // Answered by the store: true again for the same seal, else refused.
            let sealed = self
                .store()
                .seal_log(key.job, key.fence(), size, sha256)
                .await?;
            return Ok((sealed, job.log_size as u64));
        }
        let stored_size = job.log_size as u64;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        while offset < stored_size {
            let chunk = self.store().read_log(key.job, offset, 4 << 20).await?;
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let digest = hex::encode(hasher.finalize());
        let mut sealed = stored_size == size && digest.eq_ignore_ascii_case(sha256);
        if sealed {
            // False when bytes arrived after the digest was taken.
            sealed = self
                .store()
                .seal_log(key.job, key.fence(), stored_size, &digest)
                .await?;
        }
        if !sealed {
            tracing::warn!(
                job_id = %key.job, stored_size, claimed_size = size,
                "log seal does not match the stored log"
            );
        }
        Ok((sealed, stored_size))
    }

    /// Records the end of the attempt (`None`: it runs, a no-op): the
    /// attempt's lease is released and the pipeline advances.
    pub async fn update_status(
        &self,
        key: &AttemptKey,
        end: Option<AttemptEnd>,
    ) -> CoreResult<JobStatus> {
        let job = self.authorize(key).await?;
        let Some(end) = end else {
            return Ok(job.status());
        };
        // The coverage is in place before the status is: whoever sees the
        // job finished sees its coverage.
        if !matches!(end, AttemptEnd::Canceled { .. }) {
            self.record_coverage(&job).await?;
        }
        let result = self.store().finish_job(key.job, key.fence(), end).await?;
        self.dispatcher().remove_lease(key.job);
        let stored = result.stored.unwrap_or(job.status());
        tracing::info!(job_id = %key.job, status = %stored, "job finished");
        self.enqueue(&result.newly_pending).await?;
        Ok(stored)
    }

    /// `coverage:`: the last match of the job's regex in its log, as GitLab
    /// takes it (the first number in the matched text).
    async fn record_coverage(&self, job: &JobRow) -> CoreResult<()> {
        let Some(pattern) = job.definition().ok().and_then(|def| def.coverage) else {
            return Ok(());
        };
        let Ok(regex) = regex::bytes::Regex::new(&pattern) else {
            return Ok(());
        };
        let log = self
            .store()
            .read_log(job.id(), 0, self.settings().max_log_bytes as usize)
            .await?;
        let number = regex::bytes::Regex::new(r"\d+(?:\.\d+)?").expect("a valid regex");
        let found = regex
            .find_iter(&log)
            .last()
            .and_then(|matched| number.find(matched.as_bytes()))
            .and_then(|number| {
                std::str::from_utf8(number.as_bytes())
                    .ok()?
                    .parse::<f64>()
                    .ok()
            });
        if let Some(coverage) = found {
            self.store().set_coverage(job.id(), coverage).await?;
        }
        Ok(())
    }

    /// Renews the lease of an attempt that is visibly alive (it sends logs).
    pub(crate) fn touch(&self, key: &AttemptKey) {
        let until = Instant::now() + self.settings().lease_ttl;
        let mut dispatcher = self.dispatcher();
        if let Some(agent) = dispatcher.lease(key.job).map(|lease| lease.agent.clone()) {
            dispatcher.renew(&agent, &[(key.job, key.attempt_id.clone())], until);
        }
    }

    /// Deletes the archives whose `artifacts: expire_in` has passed: the
    /// rows first, then the objects (an orphan object is harmless; a row
    /// pointing at nothing would fail a later download).
    pub async fn expire_artifacts(&self) -> CoreResult<()> {
        for (job, key) in self.store().expire_artifacts().await? {
            let key = key.unwrap_or_else(|| legacy_artifact_key(job));
            match self.artifact_store().delete(&key).await {
                Ok(()) => tracing::info!(job_id = %job, key = %key, "artifacts expired"),
                Err(error) => {
                    tracing::warn!(job_id = %job, key = %key, error = %error, "removing expired artifacts")
                }
            }
        }
        Ok(())
    }

    /// Starts an artifact upload for an attempt: returns where to write the
    /// archive while it arrives (a local part file, checked before anything
    /// reaches the store). Refused before any byte is received when the
    /// attempt has already recorded an archive.
    pub async fn begin_artifact_upload(&self, key: &AttemptKey) -> CoreResult<PathBuf> {
        self.authorize(key).await?;
        self.store()
            .check_artifact_open(key.job, key.fence())
            .await?;
        Ok(self.upload_part(&format!("artifact-{}-{}", key.job, key.attempt_id)))
    }

    /// Finishes an upload whose checked bytes were written to `part` (see
    /// [`crate::transfer::receive`]): stores them under a fresh key and
    /// records it, with its `expire_in` deadline, unless the attempt has
    /// ended or already recorded one (then the object is deleted and the
    /// recorded archive kept). The part file is removed either way.
    pub async fn finish_artifact_upload(
        &self,
        key: &AttemptKey,
        part: &std::path::Path,
        received: &Received,
    ) -> CoreResult<()> {
        let result = self.record_artifact(key, part, received).await;
        let _ = tokio::fs::remove_file(part).await;
        result
    }

    async fn record_artifact(
        &self,
        key: &AttemptKey,
        part: &std::path::Path,
        received: &Received,
    ) -> CoreResult<()> {
        let job = self.authorize(key).await?;
        let expires_at = match job
            .definition()
            .ok()
            .and_then(|def| def.artifacts.expire_in)
        {
            Some(ArtifactsExpiry::After(seconds)) => Some(osprey_shared::api::format_time(
                time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds as i64),
            )),
            Some(ArtifactsExpiry::Never) | None => None,
        };
        // A fresh key per upload: a refused or concurrent upload never
        // touches the archive a row already points at.
        let object = format!(
            "artifacts/{}/{}-{}.tar",
            key.job,
            key.attempt_id,
            uuid::Uuid::new_v4().simple()
        );
        self.artifact_store()
            .put(&object, part)
            .await
            .map_err(store_error)?;
        let recorded = self
            .store()
            .set_artifact(
                key.job,
                key.fence(),
                NewArtifact {
                    size: received.size,
                    sha256: &received.sha256,
                    expires_at: expires_at.as_deref(),
                    key: &object,
                },
            )
            .await;
        if let Err(error) = recorded {
            if let Err(delete) = self.artifact_store().delete(&object).await {
                tracing::warn!(job_id = %key.job, key = %object, error = %delete, "removing a refused archive");
            }
            return Err(error.into());
        }
        tracing::info!(job_id = %key.job, size = received.size, key = %object, "artifacts stored");
        self.metrics().artifact_stored(received.size);
        Ok(())
    }

    /// Opens the archive of `source` for a download by `key`'s attempt (both
    /// jobs in one pipeline): its reader, size and sha256.
    pub async fn open_artifact(&self, key: &AttemptKey, source: JobId) -> CoreResult<OpenArtifact> {
        let job = self.authorize(key).await?;
        let source_pipeline = self.pipeline_of(source).await?;
        if source_pipeline != job.pipeline_id() {
            return Err(CoreError::Unauthenticated(format!(
                "job {} may not read artifacts of job {source} (another pipeline)",
                key.job
            )));
        }
        let row = self
            .store()
            .job(source)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {source} not found")))?;
        self.open_archive(row).await
    }

    /// Opens the archive a job recorded (for an agent's download or the web
    /// UI's): its reader, size and sha256.
    pub async fn open_archive(&self, row: JobRow) -> CoreResult<OpenArtifact> {
        let source = row.id();
        let (Some(size), Some(sha256)) = (row.artifact_size, row.artifact_sha256) else {
            return Err(CoreError::NotFound(format!(
                "job {source} has no artifacts"
            )));
        };
        let object = row
            .artifact_key
            .unwrap_or_else(|| legacy_artifact_key(source));
        let stored = self
            .artifact_store()
            .get(&object)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                CoreError::NotFound(format!(
                    "the archive of job {source} is missing from the store"
                ))
            })?;
        Ok(OpenArtifact {
            reader: stored.reader,
            size: size as u64,
            sha256,
        })
    }
}

/// An archive opened for a download: the store's reader (the transfer sends
/// only `size` bytes of it) and the recorded size and sha256.
pub struct OpenArtifact {
    pub reader: ObjectReader,
    pub size: u64,
    pub sha256: String,
}

/// Where archives recorded before keys existed are: `DATA_DIR/artifacts/{job}.tar`
/// with the default file store, rooted at the data dir.
fn legacy_artifact_key(job: JobId) -> String {
    format!("artifacts/{job}.tar")
}

/// An artifact store failure as the domain reports it.
pub(super) fn store_error(error: ArtifactStoreError) -> CoreError {
    CoreError::Internal(error.to_string())
}
