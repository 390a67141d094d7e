//! `cache:` end to end: caches live on the coordinator per repository and
//! key, so a job on one agent restores what a job of an earlier pipeline
//! saved on another agent (their work dirs are separate); `policy: pull`
//! never saves, `when: on_failure` saves only for a failed job, and
//! `fallback_keys` are tried in order when the key has no cache.

use osprey_integration_tests::{AgentOpts, PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};

/// Two agents, each taking only the jobs tagged with its name.
async fn two_agents() -> TestCluster {
    TestCluster::builder()
        .agent(AgentOpts::named("one").tags(&["one"]))
        .agent(AgentOpts::named("two").tags(&["two"]))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_saved_on_one_agent_is_restored_on_another() {
    let cluster = two_agents().await;
    let repo = TestRepo::with_pipeline(
        r#"
fill:
  tags: [one]
  cache:
    key: deps-$CI_COMMIT_REF_SLUG
    paths: [vendor/]
  script:
    - mkdir -p vendor
    - echo "dep $((40 + 2))" > vendor/dep.txt
"#,
    );
    let first = cluster.api.run_pipeline(&repo, "master").await;
    first.assert_status(PipelineStatus::Success);
    let fill = first.assert_job_status("fill", JobStatus::Success);
    assert_eq!(fill.agent.as_deref(), Some("one"));
    let log = cluster.api.job_log_text(fill.id).await;
    assert!(log.contains("no cache for key deps-master"), "{log}");
    assert!(log.contains("Saving cache for successful job"), "{log}");
    assert!(log.contains("Created cache deps-master"), "{log}");

    // A later commit whose only job runs on the other agent.
    repo.write(
        ".gitlab-ci.yml",
        r#"
use:
  tags: [two]
  cache:
    key: deps-$CI_COMMIT_REF_SLUG
    paths: [vendor/]
    policy: pull
  script:
    - cat vendor/dep.txt
"#,
    );
    repo.commit("use the cache");
    let second = cluster.api.run_pipeline(&repo, "master").await;
    second.assert_status(PipelineStatus::Success);
    let used = second.assert_job_status("use", JobStatus::Success);
    assert_eq!(used.agent.as_deref(), Some("two"));
    let log = cluster.api.job_log_text(used.id).await;
    // "dep 42" is computed by `fill` on the other agent: only the
    // coordinator's cache can have carried it here.
    assert!(
        log.contains("Restoring cache\nChecking cache for deps-master"),
        "{log}"
    );
    assert!(log.contains("$ cat vendor/dep.txt\ndep 42\n"), "{log}");
    assert!(
        log.contains("Not uploading cache deps-master due to policy"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_policy_never_saves_and_on_failure_saves_only_failures() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [write, read]
pull_only:
  stage: write
  cache:
    key: pulled
    paths: [data/]
    policy: pull
  script:
    - mkdir -p data && echo pulled > data/file.txt
failing:
  stage: write
  allow_failure: true
  cache:
    - key: on-failure
      paths: [data/]
      when: on_failure
    - key: on-success
      paths: [data/]
  script:
    - mkdir -p data && echo failed-run > data/file.txt
    - exit 3
read:
  stage: read
  cache:
    - key: pulled
      paths: [data/]
      policy: pull
    - key: on-success
      paths: [data/]
      policy: pull
    - key: on-failure
      paths: [data/]
      policy: pull
  script:
    - cat data/file.txt
"#,
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_job_status("failing", JobStatus::Failed);
    let read = pipeline.assert_job_status("read", JobStatus::Success);
    let failing_log = cluster.api.job_log_text(pipeline.job("failing").id).await;
    assert!(
        failing_log.contains("Saving cache for failed job\nCreating cache on-failure"),
        "{failing_log}"
    );
    assert!(
        !failing_log.contains("Creating cache on-success"),
        "{failing_log}"
    );
    let log = cluster.api.job_log_text(read.id).await;
    assert!(log.contains("no cache for key pulled"), "{log}");
    assert!(log.contains("no cache for key on-success"), "{log}");
    assert!(
        log.contains("Successfully extracted cache on-failure"),
        "{log}"
    );
    assert!(log.contains("$ cat data/file.txt\nfailed-run\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_keys_are_tried_in_order() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [seed, use]
seed:
  stage: seed
  cache:
    - key: second-choice
      paths: [out/]
      policy: push
  script:
    - mkdir -p out && echo from-second > out/value.txt
use:
  stage: use
  cache:
    key: missing-$CI_PIPELINE_ID
    fallback_keys: [also-missing, second-choice]
    paths: [out/]
    policy: pull
  script:
    - cat out/value.txt
"#,
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    let used = pipeline.job("use");
    let log = cluster.api.job_log_text(used.id).await;
    let missing = format!("no cache for key missing-{}", pipeline.id);
    assert!(log.contains(&missing), "{log}");
    assert!(log.contains("no cache for key also-missing"), "{log}");
    assert!(
        log.contains("Successfully extracted cache second-choice"),
        "{log}"
    );
    assert!(log.contains("$ cat out/value.txt\nfrom-second\n"), "{log}");
}
