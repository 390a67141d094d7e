//! The Docker executor against the real engine. Needs a running engine and the
//! images of `scripts/build-test-images.sh`; without them every test fails with
//! a message saying so (none is skipped).

use bollard::models::{ContainerCreateBody, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bollard::Docker;
use osprey_agent::executor::docker::{DockerConfig, DockerExecutor, PullPolicy};
use osprey_agent::executor::{Executor, Outcome, PreparedJob};
use osprey_shared::pipeline::{ImageRef, ServiceRef, Variable};
use osprey_shared::JobId;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BUSYBOX: &str = "osprey-test/busybox:latest";
const DOCKER_CLI: &str = "osprey-test/docker-cli:latest";
const BUILD_IMAGES: &str = "run scripts/build-test-images.sh first";

async fn engine() -> Docker {
    let docker = Docker::connect_with_local_defaults()
        .expect("docker tests need a Docker engine: cannot connect to the local socket");
    let docker = docker.negotiate_version().await.expect(
        "docker tests need a running Docker engine: it does not answer on the local socket",
    );
    docker
        .inspect_image(BUSYBOX)
        .await
        .unwrap_or_else(|e| panic!("test image {BUSYBOX} missing ({e}): {BUILD_IMAGES}"));
    docker
}

fn executor(config: DockerConfig) -> DockerExecutor {
    DockerExecutor::new(config)
        .expect("valid docker config")
        .with_agent_name("osprey-docker-tests")
}

fn busybox_config() -> DockerConfig {
    DockerConfig {
        default_image: Some(BUSYBOX.to_owned()),
        pull_policy: PullPolicy::IfNotPresent,
        service_startup_grace_ms: 500,
        ..DockerConfig::default()
    }
}

fn fresh_job_id() -> JobId {
    JobId(1_000_000 + u64::from(rand::random::<u32>()))
}

struct TestJob {
    job: PreparedJob,
    _project: tempfile::TempDir,
}

fn job(script: &[&str]) -> TestJob {
    let project = tempfile::tempdir().expect("temp project dir");
    let script: Vec<String> = script.iter().map(|s| (*s).to_owned()).collect();
    let job = PreparedJob {
        job_id: fresh_job_id(),
        job_name: "test".to_owned(),
        project_name: "demo".to_owned(),
        project_dir: project.path().to_owned(),
        env: vec![
            ("CI".to_owned(), "true".to_owned()),
            (
                "CI_PROJECT_DIR".to_owned(),
                project.path().display().to_string(),
            ),
        ],
        files_dir: None,
        main_script: osprey_agent::script::main_script(&[], &script),
        after_script: None,
        image: None,
        services: Vec::new(),
        timeout: Duration::from_secs(120),
        kill_grace: Duration::from_secs(1),
        stop_grace: Default::default(),
    };
    TestJob {
        job,
        _project: project,
    }
}

/// Runs the job to its end; returns its outcome and whole log.
async fn run(executor: &DockerExecutor, job: &PreparedJob) -> (Outcome, String) {
    run_with(executor, job, CancellationToken::new(), None).await
}

/// As [`run`]; `cancel_on` cancels once the log contains that text.
async fn run_with(
    executor: &DockerExecutor,
    job: &PreparedJob,
    cancel: CancellationToken,
    cancel_on: Option<&str>,
) -> (Outcome, String) {
    let (sender, mut receiver) = mpsc::channel::<bytes::Bytes>(64);
    let canceller = cancel.clone();
    let marker = cancel_on.map(str::to_owned);
    let collector = async move {
        let mut log = Vec::new();
        while let Some(chunk) = receiver.recv().await {
            log.extend_from_slice(&chunk);
            if let Some(marker) = &marker {
                if String::from_utf8_lossy(&log).contains(marker.as_str()) {
                    canceller.cancel();
                }
            }
        }
        String::from_utf8_lossy(&log).into_owned()
    };
    let (outcome, log) = tokio::join!(executor.run(job, sender, cancel), collector);
    (outcome, log)
}

/// Containers and networks the engine still has with the job's label.
async fn leftovers(docker: &Docker, job_id: JobId) -> (usize, usize) {
    let filter = HashMap::from([("label", vec![format!("osprey.job_id={job_id}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .expect("list containers");
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .expect("list networks");
    (containers.len(), networks.len())
}

#[tokio::test]
async fn job_sees_its_source_and_output_keeps_its_order() {
    let docker = engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&[
        "cat hello.txt",
        "echo \"dir=$CI_PROJECT_DIR pwd=$(pwd)\"",
        "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2",
    ]);
    std::fs::write(test.job.project_dir.join("hello.txt"), "from the source\n").unwrap();
    test.job.after_script = osprey_agent::script::after_script(&[
        "echo after ran".to_owned(),
        "touch after.txt".to_owned(),
    ]);

    let started = Instant::now();
    let (outcome, log) = run(&executor, &test.job).await;
    let took = started.elapsed();

    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    assert!(log.contains("from the source\n"), "log:\n{log}");
    assert!(
        log.contains("dir=/builds/demo pwd=/builds/demo\n"),
        "log:\n{log}"
    );
    assert!(
        log.contains("out-1\nerr-1\nout-2\nerr-2\n"),
        "stdout and stderr interleaved in order; log:\n{log}"
    );
    assert!(log.contains("after ran\n"), "log:\n{log}");
    assert!(
        test.job.project_dir.join("after.txt").exists(),
        "after_script wrote into the bind-mounted project dir"
    );
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
    eprintln!("a two-script busybox job took {took:?}");
}

#[tokio::test]
async fn a_file_variable_is_readable_inside_the_container_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let docker = engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&[
        "cat \"$MY_FILE\"",
        "echo \"path=$MY_FILE\"",
        "if echo changed > \"$MY_FILE\"; then echo writable; else echo read-only; fi",
    ]);
    // The attempt's private dir, as the job runner writes it.
    let files = tempfile::tempdir().expect("temp files dir");
    let host_file = files.path().join("MY_FILE");
    std::fs::write(&host_file, "from a file variable\n").unwrap();
    std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    test.job.files_dir = Some(files.path().to_owned());
    test.job
        .env
        .push(("MY_FILE".to_owned(), host_file.display().to_string()));

    let (outcome, log) = run(&executor, &test.job).await;

    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    assert!(log.contains("from a file variable\n"), "log:\n{log}");
    assert!(
        log.contains("path=/builds/demo.tmp/MY_FILE\n"),
        "the in-container path; log:\n{log}"
    );
    assert!(
        log.contains("read-only\n"),
        "mounted read-only; log:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "from a file variable\n"
    );
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
}

#[tokio::test]
async fn failing_script_gives_its_exit_code_and_after_script_still_runs() {
    let docker = engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&["echo before", "exit 3", "echo never"]);
    test.job.after_script = osprey_agent::script::after_script(&["echo cleanup".to_owned()]);

    let (outcome, log) = run(&executor, &test.job).await;

    assert_eq!(
        outcome,
        Outcome::Failed {
            exit_code: Some(3),
            reason: "script failure".to_owned()
        },
        "log:\n{log}"
    );
    assert!(
        log.contains("before\n") && !log.contains("never\n"),
        "log:\n{log}"
    );
    assert!(log.contains("cleanup\n"), "log:\n{log}");
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
}

#[tokio::test]
async fn image_entrypoint_is_honoured() {
    engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&["echo in-script"]);
    test.job.image = Some(ImageRef {
        name: BUSYBOX.to_owned(),
        entrypoint: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo from-entrypoint; exec \"$@\"".to_owned(),
            "--".to_owned(),
        ]),
    });

    let (outcome, log) = run(&executor, &test.job).await;

    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    assert!(log.contains("from-entrypoint\n"), "log:\n{log}");
    assert!(log.contains("in-script\n"), "log:\n{log}");
}

