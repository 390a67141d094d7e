//! No token outlives its job: once an attempt has its final status, its job
//! token is refused for every job-scoped call (append, seal, status,
//! artifact and cache upload) and changes nothing; a sealed log takes no
//! more bytes and an archive, once recorded, is never replaced, even by the
//! attempt that recorded it. The test plays the agent over gRPC
//! ([`FakeAgent`]) so it can call in any order.

use osprey_integration_tests::fake_agent::{
    append, attempt_ref, seal, sha256_hex, upload_artifact, upload_cache, FakeAgent,
};
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_proto::v1::{AttemptRef, JobState, UpdateStatusRequest};
use osprey_shared::api::PipelineView;
use osprey_shared::{JobId, JobStatus};
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;

const PIPELINE: &str = r#"
build:
  stage: build
  script: ['true']
  artifacts:
    paths: [out]
later:
  stage: test
  script: ['true']
"#;

/// Where the coordinator keeps a job's archive and a repository's cache
/// (see `coordinator/src/core/cache.rs`).
fn artifact_file(data_dir: &std::path::Path, job: JobId) -> PathBuf {
    super::stored_archive(data_dir, job)
}

fn cache_file(data_dir: &std::path::Path, repo: &str, key: &str) -> PathBuf {
    data_dir
        .join("cache")
        .join(sha256_hex(repo.as_bytes()))
        .join(format!("{}.tar", sha256_hex(key.as_bytes())))
}

/// A cluster with no agent of its own, a pipeline, and its `build` job
/// assigned to a [`FakeAgent`].
struct Assigned {
    cluster: TestCluster,
    data_dir: PathBuf,
    repo: TestRepo,
    created: PipelineView,
    build: JobId,
    agent: FakeAgent,
    attempt: AttemptRef,
}

async fn assigned() -> Assigned {
    let cluster = TestCluster::builder().start().await;
    let url = cluster.coordinator.url();
    let data_dir = cluster.coordinator.data_dir().to_path_buf();
    let repo = TestRepo::with_pipeline(PIPELINE);
    let created = cluster.api.start_pipeline(&repo, "master").await;
    let build = created.job("build").id;
    let mut agent = FakeAgent::connect(&url, cluster.coordinator.registration_token()).await;
    let attempt = attempt_ref(&agent.take_job(Duration::from_secs(30)).await);
    Assigned {
        cluster,
        data_dir,
        repo,
        created,
        build,
        agent,
        attempt,
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_jobs_token_is_refused_for_append_seal_status_artifact_and_cache() {
    let Assigned {
        cluster,
        data_dir,
        repo,
        created: _,
        build,
        mut agent,
        attempt,
    } = assigned().await;
    assert_eq!(attempt.job_id, build.0);
    let client = &mut agent.client;

    // The job's own work, in the agent's order: cache, artifacts, seal, status.
    let log = b"building\n";
    append(client, &attempt, 0, log).await.expect("append");
    upload_cache(client, &attempt, "deps", b"the cache")
        .await
        .expect("cache upload");
    upload_artifact(client, &attempt, b"the archive")
        .await
        .expect("artifact upload");
    assert!(seal(client, &attempt, log).await.expect("seal"));
    let status = UpdateStatusRequest {
        attempt: Some(attempt.clone()),
        state: JobState::Success.into(),
        exit_code: Some(0),
        failure_reason: String::new(),
        ..Default::default()
    };
    client
        .update_status(status.clone())
        .await
        .expect("final status");
    cluster
        .api
        .wait_for_job_status(build, JobStatus::Success, Duration::from_secs(10))
        .await;

    // The same token, after the final status.
    assert_refused(
        append(client, &attempt, log.len() as u64, b"forged\n").await,
        "append after the end",
    );
    assert_refused(
        seal(client, &attempt, b"building\nforged\n").await,
        "seal after the end",
    );
    assert_refused(
        upload_artifact(client, &attempt, b"replacement").await,
        "artifact upload after the end",
    );
    assert_refused(
        upload_cache(client, &attempt, "deps", b"poisoned").await,
        "cache upload after the end",
    );
    assert_refused(client.update_status(status).await, "status after the end");

    // Nothing changed.
    assert_eq!(cluster.api.job_log(build).await.unwrap(), log);
    let archive = std::fs::read(artifact_file(&data_dir, build)).unwrap();
    assert_eq!(archive, b"the archive");
    // The stored cache is the upload plus its 48-byte digest record.
    let cache = std::fs::read(cache_file(&data_dir, &repo.url(), "deps")).unwrap();
    assert_eq!(&cache[..9], b"the cache");
    assert_eq!(cache.len(), 9 + 48, "the first upload and its record only");
    let view = cluster.api.job(build).await.unwrap();
    assert_eq!(view.status, JobStatus::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_log_and_a_recorded_archive_are_closed_even_to_their_own_attempt() {
    let Assigned {
        cluster,
        data_dir,
        repo: _repo,
        created,
        build,
        mut agent,
        attempt,
    } = assigned().await;
    let client = &mut agent.client;

    let log = b"one line\n";
    append(client, &attempt, 0, log).await.expect("append");
    assert!(seal(client, &attempt, log).await.expect("seal"));
    assert!(
        seal(client, &attempt, log).await.expect("a repeated seal"),
        "the same seal again is answered sealed (its answer may have been lost)"
    );
    let refused = append(client, &attempt, log.len() as u64, b"after the seal\n")
        .await
        .expect_err("an append after the seal");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("sealed"), "{refused:?}");

    upload_artifact(client, &attempt, b"first archive")
        .await
        .expect("the first upload");
    let refused = upload_artifact(client, &attempt, b"second archive")
        .await
        .expect_err("a second upload");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    assert_eq!(cluster.api.job_log(build).await.unwrap(), log);
    let archive = std::fs::read(artifact_file(&data_dir, build)).unwrap();
    assert_eq!(archive, b"first archive");
    let leftovers: Vec<_> = std::fs::read_dir(data_dir.join("uploads"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "no part file left: {leftovers:?}");
    cluster.api.cancel(created.id).await.unwrap();
}
