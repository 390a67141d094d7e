//! Reading a pipeline's commit from a git repository with the real `git`:
//! resolving a ref to its commit and reading `.gitlab-ci.yml` at that commit.
//! A local path is read in place; a URL is mirrored under the data dir.

use crate::error::{CoreError, CoreResult};
use osprey_shared::yaml::{IncludeLoader, LoadError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The pipeline file GitLab reads.
pub const PIPELINE_FILE: &str = ".gitlab-ci.yml";

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

/// Resolves `git_ref` in `repo` (local path or URL) and reads the pipeline file.
pub async fn resolve(repo: &str, git_ref: &str, mirrors: &Path) -> CoreResult<ResolvedCommit> {
    if git_ref.is_empty() || git_ref.starts_with('-') || git_ref.contains("..") {
        return Err(CoreError::InvalidArgument(format!(
            "invalid ref {git_ref:?}"
        )));
    }
    let git_dir = git_dir_for(repo, mirrors).await?;
    let sha = git(
        &git_dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{git_ref}^{{commit}}"),
        ],
    )
    .await
    .map_err(|_| CoreError::InvalidArgument(format!("ref {git_ref:?} not found in {repo}")))?;
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
    let pipeline_file = git(&git_dir, &["show", &format!("{sha}:{PIPELINE_FILE}")])
        .await
        .map_err(|_| {
            CoreError::InvalidArgument(format!(
                "{PIPELINE_FILE} not found at commit {sha} of {repo}"
            ))
        })?;
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

/// The repository at one commit, read with blocking `git` calls: for
/// `include:` and `exists:` while planning (which runs on a blocking thread).
pub struct GitTree {
    pub git_dir: PathBuf,
    pub sha: String,
}

impl GitTree {
    fn git(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.git_dir)
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
        let bytes = self
            .git(&["show", &format!("{}:{path}", self.sha)])
            .map_err(|_| LoadError::NotFound)?;
        String::from_utf8(bytes).map_err(|_| LoadError::Other("not UTF-8 text".to_owned()))
    }

    fn list(&self) -> Result<Vec<String>, LoadError> {
        self.git(&["ls-tree", "-r", "-z", "--name-only", &self.sha])
            .map(|out| split_nul(&out))
            .map_err(LoadError::Other)
    }
}

async fn git_dir_for(repo: &str, mirrors: &Path) -> CoreResult<PathBuf> {
    let local = Path::new(repo);
    if local.is_absolute() && local.exists() {
        return Ok(local.to_path_buf());
    }
    if local.exists() || !repo.contains("://") {
        return Err(CoreError::InvalidArgument(format!(
            "repository {repo:?} must be an absolute path that exists or a URL"
        )));
    }
    let name = hex::encode(&Sha256::digest(repo.as_bytes())[..8]);
    let mirror = mirrors.join(name);
    if mirror.exists() {
        git(&mirror, &["remote", "update", "--prune"])
            .await
            .map_err(|error| CoreError::InvalidArgument(format!("fetching {repo}: {error}")))?;
    } else {
        tokio::fs::create_dir_all(mirrors).await.map_err(|error| {
            CoreError::Internal(format!("creating {}: {error}", mirrors.display()))
        })?;
        let output = Command::new("git")
            .args(["clone", "--quiet", "--mirror", "--", repo])
            .arg(&mirror)
            .output()
            .await
            .map_err(|error| CoreError::Internal(format!("running git: {error}")))?;
        if !output.status.success() {
            return Err(CoreError::InvalidArgument(format!(
                "cloning {repo}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(mirror)
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .await
        .map_err(|error| format!("running git: {error}"))?;
    if output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(if args.first() == Some(&"show") {
            text.into_owned()
        } else {
            text.trim().to_owned()
        })
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// The project's name: the last path segment without `.git`.
pub fn project_name(repo: &str) -> String {
    let trimmed = repo.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    let name = last.strip_suffix(".git").unwrap_or(last);
    if name.is_empty() {
        "project".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::project_name;

    #[test]
    fn project_names_come_from_the_last_segment() {
        assert_eq!(project_name("/srv/git/app.git"), "app");
        assert_eq!(project_name("https://git.example.com/team/api/"), "api");
        assert_eq!(project_name("git@example.com:team/web.git"), "web");
    }
}
