//! The project dir of a build slot, brought to a job's commit from the
//! local mirror (GitLab's `fetch` strategy), or made anew.
//!
//! The dir was writable by the previous job (by root in its container, with
//! Docker), so its `.git` is untrusted: before any git runs there, `.git`
//! must be a real directory with real `objects/` and `refs/`, no
//! `commondir` and no `modules/` (submodule repositories keep configs of
//! their own); otherwise the dir is removed and made anew. Its `config` is
//! rewritten from scratch, its hooks and alternates removed. The neutral
//! `-c` settings of [`crate::workspace::git`] come on top.
//!
//! A new repository is `git init` + the same fetch, so a shallow
//! (`GIT_DEPTH`) and a full work tree come the same way; objects are copied
//! by the fetch (never hardlinked: a job could otherwise corrupt the mirror
//! through its own `.git`), and no alternates point out of the dir, so the
//! `.git` also works inside a container that mounts only the project dir.

use super::options::{GitOptions, Submodules};
use crate::artifacts::TrackedFiles;
use crate::workspace::{git, CheckoutError};
use std::ffi::OsStr;
use std::path::Path;

/// Whether the dir was reused or made anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    Reused,
    Fresh,
}

/// Brings `project_dir` to `sha` (full) from `mirror`, reusing it when it
/// is a usable repository. `origin` becomes `repo_url`, as after a clone.
pub async fn sync(
    mirror: &Path,
    repo_url: &str,
    sha: &str,
    project_dir: &Path,
    options: &GitOptions,
    reuse: bool,
    log: &mut Vec<u8>,
) -> Result<(TrackedFiles, DirState), CheckoutError> {
    if reuse && usable(project_dir) {
        let mut attempt_log = Vec::new();
        match update(
            mirror,
            repo_url,
            sha,
            project_dir,
            options,
            &mut attempt_log,
        )
        .await
        {
            Ok(tracked) => {
                log.extend_from_slice(&attempt_log);
                return Ok((tracked, DirState::Reused));
            }
            Err(err) => {
                tracing::info!(error = %err, dir = %project_dir.display(), "reused build dir failed; starting afresh");
            }
        }
    }
    remove_dir(project_dir).await?;
    tokio::fs::create_dir_all(project_dir)
        .await
        .map_err(CheckoutError::Spawn)?;
    git(&["init", "--quiet"], &[], Some(project_dir), log)
        .await
        .map_err(|err| CheckoutError::Git(format!("git init failed: {err}")))?;
    let tracked = update(mirror, repo_url, sha, project_dir, options, log).await?;
    Ok((tracked, DirState::Fresh))
}

/// Removes the dir (no error when it is not there).
pub async fn remove_dir(dir: &Path) -> Result<(), CheckoutError> {
    match tokio::fs::symlink_metadata(dir).await {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(meta) if !meta.is_dir() => tokio::fs::remove_file(dir)
            .await
            .map_err(CheckoutError::Spawn),
        _ => tokio::fs::remove_dir_all(dir).await.map_err(|err| {
            CheckoutError::Git(format!(
                "cannot remove the build dir {}: {err}",
                dir.display()
            ))
        }),
    }
}

/// Rewrites the kept dir's `.git/config` with `repo_url` stripped of its
/// credentials, once the job has ended: the job token in the URL must not
/// outlive the job on disk (the dir used to be removed with the attempt).
/// Nothing is done when the URL has none or the dir is not a usable repository.
pub fn forget_credentials(project_dir: &Path, repo_url: &str) {
    let stripped = without_credentials(repo_url);
    if stripped == repo_url || !usable(project_dir) {
        return;
    }
    if let Err(err) = write_config(project_dir, &stripped) {
        tracing::warn!(error = %err, dir = %project_dir.display(), "cannot remove the credentials from the build dir's .git/config");
    }
}

/// `http(s)://user:secret@host/path` without `user:secret@`; other URLs
/// as they are (an `ssh://git@` user is no secret, and needed).
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return url.to_owned();
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Whether `project_dir` looks like a repository this module made, with
/// nothing in its `.git` that would send git elsewhere.
fn usable(project_dir: &Path) -> bool {
    let real_dir =
        |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_dir());
    let real_file =
        |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_file());
    let dot_git = project_dir.join(".git");
    real_dir(project_dir)
        && real_dir(&dot_git)
        && real_dir(&dot_git.join("objects"))
        && real_dir(&dot_git.join("refs"))
        && real_file(&dot_git.join("HEAD"))
        && !dot_git.join("commondir").exists()
        && std::fs::symlink_metadata(dot_git.join("modules")).is_err()
}

