//! The per-job guard: a small process, the agent binary itself in the hidden
//! mode `osprey-agent guard`, that makes a job die with its agent. Its stdin
//! is the lifeline: a pipe whose only write end the agent holds (Rust opens
//! it close-on-exec, so no other child inherits it). When the agent dies,
//! even by SIGKILL, the kernel closes that end and the guard reads EOF; unless
//! the agent wrote a byte first (disarmed it), the agent is gone and the guard
//! acts at once:
//!
//! - `guard shell SCRIPT` leads the job's process group and runs `sh SCRIPT`
//!   in it. It survives SIGTERM, SIGINT and SIGHUP (tokio handlers, which
//!   `exec` resets, so the script still gets the default actions), so a cancel
//!   (SIGTERM to the group, SIGKILL after the grace) stops the script and the
//!   guard reports its status: it exits with the script's code, 128+signal
//!   when signalled. On a cut lifeline it SIGKILLs the whole group, itself
//!   included. With `--uid/--gid/--groups` it first becomes that user, so the
//!   script runs with that uid, gid and supplementary groups.
//! - `guard docker --run ID` waits beside a Docker job; on a cut lifeline it
//!   removes the run's containers and network by their `osprey.run` label,
//!   connecting as the executor does (`DOCKER_HOST`, inherited, or the
//!   default socket). The executor disarms it once it has cleaned up itself.
//!
//! Both take `--remove-on-cut DIR`, the job's file variables
//! ([`crate::file_variables`]): on a cut lifeline the guard removes it first,
//! so no secret file outlives a killed agent. A shell guard running as
//! another user removes the files (the job's user owns them) but not the
//! directory itself, whose parent is the agent's: the empty directory goes at
//! the agent's next start.
//!
//! Restart clean-up (`WorkDir::reap_leftovers`, `DockerExecutor::reap_orphans`)
//! stays: it covers a guard that was itself killed.

use crate::executor::user::JobUser;
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// How long a disarmed Docker guard may take to exit before the agent stops waiting.
const DISARM_WAIT: Duration = Duration::from_secs(5);

/// `osprey-agent guard ...` (hidden: the agent starts it, people do not).
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    #[command(subcommand)]
    pub kind: GuardKind,
}

#[derive(Debug, Clone, Subcommand)]
pub enum GuardKind {
    /// Run `sh SCRIPT` in this process group; kill the group if the agent goes.
    Shell {
        /// Become this uid (with `--gid` and `--groups`) before running the script.
        #[arg(long)]
        uid: Option<u32>,
        #[arg(long)]
        gid: Option<u32>,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<u32>,
        /// Remove this directory (the job's file variables) if the agent goes.
        #[arg(long)]
        remove_on_cut: Option<PathBuf>,
        script: PathBuf,
    },
    /// Remove one Docker run's containers and network if the agent goes.
    Docker {
        #[arg(long)]
        run: String,
        /// Remove this directory (the job's file variables) if the agent goes.
        #[arg(long)]
        remove_on_cut: Option<PathBuf>,
    },
}

impl GuardArgs {
    /// Whether the guard's stderr is the job's log (nothing may be logged there).
    pub fn writes_job_output(&self) -> bool {
        matches!(self.kind, GuardKind::Shell { .. })
    }
}

/// Runs the guard; returns its exit status. Call it before any runtime or
/// thread exists, so that a user switch applies to the whole process.
pub fn main(args: GuardArgs) -> i32 {
    if let GuardKind::Shell {
        uid, gid, groups, ..
    } = &args.kind
    {
        if let Err(err) = become_user(*uid, *gid, groups) {
            eprintln!("osprey-agent guard: cannot switch user: {err}");
            return 126;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("osprey-agent guard: cannot start: {err}");
            return 1;
        }
    };
    match args.kind {
        GuardKind::Shell {
            script,
            remove_on_cut,
            ..
        } => runtime.block_on(shell(&script, remove_on_cut.as_deref())),
        GuardKind::Docker { run, remove_on_cut } => {
            runtime.block_on(docker(&run, remove_on_cut.as_deref()))
        }
    }
}

