//! Looking at and stopping processes by pid (for job processes whose pid a
//! test script wrote to a file).

use crate::wait::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::Duration;

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The pid a script wrote to `path`, once the file holds one.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// SIGKILL, ignoring a process that is already gone. For test clean-up.
pub fn kill9_pid(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Waits until a script has written its pid to `path`; returns the pid.
pub async fn wait_for_pid_file(path: &Path, timeout: Duration) -> i32 {
    wait_for("the job to write its pid file", timeout, || async {
        read_pid_file(path).ok_or_else(|| "no pid yet".to_owned())
    })
    .await
}
