//! GitLab's `cache:` on the agent: restoring a job's caches before its script
//! and saving them after it (and after `after_script`), and the two transfers
//! with the coordinator, which keeps caches per repository and key.
//!
//! Restore: for each cache whose policy pulls, the key, else each of its
//! `fallback_keys` in order; no cache is not an error. Save: for each cache
//! whose policy pushes and whose `when` matches the job's result, `paths`
//! (and with `untracked` every file the checkout did not track) go into one tar that
//! replaces the cache. As on GitLab, no cache problem ever fails a job: it is
//! a warning in the log. Archives reuse [`crate::artifacts`] (collection) and
//! [`crate::archive`] (extraction): both refuse anything outside the project
//! dir or inside its `.git/`.

use crate::archive;
use crate::artifacts::{self, TrackedFiles};
use crate::client::{AgentClient, ArchiveFile, CallError, CoordinatorApi};
use crate::executor::OutputSink;
use crate::retry::{with_backoff, GaveUp};
use crate::workspace::AttemptDirs;
use bytes::Bytes;
use futures::StreamExt;
use osprey_proto::v1::{self as pb, upload_cache_request, AttemptRef, CacheSpec};
use osprey_shared::pipeline::cache_key_problem;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// How long a cache transfer keeps retrying before it is given up (with a warning).
const TRANSFER_RETRY_LIMIT: Duration = Duration::from_secs(60);

/// The attempt was fenced during a cache transfer: stop, report nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenced;

/// What a cache step needs of the running attempt.
pub struct CacheJob<'a, A> {
    pub api: &'a A,
    pub attempt: &'a AttemptRef,
    pub fenced: &'a CancellationToken,
    pub dirs: &'a AttemptDirs,
    pub log: &'a OutputSink,
    /// What the checkout tracked: `untracked: true` is everything else.
    pub tracked: &'a Arc<TrackedFiles>,
}

