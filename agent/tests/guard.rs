//! The job guard (`osprey-agent guard shell SCRIPT`) as the shell executor
//! runs it: the real binary, its stdin the lifeline, leading its own process
//! group. A cut lifeline kills the whole group; a disarmed one lets the script
//! finish; a cancel's SIGTERM stops the script, not the guard, which reports it.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn guard(script: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_osprey-agent"))
        .args(["guard", "shell"])
        .arg(script)
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the guard")
}

/// Writes `body` as a script in `dir`; returns its path.
fn script(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("script.sh");
    std::fs::write(&path, body).unwrap();
    path
}

/// Polls until `path` holds a pid.
fn wait_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the script never wrote {path:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Alive and not a zombie (PID 1 of a sandbox may never reap orphans).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_cut_lifeline_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = script(
        dir.path(),
        &format!("sleep 300 & echo $! > {}; wait\n", pid_file.display()),
    );
    let mut guard = guard(&script);
    let sleep = wait_pid(&pid_file);
    drop(guard.stdin.take());
    let status = guard.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the guard killed itself with its group"
    );
    wait_gone(sleep);
}

#[test]
fn a_disarmed_guard_lets_the_script_finish() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = script(
        dir.path(),
        &format!("echo $$ > {}; sleep 0.3; exit 7\n", pid_file.display()),
    );
    let mut guard = guard(&script);
    wait_pid(&pid_file);
    let mut lifeline = guard.stdin.take().unwrap();
    lifeline.write_all(b"d").unwrap();
    drop(lifeline);
    assert_eq!(guard.wait().unwrap().code(), Some(7));
}

#[test]
fn a_cancel_stops_the_script_and_the_guard_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = script(
        dir.path(),
        &format!("echo $$ > {}; sleep 300\n", pid_file.display()),
    );
    let mut guard = guard(&script);
    // Held open as the executor holds it (`wait` would close it: a cut lifeline).
    let _lifeline = guard.stdin.take();
    let shell = wait_pid(&pid_file);
    // What the executor's cancel does: SIGTERM to the whole group.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(guard.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = guard.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    wait_gone(shell);
}

/// The shell executor under the guard: output, exit code and after_script as without it.
#[tokio::test]
async fn the_shell_executor_under_a_guard_reports_output_and_exit_code() {
    use osprey_agent::executor::shell::ShellExecutor;
    use osprey_agent::executor::{Executor, Outcome, PreparedJob};
    let dir = tempfile::tempdir().unwrap();
    let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let job = PreparedJob {
        job_id: osprey_shared::JobId(1),
        job_name: "test".into(),
        project_name: "p".into(),
        project_dir: dir.path().to_owned(),
        env: Vec::new(),
        files_dir: None,
        main_script: osprey_agent::script::main_script(&[], &lines(&["echo hi", "exit 3"])),
        after_script: osprey_agent::script::after_script(&lines(&["echo after"])),
        image: None,
        services: Vec::new(),
        timeout: Duration::from_secs(30),
        kill_grace: Duration::from_secs(5),
        stop_grace: Default::default(),
    };
    let executor = ShellExecutor::new().with_guard(env!("CARGO_BIN_EXE_osprey-agent").into());
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let collect = async {
        let mut all = Vec::new();
        while let Some(chunk) = receiver.recv().await {
            all.extend_from_slice(&chunk);
        }
        String::from_utf8(all).unwrap()
    };
    let (outcome, log) = tokio::join!(
        executor.run(&job, sender, tokio_util::sync::CancellationToken::new()),
        collect
    );
    assert_eq!(
        outcome,
        Outcome::Failed {
            exit_code: Some(3),
            reason: "script failure".into()
        },
        "{log}"
    );
    assert!(log.contains("hi\n") && log.contains("after\n"), "{log}");
}

/// A private dir of file variables, as the job runner makes it.
fn files_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("1-abc.tmp");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("KUBECONFIG"), "secret").unwrap();
    dir
}

#[test]
fn a_cut_lifeline_removes_the_job_s_file_variables() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_dir(dir.path());
    let pid_file = dir.path().join("pid");
    let script = script(
        dir.path(),
        &format!("echo $$ > {}; sleep 300\n", pid_file.display()),
    );
    let mut guard = Command::new(env!("CARGO_BIN_EXE_osprey-agent"))
        .args(["guard", "shell", "--remove-on-cut"])
        .arg(&files)
        .arg(&script)
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the guard");
    let shell = wait_pid(&pid_file);
    assert!(files.exists(), "kept while the agent lives");
    // The agent is killed: its end of the lifeline closes.
    drop(guard.stdin.take());
    assert_eq!(guard.wait().unwrap().signal(), Some(9));
    assert!(!files.exists(), "file variables removed with the job");
    wait_gone(shell);
}

#[test]
fn a_disarmed_guard_leaves_the_file_variables_to_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_dir(dir.path());
    let pid_file = dir.path().join("pid");
    let script = script(
        dir.path(),
        &format!("echo $$ > {}; sleep 0.3\n", pid_file.display()),
    );
    let mut guard = Command::new(env!("CARGO_BIN_EXE_osprey-agent"))
        .args(["guard", "shell", "--remove-on-cut"])
        .arg(&files)
        .arg(&script)
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the guard");
    wait_pid(&pid_file);
    let mut lifeline = guard.stdin.take().unwrap();
    lifeline.write_all(b"d").unwrap();
    drop(lifeline);
    assert_eq!(guard.wait().unwrap().code(), Some(0));
    assert!(
        files.exists(),
        "the agent removes them itself after the scripts"
    );
}

#[test]
fn a_docker_job_guard_removes_the_file_variables_when_the_agent_goes() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_dir(dir.path());
    // No such run: removing its containers finds none (or no engine at all);
    // the files go first either way.
    let mut guard = Command::new(env!("CARGO_BIN_EXE_osprey-agent"))
        .args(["guard", "docker", "--run", "osprey-guard-test-no-such-run"])
        .arg("--remove-on-cut")
        .arg(&files)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the guard");
    drop(guard.stdin.take());
    guard.wait().unwrap();
    assert!(!files.exists(), "file variables removed");
}