/// Groups first, then gid, then uid: each step needs the privilege the next drops.
fn become_user(uid: Option<u32>, gid: Option<u32>, groups: &[u32]) -> nix::Result<()> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    if let Some(gid) = gid {
        let groups: Vec<Gid> = groups.iter().copied().map(Gid::from_raw).collect();
        setgroups(&groups)?;
        setgid(Gid::from_raw(gid))?;
    }
    if let Some(uid) = uid {
        setuid(Uid::from_raw(uid))?;
    }
    Ok(())
}

/// What the agent's end of the lifeline said.
#[derive(Debug, PartialEq, Eq)]
enum Lifeline {
    /// EOF (or an error): the agent is gone.
    Cut,
    /// A byte: the agent let go on purpose.
    Disarmed,
}

/// Reads the lifeline (stdin) on a thread of its own: a blocking read that
/// must not keep the runtime from exiting with the script.
fn watch_lifeline() -> std::io::Result<oneshot::Receiver<Lifeline>> {
    let (sender, receiver) = oneshot::channel();
    std::thread::Builder::new()
        .name("lifeline".to_owned())
        .spawn(move || {
            let mut byte = [0u8; 1];
            let mut stdin = std::io::stdin().lock();
            let said = loop {
                match stdin.read(&mut byte) {
                    Ok(0) => break Lifeline::Cut,
                    Ok(_) => break Lifeline::Disarmed,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break Lifeline::Cut,
                }
            };
            let _ = sender.send(said);
        })?;
    Ok(receiver)
}

/// Keeps the guard alive through the signals a cancel or a terminal sends;
/// the handlers stay installed for the life of the process.
fn hold_stop_signals() -> std::io::Result<Vec<tokio::signal::unix::Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ]
    .into_iter()
    .map(signal)
    .collect()
}

/// Removes the job's file variables of a job whose agent is gone.
fn remove_files(dir: Option<&Path>) {
    if let Some(dir) = dir {
        // Best effort: see the module doc for what another user cannot remove.
        let _ = std::fs::remove_dir_all(dir);
    }
}

async fn shell(script: &Path, remove_on_cut: Option<&Path>) -> i32 {
    let set_up = hold_stop_signals().and_then(|held| Ok((held, watch_lifeline()?)));
    let (_held, lifeline) = match set_up {
        Ok(set_up) => set_up,
        Err(err) => {
            eprintln!("osprey-agent guard: cannot start: {err}");
            return 1;
        }
    };
    // stdout and stderr are inherited: the agent's log pipe.
    let spawned = tokio::process::Command::new("sh")
        .arg(script)
        .stdin(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            eprintln!("osprey-agent guard: cannot run sh: {err}");
            return 127;
        }
    };
    tokio::select! {
        status = child.wait() => return exit_code(status),
        said = lifeline => {
            if said.unwrap_or(Lifeline::Cut) == Lifeline::Cut {
                remove_files(remove_on_cut);
                // The agent is gone: the whole group at once, this guard included.
                let _ = nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGKILL);
                return 137;
            }
        }
    }
    // Disarmed: the agent lets the script finish on its own.
    exit_code(child.wait().await)
}

/// The script's exit code, or 128+signal as a shell reports it.
fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => status
            .code()
            .or_else(|| status.signal().map(|signal| 128 + signal))
            .unwrap_or(1),
        Err(_) => 1,
    }
}

async fn docker(run: &str, remove_on_cut: Option<&Path>) -> i32 {
    let set_up = hold_stop_signals().and_then(|held| Ok((held, watch_lifeline()?)));
    let (_held, lifeline) = match set_up {
        Ok(set_up) => set_up,
        Err(err) => {
            tracing::error!(error = %err, run, "docker job guard cannot start");
            return 1;
        }
    };
    if lifeline.await.unwrap_or(Lifeline::Cut) == Lifeline::Disarmed {
        return 0;
    }
    remove_files(remove_on_cut);
    match crate::executor::docker::remove_run(run).await {
        Ok(()) => {
            tracing::warn!(run, "agent gone: removed its docker job");
            0
        }
        Err(err) => {
            tracing::error!(error = %err, run, "agent gone: cannot remove its docker job");
            1
        }
    }
}