#[tokio::test]
async fn service_is_reached_by_its_alias_with_its_variables() {
    let docker = engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&["wget -q -O - http://web/"]);
    test.job.services = vec![ServiceRef {
        name: BUSYBOX.to_owned(),
        alias: Some("web".to_owned()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "mkdir -p /www && echo \"$GREETING from $CI\" > /www/index.html && exec httpd -f -p 80 -h /www"
                .to_owned(),
        ]),
        entrypoint: None,
        variables: vec![Variable {
            key: "GREETING".to_owned(),
            value: "hello-from-service".to_owned(),
        }],
    }];

    let (outcome, log) = run(&executor, &test.job).await;

    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    assert!(
        log.contains("hello-from-service from true\n"),
        "service variables and job variables reach the service; log:\n{log}"
    );
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
}

#[tokio::test]
async fn a_service_that_exits_is_a_warning_with_its_log_and_the_script_runs() {
    let docker = engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&["echo script ran"]);
    test.job.services = vec![ServiceRef {
        name: BUSYBOX.to_owned(),
        alias: Some("db".to_owned()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo boom; exit 1".to_owned(),
        ]),
        entrypoint: None,
        variables: Vec::new(),
    }];

    let (outcome, log) = run(&executor, &test.job).await;

    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    assert!(
        log.contains(&format!(
            "WARNING: service {BUSYBOX} (alias db) is not running: exited with code 1\n"
        )),
        "log:\n{log}"
    );
    assert!(log.contains("[service db] boom\n"), "log:\n{log}");
    assert!(log.contains("script ran\n"), "log:\n{log}");
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
}

