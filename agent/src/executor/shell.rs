//! The shell executor: runs a job's scripts with `sh` on the agent's host, in
//! the project dir, with exactly the job's environment (plus the agent's
//! `PATH` and `HOME`). Each script runs in its own process group so a cancel
//! or timeout stops everything it started: SIGTERM to the group, SIGKILL after
//! the grace period. stdout and stderr share one pipe, so the log keeps the
//! order in which the script wrote them.
//!
//! In the agent every script runs under a job guard ([`crate::guard`]), the
//! leader of the script's group, so the group dies with the agent even when
//! the agent is SIGKILLed; and, with `user = "..."`, as that user, who is
//! given the project dir first. Without a guard (unit tests, `exec`) `sh`
//! leads the group itself.

use super::user::JobUser;
use super::{Executor, Outcome, OutputSink, PreparedJob};
use bytes::Bytes;
use futures::future::BoxFuture;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use osprey_shared::JobId;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// GitLab gives `after_script` its own timeout.
pub const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long output still held in the pipe is read after the script's group is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The one warning line, as GitLab Runner's shell executor prints, for a job
/// that names an `image:` or `services:`, which only the Docker executor uses.
pub fn ignored_settings_warning(job: &PreparedJob) -> Option<String> {
    let mut ignored = Vec::new();
    if let Some(image) = &job.image {
        ignored.push(format!("image: {}", image.name));
    }
    if !job.services.is_empty() {
        let names: Vec<&str> = job.services.iter().map(|s| s.name.as_str()).collect();
        ignored.push(format!("services: {}", names.join(", ")));
    }
    if ignored.is_empty() {
        return None;
    }
    Some(format!(
        "WARNING: the shell executor ignores {} (run on a docker agent for them)\n",
        ignored.join(" and ")
    ))
}

/// Told the process group of each script when it starts (`Some`) and when it
/// is gone (`None`), so the agent can record it and kill it after a crash.
pub type ProcessHook = Arc<dyn Fn(JobId, Option<i32>) + Send + Sync>;

/// Runs jobs with `sh` on the host.
#[derive(Clone, Default)]
pub struct ShellExecutor {
    hook: Option<ProcessHook>,
    after_script_timeout: Option<Duration>,
    /// The agent binary, run as `guard shell` around each script.
    guard: Option<PathBuf>,
    user: Option<JobUser>,
}

impl std::fmt::Debug for ShellExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellExecutor").finish_non_exhaustive()
    }
}

