//! A job can run nothing on the agent's host: a `.git/` that the job writes
//! (fsmonitor, pager, hooks), directly or through an artifact, is never read
//! by a git process of the agent, for the shell and the Docker executor; and a
//! stored archive that no longer matches its digest fails the downstream job
//! at once (an artifact) or is a quick warning (a cache).
//!
//! The planted commands write to a marker file in the test's dir, outside
//! every project dir and, for Docker, outside the container: only a process
//! on the host, run by the agent, could write it. The Docker tests need the
//! engine and `osprey-test/busybox` (`scripts/build-test-images.sh`).

use osprey_integration_tests::cli::osprey;
use osprey_integration_tests::{
    Agent, AgentOpts, Coordinator, CoordinatorOpts, PipelineExt, TestRepo,
};
use osprey_shared::{JobStatus, PipelineStatus};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "osprey-test/busybox:latest";

/// Plants, in the job's project dir, everything a git process would run:
/// `core.fsmonitor`, `core.pager`, a hooks path and executable hooks. Plain
/// `printf`, so it also runs in the scratch image that has no git.
const PLANT: &str = r#"set -e
printf '[core]\n\tfsmonitor = "echo fsmonitor >> %s"\n\tpager = "echo pager >> %s"\n\thooksPath = .git/hooks\n' "$MARKER" "$MARKER" >> .git/config
mkdir -p .git/hooks
for hook in post-checkout pre-commit post-commit post-merge post-index-change reference-transaction pre-auto-gc; do
  printf '#!/bin/sh\necho hook %s >> %s\n' "$hook" "$MARKER" > ".git/hooks/$hook"
  chmod +x ".git/hooks/$hook"
done
"#;

/// Stage `build`: `plant` plants through the job itself and asks for its
/// untracked files as artifacts and cache; `carry` plants and ships its
/// `.git/` as an artifact. Stage `test`: `use` gets `carry`'s artifact and
/// asks for its untracked files too.
fn planting_pipeline(marker: &Path) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("plant.sh", PLANT);
    repo.write(
        ".gitlab-ci.yml",
        &format!(
            r#"
variables:
  MARKER: "{marker}"
stages: [build, test]
plant:
  stage: build
  script:
    - mkdir -p out && echo built > out/built.txt
    - echo scratch > scratch.tmp
    - sh plant.sh
  artifacts:
    untracked: true
  cache:
    key: planted
    untracked: true
carry:
  stage: build
  script:
    - sh plant.sh
    - echo carried > carried.txt
  artifacts:
    paths: [.git/, carried.txt]
use:
  stage: test
  dependencies: [carry]
  script:
    - cat carried.txt
    - echo downstream > down.txt
  artifacts:
    untracked: true
  cache:
    key: downstream
    untracked: true
"#,
            marker = marker.display()
        ),
    );
    repo.commit("a pipeline that plants git configuration");
    repo
}

/// The entry names of a tar on disk.
fn tar_entries(archive: &Path) -> Vec<String> {
    let output = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .expect("run tar");
    assert!(output.status.success(), "tar -tf {}", archive.display());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim_start_matches("./").to_owned())
        .collect()
}

/// The cache archives the coordinator stores (`cache/<repo>/<key>.tar`).
fn cache_archives(data_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for repo in std::fs::read_dir(data_dir.join("cache")).expect("read the cache dir") {
        for archive in std::fs::read_dir(repo.unwrap().path()).unwrap() {
            found.push(archive.unwrap().path());
        }
    }
    found
}

