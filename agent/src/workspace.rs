//! The agent's work dir and each attempt's place in it: the build dir
//! (`builds/<project>-<slot>/<project>`, reused by the next job of the
//! project in that slot, see [`crate::git_cache`]), the attempt's own scratch
//! dir `builds/<job_id>-<attempt-short>/` (archives, downloads) and its
//! private sibling `builds/<job_id>-<attempt-short>.tmp/` (file variables),
//! the log spool
//! (`spool/<attempt_id>.log`) and the record of running attempts
//! (`running/<attempt_id>.json`), plus the source checkout with the real `git`
//! CLI. The record lets an agent restarted after a crash kill the process
//! groups its dead jobs left behind and remove their directories.
//!
//! `spool/` and `running/` are the agent's alone (0700, records 0600): a
//! record holds the job token, and a job may run as another user, or read
//! what other jobs' records say.

use crate::artifacts::TrackedFiles;
use osprey_shared::redact::url_credentials;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The directories of the work dir.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Creates `builds/`, and the private `spool/` and `running/`, under
    /// `root`. Private dirs an older agent made readable are made private.
    pub fn create(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("builds"))?;
        for private in ["spool", "running"] {
            let dir = root.join(private);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn builds(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// The bare mirrors of the repositories (`git/`), see [`crate::git_cache`].
    pub fn mirrors(&self) -> PathBuf {
        self.root.join("git")
    }

    /// The paths of one attempt that runs in build `slot` of its project.
    pub fn attempt(
        &self,
        job_id: u64,
        attempt_id: &str,
        project_name: &str,
        slot: usize,
    ) -> AttemptDirs {
        let short: String = safe_name(attempt_id).chars().take(8).collect();
        let scratch_dir = self.builds().join(format!("{job_id}-{short}"));
        let project = safe_project_name(project_name);
        // A slot dir ends in a small number, a scratch dir in 8 chars of an
        // attempt id (a UUID): they do not collide in practice.
        let build_dir = self.builds().join(format!("{project}-{slot}"));
        AttemptDirs {
            tmp_dir: self.builds().join(format!("{job_id}-{short}.tmp")),
            project_dir: build_dir.join(&project),
            archive: scratch_dir.join("artifacts.tar"),
            downloads: scratch_dir.join("downloads"),
            scratch_dir,
            build_dir,
            spool: self
                .root
                .join("spool")
                .join(format!("{}.log", safe_name(attempt_id))),
            record: self
                .root
                .join("running")
                .join(format!("{}.json", safe_name(attempt_id))),
        }
    }

    /// Cleans up after attempts of an earlier agent process (crashed or
    /// killed): kills their leftover process groups, removes their build dirs,
    /// private tmp dirs, spools and records. Their leases are gone; nothing is
    /// reported. Call at start-up, before any attempt runs: every tmp dir
    /// (`builds/*.tmp`) then belongs to an attempt that no longer runs, and is
    /// removed even without a record. Returns the records found.
    pub fn reap_leftovers(&self) -> Vec<RunningRecord> {
        let found = self.reap_records();
        self.remove_tmp_dirs();
        found
    }

    fn reap_records(&self) -> Vec<RunningRecord> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.root.join("running")) else {
            return found;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let record = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<RunningRecord>(&bytes).ok());
            if let Some(record) = record {
                if let Some(pgid) = record.pgid {
                    kill_group(pgid);
                }
                tracing::info!(job_id = record.job_id, attempt_id = %record.attempt_id, pgid = ?record.pgid, "cleaned up attempt of an earlier agent process");
                // The build dir stays: the next job in its slot reuses it,
                // treating its `.git` as untrusted (`crate::git_cache`).
                let dirs = self.attempt(record.job_id, &record.attempt_id, "", 0);
                dirs.remove();
                found.push(record);
            }
            let _ = std::fs::remove_file(&path);
        }
        found
    }

    /// Removes every `builds/*.tmp` dir: file variables of attempts that
    /// ended without cleaning up (the agent and the job's guard killed), and
    /// the shell executor's script files they left in the build dirs
    /// (`builds/*/osprey-script-*.sh`), which are kept for reuse.
    fn remove_tmp_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(self.builds()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            if is_dir {
                remove_scripts(&path);
            }
            if is_dir && path.extension().is_some_and(|ext| ext == "tmp") {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(dir = %path.display(), "removed the file variables of an earlier attempt")
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, dir = %path.display(), "cannot remove the file variables of an earlier attempt")
                    }
                }
            }
        }
    }
}