impl ShellExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports each script's process group to `hook`.
    pub fn with_process_hook(mut self, hook: ProcessHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Runs each script under the job guard `program` (the agent binary,
    /// `std::env::current_exe()`), so it dies with the agent.
    pub fn with_guard(mut self, program: PathBuf) -> Self {
        self.guard = Some(program);
        self
    }

    /// Runs the scripts as `user`, who is given each job's project dir.
    pub fn with_user(mut self, user: JobUser) -> Self {
        self.user = Some(user);
        self
    }

    /// Overrides [`AFTER_SCRIPT_TIMEOUT`] (tests).
    pub fn with_after_script_timeout(mut self, timeout: Duration) -> Self {
        self.after_script_timeout = Some(timeout);
        self
    }

    fn notify(&self, job: JobId, pgid: Option<i32>) {
        if let Some(hook) = &self.hook {
            hook(job, pgid);
        }
    }

    async fn run_job(
        &self,
        job: &PreparedJob,
        output: OutputSink,
        cancel: CancellationToken,
    ) -> Outcome {
        if let Some(warning) = ignored_settings_warning(job) {
            let _ = output.send(Bytes::from(warning)).await;
        }
        if let Some(user) = self.user.clone().filter(JobUser::is_other) {
            let project_dir = job.project_dir.clone();
            let taker = user.clone();
            let taken = tokio::task::spawn_blocking(move || taker.take_over(&project_dir))
                .await
                .map_err(std::io::Error::other)
                .and_then(|taken| taken);
            if let Err(err) = taken {
                return Outcome::Failed {
                    exit_code: None,
                    reason: format!("cannot give the project dir to the job's user: {err}"),
                };
            }
            if let Some(files_dir) = &job.files_dir {
                if let Err(err) = user.take_over_files(files_dir) {
                    return Outcome::Failed {
                        exit_code: None,
                        reason: format!("cannot give the file variables to the job's user: {err}"),
                    };
                }
            }
        }
        let main = self
            .run_script(job, &job.main_script, &output, &cancel, job.timeout)
            .await;
        let outcome = match main {
            Ok(Ended::Exited(status)) if status.success() => Outcome::Success,
            Ok(Ended::Exited(status)) => Outcome::Failed {
                exit_code: Some(status.code().unwrap_or(-1)),
                reason: "script failure".to_owned(),
            },
            Ok(Ended::Canceled) => Outcome::Canceled,
            Ok(Ended::TimedOut) => Outcome::TimedOut,
            Err(err) => Outcome::Failed {
                exit_code: None,
                reason: format!("cannot run the script: {err}"),
            },
        };
        if let Some(after) = &job.after_script {
            // after_script runs whatever happened, with its own timeout; a
            // cancel has already fired, so it is not tied to `cancel`.
            let timeout = self.after_script_timeout.unwrap_or(AFTER_SCRIPT_TIMEOUT);
            let after = outcome.after_script(after);
            // The same header as the Docker executor and GitLab Runner.
            let _ = output
                .send(Bytes::from_static(b"Running after_script\n"))
                .await;
            let note = match self
                .run_script(job, &after, &output, &CancellationToken::new(), timeout)
                .await
            {
                Ok(Ended::Exited(status)) if status.success() => None,
                Ok(Ended::Exited(status)) => Some(format!(
                    "after_script failed with exit code {}; ignored",
                    status.code().unwrap_or(-1)
                )),
                Ok(Ended::TimedOut) => Some("after_script timed out; ignored".to_owned()),
                Ok(Ended::Canceled) => None,
                Err(err) => Some(format!("cannot run after_script: {err}")),
            };
            if let Some(note) = note {
                let _ = output.send(Bytes::from(format!("WARNING: {note}\n"))).await;
            }
        }
        outcome
    }

    /// Runs one script to its end, stopping it on cancel or timeout.
    async fn run_script(
        &self,
        job: &PreparedJob,
        script: &str,
        output: &OutputSink,
        cancel: &CancellationToken,
        timeout: Duration,
    ) -> std::io::Result<Ended> {
        let file = ScriptFile::write(&job.project_dir, script, self.user.as_ref())?;
        let (pipe_writer, pipe_reader) = tokio::net::unix::pipe::pipe()?;
        let stdout = pipe_writer.into_blocking_fd()?;
        let stderr = stdout.try_clone()?;
        let mut command = match &self.guard {
            Some(program) => crate::guard::shell_command(
                program,
                file.path(),
                self.user.as_ref(),
                job.files_dir.as_deref(),
            ),
            None => {
                let mut command = tokio::process::Command::new("sh");
                command.arg(file.path()).stdin(Stdio::null());
                if let Some(user) = self.user.as_ref().filter(|user| user.is_other()) {
                    command.uid(user.uid).gid(user.gid);
                }
                command
            }
        };
        command
            .current_dir(&job.project_dir)
            .env_clear()
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            // A guard must outlive a dropped future: the cut lifeline then
            // makes it kill the whole group, where SIGKILL would stop it alone.
            .kill_on_drop(self.guard.is_none());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        match &self.user {
            Some(user) => {
                command
                    .env("HOME", &user.home)
                    .env("USER", &user.name)
                    .env("LOGNAME", &user.name);
            }
            None => {
                if let Some(home) = std::env::var_os("HOME") {
                    command.env("HOME", home);
                }
            }
        }
        command.envs(job.env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn()?;
        // The command holds the pipe's write ends: drop it so EOF comes when
        // the script's processes are gone.
        drop(command);
        // The guard's lifeline: held open until the script's group is gone
        // (`wait` would close it).
        let lifeline = child.stdin.take();
        let pgid = child.id().map(|pid| pid as i32);
        if let Some(pgid) = pgid {
            self.notify(job.job_id, Some(pgid));
        }
        let done = CancellationToken::new();
        let pump = pump(pipe_reader, output.clone(), done.clone());
        let supervise = async {
            let ended = tokio::select! {
                status = child.wait() => status.map(Ended::Exited),
                () = cancel.cancelled() => {
                    stop(&mut child, pgid, job.kill_grace).await;
                    Ok(Ended::Canceled)
                }
                () = tokio::time::sleep(timeout) => {
                    stop(&mut child, pgid, job.kill_grace).await;
                    Ok(Ended::TimedOut)
                }
            };
            // Whatever the script left running in its group goes too.
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            done.cancel();
            ended
        };
        let ((), ended) = tokio::join!(pump, supervise);
        drop(lifeline);
        self.notify(job.job_id, None);
        ended
    }
}

impl Executor for ShellExecutor {
    fn run<'a>(
        &'a self,
        job: &'a PreparedJob,
        output: OutputSink,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run_job(job, output, cancel))
    }
}

enum Ended {
    Exited(ExitStatus),
    Canceled,
    TimedOut,
}

/// SIGTERM to the group, SIGKILL after `grace`, then reap the script.
async fn stop(child: &mut tokio::process::Child, pgid: Option<i32>, grace: Duration) {
    let Some(pgid) = pgid else {
        let _ = child.kill().await;
        return;
    };
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Copies the pipe to `output` until EOF, or until shortly after `done` (a
/// process that left the group may hold the pipe open forever).
async fn pump(
    mut reader: tokio::net::unix::pipe::Receiver,
    output: OutputSink,
    done: CancellationToken,
) {
    let deadline = async {
        done.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::pin!(deadline);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    tokio::select! {
                        // A closed receiver means nobody wants the log: keep draining.
                        _ = output.send(chunk) => {}
                        () = &mut deadline => return,
                    }
                }
            },
            () = &mut deadline => return,
        }
    }
}

/// The script, written to a private temp file (an argument could be too long,
/// and stdin stays free for the job's commands). Removed on drop.
struct ScriptFile {
    path: PathBuf,
}

impl ScriptFile {
    /// Readable by `user` only (and the agent), when one is given. Written
    /// beside the project dir, in the slot's build dir, so that what a
    /// killed agent leaves behind is removed when the next agent process
    /// reaps leftovers (rather than piling up in the system's temp dir).
    fn write(project_dir: &Path, script: &str, user: Option<&JobUser>) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = project_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("osprey-script-{}.sh", uuid::Uuid::new_v4()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        // Removed on drop from here on, whatever fails next.
        let written = Self { path };
        if let Some(user) = user.filter(|user| user.is_other()) {
            std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid))?;
        }
        file.write_all(script.as_bytes())?;
        Ok(written)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
