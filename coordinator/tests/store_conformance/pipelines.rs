//! Migrations, typed rows and pipeline creation.

use super::{pipeline, Harness};
use osprey_coordinator::storage::{
    CommitDetails, IdempotencyKey, Keyed, NewPipeline, SqlStore, StoreError,
};
use osprey_shared::{JobId, PipelineId};

pub async fn migrations_apply_to_an_empty_database_and_reopen(harness: Harness) {
    let (id, _) = harness
        .store
        .create_pipeline("/repo", "master", false, "abc", &pipeline())
        .await
        .unwrap();
    drop(harness.store);
    // An existing database: no migration runs twice, nothing is lost.
    let reopened = SqlStore::open(&harness.url)
        .await
        .expect("reopening an existing database");
    use osprey_coordinator::storage::PipelineStore;
    let row = reopened.pipeline(id).await.unwrap().expect("kept");
    assert_eq!(row.sha, "abc");
}

pub async fn a_status_that_does_not_parse_is_an_error(harness: Harness) {
    let job = super::running_job(&harness.store).await;
    sqlx::query("UPDATE jobs SET status = 'exploded' WHERE id = $1")
        .bind(job.0 as i64)
        .execute(harness.sql.pool())
        .await
        .unwrap();
    let read = harness.store.job(job).await;
    assert!(
        matches!(read, Err(StoreError::Corrupt(_))),
        "never silently failed: {read:?}"
    );
}

fn new_pipeline<'a>(
    details: &'a CommitDetails,
    definition: &'a osprey_shared::pipeline::Pipeline,
) -> NewPipeline<'a> {
    NewPipeline {
        repo: "/repo",
        git_ref: "master",
        ref_is_tag: false,
        sha: "abc",
        pipeline: definition,
        details,
        origin: Default::default(),
    }
}

pub async fn a_key_creates_one_pipeline_and_refuses_another_request(harness: Harness) {
    let store = harness.store;
    let key = IdempotencyKey {
        key: "k-1",
        request_sha256: "r-1",
    };
    let details = CommitDetails::default();
    let definition = pipeline();
    assert_eq!(store.keyed_pipeline(key).await.unwrap(), None);
    let created = store
        .create_pipeline_keyed(&new_pipeline(&details, &definition), key)
        .await
        .unwrap();
    let Keyed::Created(id, _) = created else {
        panic!("the first request creates: {created:?}");
    };
    let again = store
        .create_pipeline_keyed(&new_pipeline(&details, &definition), key)
        .await
        .unwrap();
    assert_eq!(again, Keyed::Replayed(id));
    assert_eq!(
        store.keyed_pipeline(key).await.unwrap(),
        Some(Keyed::Replayed(id))
    );
    let other = IdempotencyKey {
        request_sha256: "r-2",
        ..key
    };
    let mismatch = store
        .create_pipeline_keyed(&new_pipeline(&details, &definition), other)
        .await
        .unwrap();
    assert_eq!(mismatch, Keyed::Mismatch);
    assert!(store
        .pipeline(PipelineId(id.0 + 1))
        .await
        .unwrap()
        .is_none());
}

pub async fn racing_keyed_creates_make_one_pipeline(harness: Harness) {
    let store = harness.store;
    let mut racers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            let details = CommitDetails::default();
            let definition = pipeline();
            let key = IdempotencyKey {
                key: "race",
                request_sha256: "same",
            };
            store
                .create_pipeline_keyed(&new_pipeline(&details, &definition), key)
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    for racer in racers {
        if matches!(racer.await.unwrap(), Keyed::Created(..)) {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert!(
        store.job(JobId(3)).await.unwrap().is_none(),
        "one pipeline's jobs"
    );
}
