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
predefined:
  variables:
    IMAGE: $CI_PROJECT_NAME:$CI_COMMIT_SHORT_SHA
  script:
    - echo "image=$IMAGE"
    - echo "ids=$CI_PIPELINE_ID/$CI_JOB_ID stage=$CI_JOB_STAGE title=$CI_COMMIT_TITLE"
mounted:
  image: osprey-test/busybox:latest
  script:
    - cat /data/hostfile
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
fn predefined_variables_are_the_coordinators_and_expand_in_variables() {
    let repo = repository();
    let output = exec(repo.path(), &["shell", "predefined"]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    let sha = Command::new("git")
        .args(["rev-parse", "--short=8", "HEAD"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let name = repo.path().file_name().unwrap().to_string_lossy();
    let image = format!("image={name}:{}\n", text(&sha.stdout).trim());
    assert!(stdout.contains(&image), "no {image:?} in:\n{stdout}");
    assert!(
        stdout.contains("ids=0/0 stage=test title=init\n"),
        "{stdout}"
    );
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

#[test]
fn docker_exec_mounts_volumes_from_flags_and_its_config_file() {
    let repo = repository();
    let host = tempfile::tempdir().expect("temp dir");
    std::fs::write(host.path().join("hostfile"), "from the host\n").unwrap();
    let volume = format!("{}:/data:ro", host.path().display());

    let output = exec(
        repo.path(),
        &["docker", "mounted", "--docker-volume", &volume],
    );
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "needs the Docker engine and scripts/build-test-images.sh; stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("from the host\n"), "{stdout}");

    let config = host.path().join("agent.toml");
    std::fs::write(&config, format!("[docker]\nvolumes = [{volume:?}]\n")).unwrap();
    let output = exec(
        repo.path(),
        &[
            "docker",
            "mounted",
            "--config",
            &config.display().to_string(),
        ],
    );
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("from the host\n"), "{stdout}");

    let output = exec(repo.path(), &["docker", "mounted"]);
    assert_ne!(
        output.status.code(),
        Some(0),
        "without the volume the file is not there"
    );
}

/// A repository whose pipeline needs the planner: `include:`, `rules:`,
/// `only:`, and a rule on a `--var`.
fn planned_repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("temp dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.path().join(".gitlab-ci.yml"),
        r#"
include:
  - local: ci/included.yml
on-main:
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
      variables:
        WHERE: default-branch
  script:
    - echo "on-main ran on $CI_COMMIT_REF_NAME ($WHERE)"
tags-only:
  only: [tags]
  script:
    - echo "tag $CI_COMMIT_TAG"
deploy:
  rules:
    - if: $DEPLOY == "yes"
  script:
    - echo deploying
"#,
    )
    .unwrap();
    std::fs::create_dir_all(repo.path().join("ci")).unwrap();
    std::fs::write(
        repo.path().join("ci/included.yml"),
        "from-include:\n  script:\n    - echo included job ran\n",
    )
    .unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "init"]);
    repo
}

fn assert_runs(output: &Output, expected: &str) {
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains(expected), "{stdout}");
}

fn assert_excluded(output: &Output, job: &str, git_ref: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("job \"{job}\" does not run"))
            && stderr.contains(&format!(
                "rules (rules, only/except) exclude it on {git_ref}"
            )),
        "{stderr}"
    );
}

#[test]
fn rules_only_and_include_are_planned_for_the_checked_out_branch() {
    let repo = planned_repository();

    assert_runs(
        &exec(repo.path(), &["shell", "on-main"]),
        "on-main ran on main (default-branch)\n",
    );
    assert_runs(
        &exec(repo.path(), &["shell", "from-include"]),
        "included job ran\n",
    );
    assert_excluded(
        &exec(repo.path(), &["shell", "tags-only"]),
        "tags-only",
        "main",
    );
    assert_excluded(&exec(repo.path(), &["shell", "deploy"]), "deploy", "main");
    assert_runs(
        &exec(repo.path(), &["shell", "deploy", "--var", "DEPLOY=yes"]),
        "deploying\n",
    );

    git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    assert_excluded(
        &exec(repo.path(), &["shell", "on-main"]),
        "on-main",
        "feature",
    );
}

#[test]
fn a_head_detached_at_a_tag_plans_for_the_tag() {
    let repo = planned_repository();
    git(repo.path(), &["tag", "v1.0"]);
    git(repo.path(), &["checkout", "-q", "--detach", "v1.0"]);

    assert_runs(&exec(repo.path(), &["shell", "tags-only"]), "tag v1.0\n");
    assert_excluded(&exec(repo.path(), &["shell", "on-main"]), "on-main", "v1.0");
}
