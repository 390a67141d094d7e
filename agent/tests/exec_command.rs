//! `osprey-agent exec`: one job of a repository's `.gitlab-ci.yml`, run
//! locally through the real binary. The Docker case needs the engine and the
//! images of `scripts/build-test-images.sh`, and fails without them.

use std::path::Path;
use std::process::{Command, Output};

const PIPELINE: &str = r#"
variables:
  GREETING: hello
greet:
  script:
    - echo "$GREETING $WHO from $CI_JOB_NAME"
    - cat README
  after_script:
    - echo after ran
fail:
  script:
    - echo failing
    - exit 7
in-docker:
  image: osprey-test/busybox:latest
  services:
    - name: osprey-test/busybox:latest
      alias: web
      command: ["sh", "-c", "mkdir -p /www && echo service-ok > /www/index.html && exec httpd -f -p 80 -h /www"]
  script:
    - echo "dir=$CI_PROJECT_DIR"
    - cat README
    - wget -q -O - http://web/
"#;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.email=test@example.com", "-c", "user.name=test"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("temp dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join(".gitlab-ci.yml"), PIPELINE).unwrap();
    std::fs::write(repo.path().join("README"), "committed readme\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "init"]);
    repo
}

fn exec(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_osprey-agent"))
        .arg("exec")
        .args(args)
        .current_dir(repo)
        .env("RUST_LOG", "warn")
        .output()
        .expect("osprey-agent runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn shell_job_runs_with_variables_and_after_script() {
    let repo = repository();
    let output = exec(repo.path(), &["shell", "greet", "--var", "WHO=me"]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("hello me from greet\n"), "{stdout}");
    assert!(stdout.contains("committed readme\n"), "{stdout}");
    assert!(stdout.contains("after ran\n"), "{stdout}");
}

#[test]
fn failing_job_exits_with_its_code_and_unknown_job_is_an_error() {
    let repo = repository();
    let output = exec(repo.path(), &["shell", "fail"]);
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stdout));
    assert!(text(&output.stdout).contains("failing\n"));

    let output = exec(repo.path(), &["shell", "missing"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no job \"missing\""),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn docker_job_runs_with_its_service() {
    let repo = repository();
    let output = exec(repo.path(), &["docker", "in-docker"]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "needs the Docker engine and scripts/build-test-images.sh; stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    let project = repo.path().file_name().unwrap().to_string_lossy();
    assert!(
        stdout.contains(&format!("dir=/builds/{project}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("committed readme\n"), "{stdout}");
    assert!(stdout.contains("service-ok\n"), "{stdout}");
}
