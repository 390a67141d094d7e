//! Tests of a whole attempt against a fake coordinator API: the order of the
//! calls at the end of a job, and what a stale lease stops.

use super::*;
use crate::client::ArchiveFile;
use crate::executor::shell::ShellExecutor;
use osprey_proto::v1::{AppendOutcome, JobSpec, Variable as PbVariable};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Status(JobState, Option<i32>, String),
    Seal(u64, String),
    Upload(u64),
}

#[derive(Default)]
struct FakeApi {
    log: Mutex<Vec<u8>>,
    calls: Mutex<Vec<Call>>,
    /// Refuse uploads with `stale lease`.
    stale_upload: bool,
}

impl FakeApi {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl CoordinatorApi for FakeApi {
    fn append_log(
        &self,
        _attempt: AttemptRef,
        offset: u64,
        data: Bytes,
    ) -> BoxFuture<'_, Result<AppendReply, CallError>> {
        Box::pin(async move {
            let mut log = self.log.lock().unwrap();
            assert_eq!(offset, log.len() as u64, "no gaps in this fake");
            log.extend_from_slice(&data);
            Ok(AppendReply {
                committed_offset: log.len() as u64,
                outcome: AppendOutcome::Appended,
            })
        })
    }

    fn seal_log(
        &self,
        _attempt: AttemptRef,
        size: u64,
        sha256: String,
    ) -> BoxFuture<'_, Result<bool, CallError>> {
        self.calls.lock().unwrap().push(Call::Seal(size, sha256));
        Box::pin(async { Ok(true) })
    }

    fn update_status(&self, request: UpdateStatusRequest) -> BoxFuture<'_, Result<(), CallError>> {
        let call = Call::Status(request.state(), request.exit_code, request.failure_reason);
        self.calls.lock().unwrap().push(call);
        Box::pin(async { Ok(()) })
    }

    fn upload_artifact<'a>(
        &'a self,
        _attempt: AttemptRef,
        archive: &'a ArchiveFile,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            if self.stale_upload {
                return Err(CallError::Fenced("stale lease".into()));
            }
            self.calls.lock().unwrap().push(Call::Upload(archive.size));
            Ok(())
        })
    }

    fn download_artifact<'a>(
        &'a self,
        _attempt: AttemptRef,
        _source_job: u64,
        _dest: &'a Path,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        Box::pin(async { Ok(false) })
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: Arc<RunnerContext<FakeApi>>,
    spec: JobSpec,
}

fn fixture(api: FakeApi, script: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README"), "hi").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-qm", "init"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let work = WorkDir::create(&dir.path().join("work")).unwrap();
    let ctx = Arc::new(RunnerContext {
        api: Arc::new(api),
        executor: Arc::new(ShellExecutor::new()),
        git: crate::git_cache::GitCache::new(work.mirrors()),
        work,
        registry: Arc::new(Registry::new(1)),
        agent_name: "test-agent".into(),
        tags: vec!["a".into()],
        executor_name: "shell",
        job_timeout: Duration::from_secs(60),
        max_job_timeout: None,
        kill_grace: Duration::from_secs(1),
        shipper: ShipperSettings::default(),
        leases: Arc::new(crate::lease::Leases::default()),
        metrics: Default::default(),
    });
    let spec = JobSpec {
        job_id: 9,
        name: "build".into(),
        repo_url: repo.display().to_string(),
        commit_sha: sha,
        project_name: "repo".into(),
        variables: vec![PbVariable {
            key: "TOKEN".into(),
            value: "hunter22".into(),
            masked: true,
            file: false,
        }],
        script: script.iter().map(|s| s.to_string()).collect(),
        artifact_paths: vec!["out.txt".into()],
        ..JobSpec::default()
    };
    Fixture {
        _dir: dir,
        ctx,
        spec,
    }
}

async fn run(fixture: &Fixture) {
    assert!(fixture.ctx.registry.try_reserve());
    let assignment = JobAssignment {
        attempt_id: "11111111-2222".into(),
        lease_epoch: 1,
        job_token: "job-token".into(),
        spec: Some(fixture.spec.clone()),
    };
    start(fixture.ctx.clone(), assignment).unwrap().await;
}

#[tokio::test]
async fn success_uploads_then_seals_then_reports() {
    let fixture = fixture(
        FakeApi::default(),
        &[
            "echo token $TOKEN in $CI_PROJECT_DIR",
            "echo data > out.txt",
        ],
    );
    run(&fixture).await;
    let calls = fixture.ctx.api.calls();
    assert_eq!(
        calls[0],
        Call::Status(JobState::Running, None, String::new())
    );
    assert!(
        matches!(calls[1], Call::Upload(size) if size > 0),
        "{calls:?}"
    );
    let log = fixture.ctx.api.log.lock().unwrap().clone();
    let (size, sha) = {
        let mut digest = artifacts::Sha256Writer::default();
        digest.update(&log);
        digest.finish()
    };
    assert_eq!(calls[2], Call::Seal(size, sha));
    assert_eq!(
        calls[3],
        Call::Status(JobState::Success, None, String::new())
    );
    assert_eq!(calls.len(), 4);
    let text = String::from_utf8(log).unwrap();
    assert!(text.contains("token [MASKED] in "), "{text}");
    assert!(text.contains("builds/repo-0/repo"), "{text}");
    assert!(!text.contains("hunter22"));
    assert!(fixture.ctx.registry.is_empty(), "slot freed");
    let builds = fixture.ctx.work.builds();
    let left: Vec<_> = std::fs::read_dir(builds)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("repo-0")],
        "only the build dir is kept, for the next job"
    );
}

