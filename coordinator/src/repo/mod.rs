//! Reading a pipeline's commit from a git repository with the real `git`:
//! resolving a ref to its commit and reading `.gitlab-ci.yml` at that commit.
//! A local path is read in place; a URL is mirrored under the data dir.
//!
//! What a caller may name is checked first ([`policy`], `--repo-allow`), and
//! every git process runs with a neutral configuration: no `ext::`
//! transport, no protocol a URL may pick by itself, no prompt, no fsmonitor
//! or hooks, no discovery above the named directory. Git's own errors (which
//! say what exists on the host) go to the log; callers get one generic
//! message. File sizes are checked before a blob is read.

pub mod policy;

use crate::error::{CoreError, CoreResult};
use osprey_shared::redact::url_credentials;
use osprey_shared::yaml::{IncludeLoader, LoadError};
use policy::{RepoKind, RepoPolicy};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The pipeline file GitLab reads.
pub const PIPELINE_FILE: &str = ".gitlab-ci.yml";

/// What the coordinator's git may read, and how much of it.
#[derive(Debug, Clone)]
pub struct RepoSettings {
    pub policy: RepoPolicy,
    /// Largest pipeline file, and largest included file (GitLab: 2 MB).
    pub max_pipeline_file_bytes: u64,
}

impl Default for RepoSettings {
    fn default() -> Self {
        RepoSettings {
            policy: RepoPolicy::default(),
            max_pipeline_file_bytes: 2 << 20,
        }
    }
}

/// A ref resolved to its commit, with the pipeline file at that commit.
#[derive(Debug, Clone)]
pub struct ResolvedCommit {
    pub sha: String,
    pub ref_is_tag: bool,
    pub pipeline_file: String,
    /// The repository to read more from (the path itself, or its mirror).
    pub git_dir: PathBuf,
    /// The commit's full message.
    pub message: String,
}

/// The one answer a caller gets when git cannot read what they named: the
/// reason (no such path, not a repository, no such ref, a host refusing)
/// would tell them what exists on the coordinator's host.
fn unreadable(repo: &str, git_ref: &str, detail: &str) -> CoreError {
    let repo = url_credentials(repo);
    let detail = url_credentials(detail);
    tracing::warn!(repo = %repo, git_ref, detail = %detail, "cannot read repository");
    CoreError::InvalidArgument(format!(
        "cannot read repository {repo} (ref {git_ref}): no such repository or ref, or no access"
    ))
}

/// Resolves `git_ref` in `repo` (local path or URL) and reads the pipeline file.
pub async fn resolve(
    repo: &str,
    git_ref: &str,
    mirrors: &Path,
    settings: &RepoSettings,
) -> CoreResult<ResolvedCommit> {
    resolve_at(repo, git_ref, None, mirrors, settings).await
}

/// [`resolve`], at commit `at` (a push's sha) instead of the ref's head
/// when given: the mirror is fetched, then that commit is read.
pub async fn resolve_at(
    repo: &str,
    git_ref: &str,
    at: Option<&str>,
    mirrors: &Path,
    settings: &RepoSettings,
) -> CoreResult<ResolvedCommit> {
    if let Some(sha) = at {
        if sha.len() != 40 || !sha.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(CoreError::InvalidArgument(format!(
                "invalid commit sha {sha:?}"
            )));
        }
    }
    let kind = settings.policy.check(repo)?;
    if git_ref.is_empty()
        || git_ref.starts_with('-')
        || git_ref.contains("..")
        || git_ref.chars().any(char::is_control)
    {
        return Err(CoreError::InvalidArgument(format!(
            "invalid ref {git_ref:?}"
        )));
    }
    let git_dir = git_dir_for(repo, kind, mirrors)
        .await
        .map_err(|detail| unreadable(repo, git_ref, &detail))?;
    let sha = git(
        &git_dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{}^{{commit}}", at.unwrap_or(git_ref)),
        ],
    )
    .await
    .map_err(|detail| unreadable(repo, git_ref, &detail))?;
    let ref_is_tag = git(
        &git_dir,
        &[
            "show-ref",
            "--verify",
            "--quiet",
            &format!("refs/tags/{git_ref}"),
        ],
    )
    .await
    .is_ok();
    let object = format!("{sha}:{PIPELINE_FILE}");
    let not_found = || {
        CoreError::InvalidArgument(format!(
            "{PIPELINE_FILE} not found at commit {sha} of {repo}"
        ))
    };
    let size: u64 = git(&git_dir, &["cat-file", "-s", &object])
        .await
        .map_err(|_| not_found())?
        .parse()
        .map_err(|_| not_found())?;
    let limit = settings.max_pipeline_file_bytes;
    if size > limit {
        return Err(too_large(PIPELINE_FILE, size, limit));
    }
    let pipeline_file = git(&git_dir, &["cat-file", "blob", &object])
        .await
        .map_err(|_| not_found())?;
    let message = git(&git_dir, &["show", "-s", "--format=%B", &sha])
        .await
        .unwrap_or_default();
    Ok(ResolvedCommit {
        sha,
        ref_is_tag,
        pipeline_file,
        git_dir,
        message,
    })
}