/// Rewrites what of `.git` could make git run something or read objects
/// from elsewhere.
fn sanitize(project_dir: &Path, repo_url: &str) -> std::io::Result<()> {
    let dot_git = project_dir.join(".git");
    for link_or_dir in ["hooks", "info/attributes"] {
        let path = dot_git.join(link_or_dir);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path)?,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(_) => {}
        }
    }
    for file in [
        "objects/info/alternates",
        "objects/info/http-alternates",
        "config.worktree",
    ] {
        match std::fs::remove_file(dot_git.join(file)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    write_config(project_dir, repo_url)
}

/// Replaces `.git/config` with [`neutral_config`].
fn write_config(project_dir: &Path, repo_url: &str) -> std::io::Result<()> {
    let config = project_dir.join(".git").join("config");
    // Removed first: a symlink there must not be written through.
    match std::fs::remove_file(&config) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let mut file = options.open(&config)?;
    std::io::Write::write_all(&mut file, neutral_config(repo_url).as_bytes())
}

/// The whole `.git/config` of a work tree: what `git init` and a clone of
/// `repo_url` would write, nothing a job could have added.
fn neutral_config(repo_url: &str) -> String {
    let quoted = repo_url.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n\
         [remote \"origin\"]\n\turl = \"{quoted}\"\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
    )
}

/// Sanitizes, fetches from the mirror, checks out, cleans, updates the
/// submodules, and lists the commit's files.
async fn update(
    mirror: &Path,
    repo_url: &str,
    sha: &str,
    project_dir: &Path,
    options: &GitOptions,
    log: &mut Vec<u8>,
) -> Result<TrackedFiles, CheckoutError> {
    sanitize(project_dir, repo_url)
        .map_err(|err| CheckoutError::Git(format!("cannot reset the build dir's .git: {err}")))?;
    let dir = Some(project_dir);
    // The work tree's owner may be the job's user: git's ownership check
    // is moot once the agent itself wrote the config.
    let trusted = ["-c", "safe.directory=*"];
    let source = format!("file://{}", mirror.display());
    let mut fetch: Vec<&str> = trusted.to_vec();
    fetch.extend([
        "-c",
        "protocol.file.allow=always",
        // Read by the mirror's upload-pack: the job's commit may be one no
        // ref points at.
        "-c",
        "uploadpack.allowAnySHA1InWant=true",
        "fetch",
        "--quiet",
        "--prune",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
    ]);
    let depth = options.depth.map(|depth| format!("--depth={depth}"));
    match &depth {
        Some(depth) => fetch.push(depth),
        None if project_dir.join(".git/shallow").exists() => fetch.push("--unshallow"),
        None => {}
    }
    fetch.extend([
        "--",
        &source,
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/tags/*:refs/tags/*",
        sha,
    ]);
    git(&fetch, &[], dir, log)
        .await
        .map_err(|err| CheckoutError::Git(format!("git fetch from the mirror failed: {err}")))?;
    let with_trust = |args: &[&'static str]| -> Vec<&'static str> {
        let mut all = trusted.to_vec();
        all.extend_from_slice(args);
        all
    };
    if options.checkout {
        git(
            &with_trust(&["checkout", "--quiet", "--force", "--detach"]),
            &[OsStr::new(sha)],
            dir,
            log,
        )
        .await
        .map_err(|err| CheckoutError::Git(format!("git checkout of {sha} failed: {err}")))?;
    } else {
        git(
            &with_trust(&["update-ref", "--no-deref", "HEAD"]),
            &[OsStr::new(sha)],
            dir,
            log,
        )
        .await
        .map_err(|err| CheckoutError::Git(format!("cannot move HEAD to {sha}: {err}")))?;
    }
    if let Some(flags) = &options.clean_flags {
        let flags: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
        git(&with_trust(&["clean"]), &flags, dir, log)
            .await
            .map_err(|err| CheckoutError::Git(format!("git clean failed: {err}")))?;
    }
    if options.submodules != Submodules::None {
        let recursive: &[&OsStr] = if options.submodules == Submodules::Recursive {
            &[OsStr::new("--recursive")]
        } else {
            &[]
        };
        git(
            &with_trust(&["submodule", "--quiet", "sync"]),
            recursive,
            dir,
            log,
        )
        .await
        .map_err(|err| CheckoutError::Git(format!("git submodule sync failed: {err}")))?;
        git(
            &with_trust(&["submodule", "--quiet", "update", "--init"]),
            recursive,
            dir,
            log,
        )
        .await
        .map_err(|err| CheckoutError::Git(format!("git submodule update failed: {err}")))?;
    }
    let listing = git(
        &with_trust(&["ls-tree", "-r", "-z", "--name-only", "HEAD"]),
        &[],
        dir,
        &mut Vec::new(),
    )
    .await
    .map_err(|err| CheckoutError::Git(format!("cannot list the files of {sha}: {err}")))?;
    Ok(TrackedFiles::from_nul_separated(&listing))
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn credentials_are_stripped_from_the_authority_only() {
        assert_eq!(
            without_credentials("https://gitlab-ci-token:s3cret@git.test/g/app.git"),
            "https://git.test/g/app.git"
        );
        assert_eq!(
            without_credentials("https://git.test/g/a@b.git"),
            "https://git.test/g/a@b.git"
        );
        assert_eq!(without_credentials("/srv/repo"), "/srv/repo");
        assert_eq!(
            without_credentials("ssh://git@git.test/app"),
            "ssh://git@git.test/app"
        );
    }
}