#[tokio::test]
async fn script_failure_reports_exit_code_without_upload() {
    let fixture = fixture(FakeApi::default(), &["echo data > out.txt", "exit 4"]);
    run(&fixture).await;
    let calls = fixture.ctx.api.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::Upload(_))));
    assert!(matches!(calls[1], Call::Seal(..)));
    assert_eq!(
        calls[2],
        Call::Status(JobState::Failed, Some(4), "script failure".into())
    );
}

#[tokio::test]
async fn artifacts_when_decides_the_upload_and_untracked_exclude_shape_it() {
    use osprey_proto::v1::ArtifactWhen;
    // on_failure: a failed job uploads, and stays failed for its own reason.
    let mut on_failure = fixture(FakeApi::default(), &["echo data > out.txt", "exit 4"]);
    on_failure.spec.set_artifact_when(ArtifactWhen::OnFailure);
    run(&on_failure).await;
    let calls = on_failure.ctx.api.calls();
    assert!(
        matches!(calls[1], Call::Upload(size) if size > 0),
        "{calls:?}"
    );
    assert_eq!(
        calls.last(),
        Some(&Call::Status(
            JobState::Failed,
            Some(4),
            "script failure".into()
        ))
    );

    // on_failure: a successful job does not upload.
    let mut skipped = fixture(FakeApi::default(), &["echo data > out.txt"]);
    skipped.spec.set_artifact_when(ArtifactWhen::OnFailure);
    run(&skipped).await;
    let calls = skipped.ctx.api.calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Upload(_))),
        "{calls:?}"
    );

    // always + untracked without paths; exclude drops one untracked file.
    let mut always = fixture(
        FakeApi::default(),
        &["echo a > new.txt", "echo b > drop.log", "exit 1"],
    );
    always.spec.set_artifact_when(ArtifactWhen::Always);
    always.spec.artifact_paths.clear();
    always.spec.artifact_untracked = true;
    always.spec.artifact_exclude = vec!["*.log".into()];
    run(&always).await;
    let calls = always.ctx.api.calls();
    assert!(
        matches!(calls[1], Call::Upload(size) if size > 0),
        "{calls:?}"
    );
    let log = String::from_utf8(always.ctx.api.log.lock().unwrap().clone()).unwrap();
    assert!(log.contains("Uploaded 1 entries"), "{log}");
    assert!(
        log.contains("1 entries left out by artifacts:exclude"),
        "{log}"
    );
}

#[tokio::test]
async fn bad_commit_fails_with_a_clear_reason() {
    let mut fixture = fixture(FakeApi::default(), &["true"]);
    fixture.spec.commit_sha = "0".repeat(40);
    run(&fixture).await;
    let calls = fixture.ctx.api.calls();
    let Some(Call::Status(JobState::Failed, None, reason)) = calls.last() else {
        panic!("{calls:?}");
    };
    assert!(reason.starts_with("source checkout failed"), "{reason}");
}

#[tokio::test]
async fn stale_lease_stops_reporting() {
    let api = FakeApi {
        stale_upload: true,
        ..FakeApi::default()
    };
    let fixture = fixture(api, &["echo data > out.txt"]);
    run(&fixture).await;
    let calls = fixture.ctx.api.calls();
    assert_eq!(
        calls,
        vec![Call::Status(JobState::Running, None, String::new())],
        "no seal and no final status after a stale lease"
    );
    assert!(fixture.ctx.registry.is_empty());
}

fn file_variable(key: &str, value: &str, masked: bool) -> PbVariable {
    PbVariable {
        key: key.into(),
        value: value.into(),
        masked,
        file: true,
    }
}

fn log_text(fixture: &Fixture) -> String {
    String::from_utf8(fixture.ctx.api.log.lock().unwrap().clone()).unwrap()
}

