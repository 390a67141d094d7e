//! Run results of the conformance suite (`shared/tests/conformance/`): every
//! case folder holding `expected-run.txt` is run on real agents, and the
//! outcome is compared with that file.
//!
//! `expected-run.txt` holds the pipeline status on the first line
//! (`pipeline: success`), then one line per job in the pipeline's job order:
//! `NAME: STATUS`, plus ` exit N` when the job has an exit code. A pipeline
//! is read once it has finished, or once it waits on a blocking manual job
//! with nothing else left to run (`pipeline: manual`); manual jobs nobody
//! plays stay `manual`.
//!
//! The case folder is the repository: every file but `context.toml` and
//! `expected*.txt` is committed on `master`; the ref of `context.toml` is
//! then created (a branch, or a tag when `tag = true`), HEAD points at its
//! `default_branch` (default `main`, as the plan suite) and, when `changed`
//! lists paths, those files come in a second commit so that the pipeline sees
//! exactly them as changed. Pipelines are created through Osprey's API,
//! which stands for a push of the ref (`CI_PIPELINE_SOURCE=push`), so a case
//! whose `source` is not `push` cannot be run; the context's `[variables]`
//! are the pipeline variables.
//!
//! One cluster serves every case: a coordinator, an untagged shell agent
//! with four slots and `--run-untagged`, and a shell agent tagged `docker`
//! (the shell executor ignores `image:` and `services:`, as GitLab's does).
//!
//! `OSPREY_BLESS=1` rewrites `expected-run.txt` from the actual outcome, for
//! review in the diff; `OSPREY_CASE=text` runs only the cases whose folder
//! name contains `text`.

use osprey_integration_tests::wait::describe_pipeline;
use osprey_integration_tests::{AgentOpts, ApiClient, TestCluster, TestRepo, PIPELINE_TIMEOUT};
use osprey_shared::api::PipelineView;
use osprey_shared::{JobStatus, PipelineId, PipelineStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Between two reads of a pipeline that is not settled yet.
const SETTLE_POLL: Duration = Duration::from_millis(300);

/// The files of a case folder that are not part of its repository.
fn in_repository(relative: &str) -> bool {
    relative != "context.toml" && !(relative.starts_with("expected") && relative.ends_with(".txt"))
}

/// The keys of `context.toml` (see `shared/tests/conformance.rs`).
#[derive(Debug, Default)]
struct Context {
    git_ref: String,
    tag: bool,
    source: Option<String>,
    changed: Option<Vec<String>>,
    default_branch: Option<String>,
    variables: Vec<(String, String)>,
}

/// Reads the small TOML subset the suite's contexts use: `key = "string"`,
/// `key = true|false`, `key = ["a", "b"]` and a `[variables]` table of
/// strings. Anything else is an error, so a new key is never ignored.
fn parse_context(text: &str) -> Result<Context, String> {
    let mut context = Context::default();
    let mut git_ref = None;
    let mut in_variables = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |message: String| format!("line {}: {message}", number + 1);
        if line.starts_with('[') {
            if line != "[variables]" {
                return Err(at(format!("unknown table {line}")));
            }
            in_variables = true;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| at(format!("not `key = value`: {line}")))?;
        let (key, value) = (key.trim().trim_matches('"'), value.trim());
        if in_variables {
            context
                .variables
                .push((key.to_owned(), parse_string(value).map_err(at)?));
            continue;
        }
        match key {
            "ref" => git_ref = Some(parse_string(value).map_err(at)?),
            "tag" => {
                context.tag = match value {
                    "true" => true,
                    "false" => false,
                    other => return Err(at(format!("tag = {other}: not a boolean"))),
                }
            }
            "source" => context.source = Some(parse_string(value).map_err(at)?),
            "default_branch" => context.default_branch = Some(parse_string(value).map_err(at)?),
            "changed" => {
                let inner = value
                    .strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
                    .ok_or_else(|| at(format!("changed = {value}: not a one-line list")))?;
                let paths = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(parse_string)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(at)?;
                context.changed = Some(paths);
            }
            other => return Err(at(format!("unknown key {other}"))),
        }
    }
    context.git_ref = git_ref.ok_or("no `ref`")?;
    Ok(context)
}