/// Removes the script files a killed shell job left in `build_dir`.
fn remove_scripts(build_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(build_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        if is_file && name.starts_with("osprey-script-") && name.ends_with(".sh") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// SIGKILL to a whole process group; a group that is gone is fine.
pub fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Paths of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptDirs {
    /// `builds/<project>-<slot>`, `CI_BUILDS_DIR`: kept when the attempt
    /// ends, for the next job of the project in this slot.
    pub build_dir: PathBuf,
    /// `builds/<job_id>-<attempt-short>`: the attempt's archives and
    /// downloads, outside the project dir; removed when the attempt ends.
    pub scratch_dir: PathBuf,
    /// `builds/<job_id>-<attempt-short>.tmp`: the attempt's private files
    /// (file variables), outside the build dir so no artifact, cache or
    /// `untracked:` listing sees them; created only when needed.
    pub tmp_dir: PathBuf,
    /// `<build_dir>/<project>`: the checkout, `CI_PROJECT_DIR`.
    pub project_dir: PathBuf,
    /// Where the job's artifact archive is built (outside the project dir).
    pub archive: PathBuf,
    /// Where dependency archives are downloaded.
    pub downloads: PathBuf,
    pub spool: PathBuf,
    pub record: PathBuf,
}

impl AttemptDirs {
    /// Removes everything of the attempt but its record and the (reused)
    /// build dir.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.tmp_dir);
        let _ = std::fs::remove_dir_all(&self.scratch_dir);
        let _ = std::fs::remove_file(&self.spool);
    }
}

/// What is kept on disk about a running attempt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRecord {
    pub job_id: u64,
    pub attempt_id: String,
    pub lease_epoch: u64,
    pub job_token: String,
    /// Process group of the script now running, if any.
    pub pgid: Option<i32>,
}

impl std::fmt::Debug for RunningRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRecord")
            .field("job_id", &self.job_id)
            .field("attempt_id", &self.attempt_id)
            .field("lease_epoch", &self.lease_epoch)
            .field("pgid", &self.pgid)
            .finish_non_exhaustive()
    }
}

impl RunningRecord {
    /// Writes the record atomically (temp + rename), readable by the agent
    /// only: the file is created 0600, never readable for a moment.
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let temp = path.with_extension("json.tmp");
        // A temp file left by a crash may have other modes; start afresh.
        let _ = std::fs::remove_file(&temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&serde_json::to_vec(self)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    }
}

/// Keeps a path segment to `[A-Za-z0-9._-]`, never `.`/`..`.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "_".to_owned()
    } else {
        cleaned
    }
}

/// The dir name of a project's checkout (and the key of its build slots).
pub fn project_dir_name(name: &str) -> String {
    safe_project_name(name)
}

fn safe_project_name(name: &str) -> String {
    if name.is_empty() {
        "project".to_owned()
    } else {
        safe_name(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("invalid commit sha {0:?}")]
    BadSha(String),
    #[error("invalid repository url {0:?}")]
    BadUrl(String),
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("{0}")]
    Git(String),
}

