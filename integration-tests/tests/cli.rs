//! The `osprey` command line against a real cluster: exit codes, the JSON of
//! `pipeline run --wait --json`, connection errors and `logs --pipeline`.

use osprey_integration_tests::cli::{osprey, spawn_osprey, CliOutput};
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::api::PipelineView;
use osprey_shared::{JobStatus, PipelineStatus};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};

const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `osprey --url URL ARGS...`, killed after [`CLI_TIMEOUT`].
async fn osprey_at(url: &str, args: &[&str]) -> CliOutput {
    osprey(Some(url), args, None, CLI_TIMEOUT).await
}

/// The one pipeline JSON `osprey pipeline run --json` prints on stdout.
fn pipeline_json(output: &CliOutput) -> PipelineView {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one pipeline JSON ({error}):\n{}",
            output.stdout_text()
        )
    })
}

#[tokio::test]
async fn an_unreachable_coordinator_is_named_and_exits_1() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = osprey_at(&url, &["pipeline", "show", "1"]).await;
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains(&format!("cannot reach the coordinator at {url}")),
        "{}",
        output.stderr
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let output = osprey(
        None,
        &["pipeline", "show", "not-a-number"],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_eq!(output.code(), Some(2), "{}", output.stderr);
    let output = osprey(
        None,
        &["pipeline", "run", "--ref", "master"],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_eq!(output.code(), Some(2), "{}", output.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_run_wait_json_exits_0_on_success_with_the_pipeline_json() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        "stages: [build, test]\ncompile:\n  stage: build\n  script: [\"echo compiled\"]\ncheck:\n  stage: test\n  script: [\"echo checked\"]\n",
    );
    let sha = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    // A relative path: the CLI makes it absolute before sending it.
    let parent = repo.path().parent().unwrap();
    let relative = repo.path().file_name().unwrap().to_str().unwrap();
    let output = osprey(
        Some(&cluster.coordinator.url()),
        &[
            "pipeline", "run", "--repo", relative, "--ref", "master", "--wait", "--json",
        ],
        Some(parent),
        CLI_TIMEOUT,
    )
    .await;
    assert_eq!(
        output.code(),
        Some(0),
        "stderr:\n{}\nstdout:\n{}",
        output.stderr,
        output.stdout_text()
    );
    let pipeline = pipeline_json(&output);
    pipeline.assert_status(PipelineStatus::Success);
    assert_eq!(pipeline.sha, sha);
    assert_eq!(pipeline.git_ref, "master");
    assert_eq!(pipeline.jobs.len(), 2);
    assert!(pipeline
        .jobs
        .iter()
        .all(|job| job.status == JobStatus::Success));
    // Raw JSON field names are the contract scripts read.
    let raw: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in ["id", "status", "ref", "sha", "jobs"] {
        assert!(raw.get(key).is_some(), "no {key:?} in {raw}");
    }
    for key in [
        "id",
        "name",
        "stage",
        "status",
        "allow_failure",
        "when",
        "agent",
        "started_at",
        "finished_at",
        "exit_code",
        "failure_reason",
        "pending_reason",
    ] {
        assert!(raw["jobs"][0].get(key).is_some(), "no job {key:?} in {raw}");
    }
    // Progress went to stderr, job by job.
    assert!(output.stderr.contains("build/compile"), "{}", output.stderr);
    assert!(output.stderr.contains("test/check"), "{}", output.stderr);
    assert!(output.stderr.contains("success"), "{}", output.stderr);
    // And the pipeline is the one the coordinator holds.
    assert_eq!(cluster.api.pipeline(pipeline.id).await.unwrap(), pipeline);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_run_wait_exits_1_on_failure() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo =
        TestRepo::with_pipeline("stages: [test]\nbroken:\n  stage: test\n  script: [\"exit 4\"]\n");
    let url = cluster.coordinator.url();
    let repo_url = repo.url();
    let output = osprey_at(
        &url,
        &[
            "pipeline", "run", "--repo", &repo_url, "--ref", "master", "--wait", "--json",
        ],
    )
    .await;
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    let pipeline = pipeline_json(&output);
    assert_eq!(pipeline.status, PipelineStatus::Failed);
    assert_eq!(pipeline.job("broken").exit_code, Some(4));

    // Without --json: a readable table on stdout, still exit 1.
    let output = osprey_at(
        &url,
        &[
            "pipeline", "run", "--repo", &repo_url, "--ref", "master", "--wait",
        ],
    )
    .await;
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    let stdout = output.stdout_text();
    assert!(
        stdout.contains("broken") && stdout.contains("failed"),
        "{stdout}"
    );

    // `pipeline show` of the first one.
    let output = osprey_at(&url, &["pipeline", "show", &pipeline.id.to_string()]).await;
    assert_eq!(output.code(), Some(0), "{}", output.stderr);
    assert!(
        output.stdout_text().contains("script failure"),
        "{}",
        output.stdout_text()
    );
    let output = osprey_at(&url, &["pipeline", "show", "999"]).await;
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
}

/// Splits `[job] line` records into (job, rest).
fn records(output: &str) -> Vec<(&str, &str)> {
    output
        .lines()
        .map(|line| {
            line.strip_prefix('[')
                .and_then(|line| line.split_once("] "))
                .unwrap_or_else(|| panic!("line without a job prefix: {line:?}\nin:\n{output}"))
        })
        .collect()
}

/// The log lines of each job (not the CLI's own `pending:` lines), and
/// the jobs in the order their blocks of lines came.
fn by_job(output: &str) -> (HashMap<String, Vec<String>>, Vec<String>) {
    let mut jobs: HashMap<String, Vec<String>> = HashMap::new();
    let mut blocks: Vec<String> = Vec::new();
    for (name, rest) in records(output) {
        if blocks.last().map(String::as_str) != Some(name) {
            blocks.push(name.to_owned());
        }
        if !rest.starts_with("pending: ") {
            jobs.entry(name.to_owned())
                .or_default()
                .push(rest.to_owned());
        }
    }
    (jobs, blocks)
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_pipeline_follow_prefixes_every_line_with_its_job() {
    let cluster = TestCluster::builder().agents(2).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [test]
alpha:
  stage: test
  script: ['for i in 1 2 3 4 5; do echo "alpha says $i"; sleep 0.2; done']
beta:
  stage: test
  script: ['for i in 1 2 3 4 5; do printf "beta "; sleep 0.1; echo "says $i"; done']
"#,
    );
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let url = cluster.coordinator.url();
    // Started before the jobs run: follows them from their first byte.
    let followed = osprey_at(&url, &["logs", "--pipeline", &created.id.to_string(), "-f"]).await;
    assert_eq!(followed.code(), Some(0), "{}", followed.stderr);
    // The streams end once their jobs have finished; the pipeline follows.
    let pipeline = cluster
        .api
        .wait_for_pipeline_finished(created.id, Duration::from_secs(10))
        .await;
    pipeline.assert_status(PipelineStatus::Success);
    let followed = followed.stdout_text();
    let (jobs, blocks) = by_job(&followed);
    // The jobs ran side by side, yet each one's lines came out together.
    let mut names = blocks.clone();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        blocks.len(),
        "interleaved jobs in:\n{followed}"
    );
    for name in ["alpha", "beta"] {
        let log = cluster.api.job_log(pipeline.job(name).id).await.unwrap();
        let log = String::from_utf8(log).unwrap();
        let expected: Vec<String> = log.lines().map(str::to_owned).collect();
        assert_eq!(
            jobs.get(name),
            Some(&expected),
            "lines of {name} in:\n{followed}"
        );
        // Partial writes ("beta " then "says N") come out as whole lines.
        for i in 1..=5 {
            assert!(log.contains(&format!("{name} says {i}\n")), "{log}");
        }
    }

    // Without -f: the same lines, job by job in job order.
    let printed = osprey_at(&url, &["logs", "--pipeline", &created.id.to_string()]).await;
    assert_eq!(printed.code(), Some(0), "{}", printed.stderr);
    let mut expected = String::new();
    for job in &pipeline.jobs {
        let log = String::from_utf8(cluster.api.job_log(job.id).await.unwrap()).unwrap();
        for line in log.lines() {
            expected.push_str(&format!("[{}] {line}\n", job.name));
        }
    }
    assert_eq!(printed.stdout_text(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_pipeline_follow_says_why_a_job_waits() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [test]
needs-gpu:
  stage: test
  tags: [gpu]
  script: ["echo never"]
runs-anywhere:
  stage: test
  script: ["echo ran"]
"#,
    );
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let url = cluster.coordinator.url();
    let mut child = spawn_osprey(&url, &["logs", "--pipeline", &created.id.to_string(), "-f"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let pending = tokio::time::timeout(CLI_TIMEOUT, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            seen.push(line.clone());
            if line.starts_with("[needs-gpu] pending: ") {
                return line;
            }
        }
        panic!("osprey ended without a pending line:\n{}", seen.join("\n"));
    })
    .await
    .expect("a pending line in time");
    assert!(pending.contains("[gpu]"), "{pending}");
    // Only a canceled pipeline ends the follow.
    cluster.api.cancel(created.id).await.unwrap();
    let status = tokio::time::timeout(CLI_TIMEOUT, child.wait())
        .await
        .expect("osprey ends once the pipeline is canceled")
        .unwrap();
    while let Some(line) = stdout.next_line().await.unwrap() {
        seen.push(line);
    }
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    let output = seen.join("\n");
    let (jobs, _) = by_job(&output);
    assert_eq!(
        records(&output)
            .iter()
            .filter(|(name, rest)| *name == "needs-gpu" && rest.starts_with("pending: "))
            .count(),
        1,
        "one pending line, the reason never changed:\n{output}"
    );
    let ran = created.job("runs-anywhere").id;
    let log = String::from_utf8(cluster.api.job_log(ran).await.unwrap()).unwrap();
    let expected: Vec<String> = log.lines().map(str::to_owned).collect();
    assert_eq!(jobs.get("runs-anywhere"), Some(&expected), "{output}");
    assert_eq!(jobs.get("needs-gpu"), None, "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_of_a_job_are_printed_as_raw_bytes() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        "stages: [test]\nbytes:\n  stage: test\n  script: [\"printf 'caf\\\\351 \\\\377\\\\n'\"]\n",
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    let job_id = pipeline.job("bytes").id;
    let stored = cluster.api.job_log(job_id).await.unwrap();
    assert!(
        stored.windows(6).any(|w| w == b"caf\xe9 \xff"),
        "{:?}",
        String::from_utf8_lossy(&stored)
    );
    let url = cluster.coordinator.url();
    for args in [vec!["logs", "JOB"], vec!["logs", "JOB", "-f"]] {
        let id = job_id.to_string();
        let args: Vec<&str> = args
            .iter()
            .map(|arg| if *arg == "JOB" { id.as_str() } else { arg })
            .collect();
        let output = osprey_at(&url, &args).await;
        assert_eq!(output.code(), Some(0), "{}", output.stderr);
        assert!(
            output.stdout == stored,
            "osprey {args:?} changed the bytes: {:?}",
            output.stdout
        );
    }
}