#[tokio::test]
async fn a_service_whose_image_is_missing_is_a_warning_and_the_script_runs() {
    let docker = engine().await;
    let executor = executor_with(|c| c.pull_policy = PullPolicy::Never);
    let mut test = job(&["echo script ran"]);
    let missing = "osprey-test/no-such-dind:latest";
    test.job.services = vec![ServiceRef {
        name: missing.to_owned(),
        alias: Some("docker".to_owned()),
        command: None,
        entrypoint: None,
        variables: Vec::new(),
    }];

    let (outcome, log) = run(&executor, &test.job).await;

    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    assert!(
        log.contains(&format!(
            "WARNING: Service {missing} failed to start: image {missing}"
        )),
        "log:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "WARNING: {missing} needs privileged = true in the agent's Docker settings\n"
        )),
        "a dind-looking service on an unprivileged agent gets the hint; log:\n{log}"
    );
    assert!(log.contains("script ran\n"), "log:\n{log}");
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
}

#[tokio::test]
async fn missing_image_fails_quickly_naming_it() {
    let docker = engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&["true"]);
    test.job.image = Some(ImageRef {
        name: "alpine:3.19".to_owned(),
        entrypoint: None,
    });

    let started = Instant::now();
    let (outcome, log) = run(&executor, &test.job).await;

    match outcome {
        Outcome::Failed {
            exit_code: None,
            reason,
        } => assert!(
            reason.starts_with("image alpine:3.19 not available"),
            "{reason}"
        ),
        other => panic!("expected a failure, got {other:?}; log:\n{log}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));

    let never = executor_with(|c| c.pull_policy = PullPolicy::Never);
    let (outcome, _) = run(&never, &test.job).await;
    assert!(
        matches!(&outcome, Outcome::Failed { reason, .. } if reason.contains("alpine:3.19") && reason.contains("never")),
        "{outcome:?}"
    );
}

fn executor_with(change: impl FnOnce(&mut DockerConfig)) -> DockerExecutor {
    let mut config = busybox_config();
    change(&mut config);
    executor(config)
}

#[tokio::test]
async fn job_without_image_or_with_a_disallowed_one_fails() {
    engine().await;
    let test = job(&["true"]);
    let no_default = executor_with(|c| c.default_image = None);
    let (outcome, _) = run(&no_default, &test.job).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            exit_code: None,
            reason: "no image: the job names none and the agent has no --docker-image".to_owned()
        }
    );

    let restricted =
        executor_with(|c| c.allowed_images = vec!["registry.example.com/*".to_owned()]);
    let (outcome, _) = run(&restricted, &test.job).await;
    assert!(
        matches!(&outcome, Outcome::Failed { reason, .. } if reason.starts_with(&format!("image {BUSYBOX} is not allowed"))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn service_images_are_checked_against_allowed_services_before_any_pull() {
    let docker = engine().await;
    // The refused image is not on this engine: were it checked after the
    // pull, the reason would be a failed pull, not the refusal.
    let refused = "registry.invalid/evil/miner:latest";
    let mut test = job(&["echo should not run"]);
    test.job.services = vec![
        ServiceRef {
            name: BUSYBOX.to_owned(),
            alias: Some("fine".to_owned()),
            command: Some(vec!["sleep".to_owned(), "30".to_owned()]),
            entrypoint: None,
            variables: Vec::new(),
        },
        ServiceRef {
            name: refused.to_owned(),
            alias: None,
            command: None,
            entrypoint: None,
            variables: Vec::new(),
        },
    ];
    let restricted = executor_with(|c| {
        c.pull_policy = PullPolicy::Always;
        c.allowed_services = vec!["osprey-test/*".to_owned()];
    });

    let (outcome, log) = run(&restricted, &test.job).await;

    match &outcome {
        Outcome::Failed {
            exit_code: None,
            reason,
        } => assert_eq!(
            reason,
            &format!(
                "service image {refused} is not allowed: it matches none of the agent's allowed_services (osprey-test/*)"
            )
        ),
        other => panic!("expected a refused service, got {other:?}; log:\n{log}"),
    }
    assert!(!log.contains("should not run\n"), "log:\n{log}");
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));

    // allowed_images does not cover services, and an empty list allows any.
    let mut allowed = job(&["echo ran"]);
    allowed.job.services = vec![test.job.services[0].clone()];
    let images_only = executor_with(|c| c.allowed_images = vec!["osprey-test/*".to_owned()]);
    let (outcome, log) = run(&images_only, &allowed.job).await;
    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    let matching = executor_with(|c| c.allowed_services = vec!["osprey-test/**".to_owned()]);
    let (outcome, log) = run(&matching, &allowed.job).await;
    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    assert!(log.contains("ran\n"), "log:\n{log}");
}

