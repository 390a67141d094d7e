//! One bare mirror per repository, `WORK_DIR/git/<sha256-of-url>.git`, and
//! the advisory lock that guards it (`<same>.lock`, beside it).
//!
//! The lock is an `flock` on a file of its own: the kernel drops it when
//! the holder dies, so a killed agent never leaves a stale lock behind. A
//! fetch into the mirror holds it exclusively; a work tree fetching from the
//! mirror holds it shared, so an automatic `git gc` after a mirror fetch
//! never runs while a job reads objects.
//!
//! The mirror only ever gains refs (`+refs/heads/*`, `+refs/tags/*`, no
//! `--prune`, no `--mirror`): nothing a running job may still fetch goes away
//! under it. Credentials in the URL are not part of the mirror's name (a job
//! token differs per job) and are never written into the mirror: the URL is
//! given on each fetch's command line, and no `FETCH_HEAD` is written.

use crate::workspace::{git, CheckoutError};
use osprey_shared::redact::url_credentials;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where the mirror came from for one checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorState {
    /// The commit was already there: no network call.
    Cached,
    /// The mirror existed and was fetched into.
    Updated,
    /// The mirror was created and fetched.
    Created,
}

/// The mirrors of one agent, under `WORK_DIR/git`.
#[derive(Debug, Clone)]
pub struct Mirrors {
    root: PathBuf,
}

/// A held mirror lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct MirrorLock {
    _file: File,
}

/// A commit in the mirror, under a shared lock.
#[derive(Debug)]
pub struct Resolved {
    pub mirror: PathBuf,
    /// The full sha of the job's commit.
    pub sha: String,
    pub state: MirrorState,
    /// Held while the work tree fetches from the mirror.
    pub lock: MirrorLock,
}

impl Mirrors {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `<root>/<16 hex of sha256(url without credentials)>`, without suffix.
    fn stem(&self, repo_url: &str) -> PathBuf {
        let digest = Sha256::digest(url_credentials(repo_url).as_bytes());
        self.root.join(hex::encode(&digest[..8]))
    }

    /// The bare mirror of `repo_url`.
    pub fn path_of(&self, repo_url: &str) -> PathBuf {
        self.stem(repo_url).with_extension("git")
    }

    /// The lock file of `repo_url`'s mirror.
    pub fn lock_path_of(&self, repo_url: &str) -> PathBuf {
        self.stem(repo_url).with_extension("lock")
    }

    /// Waits for the mirror's lock, exclusive or shared. The wait blocks a
    /// thread, so it runs on the blocking pool.
    pub async fn lock(&self, repo_url: &str, exclusive: bool) -> std::io::Result<MirrorLock> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        let path = self.lock_path_of(repo_url);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let file = tokio::task::spawn_blocking(move || {
            if exclusive {
                file.lock()?;
            } else {
                file.lock_shared()?;
            }
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(MirrorLock { _file: file })
    }

    /// Brings `sha` into the mirror of `repo_url`, with no network call when
    /// it is already there, and resolves it to a full sha. Git's messages go
    /// to `log`.
    pub async fn ensure(
        &self,
        repo_url: &str,
        sha: &str,
        log: &mut Vec<u8>,
    ) -> Result<Resolved, CheckoutError> {
        let lock = self
            .lock(repo_url, true)
            .await
            .map_err(|err| CheckoutError::Git(format!("cannot lock the git mirror: {err}")))?;
        let mirror = self.path_of(repo_url);
        let git_dir = mirror.as_os_str();
        let mut state = MirrorState::Cached;
        if !mirror.join("HEAD").is_file() {
            // A mirror whose creation was cut short starts over.
            let _ = tokio::fs::remove_dir_all(&mirror).await;
            git(&["init", "--bare", "--quiet", "--"], &[git_dir], None, log)
                .await
                .map_err(|err| {
                    CheckoutError::Git(format!("cannot create the git mirror: {err}"))
                })?;
            state = MirrorState::Created;
        }
        if !has_commit(&mirror, sha).await {
            if state == MirrorState::Cached {
                state = MirrorState::Updated;
            }
            let fetched = fetch(
                &mirror,
                repo_url,
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                log,
            )
            .await;
            let mut found = fetched.is_ok() && has_commit(&mirror, sha).await;
            // A commit no branch or tag reaches (yet): ask for it by name.
            if !found && matches!(sha.len(), 40 | 64) {
                fetch(&mirror, repo_url, &[sha], log).await.map_err(|err| {
                    CheckoutError::Git(format!(
                        "commit {sha} not found in {}: {err}",
                        url_credentials(repo_url)
                    ))
                })?;
                found = has_commit(&mirror, sha).await;
            } else if let Err(err) = fetched {
                return Err(CheckoutError::Git(format!(
                    "git fetch of {} failed: {err}",
                    url_credentials(repo_url)
                )));
            }
            if !found {
                return Err(CheckoutError::Git(format!(
                    "commit {sha} not found in {}",
                    url_credentials(repo_url)
                )));
            }
        }
        let full = git(
            &["--git-dir"],
            &[
                git_dir,
                "rev-parse".as_ref(),
                "--verify".as_ref(),
                "--end-of-options".as_ref(),
                format!("{sha}^{{commit}}").as_ref(),
            ],
            None,
            &mut Vec::new(),
        )
        .await
        .map_err(|err| {
            CheckoutError::Git(format!("commit {sha} is ambiguous or missing: {err}"))
        })?;
        let full = String::from_utf8_lossy(&full).trim().to_owned();
        drop(lock);
        let lock = self
            .lock(repo_url, false)
            .await
            .map_err(|err| CheckoutError::Git(format!("cannot lock the git mirror: {err}")))?;
        Ok(Resolved {
            mirror,
            sha: full,
            state,
            lock,
        })
    }
}

/// Whether the mirror has `sha` as a commit (a local check, no network).
async fn has_commit(mirror: &Path, sha: &str) -> bool {
    git(
        &["--git-dir"],
        &[
            mirror.as_os_str(),
            "cat-file".as_ref(),
            "-e".as_ref(),
            format!("{sha}^{{commit}}").as_ref(),
        ],
        None,
        &mut Vec::new(),
    )
    .await
    .is_ok()
}

async fn fetch(
    mirror: &Path,
    repo_url: &str,
    refspecs: &[&str],
    log: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut more: Vec<&std::ffi::OsStr> = vec![
        mirror.as_os_str(),
        "fetch".as_ref(),
        "--quiet".as_ref(),
        "--no-write-fetch-head".as_ref(),
        "--".as_ref(),
        repo_url.as_ref(),
    ];
    more.extend(refspecs.iter().map(std::ffi::OsStr::new));
    git(&["--git-dir"], &more, None, log).await
}
