//! `GET /metrics` of the coordinator and of an agent after known
//! workloads, its access rule with `--metrics-token`, and `--log-format
//! json`. The exposition text is read with the small parser below
//! (`name{labels} value` lines), not a Prometheus library, so the test
//! checks the text a scraper gets.

use osprey_integration_tests::{
    wait_for, AgentOpts, ApiClient, Coordinator, CoordinatorOpts, PipelineExt, TestCluster,
    TestRepo,
};
use osprey_shared::{JobStatus, PipelineStatus};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long an agent gets to print its metrics address or record a job.
const WAIT: Duration = Duration::from_secs(30);

/// One sample: a metric name and its labels, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// The samples of an exposition text.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<Series, f64>,
    text: String,
}

impl Scrape {
    /// Parses `name{key="value",...} value` lines; `#` lines are comments.
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = parse_line(line)
                .unwrap_or_else(|| panic!("unparsable exposition line {line:?} in:\n{text}"));
            samples.insert(series, value);
        }
        Scrape {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of `name` with exactly `labels`, if it is there.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let series = Series {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        };
        self.samples.get(&series).copied()
    }

    /// [`Scrape::find`], panicking with the whole text when it is missing.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", self.text))
    }
}

/// `name{labels} value` (labels optional; values are quoted and may hold
/// commas, `\"` and `\\`).
fn parse_line(line: &str) -> Option<(Series, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some((
        Series {
            name: name.to_owned(),
            labels,
        },
        value,
    ))
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break at,
                other => value.push(other),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

#[test]
fn the_parser_reads_labels_with_commas_and_escapes() {
    let scrape = Scrape::parse(
        "# TYPE x gauge\nx 1\ny{tags=\"a,b\",q=\"say \\\"hi\\\"\"} 2.5\nz{tags=\"\"} 0\n",
    );
    assert_eq!(scrape.find("x", &[]), Some(1.0));
    assert_eq!(
        scrape.find("y", &[("tags", "a,b"), ("q", "say \"hi\"")]),
        Some(2.5)
    );
    assert_eq!(scrape.find("z", &[("tags", "")]), Some(0.0));
}

/// `GET url/metrics` with `token` as bearer (`None`: no header): the status
/// and the body.
async fn get_metrics(url: &str, token: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /metrics");
    let status = response.status().as_u16();
    (status, response.text().await.expect("the /metrics body"))
}

/// A scrape that must succeed.
async fn scrape(url: &str, token: Option<&str>) -> Scrape {
    let (status, body) = get_metrics(url, token).await;
    assert_eq!(status, 200, "GET {url}/metrics: {body}");
    Scrape::parse(&body)
}

/// The address an agent printed as `metrics listening on ADDR` on its
/// stdout (kept by the harness as `agent-NAME.stdout` in the test dir).
async fn agent_metrics_url(dir: &Path, agent: &str) -> String {
    let path = dir.join(format!("agent-{agent}.stdout"));
    wait_for("the agent's metrics address", WAIT, || async {
        let text = std::fs::read_to_string(&path).map_err(|error| error.to_string())?;
        text.lines()
            .find_map(|line| line.split_once("metrics listening on "))
            .map(|(_, addr)| format!("http://{}", addr.trim()))
            .ok_or_else(|| format!("nothing yet in {}", path.display()))
    })
    .await
}

fn metrics_agent(name: &str) -> AgentOpts {
    let mut opts = AgentOpts::named(name);
    opts.extra_args = vec!["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()];
    opts
}

const TWO_PASS_ONE_FAILS: &str = r#"
stages: [test]
first:
  stage: test
  script: ["echo first passes"]
second:
  stage: test
  script: ["echo second passes"]
third:
  stage: test
  script: ["echo third fails", "exit 3"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_counts_what_a_pipeline_did() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(TWO_PASS_ONE_FAILS);
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Failed);
    pipeline.assert_job_status("third", JobStatus::Failed);
    let mut log_bytes = 0;
    for job in &pipeline.jobs {
        log_bytes += cluster.api.job_log(job.id).await.expect("a job log").len();
    }
    assert!(log_bytes > 0);

    let metrics = scrape(&cluster.coordinator.url(), None).await;
    let finished = "osprey_jobs_finished_total";
    assert_eq!(
        metrics.value(
            finished,
            &[("status", "success"), ("failure_reason", "none")]
        ),
        2.0
    );
    assert_eq!(
        metrics.value(
            finished,
            &[("status", "failed"), ("failure_reason", "script_failure")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("osprey_dispatch_latency_seconds_count", &[]),
        3.0
    );
    assert_eq!(metrics.value("osprey_job_duration_seconds_count", &[]), 3.0);
    assert_eq!(metrics.value("osprey_agents_connected", &[]), 1.0);
    assert_eq!(metrics.value("osprey_agent_free_slots", &[]), 1.0);
    assert_eq!(
        metrics.value("osprey_log_bytes_received_total", &[]),
        log_bytes as f64
    );
    assert_eq!(
        metrics.value("osprey_pipelines", &[("status", "failed")]),
        1.0
    );
    assert_eq!(metrics.value("osprey_jobs", &[("state", "success")]), 2.0);
    assert_eq!(metrics.value("osprey_jobs", &[("state", "pending")]), 0.0);
    assert!(metrics.value("osprey_store_transaction_seconds_count", &[]) > 0.0);
    assert_eq!(
        metrics.value(
            "osprey_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Nothing is queued any more: no queue series at all.
    assert!(
        !metrics.text.contains("osprey_queue_jobs{"),
        "{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_metrics_token_is_the_only_way_in() {
    let token = "scrape-token-for-the-test";
    let coordinator = Coordinator::start(CoordinatorOpts {
        extra_args: vec!["--metrics-token".to_owned(), token.to_owned()],
        ..CoordinatorOpts::default()
    })
    .await;
    let url = coordinator.url();
    // From loopback, and even with the admin token: not without the metrics token.
    assert_eq!(get_metrics(&url, None).await.0, 401);
    assert_eq!(get_metrics(&url, Some("wrong-token")).await.0, 401);
    assert_eq!(
        get_metrics(&url, Some(osprey_integration_tests::cluster::ADMIN_TOKEN))
            .await
            .0,
        401
    );
    let metrics = scrape(&url, Some(token)).await;
    assert_eq!(metrics.value("osprey_agents_connected", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_a_loopback_peer_may_scrape() {
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let url = coordinator.url();
    assert_eq!(get_metrics(&url, None).await.0, 200);
    assert_eq!(get_metrics(&url, Some("not-a-token")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_serves_its_own_metrics() {
    let cluster = TestCluster::builder()
        .agent(metrics_agent("agent-1"))
        .start()
        .await;
    let url = agent_metrics_url(cluster.dir(), "agent-1").await;
    let before = scrape(&url, None).await;
    assert_eq!(before.value("osprey_agent_jobs_running", &[]), 0.0);
    assert_eq!(
        before.value("osprey_agent_job_duration_seconds_count", &[]),
        0.0
    );

    let repo = TestRepo::with_pipeline(
        "stages: [test]\nonly:\n  stage: test\n  script: [\"echo one job\"]\n",
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    // The agent records the job once it has reported it: just after the
    // coordinator shows it finished.
    let after = wait_for("the agent to record its job", WAIT, || async {
        let metrics = scrape(&url, None).await;
        match metrics.find("osprey_agent_job_duration_seconds_count", &[]) {
            Some(count) if count >= 1.0 => Ok(metrics),
            other => Err(format!("count {other:?}")),
        }
    })
    .await;
    assert_eq!(
        after.value("osprey_agent_job_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(after.value("osprey_agent_jobs_running", &[]), 0.0);
    assert_eq!(after.value("osprey_agent_spool_bytes", &[]), 0.0);
    assert_eq!(after.value("osprey_agent_reconnects_total", &[]), 0.0);
    assert_eq!(
        after.value(
            "osprey_agent_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let coordinator = Coordinator::start(CoordinatorOpts {
        extra_args: vec!["--log-format".to_owned(), "json".to_owned()],
        ..CoordinatorOpts::default()
    })
    .await;
    let api: ApiClient = coordinator.api();
    // A request that logs something past start-up.
    api.agents().await.expect("list agents");
    let path = coordinator.dir().join("coordinator.stderr");
    let text = wait_for("the coordinator's ready line", WAIT, || async {
        let text = std::fs::read_to_string(&path).map_err(|error| error.to_string())?;
        if text.contains("coordinator ready") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    let mut lines = 0;
    // The harness writes `--- start: COMMAND` before each run.
    for line in text.lines().filter(|line| !line.starts_with("--- ")) {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"));
        assert!(object["level"].is_string(), "no level: {line}");
        assert!(object["message"].is_string(), "no message: {line}");
        lines += 1;
    }
    assert!(lines > 0, "no log lines: {text:?}");
}
