//! Artifacts and caches in an S3-compatible bucket: a coordinator started
//! with `--artifact-store s3://BUCKET/PREFIX` and the `AWS_*` environment of
//! a real S3 server (moto, from `osprey-test-support`) keeps a job's archive
//! and its cache as objects under the prefix, a later stage reads both back
//! through it, and an expired archive's object is deleted.

use osprey_integration_tests::{wait_for, CoordinatorOpts, PipelineExt, TestCluster, TestRepo};
use osprey_shared::{JobStatus, PipelineStatus};
use osprey_test_support::s3::S3Server;
use std::time::Duration;

/// How long the expiry pass after a restart may take to delete an object.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);

/// Files the coordinator keeps under `dir` (recursively), by relative path.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_and_caches_live_in_the_bucket_and_expire_from_it() {
    let s3 = S3Server::start().await.expect("start the S3 test server");
    let mut cluster = TestCluster::builder()
        .coordinator(CoordinatorOpts {
            extra_args: vec![
                "--artifact-store".to_owned(),
                format!("s3://{}/osprey-ci", s3.bucket()),
            ],
            env: s3.env(),
            ..Default::default()
        })
        .agents(1)
        .start()
        .await;
    let repo = TestRepo::with_pipeline(
        r#"
stages: [build, test]
produce:
  stage: build
  cache:
    key: deps
    paths: [vendor/]
  script:
    - mkdir -p out vendor
    - echo "payload $((6 * 7))" > out/result.txt
    - echo "dep $((40 + 2))" > vendor/dep.txt
  artifacts:
    paths: [out/]
consume:
  stage: test
  cache:
    key: deps
    paths: [vendor/]
    policy: pull
  script:
    - cat out/result.txt
    - cat vendor/dep.txt
short:
  stage: test
  script:
    - mkdir -p brief && echo soon gone > brief/note.txt
  artifacts:
    paths: [brief/]
    expire_in: 1 second
"#,
    );
    let pipeline = cluster.api.run_pipeline(&repo, "master").await;
    pipeline.assert_status(PipelineStatus::Success);
    let produce = pipeline.assert_job_status("produce", JobStatus::Success);
    let consume = pipeline.assert_job_status("consume", JobStatus::Success);
    let short = pipeline.assert_job_status("short", JobStatus::Success);

    // "payload 42" and "dep 42" are computed by `produce`: only the archive
    // and the cache, both in the bucket, can have carried them.
    let log = cluster.api.job_log_text(consume.id).await;
    assert!(log.contains("$ cat out/result.txt\npayload 42\n"), "{log}");
    assert!(log.contains("$ cat vendor/dep.txt\ndep 42\n"), "{log}");

    let artifacts = s3.list_keys("osprey-ci/artifacts/").await.unwrap();
    let produce_prefix = format!("osprey-ci/artifacts/{}/", produce.id);
    assert!(
        artifacts
            .iter()
            .any(|key| key.starts_with(&produce_prefix) && key.ends_with(".tar")),
        "no archive of produce in {artifacts:?}"
    );
    let caches = s3.list_keys("osprey-ci/cache/").await.unwrap();
    assert_eq!(caches.len(), 1, "one cache object: {caches:?}");
    let local = files_under(cluster.coordinator.data_dir());
    assert!(
        !local.iter().any(|path| path.starts_with("artifacts")
            || path.starts_with("cache")
            || path.ends_with(".part")),
        "archives or caches left on the coordinator's disk: {local:?}"
    );

    // `short` expires a second after it was recorded. Expiry runs when the
    // coordinator starts (then every 30 s): restart it once that second has
    // passed, and the object goes.
    let short_prefix = format!("osprey-ci/artifacts/{}/", short.id);
    assert!(
        artifacts.iter().any(|key| key.starts_with(&short_prefix)),
        "no archive of short in {artifacts:?}"
    );
    // Waiting for the clock itself, not for another process's state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.coordinator.restart().await;
    wait_for(
        "the expired archive's object to be deleted",
        EXPIRY_TIMEOUT,
        || async {
            let keys = s3
                .list_keys("osprey-ci/artifacts/")
                .await
                .map_err(|e| e.to_string())?;
            if keys.iter().any(|key| key.starts_with(&short_prefix)) {
                Err(format!("still there: {keys:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let keys = s3.list_keys("osprey-ci/artifacts/").await.unwrap();
    assert!(
        keys.iter().any(|key| key.starts_with(&produce_prefix)),
        "an archive without expire_in is kept: {keys:?}"
    );
}
