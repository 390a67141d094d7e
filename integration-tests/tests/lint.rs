//! Invalid pipeline files are reported with locations: locally by `osprey
//! lint`, and by the coordinator (422, nothing created).

use osprey_integration_tests::cli::osprey;
use osprey_integration_tests::{TestCluster, TestRepo};
use std::time::Duration;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Line 3 names a stage that is not declared; line 6 holds an unknown keyword.
const INVALID: &str = "stages: [build]\nbuild-job:\n  stage: nosuchstage\n  script: [\"echo hi\"]\ntypo-job:\n  scrpt: [\"echo hi\"]\n";

const VALID: &str = "stages: [build]\nbuild-job:\n  stage: build\n  script: [\"echo hi\"]\n";

/// `(line, col, message)` of each `FILE:LINE:COL: message` line.
fn located(output: &str, file: &str) -> Vec<(usize, usize, String)> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(file)?.strip_prefix(':')?;
            let (line_no, rest) = rest.split_once(':')?;
            let (col, message) = rest.split_once(": ")?;
            Some((line_no.parse().ok()?, col.parse().ok()?, message.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn lint_reports_each_error_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yml"), INVALID).unwrap();
    let output = osprey(None, &["lint", "bad.yml"], Some(dir.path()), CLI_TIMEOUT).await;
    assert_eq!(
        output.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        output.stdout_text(),
        output.stderr
    );
    let errors = located(&output.stderr, "bad.yml");
    assert!(
        !errors.is_empty(),
        "no FILE:LINE:COL: lines in:\n{}",
        output.stderr
    );
    assert!(
        errors.iter().any(|(line, col, _)| *line == 3 && *col >= 3),
        "no error on line 3 (the unknown stage):\n{}",
        output.stderr
    );
    assert!(
        errors.iter().any(|(line, col, _)| *line == 6 && *col >= 3),
        "no error on line 6 (the unknown keyword):\n{}",
        output.stderr
    );
    assert!(output.stdout.is_empty(), "{}", output.stdout_text());
}

#[tokio::test]
async fn lint_accepts_a_valid_file_and_defaults_to_gitlab_ci_yml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".gitlab-ci.yml"), VALID).unwrap();
    let output = osprey(None, &["lint"], Some(dir.path()), CLI_TIMEOUT).await;
    assert_eq!(output.code(), Some(0), "{}", output.stderr);
    assert_eq!(output.stdout_text(), ".gitlab-ci.yml: valid\n");
}

#[tokio::test]
async fn lint_of_a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = osprey(
        None,
        &["lint", "missing.yml"],
        Some(dir.path()),
        CLI_TIMEOUT,
    )
    .await;
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(output.stderr.contains("missing.yml"), "{}", output.stderr);
    assert!(!output.stderr.contains("panicked"), "{}", output.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_pipeline_is_refused_with_locations_and_nothing_is_created() {
    let cluster = TestCluster::builder().start().await;
    let repo = TestRepo::with_pipeline(INVALID);

    let error = cluster
        .api
        .create_pipeline(&repo.url(), "master")
        .await
        .expect_err("an invalid pipeline was created");
    let body = error.assert_refused(422);
    assert!(!body.error.is_empty());
    let joined = body.errors.join("\n");
    let errors = located(&joined, ".gitlab-ci.yml");
    assert_eq!(
        errors.len(),
        body.errors.len(),
        "not all FILE:LINE:COL: lines: {joined}"
    );
    assert!(errors.iter().any(|(line, _, _)| *line == 3), "{joined}");

    let output = osprey(
        Some(&cluster.coordinator.url()),
        &["pipeline", "run", "--repo", &repo.url(), "--ref", "master"],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        !located(&output.stderr, ".gitlab-ci.yml").is_empty(),
        "osprey pipeline run printed no located errors:\n{}",
        output.stderr
    );

    // Pipelines are numbered from 1: none exists.
    let missing = cluster.api.pipeline(osprey_shared::PipelineId(1)).await;
    assert_eq!(
        missing.as_ref().err().and_then(|e| e.status()),
        Some(404),
        "{missing:?}"
    );
}

#[test]
fn output_cut_short_by_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::new();
    for index in 0..2000 {
        file.push_str(&format!("job {index}:\n  script: [\"echo {index}\"]\n"));
    }
    std::fs::write(dir.path().join(".gitlab-ci.yml"), file).unwrap();
    let mut child = Command::new(osprey_integration_tests::bins::binary("osprey"))
        .args(["lint", "--plan", "--ref", "master", "--json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is closed now, as `| head -c 16` would.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
