//! The `osprey` CLI over projects: `project add`, `var set` from stdin,
//! `var list` (no values), `token create` (the token alone on stdout) used
//! with `--token`, `pipeline run --project --wait` and `pipeline retry`.

use super::Remote;
use osprey_integration_tests::cli::{osprey, osprey_with_input, CliOutput};
use osprey_integration_tests::{PipelineExt, TestCluster};
use osprey_shared::api::{CreatedProject, PipelineView, VariableView};
use osprey_shared::{JobStatus, PipelineStatus};
use std::time::Duration;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT_TIMEOUT: Duration = Duration::from_secs(120);
const VALUE: &str = "value-from-stdin-77";

#[track_caller]
fn json<T: serde::de::DeserializeOwned>(output: &CliOutput) -> T {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "osprey printed no JSON ({error}): {} / {}",
            output.stdout_text(),
            output.stderr
        )
    })
}

#[track_caller]
fn assert_ok(output: &CliOutput) {
    assert_eq!(
        output.code(),
        Some(0),
        "{} / {}",
        output.stdout_text(),
        output.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_manages_a_project() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let url = cluster.coordinator.url();
    let url = Some(url.as_str());
    // Fails on its first run, passes when retried.
    let marker = cluster.dir().join("marker-flaky");
    let pipeline = format!(
        "flaky:\n  script:\n    - echo \"key=$KEY\"\n    - test -f {0} || {{ touch {0}; exit 1; }}\n",
        marker.display()
    );
    let remote = Remote::new(&pipeline);
    remote.push(&["main"]);
    let repo = remote.url();

    let added = osprey(
        url,
        &["project", "add", "app", "--repo", &repo, "--json"],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_ok(&added);
    let created: CreatedProject = json(&added);
    assert_eq!(
        (created.project.name.as_str(), created.project.repo.as_str()),
        ("app", repo.as_str())
    );
    assert!(created.webhook_secret.len() >= 16, "{created:?}");

    let set = osprey_with_input(
        url,
        &["var", "set", "app", "KEY", "--masked"],
        None,
        Some(VALUE.as_bytes()),
        CLI_TIMEOUT,
    )
    .await;
    assert_ok(&set);
    assert!(!set.stdout_text().contains(VALUE), "{}", set.stdout_text());
    let listed = osprey(url, &["var", "list", "app", "--json"], None, CLI_TIMEOUT).await;
    assert_ok(&listed);
    assert!(
        !listed.stdout_text().contains(VALUE),
        "{}",
        listed.stdout_text()
    );
    let variables: Vec<VariableView> = json(&listed);
    assert_eq!(variables.len(), 1, "{variables:?}");
    assert_eq!(
        (variables[0].key.as_str(), variables[0].masked),
        ("KEY", true)
    );

    let created = osprey(
        url,
        &["token", "create", "--project", "app", "--role", "read"],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_ok(&created);
    let stdout = created.stdout_text();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {stdout:?}");
    let token = lines[0].trim().to_owned();
    assert!(!token.is_empty() && !token.contains(' '), "{token:?}");

    let run = osprey(
        url,
        &[
            "pipeline",
            "run",
            "--project",
            "app",
            "--ref",
            "main",
            "--wait",
            "--json",
        ],
        None,
        WAIT_TIMEOUT,
    )
    .await;
    assert_ne!(
        run.code(),
        Some(0),
        "a failed pipeline fails the run: {}",
        run.stderr
    );
    let failed: PipelineView = json(&run);
    failed.assert_status(PipelineStatus::Failed);
    failed.assert_job_status("flaky", JobStatus::Failed);
    assert_eq!(
        (failed.project.as_deref(), failed.iid),
        (Some("app"), Some(1))
    );
    let log = cluster.api.job_log_text(failed.job("flaky").id).await;
    assert!(
        log.contains("key=[MASKED]") && !log.contains(VALUE),
        "{log}"
    );

    // The read token lists the project's pipelines, and may not run one.
    let listed = osprey(
        url,
        &[
            "--token",
            &token,
            "pipeline",
            "list",
            "--project",
            "app",
            "--json",
        ],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_ok(&listed);
    let pipelines: Vec<PipelineView> = json(&listed);
    let ids: Vec<_> = pipelines.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![failed.id]);
    let refused = osprey(
        url,
        &[
            "--token",
            &token,
            "pipeline",
            "run",
            "--project",
            "app",
            "--ref",
            "main",
        ],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_ne!(
        refused.code(),
        Some(0),
        "a read token cannot run: {}",
        refused.stdout_text()
    );

    let id = failed.id.to_string();
    let retried = osprey(
        url,
        &["pipeline", "retry", &id, "--json"],
        None,
        CLI_TIMEOUT,
    )
    .await;
    assert_ok(&retried);
    let retried: PipelineView = json(&retried);
    assert_eq!(retried.id, failed.id);
    let done = cluster
        .api
        .wait_for_pipeline_finished(failed.id, WAIT_TIMEOUT)
        .await;
    done.assert_status(PipelineStatus::Success);
    done.assert_job_status("flaky", JobStatus::Success);
}
