//! The web UI in a headless Chromium: signing in through the form (the
//! session cookie hidden from scripts), a job's log and statuses growing
//! live without a reload, playing a manual job and canceling a pipeline with
//! the buttons. Jobs that must be seen running wait for a gate file the test
//! creates, so what the page shows at each step does not depend on timing.

use super::{project, start_pipeline, PROJECT};
use anyhow::{ensure, Context};
use osprey_integration_tests::cluster::ADMIN_TOKEN;
use osprey_integration_tests::{PipelineExt, TestCluster};
use osprey_shared::{JobId, JobStatus, PipelineId, PipelineStatus};
use osprey_test_support::browser::Browser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a page gets to show a state (a job starting on a loaded
/// machine included).
const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// Set on `window` to tell a live update from a reload (which drops it).
const MARKER: &str = "window.ospreyTestMarker";

/// `target/web-screenshots/NAME` of the workspace.
fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/web-screenshots")
        .join(name)
}

/// Signs in through the login form with the admin token.
async fn sign_in(browser: &Browser, base: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{base}/login")).await?;
    browser
        .fill("#login input[name=token]", ADMIN_TOKEN)
        .await?;
    browser.click("#login-submit").await?;
    browser.wait_for("#logout", UI_TIMEOUT).await?;
    Ok(())
}

/// The path (and query) of the browser's page.
async fn current_path(browser: &Browser) -> anyhow::Result<String> {
    let url = browser.current_url().await?;
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    Ok(after_scheme
        .find('/')
        .map_or("/".to_owned(), |at| after_scheme[at..].to_owned()))
}

async fn set_marker(browser: &Browser) -> anyhow::Result<()> {
    browser
        .execute(&format!("{MARKER} = 'still-here'; return true"), vec![])
        .await?;
    Ok(())
}

/// Waits until the page is a new document (a form's answer) since [`set_marker`].
async fn wait_reloaded(browser: &Browser) -> anyhow::Result<()> {
    browser
        .wait_until("the form's answer to load", UI_TIMEOUT, || async {
            let marker = browser
                .execute(
                    &format!("return document.readyState === 'complete' && !{MARKER}"),
                    vec![],
                )
                .await
                .map_err(|error| format!("{error:#}"))?;
            if marker == json!(true) {
                Ok(())
            } else {
                Err("still the old page".to_owned())
            }
        })
        .await
}

/// Fails when the page was reloaded since [`set_marker`].
async fn assert_marker(browser: &Browser, what: &str) -> anyhow::Result<()> {
    let marker = browser
        .execute(&format!("return {MARKER} || null"), vec![])
        .await?;
    ensure!(
        marker == json!("still-here"),
        "{what}: the page was reloaded (marker {marker})"
    );
    Ok(())
}

