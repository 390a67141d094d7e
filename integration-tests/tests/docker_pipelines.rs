//! Pipelines run end to end by a Docker agent: a real coordinator, a real
//! `osprey-agent --executor docker` and the real Docker engine.
//!
//! Needs a running engine and the images of `scripts/build-test-images.sh`
//! (nothing can be pulled); without them every test fails saying so, none
//! passes silently. What the engine holds is checked with the `docker` CLI, by
//! the labels the executor sets (`osprey.job_id`, `osprey.agent`).
//!
//! Job ids start at 1 in every coordinator and the engine is shared by every
//! test, so each agent gets a name unique to its test and process, and every
//! engine query filters on it as well as on the job id. At start an agent
//! removes what the engine holds under its id (and, from older versions,
//! under its name without an id).

use osprey_integration_tests::bins::binary;
use osprey_integration_tests::wait::{describe_pipeline, wait_for};
use osprey_integration_tests::{Agent, AgentOpts, Coordinator, CoordinatorOpts};
use osprey_integration_tests::{ApiClient, PipelineExt, TestRepo};
use osprey_shared::api::PipelineView;
use osprey_shared::{JobId, JobStatus, PipelineStatus};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "osprey-test/busybox:latest";
const DOCKER_CLI: &str = "osprey-test/docker-cli:latest";
/// What a pipeline of a few short jobs may take, container starts included.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(120);
/// The user's example configuration, documented in docs/agent-config.md.
const EXAMPLE_CONFIG: &str = include_str!("../../docs/agent-config.example.toml");

/// Runs the docker CLI; panics with its stderr when it cannot run at all.
fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run `docker {}`: {error}", args.join(" ")))
}

