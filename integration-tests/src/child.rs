//! One child process of a test, with its stdout and stderr captured to
//! files in the test's temp dir (printed when the test fails), and that temp
//! dir itself, kept when a test panics. The cluster's coordinators and agents
//! are built on these.

use crate::wait::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// How much of each output file is printed when a test fails.
pub(crate) const DUMP_BYTES: u64 = 24 * 1024;

/// The temp dir of one test; kept (not removed) when the test panics.
pub(crate) struct Root {
    pub(crate) dir: Option<TempDir>,
    pub(crate) path: PathBuf,
}

impl Root {
    pub(crate) fn new() -> Arc<Self> {
        let dir = tempfile::Builder::new()
            .prefix("osprey-test-")
            .tempdir()
            .expect("create the test's temp dir");
        let path = dir.path().to_path_buf();
        Arc::new(Self {
            dir: Some(dir),
            path,
        })
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test files kept in {}", dir.keep().display());
            }
        }
    }
}

/// One child process with its output captured to `<label>.stdout` / `.stderr`.
pub(crate) struct Process {
    pub(crate) label: String,
    pub(crate) child: Option<Child>,
    pub(crate) stdout_path: PathBuf,
    pub(crate) stderr_path: PathBuf,
}

impl Process {
    /// Spawns `command`; the receiver gets the text after `listening on ` in
    /// the first stdout line holding it (dropped if the process exits first).
    pub(crate) fn spawn(
        label: &str,
        mut command: Command,
        dir: &Path,
    ) -> (Self, oneshot::Receiver<String>) {
        let stdout_path = dir.join(format!("{label}.stdout"));
        let stderr_path = dir.join(format!("{label}.stderr"));
        let open = |path: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
        };
        let mut stdout_file = open(&stdout_path);
        let stderr_file = open(&stderr_path);
        let _ = writeln!(&stderr_file, "--- start: {command:?}");
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        // Plain text in the captured files, unless the test set `NO_COLOR`
        // itself (to see what the process does on its own).
        if !command.get_envs().any(|(key, _)| key == "NO_COLOR") {
            command.env("NO_COLOR", "1");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {label}: {error}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready, ready_receiver) = oneshot::channel();
        // Copies stdout to its file and spots the readiness line; ends at EOF,
        // i.e. when the process exits.
        std::thread::Builder::new()
            .name(format!("{label}-stdout"))
            .spawn(move || {
                let mut ready = Some(ready);
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    let _ = stdout_file.write_all(&line);
                    let text = String::from_utf8_lossy(&line);
                    if let Some((_, rest)) = text.split_once("listening on ") {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(rest.trim().to_owned());
                        }
                    }
                    line.clear();
                }
            })
            .expect("spawn the stdout copier");
        let process = Self {
            label: label.to_owned(),
            child: Some(child),
            stdout_path,
            stderr_path,
        };
        (process, ready_receiver)
    }

    pub(crate) fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .map(|child| Pid::from_raw(child.id() as i32))
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            kill(pid, signal).unwrap_or_else(|error| panic!("{signal} to {}: {error}", self.label));
        }
    }

    /// The exit status once the process has exited (after a signal, say).
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let label = self.label.clone();
        let child = self.child.as_mut().expect("the process was started");
        let status = wait_for(&format!("{label} to exit"), timeout, || {
            let polled = child.try_wait();
            async move {
                match polled {
                    Ok(Some(status)) => Ok(status),
                    Ok(None) => Err("still running".to_owned()),
                    Err(error) => Err(error.to_string()),
                }
            }
        })
        .await;
        self.child = None;
        status
    }

    pub(crate) fn dump(&self) {
        for path in [&self.stdout_path, &self.stderr_path] {
            eprintln!("===== {} =====", path.display());
            eprintln!("{}", read_tail(path, DUMP_BYTES));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        self.kill9();
    }
}

pub(crate) fn read_tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return "(missing)".to_owned();
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