/// A basic TOML string: double quotes, with `\"` and `\\` escapes.
fn parse_string(value: &str) -> Result<String, String> {
    let inner = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or_else(|| format!("{value}: not a double-quoted string"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                other => return Err(format!("{value}: unsupported escape \\{other:?}")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The repository files of a case folder, relative and sorted.
fn repository_files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("readable case folder") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).expect("under the case folder");
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut files = Vec::new();
    walk(root, root, &mut files);
    files.retain(|file| in_repository(file));
    files.sort();
    files
}

/// The case folder as a git repository, with the context's ref created.
fn build_repository(case: &Path, context: &Context) -> TestRepo {
    let repo = TestRepo::new();
    let changed = context.changed.clone().unwrap_or_default();
    let files = repository_files(case);
    let read = |file: &str| {
        std::fs::read_to_string(case.join(file))
            .unwrap_or_else(|error| panic!("{}: {file}: {error}", case.display()))
    };
    for file in files.iter().filter(|file| !changed.contains(file)) {
        repo.write(file, &read(file));
    }
    repo.commit("the case's files");
    if context.changed.is_some() {
        for file in &changed {
            assert!(
                files.contains(file),
                "{}: changed file {file} is not in the folder",
                case.display()
            );
            repo.write(file, &read(file));
        }
        repo.commit("the changed files");
    }
    let default_branch = context.default_branch.as_deref().unwrap_or("main");
    if default_branch != "master" {
        repo.branch(default_branch);
        repo.git(&[
            "symbolic-ref",
            "HEAD",
            &format!("refs/heads/{default_branch}"),
        ]);
    }
    if context.tag {
        repo.tag(&context.git_ref);
    } else if context.git_ref != "master" && context.git_ref != default_branch {
        repo.branch(&context.git_ref);
    }
    repo
}

/// `pipeline: STATUS`, then `NAME: STATUS[ exit N]` per job.
fn render(pipeline: &PipelineView) -> String {
    let mut out = format!("pipeline: {}\n", pipeline.status);
    for job in &pipeline.jobs {
        out.push_str(&format!("{}: {}", job.name, job.status));
        if let Some(code) = job.exit_code {
            out.push_str(&format!(" exit {code}"));
        }
        out.push('\n');
    }
    out
}

/// Finished, or blocked on a manual job with no job left to start or end.
fn settled(pipeline: &PipelineView) -> bool {
    let busy = pipeline.jobs.iter().any(|job| match job.status {
        JobStatus::Pending
        | JobStatus::Running
        | JobStatus::Scheduled
        | JobStatus::WaitingForResource => true,
        JobStatus::Created
        | JobStatus::Manual
        | JobStatus::Success
        | JobStatus::Failed
        | JobStatus::Canceled
        | JobStatus::Skipped => false,
    });
    pipeline.status.is_finished() || (pipeline.status == PipelineStatus::Manual && !busy)
}

/// Waits until the pipeline has settled and reads the same twice in a row
/// (a blocked pipeline never says it is done, so it must be seen to stay).
async fn wait_settled(api: &ApiClient, id: PipelineId) -> PipelineView {
    let deadline = Instant::now() + PIPELINE_TIMEOUT;
    let mut previous: Option<String> = None;
    loop {
        let last_seen = match api.pipeline(id).await {
            Ok(view) => {
                let rendered = render(&view);
                if settled(&view) && previous.as_deref() == Some(rendered.as_str()) {
                    return view;
                }
                previous = Some(rendered);
                describe_pipeline(&view)
            }
            Err(error) => error.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {PIPELINE_TIMEOUT:?} waiting for pipeline {id} to settle [{}]; last seen: {last_seen}",
            api.context()
        );
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Runs one case; the outcome as `expected-run.txt` would hold it, or why
/// the case cannot run.
async fn run_case(api: &ApiClient, case: &Path) -> Result<String, String> {
    let context_text = std::fs::read_to_string(case.join("context.toml"))
        .map_err(|error| format!("context.toml: {error}"))?;
    let context = parse_context(&context_text).map_err(|error| format!("context.toml: {error}"))?;
    if let Some(source) = context.source.as_deref().filter(|source| *source != "push") {
        return Err(format!(
            "source {source:?}: pipelines created through the API are pushes"
        ));
    }
    let repo = build_repository(case, &context);
    let variables: Vec<(&str, &str)> = context
        .variables
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let created = api
        .create_pipeline_with(&repo.url(), &context.git_ref, &variables)
        .await
        .map_err(|error| format!("the pipeline was not created: {error}"))?;
    let pipeline = wait_settled(api, created.id).await;
    Ok(render(&pipeline))
}

fn cases() -> Vec<PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/conformance");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap_or_else(|error| panic!("{}: {error}", base.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("expected-run.txt").is_file())
        .collect();
    if let Some(filter) = std::env::var_os("OSPREY_CASE") {
        let filter = filter.to_string_lossy().into_owned();
        cases.retain(|case| {
            case.file_name()
                .is_some_and(|name| name.to_string_lossy().contains(&filter))
        });
    }
    cases.sort();
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_cases_run_as_expected() {
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "no conformance case has expected-run.txt"
    );
    let cluster = TestCluster::builder()
        .agent(AgentOpts::named("untagged").run_untagged().concurrency(4))
        .agent(AgentOpts::named("docker").tags(&["docker"]).concurrency(2))
        .start()
        .await;
    let bless = std::env::var_os("OSPREY_BLESS").is_some();
    let mut failures = BTreeMap::new();
    for case in &cases {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let expected_path = case.join("expected-run.txt");
        let actual = match run_case(&cluster.api, case).await {
            Ok(actual) => actual,
            Err(error) => {
                failures.insert(name, format!("cannot run: {error}"));
                continue;
            }
        };
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expected-run.txt");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.insert(
                name,
                format!("--- expected\n{expected}--- actual\n{actual}"),
            );
        }
    }
    let report: Vec<String> = failures
        .iter()
        .map(|(name, failure)| format!("{name}:\n{failure}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n\n{}",
        failures.len(),
        cases.len(),
        report.join("\n")
    );
}
