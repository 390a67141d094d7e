//! Tests of the shell executor with real `sh` processes.

use super::*;
use crate::script;
use std::sync::Mutex;
use tokio::sync::mpsc;

fn job(dir: &Path, script: &[&str], after: &[&str]) -> PreparedJob {
    let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PreparedJob {
        job_id: JobId(1),
        job_name: "test".into(),
        project_name: "p".into(),
        project_dir: dir.to_owned(),
        env: vec![
            ("GREETING".into(), "first".into()),
            ("GREETING".into(), "hello".into()),
        ],
        files_dir: None,
        main_script: script::main_script(&[], &lines(script)),
        after_script: script::after_script(&lines(after)),
        image: None,
        services: Vec::new(),
        timeout: Duration::from_secs(30),
        kill_grace: Duration::from_secs(5),
        stop_grace: Default::default(),
    }
}

/// Runs `job` and returns its outcome and everything it printed.
async fn run(
    executor: &ShellExecutor,
    job: &PreparedJob,
    cancel: CancellationToken,
) -> (Outcome, String) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let collect = async {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
        }
        String::from_utf8(all).unwrap()
    };
    tokio::join!(executor.run(job, tx, cancel), collect)
}

#[tokio::test]
async fn echoes_commands_and_stops_at_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(
        dir.path(),
        &[
            "echo hi",
            "echo \"$GREETING\" > greeting; pwd",
            "exit 3",
            "echo never",
        ],
        &[],
    );
    let (outcome, log) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            exit_code: Some(3),
            reason: "script failure".into()
        }
    );
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        log,
        format!(
            "$ echo hi\nhi\n$ echo \"$GREETING\" > greeting; pwd\n{}\n$ exit 3\n",
            cwd.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("greeting")).unwrap(),
        "hello\n"
    );
}

#[tokio::test]
async fn environment_is_exactly_the_job_env_plus_path_and_home() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("OSPREY_TEST_LEAK", "leaked");
    let job = job(
        dir.path(),
        &["env | cut -d= -f1 | sort | tr '\\n' ' '"],
        &[],
    );
    let (outcome, log) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(outcome, Outcome::Success);
    assert!(!log.contains("OSPREY_TEST_LEAK"), "{log}");
    assert!(log.contains("GREETING") && log.contains("PATH"), "{log}");
}

#[tokio::test]
async fn after_script_runs_after_failure_and_cannot_change_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &["false"], &["echo after", "exit 7"]);
    let (outcome, log) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            exit_code: Some(1),
            reason: "script failure".into()
        }
    );
    assert!(
        log.starts_with("$ false\nRunning after_script\n$ echo after\nafter\n$ exit 7\n"),
        "{log}"
    );
    assert!(
        log.contains("after_script failed with exit code 7"),
        "{log}"
    );

    let job = self::job(dir.path(), &["true"], &["exit 1"]);
    let (outcome, _) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(outcome, Outcome::Success);
}

#[tokio::test]
async fn stdout_and_stderr_interleave_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(
        dir.path(),
        &["echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf 'x' >&2; echo y"],
        &[],
    );
    let (outcome, log) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(outcome, Outcome::Success);
    assert!(log.ends_with("\nout1\nerr1\nout2\nerr2\nxy\n"), "{log}");
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a reaped or killed zombie-free pid is gone.
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never written", path.display());
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group_and_runs_after_script() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let job = job(
        dir.path(),
        &["sleep 1000 & echo $! > pids", "sleep 1000"],
        &["echo after cancel"],
    );
    let pgids = Arc::new(Mutex::new(Vec::new()));
    let seen = pgids.clone();
    let executor = ShellExecutor::new().with_process_hook(Arc::new(move |_, pgid| {
        seen.lock().unwrap().push(pgid);
    }));
    let cancel = CancellationToken::new();
    let trigger = async {
        let background: i32 = wait_for_file(&pids).await.trim().parse().unwrap();
        assert!(alive(background));
        cancel.cancel();
        background
    };
    let ((outcome, log), background) = tokio::join!(run(&executor, &job, cancel.clone()), trigger);
    assert_eq!(outcome, Outcome::Canceled);
    assert!(!alive(background), "background child survived the cancel");
    assert!(
        log.ends_with("$ echo after cancel\nafter cancel\n"),
        "{log}"
    );
    let pgids = pgids.lock().unwrap().clone();
    assert_eq!(pgids.len(), 4, "start and end of both scripts: {pgids:?}");
    assert!(pgids[0].is_some() && pgids[1].is_none());
}

#[tokio::test]
async fn sigterm_is_followed_by_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = job(
        dir.path(),
        &["trap '' TERM; echo ready > pids; while true; do sleep 0.05; done"],
        &[],
    );
    job.kill_grace = Duration::from_millis(300);
    let cancel = CancellationToken::new();
    let trigger = async {
        wait_for_file(&dir.path().join("pids")).await;
        cancel.cancel();
    };
    let started = std::time::Instant::now();
    let executor = ShellExecutor::new();
    let ((outcome, _), ()) = tokio::join!(run(&executor, &job, cancel.clone()), trigger);
    assert_eq!(outcome, Outcome::Canceled);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn timeout_stops_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = job(dir.path(), &["echo start", "sleep 1000"], &["echo cleanup"]);
    job.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let (outcome, log) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(outcome, Outcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        log.contains("start\n") && log.ends_with("cleanup\n"),
        "{log}"
    );
}

#[tokio::test]
async fn after_script_has_its_own_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &["true"], &["sleep 1000"]);
    let executor = ShellExecutor::new().with_after_script_timeout(Duration::from_millis(200));
    let (outcome, log) = run(&executor, &job, CancellationToken::new()).await;
    assert_eq!(outcome, Outcome::Success);
    assert!(log.contains("after_script timed out"), "{log}");
}

#[tokio::test]
async fn missing_project_dir_fails_without_panicking() {
    let job = job(Path::new("/nonexistent/osprey"), &["true"], &[]);
    let (outcome, _) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                exit_code: None,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn image_and_services_are_ignored_with_one_warning_first() {
    use osprey_shared::pipeline::{ImageRef, ServiceRef};
    let dir = tempfile::tempdir().unwrap();
    let mut job = job(dir.path(), &["echo ran"], &[]);
    let (outcome, log) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(outcome, Outcome::Success);
    assert!(!log.contains("WARNING"), "{log}");

    job.image = Some(ImageRef {
        name: "alpine".into(),
        entrypoint: None,
    });
    job.services = ["postgres", "redis"]
        .iter()
        .map(|name| ServiceRef {
            name: (*name).into(),
            alias: None,
            command: None,
            entrypoint: None,
            variables: Vec::new(),
        })
        .collect();
    let (outcome, log) = run(&ShellExecutor::new(), &job, CancellationToken::new()).await;
    assert_eq!(outcome, Outcome::Success, "{log}");
    assert!(
        log.starts_with(
            "WARNING: the shell executor ignores image: alpine and services: postgres, redis (run on a docker agent for them)\n"
        ),
        "{log}"
    );
    assert_eq!(log.matches("WARNING").count(), 1, "{log}");
    assert!(log.contains("ran\n"), "{log}");

    job.image = None;
    assert_eq!(
        ignored_settings_warning(&job).as_deref(),
        Some("WARNING: the shell executor ignores services: postgres, redis (run on a docker agent for them)\n")
    );
}