/// The command the shell executor runs a script with: `PROGRAM guard shell
/// [--uid U --gid G --groups A,B] [--remove-on-cut DIR] SCRIPT`, its stdin the
/// lifeline (piped; the caller keeps it open until the script's group is
/// gone). `user` is applied only when it is not the agent's own.
pub fn shell_command(
    program: &Path,
    script: &Path,
    user: Option<&JobUser>,
    remove_on_cut: Option<&Path>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.args(["guard", "shell"]);
    if let Some(dir) = remove_on_cut {
        command.arg("--remove-on-cut").arg(dir);
    }
    if let Some(user) = user.filter(|user| user.is_other()) {
        let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
        command
            .arg("--uid")
            .arg(user.uid.to_string())
            .arg("--gid")
            .arg(user.gid.to_string())
            .arg("--groups")
            .arg(groups.join(","));
    }
    command.arg(script).stdin(Stdio::piped());
    command
}

/// The agent's end of a Docker job's guard. Dropped without
/// [`DockerGuard::disarm`], the guard removes the run: right when the
/// executor could not clean up itself.
pub struct DockerGuard {
    child: tokio::process::Child,
    lifeline: Option<tokio::process::ChildStdin>,
}

impl DockerGuard {
    /// Starts `PROGRAM guard docker --run RUN [--remove-on-cut DIR]` in a
    /// process group of its own (a terminal's Ctrl-C on the agent does not
    /// reach it).
    pub fn spawn(program: &Path, run: &str, remove_on_cut: Option<&Path>) -> std::io::Result<Self> {
        let mut command = tokio::process::Command::new(program);
        command.args(["guard", "docker", "--run", run]);
        if let Some(dir) = remove_on_cut {
            command.arg("--remove-on-cut").arg(dir);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()?;
        let lifeline = child.stdin.take();
        Ok(Self { child, lifeline })
    }

    /// The run was cleaned up: tells the guard so, and waits for it to exit.
    pub async fn disarm(mut self) {
        if let Some(mut lifeline) = self.lifeline.take() {
            let _ = lifeline.write_all(b"d").await;
        }
        if tokio::time::timeout(DISARM_WAIT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("docker job guard did not exit when disarmed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt;
        let exited = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(exit_code(Ok(exited)), 3);
        let killed = std::process::ExitStatus::from_raw(15);
        assert_eq!(exit_code(Ok(killed)), 143);
    }

    #[test]
    fn the_shell_command_switches_only_to_another_user() {
        let me = JobUser {
            name: "me".into(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: 0,
            groups: vec![0],
            home: "/".into(),
        };
        let args = |user: Option<&JobUser>| -> Vec<String> {
            shell_command(Path::new("/agent"), Path::new("/s.sh"), user, None)
                .as_std()
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(args(Some(&me)), ["guard", "shell", "/s.sh"]);
        let with_files: Vec<String> = shell_command(
            Path::new("/agent"),
            Path::new("/s.sh"),
            None,
            Some(Path::new("/w/builds/1-a.tmp")),
        )
        .as_std()
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
        assert_eq!(
            with_files,
            [
                "guard",
                "shell",
                "--remove-on-cut",
                "/w/builds/1-a.tmp",
                "/s.sh"
            ]
        );
        let other = JobUser {
            uid: me.uid + 1,
            groups: vec![5, 6],
            ..me.clone()
        };
        assert_eq!(
            args(Some(&other)),
            [
                "guard",
                "shell",
                "--uid",
                &(me.uid + 1).to_string(),
                "--gid",
                "0",
                "--groups",
                "5,6",
                "/s.sh"
            ]
        );
    }
}