/// The refusal of a file over `--max-pipeline-file-bytes`.
pub fn too_large(path: &str, size: u64, limit: u64) -> CoreError {
    CoreError::InvalidArgument(format!(
        "{path} is {size} bytes, over the limit of {limit} bytes (--max-pipeline-file-bytes)"
    ))
}

/// `git` with the neutral configuration every coordinator call uses.
fn git_command(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new("git");
    command
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        // No repository discovery above the directory named.
        .env(
            "GIT_CEILING_DIRECTORIES",
            dir.parent().unwrap_or(Path::new("/")),
        )
        .args(["-c", "protocol.ext.allow=never"])
        .args(["-c", "core.fsmonitor=false"])
        .args(["-c", "core.hooksPath=/dev/null"])
        .arg("-C")
        .arg(dir)
        .stdin(std::process::Stdio::null());
    command
}

/// The repository at one commit, read with blocking `git` calls: for
/// `include:` and `exists:` while planning (which runs on a blocking thread).
pub struct GitTree {
    pub git_dir: PathBuf,
    pub sha: String,
    /// Largest file `read` returns while the pipeline is parsed (includes);
    /// lifted with [`GitTree::parsed`] before planning, since files read for
    /// `cache:key:files` are hashed, not parsed.
    pub max_file_bytes: std::cell::Cell<u64>,
    /// The first file refused for its size: the refusal the API answers.
    pub oversized: RefCell<Option<CoreError>>,
}

impl GitTree {
    pub fn new(git_dir: PathBuf, sha: String, max_file_bytes: u64) -> Self {
        GitTree {
            git_dir,
            sha,
            max_file_bytes: std::cell::Cell::new(max_file_bytes),
            oversized: RefCell::new(None),
        }
    }

    /// Parsing is over: the include limit no longer applies.
    pub fn parsed(&self) {
        self.max_file_bytes.set(u64::MAX);
    }

    fn git(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let output = git_command(&self.git_dir)
            .args(args)
            .output()
            .map_err(|error| format!("running git: {error}"))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// Files changed between `before` (the ref's previous pipeline commit,
    /// when it is an ancestor) or else the parent, and this commit; `None`
    /// when there is nothing to compare with (a root commit).
    pub fn changed_files(&self, before: Option<&str>) -> Option<Vec<String>> {
        let base = before
            .filter(|before| {
                self.git(&["merge-base", "--is-ancestor", before, &self.sha])
                    .is_ok()
            })
            .map(str::to_owned)
            .or_else(|| {
                let parent = format!("{}^", self.sha);
                self.git(&["rev-parse", "--verify", "--quiet", &parent])
                    .ok()
                    .map(|out| String::from_utf8_lossy(&out).trim().to_owned())
            })?;
        let out = self
            .git(&["diff", "--name-only", "-z", &base, &self.sha])
            .ok()?;
        Some(split_nul(&out))
    }

    /// The repository's default branch (where `HEAD` points), if any.
    pub fn default_branch(&self) -> Option<String> {
        self.git(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|out| String::from_utf8_lossy(&out).trim().to_owned())
            .filter(|branch| !branch.is_empty())
    }
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|byte| *byte == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

impl IncludeLoader for GitTree {
    fn read(&self, path: &str) -> Result<String, LoadError> {
        if path.starts_with('-') || path.split('/').any(|part| part == "..") {
            return Err(LoadError::Other(
                "paths may not leave the repository".to_owned(),
            ));
        }
        let object = format!("{}:{path}", self.sha);
        let size: u64 = self
            .git(&["cat-file", "-s", &object])
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out).trim().parse().ok())
            .ok_or(LoadError::NotFound)?;
        let limit = self.max_file_bytes.get();
        if size > limit {
            let mut oversized = self.oversized.borrow_mut();
            if oversized.is_none() {
                *oversized = Some(too_large(path, size, limit));
            }
            return Err(LoadError::Other(format!(
                "is {size} bytes, over the limit of {limit} bytes"
            )));
        }
        let bytes = self
            .git(&["cat-file", "blob", &object])
            .map_err(|_| LoadError::NotFound)?;
        String::from_utf8(bytes).map_err(|_| LoadError::Other("not UTF-8 text".to_owned()))
    }