/// Runs the planting pipeline on an agent started with `opts` and checks
/// that nothing planted ran and that `untracked` still means what it says.
async fn nothing_planted_runs(opts: AgentOpts) {
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let _agent = Agent::start(&coordinator, opts).await;
    let api = coordinator.api();
    let marker = coordinator.dir().join("markers").join("ran-on-host");
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    let repo = planting_pipeline(&marker);

    let pipeline = api.run_pipeline(&repo, "master").await;

    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        ran.is_empty(),
        "the agent ran what the job planted in .git/: {ran:?}"
    );
    pipeline.assert_status(PipelineStatus::Success);
    let plant = pipeline.job("plant");
    let data = coordinator.data_dir();
    let artifact = tar_entries(&super::stored_archive(data, plant.id));
    let mut expected = vec!["out/built.txt".to_owned(), "scratch.tmp".to_owned()];
    assert_eq!(
        artifact, expected,
        "the untracked files of plant, and only them"
    );

    let carry = pipeline.job("carry");
    let carry_log = api.job_log_text(carry.id).await;
    assert!(
        carry_log.contains("under .git/ left out: .git is never archived"),
        "{carry_log}"
    );
    let carried = tar_entries(&super::stored_archive(data, carry.id));
    assert_eq!(carried, ["carried.txt"]);

    let used = pipeline.job("use");
    let used_log = api.job_log_text(used.id).await;
    assert!(
        used_log.contains("$ cat carried.txt\ncarried\n"),
        "{used_log}"
    );
    let downstream = tar_entries(&super::stored_archive(data, used.id));
    assert_eq!(downstream, ["carried.txt", "down.txt"]);

    let mut caches: Vec<Vec<String>> = cache_archives(data)
        .iter()
        .map(|a| tar_entries(a))
        .collect();
    caches.sort();
    expected.sort();
    assert_eq!(
        caches,
        [
            vec!["carried.txt".to_owned(), "down.txt".to_owned()],
            expected
        ],
        "both caches hold the untracked files, no .git/"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_job_planting_git_config_and_hooks_runs_nothing_on_the_host() {
    nothing_planted_runs(AgentOpts::named("agent-1")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_job_planting_git_config_and_hooks_runs_nothing_on_the_host() {
    let inspect = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", BUSYBOX])
        .output()
        .expect("run docker");
    assert!(
        inspect.status.success(),
        "test image {BUSYBOX} is missing (run scripts/build-test-images.sh)"
    );
    let mut opts = AgentOpts::named(&format!("he-{}-plant", std::process::id()));
    opts.executor = "docker".to_owned();
    opts.extra_args = vec!["--docker-image".to_owned(), BUSYBOX.to_owned()];
    nothing_planted_runs(opts).await;
}

/// Flips bytes in the middle of a stored archive, keeping its size.
fn corrupt(archive: &Path) {
    let mut bytes = std::fs::read(archive).expect("read the stored archive");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle.saturating_sub(8)..middle + 8] {
        *byte ^= 0xff;
    }
    std::fs::write(archive, bytes).expect("write the corrupted archive");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_stored_archive_fails_the_job_at_once_and_a_corrupted_cache_is_a_warning() {
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let _agent = Agent::start(&coordinator, AgentOpts::named("agent-1")).await;
    let api = coordinator.api();
    let repo = TestRepo::with_pipeline(
        r#"
stages: [build, test]
produce:
  stage: build
  script: [echo payload > out.txt]
  artifacts: {paths: [out.txt]}
  cache: {key: stored, paths: [out.txt]}
consume:
  stage: test
  when: manual
  script: [cat out.txt]
restore:
  stage: test
  when: manual
  dependencies: []
  cache: {key: stored, paths: [out.txt], policy: pull}
  script: [echo restored]
"#,
    );
    let pipeline = api.run_pipeline(&repo, "master").await;
    let produce = pipeline.assert_job_status("produce", JobStatus::Success);
    let data = coordinator.data_dir();
    corrupt(&super::stored_archive(data, produce.id));
    let caches = cache_archives(data);
    assert_eq!(caches.len(), 1, "{caches:?}");
    corrupt(&caches[0]);

    let play = |job: osprey_shared::JobId| {
        let url = coordinator.url();
        async move {
            let played = osprey(
                Some(&url),
                &["job", "play", &job.to_string()],
                None,
                Duration::from_secs(30),
            )
            .await;
            assert_eq!(played.code(), Some(0), "{played:?}");
        }
    };
    // Retried as transient, the download held the job for about 300 s.
    let quick = Duration::from_secs(30);
    let consume = pipeline.job("consume").id;
    let started = Instant::now();
    play(consume).await;
    let failed = api
        .wait_for_job_status(consume, JobStatus::Failed, quick)
        .await;
    let reason = failed.failure_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("artifact download of produce failed")
            && reason.contains("digest did not match"),
        "after {:?}: {failed:?}",
        started.elapsed()
    );

    // As on GitLab a cache problem never fails the job, and it is not
    // retried for minutes either. The coordinator announces the digest it
    // recorded when the cache was uploaded, so the damage is found as such.
    let restore = pipeline.job("restore").id;
    play(restore).await;
    let restored = api
        .wait_for_job_status(restore, JobStatus::Success, quick)
        .await;
    let log = api.job_log_text(restored.id).await;
    assert!(
        log.contains("WARNING: failed to download cache stored")
            && log.contains("digest did not match"),
        "{log}"
    );
}
