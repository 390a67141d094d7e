//! The agent's git cache end to end (a real coordinator and shell agent):
//! the mirror and the build dir are reused, a new commit is fetched, GitLab's
//! `GIT_STRATEGY`/`GIT_DEPTH` are honoured, and a job cannot plant anything
//! in the reused `.git` that the next job's checkout would run.

use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_shared::api::PipelineView;
use osprey_shared::{JobStatus, PipelineStatus};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const PIPELINE: &str = r#"
build:
  script:
    - echo "head $(git rev-parse HEAD)"
    - echo "shallow $(git rev-parse --is-shallow-repository 2>/dev/null || echo none)"
    - echo "entries $(ls -A | grep -v '^osprey-' | tr '\n' ' ')"
"#;

/// Runs the pipeline of `master` with `variables`; the pipeline and the log
/// of its `build` job.
async fn run(
    cluster: &TestCluster,
    repo: &TestRepo,
    variables: &[(&str, &str)],
) -> (PipelineView, String) {
    let created = cluster
        .api
        .create_pipeline_with(&repo.url(), "master", variables)
        .await
        .expect("create the pipeline");
    let pipeline = cluster.api.wait_for_pipeline(created.id).await;
    let log = cluster.api.job_log_text(pipeline.job("build").id).await;
    (pipeline, log)
}

/// The only mirror of the agent and the `objects` dir's identity.
fn mirror_objects(work_dir: &Path) -> (PathBuf, (u64, i64, i64)) {
    let mirrors: Vec<PathBuf> = std::fs::read_dir(work_dir.join("git"))
        .expect("the agent has a git dir")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "git"))
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    let meta = std::fs::metadata(mirrors[0].join("objects")).unwrap();
    (
        mirrors[0].clone(),
        (meta.ino(), meta.mtime(), meta.mtime_nsec()),
    )
}