impl<A: CoordinatorApi> CacheJob<'_, A> {
    async fn say(&self, text: String) {
        let _ = self.log.send(Bytes::from(text)).await;
    }

    /// Restores every cache whose policy pulls.
    pub async fn restore(&self, caches: &[CacheSpec]) -> Result<(), Fenced> {
        let pulled: Vec<(usize, &CacheSpec)> = caches
            .iter()
            .enumerate()
            .filter(|(_, cache)| pulls(cache))
            .collect();
        if pulled.is_empty() {
            return Ok(());
        }
        self.say("Restoring cache\n".to_owned()).await;
        for (index, cache) in pulled {
            self.restore_one(index, cache).await?;
        }
        Ok(())
    }

    async fn restore_one(&self, index: usize, cache: &CacheSpec) -> Result<(), Fenced> {
        let archive = self.dirs.downloads.join(format!("cache-{index}.tar"));
        if let Err(error) = std::fs::create_dir_all(&self.dirs.downloads) {
            self.say(format!("WARNING: cannot restore cache: {error}\n"))
                .await;
            return Ok(());
        }
        for key in std::iter::once(&cache.key).chain(&cache.fallback_keys) {
            if let Some(problem) = cache_key_problem(key) {
                self.say(format!("WARNING: cache key {key:?} {problem}; skipped\n"))
                    .await;
                continue;
            }
            self.say(format!("Checking cache for {key}...\n")).await;
            let downloaded = with_backoff(
                "download cache",
                self.fenced,
                Some(TRANSFER_RETRY_LIMIT),
                || self.api.download_cache(self.attempt.clone(), key, &archive),
            )
            .await;
            match downloaded {
                Ok(true) => {}
                Ok(false) => {
                    self.say(format!("no cache for key {key}\n")).await;
                    continue;
                }
                Err(GaveUp::Fenced) => return Err(Fenced),
                Err(GaveUp::Failed(error)) => {
                    self.say(format!(
                        "WARNING: failed to download cache {key}: {error}\n"
                    ))
                    .await;
                    continue;
                }
            }
            let (from, into) = (archive.clone(), self.dirs.project_dir.clone());
            let extracted =
                tokio::task::spawn_blocking(move || archive::extract(&from, &into)).await;
            let _ = std::fs::remove_file(&archive);
            match extracted {
                Ok(Ok(count)) => {
                    self.say(format!(
                        "Successfully extracted cache {key} ({count} entries)\n"
                    ))
                    .await;
                    return Ok(());
                }
                Ok(Err(error)) => {
                    self.say(format!("WARNING: failed to extract cache {key}: {error}\n"))
                        .await;
                }
                Err(error) => {
                    self.say(format!("WARNING: failed to extract cache {key}: {error}\n"))
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Saves every cache whose policy pushes and whose `when` matches a job
    /// that `succeeded` (or failed).
    pub async fn save(&self, caches: &[CacheSpec], succeeded: bool) -> Result<(), Fenced> {
        let mut announced = false;
        for (index, cache) in caches.iter().enumerate() {
            if !pushes(cache) {
                self.say(format!("Not uploading cache {} due to policy\n", cache.key))
                    .await;
                continue;
            }
            if !saves_when(cache, succeeded) {
                continue;
            }
            if !announced {
                let result = if succeeded { "successful" } else { "failed" };
                self.say(format!("Saving cache for {result} job\n")).await;
                announced = true;
            }
            self.save_one(index, cache).await?;
        }
        Ok(())
    }

    async fn save_one(&self, index: usize, cache: &CacheSpec) -> Result<(), Fenced> {
        let key = &cache.key;
        if let Some(problem) = cache_key_problem(key) {
            self.say(format!(
                "WARNING: cache key {key:?} {problem}; cache not saved\n"
            ))
            .await;
            return Ok(());
        }
        self.say(format!("Creating cache {key}...\n")).await;
        let archive_path = cache_archive_path(self.dirs, index);
        let (project_dir, paths, untracked) = (
            self.dirs.project_dir.clone(),
            cache.paths.clone(),
            cache.untracked,
        );
        let path = archive_path.clone();
        let tracked = self.tracked.clone();
        let collected = tokio::task::spawn_blocking(move || {
            let mut selection = artifacts::Selection {
                patterns: paths,
                ..artifacts::Selection::default()
            };
            if untracked {
                // Literal: an untracked `a[1].txt` is a file name, not a glob.
                selection.literal = artifacts::untracked_files(&project_dir, &tracked)?;
            }
            artifacts::collect_selection(&project_dir, &selection, &path)
                .map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| error.to_string())
        .and_then(|collected| collected);
        let collected = match collected {
            Ok(collected) => collected,
            Err(error) => {
                self.say(format!("WARNING: failed to create cache {key}: {error}\n"))
                    .await;
                return Ok(());
            }
        };
        for warning in &collected.warnings {
            self.say(format!("WARNING: {warning}\n")).await;
        }
        let Some(archive) = collected.archive else {
            self.say(format!(
                "WARNING: no files to cache; cache {key} not saved\n"
            ))
            .await;
            return Ok(());
        };
        let uploaded = with_backoff(
            "upload cache",
            self.fenced,
            Some(TRANSFER_RETRY_LIMIT),
            || self.api.upload_cache(self.attempt.clone(), key, &archive),
        )
        .await;
        let _ = std::fs::remove_file(&archive_path);
        match uploaded {
            Ok(()) => {
                self.say(format!(
                    "Created cache {key} ({} entries, {} bytes)\n",
                    collected.entries.len(),
                    archive.size
                ))
                .await;
                Ok(())
            }
            Err(GaveUp::Fenced) => Err(Fenced),
            Err(GaveUp::Failed(error)) => {
                self.say(format!("WARNING: failed to upload cache {key}: {error}\n"))
                    .await;
                Ok(())
            }
        }
    }
}

/// Where cache `index` is archived: beside the artifact archive, outside
/// the project dir.
fn cache_archive_path(dirs: &AttemptDirs, index: usize) -> PathBuf {
    dirs.archive.with_file_name(format!("cache-{index}.tar"))
}

fn policy(cache: &CacheSpec) -> pb::CachePolicy {
    pb::CachePolicy::try_from(cache.policy).unwrap_or(pb::CachePolicy::Unspecified)
}

/// Whether the cache is restored before the script (unspecified = pull-push).
pub fn pulls(cache: &CacheSpec) -> bool {
    matches!(
        policy(cache),
        pb::CachePolicy::Unspecified | pb::CachePolicy::PullPush | pb::CachePolicy::Pull
    )
}

/// Whether the cache is saved after the script (unspecified = pull-push).
pub fn pushes(cache: &CacheSpec) -> bool {
    matches!(
        policy(cache),
        pb::CachePolicy::Unspecified | pb::CachePolicy::PullPush | pb::CachePolicy::Push
    )
}

/// Whether `when` lets a job that `succeeded` (or failed) save the cache.
pub fn saves_when(cache: &CacheSpec, succeeded: bool) -> bool {
    match pb::CacheWhen::try_from(cache.when).unwrap_or(pb::CacheWhen::Unspecified) {
        pb::CacheWhen::Unspecified | pb::CacheWhen::OnSuccess => succeeded,
        pb::CacheWhen::OnFailure => !succeeded,
        pb::CacheWhen::Always => true,
    }
}

/// `UploadCache` over the real client: header, 1 MiB chunks, trailer.
pub async fn upload(
    client: &AgentClient,
    attempt: AttemptRef,
    key: &str,
    archive: &ArchiveFile,
) -> Result<(), CallError> {
    let file = tokio::fs::File::open(&archive.path)
        .await
        .map_err(|err| CallError::Refused(format!("cannot open archive: {err}")))?;
    let part = |part| pb::UploadCacheRequest { part: Some(part) };
    let header = part(upload_cache_request::Part::Header(pb::CacheHeader {
        attempt: Some(attempt),
        key: key.to_owned(),
    }));
    let trailer = part(upload_cache_request::Part::Trailer(pb::ArtifactTrailer {
        size: archive.size,
        sha256: archive.sha256.clone(),
    }));
    let data = crate::client::file_chunks(file, move |chunk| {
        part(upload_cache_request::Part::Data(chunk))
    });
    let stream = futures::stream::iter([header])
        .chain(data)
        .chain(futures::stream::iter([trailer]));
    let response = client.clone().upload_cache(stream).await?.into_inner();
    crate::client::check_stored(archive, response.size, &response.sha256)
}

/// `DownloadCache` over the real client into `dest`, verified; `Ok(false)`
/// when the repository has no cache for `key`.
pub async fn download(
    client: &AgentClient,
    attempt: AttemptRef,
    key: &str,
    dest: &Path,
) -> Result<bool, CallError> {
    let request = pb::DownloadCacheRequest {
        attempt: Some(attempt),
        key: key.to_owned(),
    };
    let mut stream = match client.clone().download_cache(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::NotFound => return Ok(false),
        Err(status) => return Err(status.into()),
    };
    let local = |err: std::io::Error| CallError::Refused(format!("cannot write archive: {err}"));
    let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
    let mut hasher = artifacts::Sha256Writer::default();
    let mut expected = None;
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(pb::download_cache_response::Part::Header(header)) => expected = Some(header),
            Some(pb::download_cache_response::Part::Data(data)) => {
                hasher.update(&data);
                file.write_all(&data).await.map_err(local)?;
            }
            None => {}
        }
    }
    file.flush().await.map_err(local)?;
    let (size, sha256) = hasher.finish();
    crate::client::check_downloaded(
        expected.map(|header| (header.size, header.sha256)),
        size,
        &sha256,
    )
    .map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(policy: pb::CachePolicy, when: pb::CacheWhen) -> CacheSpec {
        CacheSpec {
            key: "k".into(),
            policy: policy as i32,
            when: when as i32,
            ..CacheSpec::default()
        }
    }

    #[test]
    fn policy_and_when_decide_restore_and_save() {
        use pb::{CachePolicy as P, CacheWhen as W};
        let default = CacheSpec::default();
        assert!(pulls(&default) && pushes(&default));
        assert!(saves_when(&default, true) && !saves_when(&default, false));
        assert!(pulls(&cache(P::Pull, W::OnSuccess)));
        assert!(!pushes(&cache(P::Pull, W::OnSuccess)));
        assert!(!pulls(&cache(P::Push, W::OnSuccess)));
        assert!(pushes(&cache(P::Push, W::OnSuccess)));
        assert!(saves_when(&cache(P::PullPush, W::OnFailure), false));
        assert!(!saves_when(&cache(P::PullPush, W::OnFailure), true));
        assert!(saves_when(&cache(P::PullPush, W::Always), false));
        assert!(saves_when(&cache(P::PullPush, W::Always), true));
    }
}