/// The texts of the log's lines (`#log div.l span.t`).
async fn log_lines(browser: &Browser) -> anyhow::Result<Vec<String>> {
    let lines = browser
        .execute(
            "return Array.from(document.querySelectorAll('#log div.l span.t'))\
             .map(function (t) { return t.textContent; })",
            vec![],
        )
        .await?;
    Ok(match lines {
        Value::Array(lines) => lines
            .into_iter()
            .filter_map(|line| line.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    })
}

/// Waits until the log has a line whose text is `text`; returns the lines.
async fn wait_for_line(browser: &Browser, text: &str) -> anyhow::Result<Vec<String>> {
    let what = format!("a log line {text:?}");
    browser
        .wait_until(&what, UI_TIMEOUT, || async {
            match log_lines(browser).await {
                Ok(lines) if lines.iter().any(|line| line == text) => Ok(lines),
                Ok(lines) => Err(format!("{lines:?}")),
                Err(error) => Err(format!("{error:#}")),
            }
        })
        .await
}

/// A gate file in the test's dir: a job waits for it with [`gate_wait`].
fn gate(cluster: &TestCluster) -> PathBuf {
    cluster.dir().join("gate")
}

fn gate_wait(gate: &Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.1; done", gate.display())
}

fn open_gate(gate: &Path) -> anyhow::Result<()> {
    std::fs::write(gate, b"open").context("creating the gate file")
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_sets_a_session_cookie_that_scripts_cannot_read() -> anyhow::Result<()> {
    let cluster = TestCluster::builder().start().await;
    let _repo = project(&cluster.api, "build:\n  script: ['true']\n").await;
    let base = cluster.coordinator.url();
    let browser = Browser::start().await?;

    browser.goto(&format!("{base}/")).await?;
    browser.wait_for("#login", UI_TIMEOUT).await?;
    let login = current_path(&browser).await?;
    ensure!(
        login.starts_with("/login?next="),
        "signed out, / went to {login}"
    );

    browser
        .fill(
            "#login input[name=token]",
            "osp_not_a_token_at_all_0000000000",
        )
        .await?;
    browser.click("#login-submit").await?;
    browser.wait_for(".error", UI_TIMEOUT).await?;
    let cookies = browser.cookies().await?;
    ensure!(
        !cookies.iter().any(|c| c.name() == "osprey_session"),
        "a wrong token got a session: {cookies:?}"
    );

    if browser.find_all("#login").await?.is_empty() {
        browser.goto(&format!("{base}{login}")).await?;
    }
    browser
        .fill("#login input[name=token]", ADMIN_TOKEN)
        .await?;
    browser.click("#login-submit").await?;
    let row =
        format!("#projects tr.project[data-name=\"{PROJECT}\"] a[href=\"/projects/{PROJECT}\"]");
    browser.wait_for(&row, UI_TIMEOUT).await?;
    ensure!(current_path(&browser).await? == "/", "signed in, not on /");
    browser.wait_for("#logout", UI_TIMEOUT).await?;

    let cookies = browser.cookies().await?;
    let session = cookies
        .iter()
        .find(|c| c.name() == "osprey_session")
        .with_context(|| format!("no session cookie in {cookies:?}"))?;
    ensure!(session.http_only() == Some(true), "{session:?}");
    ensure!(
        format!("{:?}", session.same_site()) == "Some(Strict)",
        "{session:?}"
    );
    let visible = browser.execute("return document.cookie", vec![]).await?;
    ensure!(
        !visible
            .as_str()
            .unwrap_or_default()
            .contains("osprey_session"),
        "scripts see the session: {visible}"
    );

    browser
        .click("#logout button, #logout [type=submit]")
        .await?;
    // Signing out answers with the sign-in page; only then look elsewhere.
    browser.wait_for("#login", UI_TIMEOUT).await?;
    browser.goto(&format!("{base}/agents")).await?;
    browser.wait_for("#login", UI_TIMEOUT).await?;
    let cookies = browser.cookies().await?;
    ensure!(
        !cookies.iter().any(|c| c.name() == "osprey_session"),
        "signed out, the session stays: {cookies:?}"
    );
    Ok(())
}

/// A line a second in a section, held after tick-2 until the test opens
/// the gate.
const TICKS: &str = r#"
ticks:
  script:
    - printf '\033[0Ksection_start:%s:ticks\r\033[0KTicking\n' "$(date +%s)"
    - for i in 1 2; do echo tick-$i; sleep 1; done
    - "GATE_WAIT"
    - for i in 3 4; do echo tick-$i; sleep 1; done
    - printf '\033[0Ksection_end:%s:ticks\r\033[0K\n' "$(date +%s)"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_shows_its_log_and_statuses_live() -> anyhow::Result<()> {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let gate = gate(&cluster);
    let ci = TICKS.replace("GATE_WAIT", &gate_wait(&gate));
    let _repo = project(api, &ci).await;
    let base = cluster.coordinator.url();
    let browser = Browser::start().await?;
    sign_in(&browser, &base).await?;

    // Run it with the project page's form.
    browser.goto(&format!("{base}/projects/{PROJECT}")).await?;
    browser
        .fill("#run-pipeline input[name=ref]", "main")
        .await?;
    browser
        .click("#run-pipeline button, #run-pipeline [type=submit]")
        .await?;
    browser.wait_for("#pipeline", UI_TIMEOUT).await?;
    let path = current_path(&browser).await?;
    let id: u64 = path
        .strip_prefix("/pipelines/")
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("the form went to {path}"))?;
    let pipeline = api.pipeline(PipelineId(id)).await?;
    ensure!(pipeline.source == "web", "source {}", pipeline.source);
    let job = pipeline.job("ticks").id;

    browser
        .wait_until_attr("#pipeline", "data-status", "running", UI_TIMEOUT)
        .await?;
    let graph_job = format!("a[href=\"/jobs/{job}\"] g.job#job-{job}");
    browser
        .wait_until_attr(&graph_job, "data-status", "running", UI_TIMEOUT)
        .await?;
    browser.click(&format!("#job-{job}")).await?;
    browser.wait_for("main#job", UI_TIMEOUT).await?;
    ensure!(current_path(&browser).await? == format!("/jobs/{job}"));

    let lines = wait_for_line(&browser, "tick-1").await?;
    ensure!(
        !lines.iter().any(|line| line == "tick-4"),
        "tick-4 before the gate: {lines:?}"
    );
    ensure!(
        browser.is_displayed("#cancel-pipeline").await?,
        "no cancel while running"
    );
    ensure!(
        !browser.is_displayed("#retry-job").await?,
        "a retry while running"
    );
    set_marker(&browser).await?;
    open_gate(&gate)?;
    wait_for_line(&browser, "tick-4").await?;
    browser
        .wait_until_attr("#job", "data-status", "success", UI_TIMEOUT)
        .await?;
    assert_marker(&browser, "the job page").await?;
    wait_displayed(&browser, "#retry-job", true).await?;
    wait_displayed(&browser, "#cancel-pipeline", false).await?;
    fold_and_unfold(&browser, "ticks", "tick-3").await?;
    let status = browser.text("#job-status").await?;
    ensure!(status.to_lowercase().contains("success"), "{status}");
    let raw = browser.attr("a#raw-log", "href").await?;
    ensure!(
        raw.as_deref() == Some(&*format!("/jobs/{job}/raw")),
        "{raw:?}"
    );
    ensure!(
        browser.find_all("a#artifacts").await?.is_empty(),
        "an artifacts link without artifacts"
    );
    browser.screenshot(&screenshot_path("job.png")).await?;

    browser.goto(&format!("{base}/pipelines/{id}")).await?;
    browser
        .wait_until_attr("#pipeline", "data-status", "success", UI_TIMEOUT)
        .await?;
    let row = format!("#jobs tr.job[data-job=\"{job}\"][data-name=\"ticks\"]");
    browser
        .wait_until_attr(&row, "data-status", "success", UI_TIMEOUT)
        .await?;
    browser.screenshot(&screenshot_path("pipeline.png")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn playing_a_manual_job_updates_its_row_live() -> anyhow::Result<()> {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let gate = gate(&cluster);
    let ci = format!(
        "stages: [build, deploy]\nbuild:\n  stage: build\n  script: ['echo built']\n\
         deploy:\n  stage: deploy\n  when: manual\n  script:\n    - \"{}\"\n    - echo deployed\n",
        gate_wait(&gate)
    );
    let _repo = project(api, &ci).await;
    let pipeline = start_pipeline(api).await;
    let deploy = pipeline.job("deploy").id;
    api.wait_for_job_status(deploy, JobStatus::Manual, UI_TIMEOUT)
        .await;
    let base = cluster.coordinator.url();
    let browser = Browser::start().await?;
    sign_in(&browser, &base).await?;

    let page = format!("/pipelines/{}", pipeline.id);
    browser.goto(&format!("{base}{page}")).await?;
    let row = format!("#jobs tr.job[data-job=\"{deploy}\"]");
    browser
        .wait_until_attr(&row, "data-status", "manual", UI_TIMEOUT)
        .await?;
    let play = format!("{row} form.play[data-job=\"{deploy}\"]");
    // The form posts and comes back to this page: a new document, which the
    // marker set before the click tells from the old one.
    set_marker(&browser).await?;
    browser
        .click(&format!("{play} button, {play} [type=submit]"))
        .await?;
    wait_reloaded(&browser).await?;
    ensure!(
        current_path(&browser).await? == page,
        "played from the pipeline page, back on it"
    );
    let started = wait_for_row_started(&browser, &row).await?;
    set_marker(&browser).await?;
    open_gate(&gate)?;
    browser
        .wait_until_attr(&row, "data-status", "success", UI_TIMEOUT)
        .await?;
    assert_marker(&browser, &format!("the row went {started} -> success")).await?;
    let played = api.job(deploy).await?;
    ensure!(played.status == JobStatus::Success, "{played:?}");
    Ok(())
}

/// Waits until `css` is shown (or hidden, as its status changes live).
async fn wait_displayed(browser: &Browser, css: &str, shown: bool) -> anyhow::Result<()> {
    let what = format!("{css} to be {}", if shown { "shown" } else { "hidden" });
    browser
        .wait_until(&what, UI_TIMEOUT, || async {
            match browser.is_displayed(css).await {
                Ok(displayed) if displayed == shown => Ok(()),
                Ok(displayed) => Err(format!("displayed: {displayed}")),
                Err(error) => Err(format!("{error:#}")),
            }
        })
        .await
}

/// Clicks the header of section `name`: it gets `folded` and the line
/// whose text is `inside` gets `hidden`; a second click shows it again.
async fn fold_and_unfold(browser: &Browser, name: &str, inside: &str) -> anyhow::Result<()> {
    let header = format!("#log div.l.sh[data-s=\"{name}\"]");
    browser.wait_for(&header, UI_TIMEOUT).await?;
    let line = browser
        .execute(
            "var wanted = arguments[0];\
             var found = Array.from(document.querySelectorAll('#log div.l'))\
             .find(function (l) { var t = l.querySelector('.t'); return t && t.textContent === wanted; });\
             return found ? found.id : null",
            vec![json!(inside)],
        )
        .await?;
    let line = format!("#{}", line.as_str().context("no line inside the section")?);
    for folded in [true, false] {
        browser.click(&header).await?;
        let what = format!("{header} folded={folded}, {line} hidden={folded}");
        browser
            .wait_until(&what, UI_TIMEOUT, || async {
                let header_classes = browser.classes(&header).await.map_err(|e| e.to_string())?;
                let line_classes = browser.classes(&line).await.map_err(|e| e.to_string())?;
                let now = (
                    header_classes.iter().any(|c| c == "folded"),
                    line_classes.iter().any(|c| c == "hidden"),
                );
                if now == (folded, folded) {
                    Ok(())
                } else {
                    Err(format!("header {header_classes:?}, line {line_classes:?}"))
                }
            })
            .await?;
    }
    Ok(())
}

/// Waits until the row has left `manual` for `pending` or `running`.
async fn wait_for_row_started(browser: &Browser, row: &str) -> anyhow::Result<String> {
    browser
        .wait_until("the played job to start", UI_TIMEOUT, || async {
            match browser.attr(row, "data-status").await {
                Ok(Some(status)) if status == "pending" || status == "running" => Ok(status),
                Ok(status) => Err(format!("{status:?}")),
                Err(error) => Err(format!("{error:#}")),
            }
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cancel_button_cancels_a_running_pipeline() -> anyhow::Result<()> {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let _repo = project(api, "sleeper:\n  script: ['sleep 30']\n").await;
    let pipeline = start_pipeline(api).await;
    let job: JobId = pipeline.job("sleeper").id;
    api.wait_for_job_status(job, JobStatus::Running, UI_TIMEOUT)
        .await;
    let base = cluster.coordinator.url();
    let browser = Browser::start().await?;
    sign_in(&browser, &base).await?;

    let page = format!("/pipelines/{}", pipeline.id);
    browser.goto(&format!("{base}{page}")).await?;
    browser
        .wait_until_attr("#pipeline", "data-status", "running", UI_TIMEOUT)
        .await?;
    ensure!(
        !browser.is_displayed("#retry-pipeline").await?,
        "a retry while running"
    );
    set_marker(&browser).await?;
    browser
        .click("#cancel-pipeline button, #cancel-pipeline [type=submit]")
        .await?;
    wait_reloaded(&browser).await?;
    ensure!(
        current_path(&browser).await? == page,
        "canceled, back on the pipeline page"
    );
    browser
        .wait_until_attr("#pipeline", "data-status", "canceled", UI_TIMEOUT)
        .await?;
    wait_displayed(&browser, "#retry-pipeline", true).await?;
    wait_displayed(&browser, "#cancel-pipeline", false).await?;
    let canceled = api.pipeline(pipeline.id).await?;
    canceled.assert_status(PipelineStatus::Canceled);
    Ok(())
}

/// About 330 KiB of log between a first and a last line.
const LONG_LOG: &str = r#"
long:
  script:
    - echo first-line
    - for i in $(seq 1 3000); do echo "filler-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; done
    - echo last-line
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_long_log_starts_at_its_end_and_loads_earlier_lines_on_demand() -> anyhow::Result<()> {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let _repo = project(api, LONG_LOG).await;
    let created = start_pipeline(api).await;
    let pipeline = api.wait_for_pipeline(created.id).await;
    pipeline.assert_status(PipelineStatus::Success);
    let job = pipeline.job("long").id;
    let base = cluster.coordinator.url();
    let browser = Browser::start().await?;
    sign_in(&browser, &base).await?;

    browser.goto(&format!("{base}/jobs/{job}")).await?;
    let lines = wait_for_line(&browser, "last-line").await?;
    ensure!(
        !lines.iter().any(|line| line == "first-line"),
        "the whole log was sent at once ({} lines)",
        lines.len()
    );
    ensure!(
        browser.is_displayed("#log-earlier").await?,
        "no way to earlier lines"
    );
    set_marker(&browser).await?;
    // Each click loads the window before; the first line comes within a few.
    for _ in 0..4 {
        if log_lines(&browser)
            .await?
            .iter()
            .any(|line| line == "first-line")
        {
            break;
        }
        let before = log_lines(&browser).await?.len();
        browser.click("#log-earlier").await?;
        browser
            .wait_until("earlier lines", UI_TIMEOUT, || async {
                match log_lines(&browser).await {
                    Ok(lines) if lines.len() > before => Ok(()),
                    Ok(lines) => Err(format!("{} lines", lines.len())),
                    Err(error) => Err(format!("{error:#}")),
                }
            })
            .await?;
    }
    let lines = wait_for_line(&browser, "first-line").await?;
    ensure!(
        lines.iter().any(|line| line == "last-line"),
        "the end was dropped"
    );
    let fillers = lines
        .iter()
        .filter(|line| line.starts_with("filler-"))
        .count();
    ensure!(fillers == 3000, "{fillers} filler lines, not 3000");
    assert_marker(&browser, "loading earlier lines").await?;
    Ok(())
}