#[tokio::test]
async fn timeout_stops_and_removes_everything() {
    let docker = engine().await;
    let executor = executor(busybox_config());
    let mut test = job(&["echo started", "sleep 300"]);
    test.job.timeout = Duration::from_secs(3);
    test.job.services = vec![ServiceRef {
        name: BUSYBOX.to_owned(),
        alias: Some("idle".to_owned()),
        command: Some(vec!["sleep".to_owned(), "300".to_owned()]),
        entrypoint: None,
        variables: Vec::new(),
    }];

    let started = Instant::now();
    let (outcome, log) = run(&executor, &test.job).await;
    let took = started.elapsed();

    assert_eq!(outcome, Outcome::TimedOut, "log:\n{log}");
    assert!(log.contains("started\n"), "log:\n{log}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
    eprintln!("a 3 s timeout returned after {took:?}");
}

#[tokio::test]
async fn cancel_stops_and_removes_everything() {
    let docker = engine().await;
    let executor = executor(busybox_config());
    let test = job(&["echo running-now", "sleep 300"]);

    let started = Instant::now();
    let (outcome, log) = run_with(
        &executor,
        &test.job,
        CancellationToken::new(),
        Some("running-now\n"),
    )
    .await;
    let took = started.elapsed();

    assert_eq!(outcome, Outcome::Canceled, "log:\n{log}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
    eprintln!("a job canceled while running returned after {took:?}");
}

#[tokio::test]
async fn a_stop_asking_for_a_shorter_grace_stops_the_container_within_it() {
    // A lost lease asks for a part of the lease margin, not the whole
    // kill_grace: the container must be gone well before the long grace.
    let docker = engine().await;
    let executor = executor(busybox_config());
    // The script ignores SIGTERM: only the SIGKILL after the grace stops it.
    let mut test = job(&["trap '' TERM", "echo running-now", "sleep 300"]);
    test.job.kill_grace = Duration::from_secs(8);
    test.job.stop_grace.request(Duration::from_millis(300));

    let started = Instant::now();
    let (outcome, log) = run_with(
        &executor,
        &test.job,
        CancellationToken::new(),
        Some("running-now\n"),
    )
    .await;
    let took = started.elapsed();

    assert_eq!(outcome, Outcome::Canceled, "log:\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}, as if the whole 8 s grace applied"
    );
    assert_eq!(leftovers(&docker, test.job.job_id).await, (0, 0));
}

/// Creates a running container and a network with `labels` (plus the managed
/// label and `job_id`), as an agent would have.
async fn plant(docker: &Docker, job_id: JobId, labels: &[(&str, &str)]) {
    let mut all = HashMap::from([
        ("osprey.managed".to_owned(), "true".to_owned()),
        ("osprey.job_id".to_owned(), job_id.to_string()),
    ]);
    all.extend(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let name = format!("osprey-test-orphan-{job_id}");
    let container = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(BUSYBOX.to_owned()),
                cmd: Some(vec!["sleep".to_owned(), "300".to_owned()]),
                labels: Some(all.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("create container");
    docker.start_container(&container.id, None).await.unwrap();
    docker
        .create_network(NetworkCreateRequest {
            name,
            labels: Some(all),
            ..Default::default()
        })
        .await
        .expect("create network");
    assert_eq!(leftovers(docker, job_id).await, (1, 1));
}

#[tokio::test]
async fn reap_orphans_removes_what_a_crashed_agent_left() {
    let docker = engine().await;
    // Two agents with one name on one engine: one crashed, one still runs a job.
    let name = format!("shared-{}", rand::random::<u32>());
    let crashed_id = format!("agent-{}", rand::random::<u32>());
    let alive_id = format!("agent-{}", rand::random::<u32>());
    let other_name = format!("other-{}", rand::random::<u32>());
    let crashed_job = fresh_job_id();
    let alive_job = fresh_job_id();
    let legacy_job = fresh_job_id();
    let other_legacy_job = fresh_job_id();
    plant(
        &docker,
        crashed_job,
        &[("osprey.agent", &name), ("osprey.agent_id", &crashed_id)],
    )
    .await;
    plant(
        &docker,
        alive_job,
        &[("osprey.agent", &name), ("osprey.agent_id", &alive_id)],
    )
    .await;
    // Left by a version that did not set the id label.
    plant(&docker, legacy_job, &[("osprey.agent", &name)]).await;
    plant(&docker, other_legacy_job, &[("osprey.agent", &other_name)]).await;

    let restarted = executor(busybox_config())
        .with_agent_name(&name)
        .with_agent_id(&crashed_id);
    let removed = restarted.reap_orphans().await.expect("reap");

    assert_eq!(removed, (2, 2), "its own and the name-only leftovers");
    assert_eq!(leftovers(&docker, crashed_job).await, (0, 0));
    assert_eq!(leftovers(&docker, legacy_job).await, (0, 0));
    assert_eq!(
        leftovers(&docker, alive_job).await,
        (1, 1),
        "the running job of the other agent with the same name stays"
    );
    assert_eq!(leftovers(&docker, other_legacy_job).await, (1, 1));

    for (agent_name, agent_id) in [(&name, &alive_id), (&other_name, &alive_id)] {
        let executor = executor(busybox_config())
            .with_agent_name(agent_name)
            .with_agent_id(agent_id);
        executor.reap_orphans().await.expect("reap");
    }
    assert_eq!(leftovers(&docker, alive_job).await, (0, 0));
    assert_eq!(leftovers(&docker, other_legacy_job).await, (0, 0));
}

#[tokio::test]
async fn containers_carry_the_agent_id_label() {
    let docker = engine().await;
    let agent_id = format!("agent-{}", rand::random::<u32>());
    let labelled = executor(busybox_config()).with_agent_id(&agent_id);
    let test = job(&["sleep 30"]);
    let cancel = CancellationToken::new();
    let job_id = test.job.job_id;
    let watch = async {
        let filter = HashMap::from([(
            "label",
            vec![
                format!("osprey.job_id={job_id}"),
                format!("osprey.agent_id={agent_id}"),
                "osprey.agent=osprey-docker-tests".to_owned(),
            ],
        )]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = docker
                .list_containers(Some(
                    ListContainersOptionsBuilder::default()
                        .filters(&filter)
                        .build(),
                ))
                .await
                .expect("list containers");
            if !found.is_empty() {
                cancel.cancel();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no running container labelled with the agent id"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((outcome, log), ()) =
        tokio::join!(run_with(&labelled, &test.job, cancel.clone(), None), watch);
    assert_eq!(outcome, Outcome::Canceled, "log:\n{log}");
    assert_eq!(leftovers(&docker, job_id).await, (0, 0));
}

#[tokio::test]
async fn docker_build_through_the_mounted_socket() {
    let docker = engine().await;
    docker
        .inspect_image(DOCKER_CLI)
        .await
        .unwrap_or_else(|e| panic!("test image {DOCKER_CLI} missing ({e}): {BUILD_IMAGES}"));
    let executor = executor_with(|c| {
        c.volumes = vec!["/var/run/docker.sock:/var/run/docker.sock".to_owned()];
    });
    let tag = format!("osprey-test/built-in-job:{}", rand::random::<u32>());
    let build = format!("DOCKER_BUILDKIT=0 docker build -q -t {tag} .");
    let mut test = job(&[
        "printf 'FROM osprey-test/busybox:latest\\nRUN echo built > /built.txt\\n' > Dockerfile",
        &build,
        "docker image ls osprey-test/built-in-job",
    ]);
    test.job.image = Some(ImageRef {
        name: DOCKER_CLI.to_owned(),
        entrypoint: None,
    });

    let (outcome, log) = run(&executor, &test.job).await;

    assert_eq!(outcome, Outcome::Success, "log:\n{log}");
    docker
        .inspect_image(&tag)
        .await
        .unwrap_or_else(|e| panic!("the job built no {tag}: {e}; log:\n{log}"));
    let _ = docker
        .remove_image(
            &tag,
            Some(RemoveImageOptionsBuilder::default().force(true).build()),
            None,
        )
        .await;
}