/// The slot-0 build dir of the agent's only project.
fn build_dir(work_dir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(work_dir.join("builds"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with("-0"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn project_dir(work_dir: &Path) -> PathBuf {
    let build = build_dir(work_dir);
    let name = build
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches("-0")
        .to_owned();
    build.join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_job_reuses_the_mirror_and_the_build_dir_and_a_new_commit_is_fetched() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(PIPELINE);
    let first_sha = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let work = cluster.agents[0].work_dir().to_owned();

    let (pipeline, log) = run(&cluster, &repo, &[]).await;
    pipeline.assert_status(PipelineStatus::Success);
    // The coordinator's prefetch hint may have made the mirror before the job came.
    assert!(
        log.contains("(new mirror, new build dir)")
            || log.contains("(cached mirror, new build dir)"),
        "{log}"
    );
    assert!(log.contains(&format!("head {first_sha}")), "{log}");
    let (_, objects) = mirror_objects(&work);
    let dot_git = std::fs::metadata(project_dir(&work).join(".git"))
        .unwrap()
        .ino();

    let (pipeline, log) = run(&cluster, &repo, &[]).await;
    pipeline.assert_status(PipelineStatus::Success);
    assert!(log.contains("(cached mirror, reused build dir)"), "{log}");
    assert_eq!(
        mirror_objects(&work).1,
        objects,
        "the mirror was not written"
    );
    assert_eq!(
        std::fs::metadata(project_dir(&work).join(".git"))
            .unwrap()
            .ino(),
        dot_git,
        "the same .git"
    );

    repo.write("new.txt", "pushed later");
    let second_sha = repo.commit("later");
    let (pipeline, log) = run(&cluster, &repo, &[]).await;
    pipeline.assert_status(PipelineStatus::Success);
    // Fetched by the job, or just before it by the coordinator's prefetch hint
    // (the unit tests of `git_cache` cover the job's own fetch).
    assert!(
        log.contains("(mirror updated, reused build dir)")
            || log.contains("(cached mirror, reused build dir)"),
        "{log}"
    );
    assert!(log.contains(&format!("head {second_sha}")), "{log}");
    assert!(log.contains("new.txt"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_strategy_none_empty_clone_and_depth() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(PIPELINE);
    repo.write("second.txt", "two");
    repo.commit("second");

    // A fresh agent: no source at all, not even `.git`.
    let (pipeline, log) = run(&cluster, &repo, &[("GIT_STRATEGY", "none")]).await;
    pipeline.assert_status(PipelineStatus::Success);
    assert!(log.contains("GIT_STRATEGY: none"), "{log}");
    assert!(log.contains("shallow none"), "no repository: {log}");
    assert!(log.lines().any(|line| line.trim() == "entries"), "{log}");

    let (_, log) = run(&cluster, &repo, &[("GIT_DEPTH", "1")]).await;
    assert!(log.contains("shallow true"), "{log}");
    assert!(log.contains("second.txt"), "{log}");

    let (_, log) = run(&cluster, &repo, &[("GIT_STRATEGY", "empty")]).await;
    assert!(log.contains("shallow none"), "{log}");
    assert!(log.lines().any(|line| line.trim() == "entries"), "{log}");

    let (_, log) = run(&cluster, &repo, &[("GIT_STRATEGY", "clone")]).await;
    assert!(log.contains("Cloning "), "{log}");
    assert!(log.contains("new build dir"), "{log}");
    assert!(log.contains("shallow false"), "{log}");

    let (pipeline, log) = run(&cluster, &repo, &[("GIT_STRATEGY", "fetchh")]).await;
    pipeline.assert_status(PipelineStatus::Failed);
    let job = pipeline.assert_job_status("build", JobStatus::Failed);
    let reason = job.failure_reason.clone().unwrap_or_default();
    assert!(log.contains("GIT_STRATEGY"), "{log}");
    assert!(log.contains("fetchh"), "{log}");
    assert!(reason.contains("GIT_STRATEGY"), "{reason}");
}

const HOSTILE: &str = r#"set -e
evil="$CI_BUILDS_DIR/evil.sh"
printf '#!/bin/sh\ntouch "%s"\ncat\n' "$CI_BUILDS_DIR/pwned" > "$evil"
chmod +x "$evil"
cat > .git/config <<EOF
[core]
	sshCommand = $evil
	fsmonitor = $evil
	hooksPath = .git/hooks
[filter "evil"]
	smudge = $evil
	clean = $evil
	required = true
EOF
mkdir -p .git/hooks
cp "$evil" .git/hooks/post-checkout
echo '* filter=evil' > .gitattributes
echo planted
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_git_dir_left_by_a_job_runs_nothing_in_the_next_checkout() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::new();
    repo.write("hostile.sh", HOSTILE);
    repo.write(".gitlab-ci.yml", "build:\n  script:\n    - sh hostile.sh\n");
    repo.commit("hostile");
    let work = cluster.agents[0].work_dir().to_owned();
    let (pipeline, log) = run(&cluster, &repo, &[]).await;
    pipeline.assert_status(PipelineStatus::Success);
    assert!(log.contains("planted"), "{log}");
    let marker = build_dir(&work).join("pwned");
    assert!(!marker.exists(), "the job's own git calls did not trip it");

    repo.write(".gitlab-ci.yml", PIPELINE);
    let sha = repo.commit("innocent");
    let (pipeline, log) = run(&cluster, &repo, &[]).await;
    pipeline.assert_status(PipelineStatus::Success);
    assert!(log.contains("reused build dir"), "{log}");
    assert!(log.contains(&format!("head {sha}")), "{log}");
    assert!(!marker.exists(), "nothing the previous job planted ran");
    let project = project_dir(&work);
    assert!(!project.join(".git/hooks").exists());
    let config = std::fs::read_to_string(project.join(".git/config")).unwrap();
    assert!(!config.contains("evil"), "{config}");
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_jobs_of_a_project_each_get_a_build_slot_and_reuse_it() {
    let cluster = TestCluster::builder()
        .agents(1)
        .concurrency(2)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(
        r#"
one:
  script: ["sleep 1", "echo one in $CI_BUILDS_DIR"]
two:
  script: ["sleep 1", "echo two in $CI_BUILDS_DIR"]
"#,
    );
    let work = cluster.agents[0].work_dir().to_owned();
    for round in ["first", "second"] {
        let pipeline = cluster.api.run_pipeline(&repo, "master").await;
        pipeline.assert_status(PipelineStatus::Success);
        let mut dirs = Vec::new();
        for name in ["one", "two"] {
            let log = cluster.api.job_log_text(pipeline.job(name).id).await;
            if round == "second" {
                assert!(log.contains("reused build dir"), "{log}");
            }
            let dir = log
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name} in ")))
                .unwrap_or_else(|| panic!("{log}"))
                .to_owned();
            dirs.push(dir);
        }
        dirs.sort();
        let slots: Vec<String> = std::fs::read_dir(work.join("builds"))
            .unwrap()
            .map(|entry| entry.unwrap().path().display().to_string())
            .collect();
        assert!(
            dirs[0].ends_with("-0") && dirs[1].ends_with("-1"),
            "{round}: {dirs:?} (builds: {slots:?})"
        );
    }
}