/// Clones `repo_url` into `project_dir`, checks out exactly `sha`, detached,
/// and lists the paths that commit tracks (for `untracked:` later, when no
/// git may run on the project dir any more). Git's own messages go to `log`
/// (for the job log).
pub async fn checkout(
    repo_url: &str,
    sha: &str,
    project_dir: &Path,
    log: &mut Vec<u8>,
) -> Result<TrackedFiles, CheckoutError> {
    if !(4..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CheckoutError::BadSha(sha.to_owned()));
    }
    if repo_url.is_empty() || repo_url.starts_with('-') {
        return Err(CheckoutError::BadUrl(repo_url.to_owned()));
    }
    if let Some(parent) = project_dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(CheckoutError::Spawn)?;
    }
    let _ = tokio::fs::remove_dir_all(project_dir).await;
    let target = project_dir.as_os_str();
    git(
        &["clone", "--quiet", "--no-checkout", "--"],
        &[repo_url.as_ref(), target],
        None,
        log,
    )
    .await
    .map_err(|err| {
        CheckoutError::Git(format!(
            "git clone of {} failed: {err}",
            url_credentials(repo_url)
        ))
    })?;
    git(
        &["checkout", "--quiet", "--detach"],
        &[sha.as_ref()],
        Some(project_dir),
        log,
    )
    .await
    .map_err(|err| {
        CheckoutError::Git(format!(
            "commit {sha} not found in {}: {err}",
            url_credentials(repo_url)
        ))
    })?;
    let listing = git(
        &["ls-tree", "-r", "-z", "--name-only", "HEAD"],
        &[],
        Some(project_dir),
        &mut Vec::new(),
    )
    .await
    .map_err(|err| CheckoutError::Git(format!("cannot list the files of {sha}: {err}")))?;
    Ok(TrackedFiles::from_nul_separated(&listing))
}

/// Runs git with a neutral configuration: no system or global config, no
/// hooks, no fsmonitor, no pager, no prompt, no `ext::` transport. Checkout
/// runs in a directory it just created, so its `.git/config` is the one
/// `git clone` wrote; this makes sure nothing else on the host (a config a
/// job could have written) configures a command either. Returns stdout.
pub(crate) async fn git(
    args: &[&str],
    more: &[&std::ffi::OsStr],
    dir: Option<&Path>,
    log: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut command = tokio::process::Command::new("git");
    command
        .arg("--no-pager")
        .args(NEUTRAL_CONFIG.iter().flat_map(|setting| ["-c", setting]))
        .args(args)
        .args(more)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_CONFIG_PARAMETERS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command
        .output()
        .await
        .map_err(|err| format!("cannot run git: {err}"))?;
    // Git repeats the URL it was given, token and all: the job log and the
    // failure reason get it masked.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = url_credentials(&stderr);
    log.extend_from_slice(stderr.as_bytes());
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(stderr
            .trim()
            .lines()
            .last()
            .unwrap_or("git failed")
            .to_owned())
    }
}

