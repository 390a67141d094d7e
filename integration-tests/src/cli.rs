//! Runs the `osprey` binary as a user would, capturing its output.

use crate::bins::binary;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// What one `osprey` run printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `osprey --url URL ARGS...` (no `--url` when `url` is `None`) in
/// `cwd`, killing it after `timeout`.
pub async fn osprey(
    url: Option<&str>,
    args: &[&str],
    cwd: Option<&Path>,
    timeout: Duration,
) -> CliOutput {
    osprey_with_input(url, args, cwd, None, timeout).await
}

/// [`osprey`] with `input` written to its standard input (then closed);
/// `None`: stdin is `/dev/null`.
pub async fn osprey_with_input(
    url: Option<&str>,
    args: &[&str],
    cwd: Option<&Path>,
    input: Option<&[u8]>,
    timeout: Duration,
) -> CliOutput {
    let mut command = command(url, args, cwd);
    command.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command.spawn().expect("spawn osprey");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use tokio::io::AsyncWriteExt as _;
        stdin.write_all(input).await.expect("write osprey's stdin");
        // Dropped: closed, so the reader sees the end.
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("osprey {args:?} did not finish within {timeout:?}"))
        .expect("wait for osprey");
    CliOutput {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts `osprey --url URL ARGS...` with stdout and stderr piped and stdin
/// `/dev/null`, for tests that read its output while it runs. Killed when
/// dropped.
pub fn spawn_osprey(url: &str, args: &[&str]) -> tokio::process::Child {
    command(Some(url), args, None)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn osprey")
}

/// The `osprey` command as tests run it: the test cluster's admin token, no
/// token file of the machine's user, output piped.
fn command(url: Option<&str>, args: &[&str], cwd: Option<&Path>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary("osprey"));
    if let Some(url) = url {
        command.args(["--url", url]);
    }
    command
        .args(args)
        .env_remove("OSPREY_URL")
        .env("OSPREY_TOKEN", crate::cluster::ADMIN_TOKEN)
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("osprey-test-no-config"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    command
}
