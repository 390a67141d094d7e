//! The agent's git cache: no clone on a job's critical path.
//!
//! Two layers. One bare mirror per repository ([`mirror`]), fetched from the
//! network only when the job's commit is not in it yet (and in the
//! background on the coordinator's `Prefetch`). One build dir per (project,
//! slot) ([`slots`]), brought to the job's commit from the mirror — a local
//! fetch, checkout and clean ([`worktree`]) — as GitLab's `GIT_STRATEGY:
//! fetch` does. The job's checkout variables ([`options`]) choose another
//! way (`clone`, `none`, `empty`, a depth, clean flags, submodules).
//!
//! What this does not own: the attempt's paths ([`crate::workspace`]) and
//! the one-shot clone `osprey exec` makes ([`crate::workspace::checkout`]).

pub mod mirror;
pub mod options;
pub mod slots;
pub mod worktree;

use crate::artifacts::TrackedFiles;
use crate::tasks::Tasks;
use crate::workspace::CheckoutError;
use mirror::{MirrorState, Mirrors};
use options::{GitOptions, Strategy};
use osprey_shared::redact::url_credentials;
use std::path::{Path, PathBuf};
use worktree::DirState;

/// The mirrors and build slots of one agent.
#[derive(Debug, Clone)]
pub struct GitCache {
    mirrors: Mirrors,
    slots: slots::BuildSlots,
    /// Off when jobs run as another user: a dir that user owns could be
    /// changed under the agent's git (root) by a concurrent job of the same
    /// user, so each job gets a new dir, still from the mirror.
    reuse_dirs: bool,
}

/// What a checkout did, for the job log and `untracked:`.
#[derive(Debug)]
pub struct Checkout {
    /// The paths the commit tracks (empty when no source was checked out).
    pub tracked: TrackedFiles,
    /// `Fetching REPO at SHA (…)`, or what was done instead.
    pub summary: String,
}

impl GitCache {
    /// The cache whose mirrors live in `mirrors_root` (`WORK_DIR/git`).
    pub fn new(mirrors_root: PathBuf) -> Self {
        Self {
            mirrors: Mirrors::new(mirrors_root),
            slots: slots::BuildSlots::default(),
            reuse_dirs: true,
        }
    }

    /// Never reuses a build dir (jobs run as another user).
    pub fn without_dir_reuse(mut self) -> Self {
        self.reuse_dirs = false;
        self
    }

    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// Takes a build slot of `project`, held until the lease is dropped.
    pub fn take_slot(&self, project: &str) -> slots::SlotLease {
        self.slots.take(project)
    }

    /// Brings `project_dir` to `sha` of `repo_url` as `options` ask; git's
    /// own messages go to `log`.
    pub async fn checkout(
        &self,
        repo_url: &str,
        sha: &str,
        project_dir: &Path,
        options: &GitOptions,
        log: &mut Vec<u8>,
    ) -> Result<Checkout, CheckoutError> {
        let shown = url_credentials(repo_url);
        let short = sha.get(..8).unwrap_or(sha);
        match options.strategy {
            Strategy::None => {
                tokio::fs::create_dir_all(project_dir)
                    .await
                    .map_err(CheckoutError::Spawn)?;
                return Ok(Checkout {
                    tracked: TrackedFiles::default(),
                    summary: "Skipping Git repository setup (GIT_STRATEGY: none)".to_owned(),
                });
            }
            Strategy::Empty => {
                worktree::remove_dir(project_dir).await?;
                tokio::fs::create_dir_all(project_dir)
                    .await
                    .map_err(CheckoutError::Spawn)?;
                return Ok(Checkout {
                    tracked: TrackedFiles::default(),
                    summary: "Skipping Git repository setup and emptying the build dir (GIT_STRATEGY: empty)"
                        .to_owned(),
                });
            }
            Strategy::Fetch | Strategy::Clone => {}
        }
        validate(repo_url, sha)?;
        let resolved = self.mirrors.ensure(repo_url, sha, log).await?;
        let fetch = options.strategy == Strategy::Fetch;
        let reuse = fetch && self.reuse_dirs;
        let (tracked, dir) = worktree::sync(
            &resolved.mirror,
            repo_url,
            &resolved.sha,
            project_dir,
            options,
            reuse,
            log,
        )
        .await?;
        drop(resolved.lock);
        let mirror = match resolved.state {
            MirrorState::Cached => "cached mirror",
            MirrorState::Updated => "mirror updated",
            MirrorState::Created => "new mirror",
        };
        let dir = match dir {
            DirState::Reused => "reused build dir",
            DirState::Fresh => "new build dir",
        };
        let verb = if fetch { "Fetching" } else { "Cloning" };
        Ok(Checkout {
            tracked,
            summary: format!("{verb} {shown} at {short} ({mirror}, {dir})"),
        })
    }

    /// Brings `sha` of `repo_url` into its mirror in the background: at most
    /// one fetch per repository at a time (the mirror lock), errors logged
    /// at debug only. The task ends by itself when the fetch does.
    pub fn prefetch(&self, tasks: &Tasks, repo_url: String, sha: String) {
        if validate(&repo_url, &sha).is_err() {
            tracing::debug!("prefetch of an invalid repository or commit ignored");
            return;
        }
        let mirrors = self.mirrors.clone();
        tasks.spawn("git prefetch", async move {
            let mut log = Vec::new();
            match mirrors.ensure(&repo_url, &sha, &mut log).await {
                Ok(resolved) => {
                    tracing::debug!(repo = %url_credentials(&repo_url), sha = %resolved.sha, state = ?resolved.state, "prefetched")
                }
                Err(err) => {
                    tracing::debug!(repo = %url_credentials(&repo_url), %sha, error = %err, "prefetch failed")
                }
            }
        });
    }
}

/// The same checks as a clone's: a hex sha, a URL git cannot take for an
/// option, and none that cannot be written into a config file.
fn validate(repo_url: &str, sha: &str) -> Result<(), CheckoutError> {
    if !(4..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CheckoutError::BadSha(sha.to_owned()));
    }
    if repo_url.is_empty() || repo_url.starts_with('-') || repo_url.contains(['\n', '\r', '\0']) {
        return Err(CheckoutError::BadUrl(
            url_credentials(repo_url).into_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