/// `-c` settings of every git the agent runs: what a repository's own config
/// could otherwise make git execute.
pub(crate) const NEUTRAL_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.pager=cat",
    "protocol.ext.allow=never",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[tokio::test]
    async fn a_token_in_the_repository_url_never_reaches_the_log_or_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "glpat-s3cret-in-the-url";
        // Nothing listens on port 9: the clone fails at once, git naming the URL.
        let url = format!("https://oauth2:{secret}@127.0.0.1:9/group/app.git");
        let mut log = Vec::new();
        let error = checkout(&url, "0123abcd", &dir.path().join("app"), &mut log)
            .await
            .expect_err("nothing to clone from");
        let (error, log) = (error.to_string(), String::from_utf8_lossy(&log));
        assert!(
            !error.contains(secret) && !log.contains(secret),
            "{error}\n{log}"
        );
        assert!(
            error.contains("https://[MASKED]@127.0.0.1:9/group/app.git"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn checks_out_exactly_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        run(&repo, &["init", "-q"]);
        std::fs::write(repo.join("f"), "one").unwrap();
        run(&repo, &["add", "f"]);
        run(&repo, &["commit", "-qm", "one"]);
        let first = run(&repo, &["rev-parse", "HEAD"]);
        std::fs::write(repo.join("f"), "two").unwrap();
        run(&repo, &["commit", "-qam", "two"]);

        let work = WorkDir::create(&dir.path().join("work")).unwrap();
        let dirs = work.attempt(7, "0123456789abcdef", "repo", 0);
        let mut log = Vec::new();
        let tracked = checkout(repo.to_str().unwrap(), &first, &dirs.project_dir, &mut log)
            .await
            .unwrap();
        assert_eq!(tracked, TrackedFiles::from_nul_separated(b"f\0"));
        assert_eq!(
            std::fs::read_to_string(dirs.project_dir.join("f")).unwrap(),
            "one"
        );
        assert!(dirs.project_dir.ends_with("builds/repo-0/repo"));
        assert!(dirs.archive.starts_with(dirs.scratch_dir.as_path()));

        let err = checkout(
            repo.to_str().unwrap(),
            &"f".repeat(40),
            &dirs.project_dir,
            &mut log,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let err = checkout(
            repo.to_str().unwrap(),
            "--help",
            &dirs.project_dir,
            &mut log,
        )
        .await;
        assert!(matches!(err, Err(CheckoutError::BadSha(_))));
        let err = checkout("/nonexistent/repo", &first, &dirs.project_dir, &mut log).await;
        assert!(matches!(err, Err(CheckoutError::Git(_))));
    }

    #[test]
    fn attempt_paths_stay_inside_the_work_dir() {
        let work = WorkDir {
            root: PathBuf::from("/w"),
        };
        let dirs = work.attempt(1, "../../x", "..", 0);
        assert!(dirs.build_dir.starts_with("/w/builds"));
        assert!(dirs.scratch_dir.starts_with("/w/builds"));
        assert!(dirs.tmp_dir.starts_with("/w/builds"));
        assert!(
            !dirs.tmp_dir.starts_with(&dirs.build_dir),
            "outside the build dir"
        );
        assert!(!dirs.project_dir.to_str().unwrap().contains("/../"));
        assert!(dirs.spool.starts_with("/w/spool"));
    }

    #[test]
    fn records_spool_and_running_dirs_are_private() {
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // An older agent's dirs, made with the default modes.
        std::fs::create_dir_all(dir.path().join("spool")).unwrap();
        std::fs::set_permissions(
            dir.path().join("spool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let work = WorkDir::create(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("spool")), 0o700);
        assert_eq!(mode(&dir.path().join("running")), 0o700);
        let dirs = work.attempt(3, "abcdef123456", "p", 0);
        let record = RunningRecord {
            job_id: 3,
            attempt_id: "abcdef123456".into(),
            lease_epoch: 1,
            job_token: "secret".into(),
            pgid: None,
        };
        // A stale temp file of a crash, world-readable.
        std::fs::write(dirs.record.with_extension("json.tmp"), "old").unwrap();
        record.store(&dirs.record).unwrap();
        assert_eq!(mode(&dirs.record), 0o600);
        record.store(&dirs.record).unwrap();
        assert_eq!(mode(&dirs.record), 0o600, "rewritten");
    }

    #[test]
    fn leftovers_are_killed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::create(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        let mut child = child.arg("1000").spawn().unwrap();
        let dirs = work.attempt(3, "abcdef123456", "p", 0);
        std::fs::create_dir_all(&dirs.project_dir).unwrap();
        std::fs::create_dir_all(&dirs.tmp_dir).unwrap();
        std::fs::write(dirs.tmp_dir.join("KEY"), "secret").unwrap();
        std::fs::write(&dirs.spool, "log").unwrap();
        let script = dirs.build_dir.join("osprey-script-1234.sh");
        std::fs::write(&script, "echo left").unwrap();
        // A tmp dir whose record is gone (removed before its dir).
        let stray = work.attempt(4, "0000ffff", "p", 0).tmp_dir;
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::write(stray.join("KEY"), "secret").unwrap();
        RunningRecord {
            job_id: 3,
            attempt_id: "abcdef123456".into(),
            lease_epoch: 1,
            job_token: "t".into(),
            pgid: Some(child.id() as i32),
        }
        .store(&dirs.record)
        .unwrap();
        let found = work.reap_leftovers();
        assert_eq!(found.len(), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed");
        assert!(!dirs.scratch_dir.exists() && !dirs.spool.exists() && !dirs.record.exists());
        assert!(dirs.project_dir.exists(), "the build dir is kept for reuse");
        assert!(!script.exists(), "a killed job's script is removed");
        assert!(
            !dirs.tmp_dir.exists() && !stray.exists(),
            "file variables removed"
        );
    }
}