/// Panics unless the engine answers and holds `image`.
fn require_image(image: &str) {
    let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "these tests need a running Docker engine; `docker info` failed: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    let inspect = docker(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert!(
        inspect.status.success(),
        "test image {image} is missing (run scripts/build-test-images.sh): {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

/// An agent name no other test or test process uses.
fn unique_name(test: &str) -> String {
    format!("dp-{}-{test}", std::process::id())
}

/// A docker agent called `name` whose jobs without `image:` run in `image`.
fn docker_agent(name: &str, image: &str) -> AgentOpts {
    let mut opts = AgentOpts::named(name);
    opts.executor = "docker".to_owned();
    opts.extra_args = vec!["--docker-image".to_owned(), image.to_owned()];
    opts
}

/// Ids of the containers and networks the engine holds for `job` of `agent`.
fn engine_resources(agent: &str, job: JobId) -> (Vec<String>, Vec<String>) {
    let job_label = format!("label=osprey.job_id={job}");
    let agent_label = format!("label=osprey.agent={agent}");
    let list = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--filter", &job_label, "--filter", &agent_label]);
        let output = docker(&full);
        assert!(
            output.status.success(),
            "`docker {}` failed: {}",
            full.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    (list(&["ps", "-a", "-q"]), list(&["network", "ls", "-q"]))
}

/// Waits until the engine holds nothing of `job` of `agent`.
async fn wait_engine_clean(agent: &str, job: JobId, timeout: Duration) {
    let what = format!("the engine to hold no container or network of job {job} ({agent})");
    wait_for(&what, timeout, || async {
        match engine_resources(agent, job) {
            (containers, networks) if containers.is_empty() && networks.is_empty() => Ok(()),
            (containers, networks) => {
                Err(format!("containers {containers:?}, networks {networks:?}"))
            }
        }
    })
    .await;
}

/// Creates a pipeline of `repo`'s master and waits for it to finish.
/// Starts the pipeline, whose job `job` prints `marker` and goes on running,
/// and waits for the marker; returns the repository, the pipeline and the job.
async fn start_job(
    api: &ApiClient,
    pipeline: &str,
    job: &str,
    marker: &str,
) -> (TestRepo, PipelineView, JobId) {
    let repo = TestRepo::with_pipeline(pipeline);
    let created = api.start_pipeline(&repo, "master").await;
    let job_id = created.job(job).id;
    api.wait_for_log_containing(job_id, marker, Duration::from_secs(60))
        .await;
    (repo, created, job_id)
}

async fn run_pipeline(api: &ApiClient, repo: &TestRepo) -> PipelineView {
    let created = api
        .create_pipeline(&repo.url(), "master")
        .await
        .expect("create the pipeline");
    api.wait_for_pipeline_finished(created.id, PIPELINE_TIMEOUT)
        .await
}

async fn log_text(api: &ApiClient, job: JobId) -> String {
    String::from_utf8_lossy(&api.job_log(job).await.expect("read the job log")).into_owned()
}

/// The last path segment of the repository: its project name.
fn project_name(repo: &TestRepo) -> String {
    repo.path()
        .file_name()
        .expect("the repository dir has a name")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_job_sees_its_source_at_ci_project_dir() {
    require_image(BUSYBOX);
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let name = unique_name("source");
    let _agent = Agent::start(&coordinator, docker_agent(&name, BUSYBOX)).await;
    let repo = TestRepo::new();
    repo.write("greeting.txt", "hello from the committed source\n");
    repo.write(
        ".gitlab-ci.yml",
        r#"
stages: [test]
show:
  stage: test
  image: osprey-test/busybox:latest
  script:
    - echo "dir=$CI_PROJECT_DIR pwd=$(pwd) project=$CI_PROJECT_NAME"
    - cat "$CI_PROJECT_DIR/greeting.txt"
"#,
    );
    repo.commit("source and pipeline");

    let pipeline = run_pipeline(&coordinator.api(), &repo).await;

    let job = pipeline.job("show");
    let log = log_text(&coordinator.api(), job.id).await;
    assert_eq!(job.status, JobStatus::Success, "{job:?}\nlog:\n{log}");
    let project = project_name(&repo);
    assert!(
        log.contains(&format!(
            "dir=/builds/{project} pwd=/builds/{project} project={project}\n"
        )),
        "CI_PROJECT_DIR is not /builds/{project} or not the working dir; log:\n{log}"
    );
    assert!(
        log.contains("hello from the committed source\n"),
        "log:\n{log}"
    );
    assert!(
        log.contains(&format!("Using docker image {BUSYBOX}")),
        "log:\n{log}"
    );
    wait_engine_clean(&name, job.id, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_job_reaches_its_service_by_alias() {
    require_image(BUSYBOX);
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let name = unique_name("service");
    let _agent = Agent::start(&coordinator, docker_agent(&name, BUSYBOX)).await;
    // The service serves the image's /etc; its passwd file is one line we know.
    let repo = TestRepo::with_pipeline(
        r#"
stages: [test]
client:
  stage: test
  services:
    - name: osprey-test/busybox:latest
      alias: web
      command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
  script:
    - wget -qO- http://web:8080/passwd
"#,
    );

    let pipeline = run_pipeline(&coordinator.api(), &repo).await;

    let job = pipeline.job("client");
    let log = log_text(&coordinator.api(), job.id).await;
    assert_eq!(job.status, JobStatus::Success, "{job:?}\nlog:\n{log}");
    assert!(
        log.contains("root:x:0:0:root:/root:/bin/sh\n"),
        "the service's file is not in the log; log:\n{log}"
    );
    wait_engine_clean(&name, job.id, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_fails_the_job_quickly_naming_it() {
    require_image(BUSYBOX);
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let name = unique_name("missing");
    let _agent = Agent::start(&coordinator, docker_agent(&name, BUSYBOX)).await;
    let missing = "osprey-test/no-such-image:never-built";
    let repo = TestRepo::with_pipeline(&format!(
        r#"
stages: [test]
nowhere:
  stage: test
  image: {missing}
  script: ["echo must not run"]
"#
    ));

    let started = Instant::now();
    let created = coordinator
        .api()
        .create_pipeline(&repo.url(), "master")
        .await
        .expect("create the pipeline");
    let job = coordinator
        .api()
        .wait_for_job_status(
            created.job("nowhere").id,
            JobStatus::Failed,
            Duration::from_secs(30),
        )
        .await;
    let took = started.elapsed();
    eprintln!("missing image: pipeline created to job failed in {took:?}");

    let reason = job.failure_reason.clone().unwrap_or_default();
    assert!(
        reason.contains(missing),
        "the reason does not name the image: {job:?}"
    );
    assert_eq!(job.exit_code, None, "no script ran: {job:?}");
    let log = log_text(&coordinator.api(), job.id).await;
    assert!(!log.contains("must not run"), "log:\n{log}");
    assert!(took < Duration::from_secs(20), "failing took {took:?}");
    wait_engine_clean(&name, job.id, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn canceling_a_docker_job_removes_its_containers_and_network() {
    require_image(BUSYBOX);
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let api = coordinator.api();
    let name = unique_name("cancel");
    let _agent = Agent::start(&coordinator, docker_agent(&name, BUSYBOX)).await;
    let (_repo, created, job_id) = start_job(
        &api,
        r#"
stages: [test]
sleeper:
  stage: test
  services:
    - name: osprey-test/busybox:latest
      alias: idle
      command: ["sleep", "300"]
  script:
    - echo sleeping
    - sleep 300
"#,
        "sleeper",
        "sleeping\n",
    )
    .await;
    let (containers, networks) = engine_resources(&name, job_id);
    assert_eq!(
        (containers.len(), networks.len()),
        (2, 1),
        "a running job has its script and service containers and its network: {containers:?} {networks:?}"
    );

    let started = Instant::now();
    api.cancel(created.id).await.expect("cancel the pipeline");
    let job = api
        .wait_for_job_status(job_id, JobStatus::Canceled, Duration::from_secs(30))
        .await;
    let took = started.elapsed();
    eprintln!("cancel: request to job canceled in {took:?}");

    // The executor removes everything before it reports the end of the job.
    let (containers, networks) = engine_resources(&name, job_id);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "left after the cancellation: containers {containers:?}, networks {networks:?}; {job:?}"
    );
    assert!(took < Duration::from_secs(15), "cancellation took {took:?}");
    let pipeline = api
        .wait_for_pipeline_finished(created.id, Duration::from_secs(10))
        .await;
    assert_eq!(
        pipeline.status,
        PipelineStatus::Canceled,
        "{}",
        describe_pipeline(&pipeline)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_reaps_the_containers_of_its_killed_predecessor() {
    require_image(BUSYBOX);
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let api = coordinator.api();
    let name = unique_name("reap");
    let mut agent = Agent::start(&coordinator, docker_agent(&name, BUSYBOX)).await;
    let (_repo, _created, job_id) = start_job(
        &api,
        r#"
stages: [test]
doomed:
  stage: test
  script:
    - echo started
    - sleep 300
"#,
        "doomed",
        "started\n",
    )
    .await;

    let credentials =
        std::fs::read(agent.work_dir().join("credentials.json")).expect("credentials");
    let credentials: serde_json::Value = serde_json::from_slice(&credentials).expect("json");
    let agent_id = credentials["agent_id"]
        .as_str()
        .expect("agent_id")
        .to_owned();
    agent.kill9();
    // The job guard removes a dead agent's job at once (tests/hardening/job_guard.rs)...
    wait_engine_clean(&name, job_id, Duration::from_secs(30)).await;
    drop(agent);
    // ...so what an agent leaves when its guard is killed too is planted here,
    // labelled as the executor labels a run.
    let labels: Vec<String> = [
        "osprey.managed=true".to_owned(),
        format!("osprey.job_id={job_id}"),
        format!("osprey.agent={name}"),
        format!("osprey.agent_id={agent_id}"),
        "osprey.run=orphan".to_owned(),
    ]
    .iter()
    .flat_map(|label| ["--label".to_owned(), label.clone()])
    .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let network = format!("osprey-job-{job_id}-orphan-{}", std::process::id());
    let planted = docker(&[&["network", "create"], &labels[..], &[&network]].concat());
    assert!(planted.status.success(), "{planted:?}");
    let planted = docker(
        &[
            &["run", "-d", "--network", &network],
            &labels[..],
            &[BUSYBOX, "sleep", "300"],
        ]
        .concat(),
    );
    assert!(planted.status.success(), "{planted:?}");
    let (containers, networks) = engine_resources(&name, job_id);
    assert!(
        !containers.is_empty() && !networks.is_empty(),
        "nothing planted: containers {containers:?}, networks {networks:?}"
    );

    // Same name, so same work dir and credentials.
    let started = Instant::now();
    let _agent = Agent::start(&coordinator, docker_agent(&name, BUSYBOX)).await;
    wait_engine_clean(&name, job_id, Duration::from_secs(30)).await;
    eprintln!("reap: restart to engine clean in {:?}", started.elapsed());

    let job = api
        .wait_for_job(job_id, "to finish", Duration::from_secs(30), |job| {
            job.status.is_finished()
        })
        .await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_sharing_a_name_on_one_engine_leave_each_others_jobs_alone() {
    require_image(BUSYBOX);
    // Two coordinators, so the two agents of one name get their own work
    // dirs, hence their own credentials and agent ids.
    let first = Coordinator::start(CoordinatorOpts::default()).await;
    let second = Coordinator::start(CoordinatorOpts::default()).await;
    let api = first.api();
    let name = unique_name("same-name");
    let _running = Agent::start(&first, docker_agent(&name, BUSYBOX)).await;
    let (_repo, created, job_id) = start_job(
        &api,
        r#"
stages: [test]
long:
  stage: test
  script:
    - echo started
    - sleep 300
"#,
        "long",
        "started\n",
    )
    .await;
    let before = engine_resources(&name, job_id);

    // The namesake reaps its orphans before it connects, so once connected
    // it has had its chance to remove the running job's containers.
    let _namesake = Agent::start(&second, docker_agent(&name, BUSYBOX)).await;

    assert_eq!(
        engine_resources(&name, job_id),
        before,
        "the namesake removed the running job's containers or network"
    );
    let job = api.job(job_id).await.expect("the job");
    assert_eq!(job.status, JobStatus::Running, "{job:?}");

    api.cancel(created.id).await.expect("cancel");
    wait_engine_clean(&name, job_id, Duration::from_secs(30)).await;
}

/// A pipeline that exercises what the executor decides: exit codes,
/// allow_failure, a failure skipping a later stage, artifacts, after_script.
const PARITY_PIPELINE: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script:
    - mkdir -p out
    - echo built > out/result.txt
  after_script:
    - echo "after build"
  artifacts:
    paths: [out/]
uses-artifact:
  stage: test
  script:
    - grep -q built out/result.txt
    - echo "artifact says $(cat out/result.txt)"
flaky:
  stage: test
  allow_failure: true
  script:
    - exit 3
broken:
  stage: test
  script:
    - echo "breaking"
    - exit 7
  after_script:
    - echo "after broken"
deploy:
  stage: deploy
  script:
    - echo "must not run"
"#;

type JobResult = (String, JobStatus, Option<i32>);

/// Runs [`PARITY_PIPELINE`] on a fresh coordinator with one agent of
/// `executor`; returns the pipeline and the logs of `build` and `broken`.
async fn run_parity(executor: &str) -> (PipelineView, Vec<JobResult>, String, String) {
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let name = unique_name(&format!("parity-{executor}"));
    let opts = match executor {
        "docker" => docker_agent(&name, BUSYBOX),
        _ => AgentOpts::named(&name),
    };
    let _agent = Agent::start(&coordinator, opts).await;
    let repo = TestRepo::with_pipeline(PARITY_PIPELINE);
    let pipeline = run_pipeline(&coordinator.api(), &repo).await;
    let mut results: Vec<JobResult> = pipeline
        .jobs
        .iter()
        .map(|job| (job.name.clone(), job.status, job.exit_code))
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let build_log = log_text(&coordinator.api(), pipeline.job("build").id).await;
    let broken_log = log_text(&coordinator.api(), pipeline.job("broken").id).await;
    (pipeline, results, build_log, broken_log)
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_and_docker_agents_give_the_same_job_results() {
    require_image(BUSYBOX);
    let started = Instant::now();
    let (
        (shell_pipeline, shell, shell_build, shell_broken),
        (docker_pipeline, docker, docker_build, docker_broken),
    ) = tokio::join!(run_parity("shell"), run_parity("docker"));
    eprintln!(
        "parity: both pipelines done in {:?}; shell {shell:?}; docker {docker:?}",
        started.elapsed()
    );

    let summary = format!(
        "shell: {}\ndocker: {}",
        describe_pipeline(&shell_pipeline),
        describe_pipeline(&docker_pipeline)
    );
    assert_eq!(shell, docker, "{summary}");
    let failed = |job: &JobResult| job.1 == JobStatus::Failed;
    assert_eq!(
        shell
            .iter()
            .filter(|job| failed(job))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            ("broken".to_owned(), JobStatus::Failed, Some(7)),
            ("flaky".to_owned(), JobStatus::Failed, Some(3)),
        ],
        "{summary}"
    );
    let status = |results: &[JobResult], name: &str| {
        results
            .iter()
            .find(|job| job.0 == name)
            .map(|job| job.1)
            .unwrap_or_else(|| panic!("no job {name}: {summary}"))
    };
    assert_eq!(status(&shell, "build"), JobStatus::Success, "{summary}");
    assert_eq!(
        status(&shell, "uses-artifact"),
        JobStatus::Success,
        "{summary}"
    );
    assert_eq!(status(&shell, "deploy"), JobStatus::Skipped, "{summary}");
    assert_eq!(shell_pipeline.status, PipelineStatus::Failed, "{summary}");
    assert_eq!(docker_pipeline.status, shell_pipeline.status, "{summary}");
    for (executor, build, broken) in [
        ("shell", &shell_build, &shell_broken),
        ("docker", &docker_build, &docker_broken),
    ] {
        assert!(
            build.contains("after build\n"),
            "{executor} build log:\n{build}"
        );
        assert!(
            broken.contains("breaking\n") && broken.contains("after broken\n"),
            "{executor} broken log:\n{broken}"
        );
    }
}

/// Removes an image when dropped, so a failed test leaves none behind.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = docker(&["image", "rm", "-f", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_job_builds_an_image_through_the_mounted_socket() {
    require_image(BUSYBOX);
    require_image(DOCKER_CLI);
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let name = unique_name("build");
    let config = coordinator.dir().join("docker-build-agent.toml");
    std::fs::write(
        &config,
        "[docker]\nvolumes = [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
    )
    .expect("write the agent config");
    let mut opts = docker_agent(&name, DOCKER_CLI);
    opts.extra_args
        .extend(["--config".to_owned(), config.display().to_string()]);
    let _agent = Agent::start(&coordinator, opts).await;
    let repository = format!("osprey-test/built-by-{name}");
    let repo = TestRepo::new();
    repo.write(
        "Dockerfile",
        &format!("FROM {BUSYBOX}\nRUN echo built-in-a-job > /built.txt\n"),
    );
    repo.write(
        ".gitlab-ci.yml",
        &format!(
            r#"
stages: [build]
build-image:
  stage: build
  variables:
    DOCKER_BUILDKIT: "0"
  script:
    - docker build -q -t {repository}:job-$CI_JOB_ID .
"#
        ),
    );
    repo.commit("a Dockerfile");
    let created = coordinator
        .api()
        .create_pipeline(&repo.url(), "master")
        .await
        .expect("create the pipeline");
    let tag = format!("{repository}:job-{}", created.job("build-image").id);
    let _cleanup = RemoveImage(tag.clone());

    let started = Instant::now();
    let pipeline = coordinator
        .api()
        .wait_for_pipeline_finished(created.id, PIPELINE_TIMEOUT)
        .await;
    eprintln!("docker build job done in {:?}", started.elapsed());

    let job = pipeline.job("build-image");
    let log = log_text(&coordinator.api(), job.id).await;
    assert_eq!(job.status, JobStatus::Success, "{job:?}\nlog:\n{log}");
    let run = docker(&["run", "--rm", &tag, "cat", "/built.txt"]);
    assert!(
        run.status.success(),
        "the engine has no working {tag}: {}\njob log:\n{log}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "built-in-a-job\n");
}

/// Runs `osprey-agent exec ARGS...` in `dir`; its exit code, stdout and stderr.
async fn agent_exec(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let child = tokio::process::Command::new(binary("osprey-agent"))
        .arg("exec")
        .args(args)
        .env_remove("OSPREY_DOCKER_IMAGE")
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn osprey-agent exec");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("osprey-agent exec {args:?} did not finish within 60s"))
        .expect("wait for osprey-agent exec");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_docker_image_flag_gives_jobs_without_image_one() {
    require_image(BUSYBOX);
    let repo = TestRepo::with_pipeline(
        r#"
plain:
  script:
    - echo "dir=$CI_PROJECT_DIR"
"#,
    );

    let (code, stdout, stderr) =
        agent_exec(repo.path(), &["docker", "plain", "--docker-image", BUSYBOX]).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("Using docker image {BUSYBOX}"))
            && stdout.contains(&format!("dir=/builds/{}\n", project_name(&repo))),
        "stdout:\n{stdout}"
    );

    let (code, stdout, stderr) = agent_exec(repo.path(), &["docker", "plain"]).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("no image"), "stderr:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_example_config_runs_an_agent() {
    require_image(BUSYBOX);
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let api = coordinator.api();
    let config = coordinator.dir().join("agent-config.example.toml");
    std::fs::write(&config, EXAMPLE_CONFIG).expect("write the example config");
    // The harness's flags (url, token, name, work dir, executor docker,
    // concurrency 1) override the file's. The file's `tls_ca` is not on this
    // machine: with the harness's http:// url the agent warns and ignores it.
    // Everything else comes from the file.
    let name = unique_name("example");
    let mut opts = AgentOpts::named(&name);
    opts.executor = "docker".to_owned();
    opts.extra_args = vec!["--config".to_owned(), config.display().to_string()];
    let _agent = Agent::start(&coordinator, opts).await;

    let agents = api.agents().await.expect("list agents");
    let agent = agents
        .iter()
        .find(|agent| agent.name == name)
        .expect("the agent is listed");
    assert_eq!(agent.tags, vec!["docker"], "{agent:?}");
    assert!(!agent.run_untagged, "{agent:?}");
    assert_eq!(agent.executor, "docker", "{agent:?}");

    // The file's default image (alpine:3.19) and allowed_images are in force.
    let repo = TestRepo::with_pipeline(
        r#"
stages: [test]
default-image:
  stage: test
  tags: [docker]
  script: ["echo ran in the default image"]
not-allowed:
  stage: test
  tags: [docker]
  image: osprey-test/busybox:latest
  script: ["echo must not run"]
"#,
    );
    let pipeline = run_pipeline(&api, &repo).await;
    let summary = describe_pipeline(&pipeline);
    let not_allowed = pipeline.job("not-allowed");
    assert_eq!(not_allowed.status, JobStatus::Failed, "{summary}");
    assert!(
        not_allowed
            .failure_reason
            .as_deref()
            .is_some_and(|reason| reason.contains("is not allowed")),
        "{summary}"
    );
    let default_image = pipeline.job("default-image");
    let log = log_text(&api, default_image.id).await;
    assert!(
        log.contains("Using docker image alpine:3.19"),
        "log:\n{log}"
    );
    if docker(&["image", "inspect", "alpine:3.19"])
        .status
        .success()
    {
        assert_eq!(default_image.status, JobStatus::Success, "{summary}");
    } else {
        // No registry here: the default image cannot be had, and the job says so.
        assert_eq!(default_image.status, JobStatus::Failed, "{summary}");
        assert!(
            default_image
                .failure_reason
                .as_deref()
                .is_some_and(|reason| reason.contains("alpine:3.19")),
            "{summary}"
        );
    }
}