    fn list(&self) -> Result<Vec<String>, LoadError> {
        self.git(&["ls-tree", "-r", "-z", "--name-only", &self.sha])
            .map(|out| split_nul(&out))
            .map_err(LoadError::Other)
    }
}

/// The directory git reads: a local path in place, anything else its
/// mirror (cloned on first use, updated after). Errors are git's own words,
/// for the log only.
async fn git_dir_for(repo: &str, kind: RepoKind, mirrors: &Path) -> Result<PathBuf, String> {
    if kind == RepoKind::LocalPath {
        let local = Path::new(repo);
        return if local.is_dir() {
            Ok(local.to_path_buf())
        } else {
            Err("no such directory".to_owned())
        };
    }
    let name = hex::encode(&Sha256::digest(repo.as_bytes())[..8]);
    let mirror = mirrors.join(name);
    if mirror.exists() {
        git(&mirror, &["remote", "update", "--prune"])
            .await
            .map_err(|error| format!("fetching: {error}"))?;
    } else {
        tokio::fs::create_dir_all(mirrors)
            .await
            .map_err(|error| format!("creating {}: {error}", mirrors.display()))?;
        let output = Command::from(git_command(mirrors))
            .args(["clone", "--quiet", "--mirror", "--", repo])
            .arg(&mirror)
            .output()
            .await
            .map_err(|error| format!("running git: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "cloning: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    Ok(mirror)
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::from(git_command(dir))
        .args(args)
        .output()
        .await
        .map_err(|error| format!("running git: {error}"))?;
    if output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        // File contents and messages keep their whitespace.
        let whole = args.first() == Some(&"show") || args.get(1) == Some(&"blob");
        Ok(if whole {
            text.into_owned()
        } else {
            text.trim().to_owned()
        })
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// The branches and tags of `repo` as `git ls-remote` lists them:
/// `(refs/heads/NAME or refs/tags/NAME, sha)`, peeled tags at their commit.
pub async fn list_refs(repo: &str, settings: &RepoSettings) -> CoreResult<Vec<(String, String)>> {
    if settings.policy.check(repo)? == RepoKind::LocalPath {
        return list_local_refs(repo).await;
    }
    let cwd = std::env::temp_dir();
    let output = Command::from(git_command(&cwd))
        .args(["ls-remote", "--heads", "--tags", "--", repo])
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .map_err(|_| unreadable(repo, "*", "ls-remote timed out"))?
        .map_err(|error| unreadable(repo, "*", &error.to_string()))?;
    if !output.status.success() {
        return Err(unreadable(
            repo,
            "*",
            &String::from_utf8_lossy(&output.stderr),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut refs: std::collections::BTreeMap<String, String> = Default::default();
    for line in text.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        // An annotated tag's `^{}` line names the commit it points at.
        if let Some(tag) = name.strip_suffix("^{}") {
            refs.insert(tag.to_owned(), sha.to_owned());
        } else {
            refs.entry(name.to_owned())
                .or_insert_with(|| sha.to_owned());
        }
    }
    Ok(refs.into_iter().collect())
}

/// [`list_refs`] of a local path, read in place as every other read of a
/// local repository is: `ls-remote` of a path is git's `file` transport,
/// which the neutral configuration (`GIT_PROTOCOL_FROM_USER=0`) refuses.
async fn list_local_refs(repo: &str) -> CoreResult<Vec<(String, String)>> {
    let dir = Path::new(repo);
    if !dir.is_dir() {
        return Err(unreadable(repo, "*", "no such directory"));
    }
    // `*objectname` is the commit an annotated tag points at (empty else).
    let format = "--format=%(refname)%09%(objectname)%09%(*objectname)";
    let args = ["for-each-ref", format, "refs/heads", "refs/tags"];
    let text = tokio::time::timeout(std::time::Duration::from_secs(60), git(dir, &args))
        .await
        .map_err(|_| unreadable(repo, "*", "for-each-ref timed out"))?
        .map_err(|error| unreadable(repo, "*", &error))?;
    let mut refs = Vec::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(name), Some(sha)) = (fields.next(), fields.next()) else {
            continue;
        };
        let peeled = fields.next().filter(|peeled| !peeled.is_empty());
        refs.push((name.to_owned(), peeled.unwrap_or(sha).to_owned()));
    }
    Ok(refs)
}