/// The path the job printed after `marker `.
fn printed_path(log: &str, marker: &str) -> std::path::PathBuf {
    let line = log
        .lines()
        .find_map(|line| line.strip_prefix(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in\n{log}"));
    std::path::PathBuf::from(line.trim())
}

#[tokio::test]
async fn a_file_variable_is_a_private_file_outside_the_project_gone_after_the_job() {
    let mut fixture = fixture(
        FakeApi::default(),
        &[
            "cat \"$MY_FILE\"",
            "echo \"path $MY_FILE\"",
            "stat -c 'file mode %a' \"$MY_FILE\"",
            "stat -c 'dir mode %a' \"$(dirname \"$MY_FILE\")\"",
            "case \"$MY_FILE\" in \"$CI_PROJECT_DIR\"/*) echo inside;; *) echo outside;; esac",
            "echo data > out.txt",
        ],
    );
    fixture
        .spec
        .variables
        .push(file_variable("MY_FILE", "line one\nline two\n", false));
    run(&fixture).await;
    let log = log_text(&fixture);
    assert!(log.contains("line one\nline two\n"), "{log}");
    assert!(log.contains("file mode 600\n"), "{log}");
    assert!(log.contains("dir mode 700\n"), "{log}");
    assert!(log.contains("outside\n"), "{log}");
    let path = printed_path(&log, "path ");
    assert_eq!(path.file_name().unwrap(), "MY_FILE");
    assert!(
        !path.exists() && !path.parent().unwrap().exists(),
        "file and dir removed"
    );
    assert_eq!(
        fixture.ctx.api.calls().last(),
        Some(&Call::Status(JobState::Success, None, String::new()))
    );
}

#[tokio::test]
async fn a_masked_file_variable_s_content_is_masked_and_a_failure_removes_it_too() {
    let mut fixture = fixture(
        FakeApi::default(),
        &["cat \"$CERT\"", "echo \"path $CERT\"", "exit 3"],
    );
    let content = "-----BEGIN sekrit-----\nAAAA\n-----END sekrit-----";
    fixture
        .spec
        .variables
        .push(file_variable("CERT", content, true));
    run(&fixture).await;
    let log = log_text(&fixture);
    assert!(!log.contains("sekrit"), "{log}");
    assert!(log.contains("[MASKED]"), "{log}");
    assert!(
        !printed_path(&log, "path ").exists(),
        "removed after a failure"
    );
}

/// Runs a job with a file variable whose script sleeps; `stop` ends it once
/// the script runs, `None` waits for its timeout. Returns the file's path.
async fn stopped_while_running(
    fixture: &Fixture,
    stop: Option<fn(&RunningJob)>,
) -> std::path::PathBuf {
    assert!(fixture.ctx.registry.try_reserve());
    let assignment = JobAssignment {
        attempt_id: "11111111-2222".into(),
        lease_epoch: 1,
        job_token: "job-token".into(),
        spec: Some(fixture.spec.clone()),
    };
    let running = tokio::spawn(start(fixture.ctx.clone(), assignment).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !log_text(fixture).contains("path ") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the script never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let path = printed_path(&log_text(fixture), "path ");
    if let Some(stop) = stop {
        // Checked only here: a timeout may already have fired.
        assert!(path.exists(), "there while the script runs");
        stop(&fixture.ctx.registry.get("11111111-2222").expect("running"));
    }
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the job ends")
        .unwrap();
    path
}

fn sleeping_job_with_a_file_variable() -> Fixture {
    let mut fixture = fixture(FakeApi::default(), &["echo \"path $MY_FILE\"", "sleep 30"]);
    fixture
        .spec
        .variables
        .push(file_variable("MY_FILE", "content", false));
    fixture
}

#[tokio::test]
async fn file_variables_are_removed_after_a_cancel_a_timeout_and_a_lost_lease() {
    let canceled = sleeping_job_with_a_file_variable();
    let path = stopped_while_running(
        &canceled,
        Some(|job| {
            job.stop(StopCause::Canceled {
                grace: Duration::ZERO,
            })
        }),
    )
    .await;
    assert_eq!(
        canceled.ctx.api.calls().last(),
        Some(&Call::Status(JobState::Canceled, None, "canceled".into()))
    );
    assert!(
        !path.exists() && !path.parent().unwrap().exists(),
        "canceled"
    );

    let mut timed_out = sleeping_job_with_a_file_variable();
    timed_out.spec.timeout_seconds = 1;
    let path = stopped_while_running(&timed_out, None).await;
    assert_eq!(
        timed_out.ctx.api.calls().last(),
        Some(&Call::Status(JobState::Failed, None, "job timeout".into()))
    );
    assert!(
        !path.exists() && !path.parent().unwrap().exists(),
        "timed out"
    );

    // The lease is lost (or the coordinator abandons the attempt): fenced.
    let fenced = sleeping_job_with_a_file_variable();
    let path = stopped_while_running(&fenced, Some(RunningJob::abandon)).await;
    assert_eq!(
        fenced.ctx.api.calls(),
        vec![Call::Status(JobState::Running, None, String::new())],
        "nothing more reported"
    );
    assert!(!path.exists() && !path.parent().unwrap().exists(), "fenced");
}

#[tokio::test]
async fn a_failure_reason_naming_a_masked_value_is_masked() {
    let mut fixture = fixture(FakeApi::default(), &["true"]);
    // The masked TOKEN of the fixture in a path the checkout error repeats.
    fixture.spec.repo_url = "/nonexistent/hunter22/repo.git".into();
    run(&fixture).await;
    let calls = fixture.ctx.api.calls();
    let Some(Call::Status(JobState::Failed, None, reason)) = calls.last() else {
        panic!("{calls:?}");
    };
    assert!(
        reason.contains("/nonexistent/[MASKED]/repo.git") && !reason.contains("hunter22"),
        "{reason}"
    );
    assert!(!log_text(&fixture).contains("hunter22"));
}
