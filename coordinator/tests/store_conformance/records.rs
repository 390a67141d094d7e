//! A job's log and archive: offsets, limits, seals, fencing, expiry.

use super::{assignment, fence, running_job, Harness, FENCE};
use osprey_coordinator::storage::{AppendResult, AttemptEnd, NewArtifact, StoreError};
use osprey_shared::JobId;

fn artifact<'a>(sha256: &'a str, expires_at: Option<&'a str>, key: &'a str) -> NewArtifact<'a> {
    NewArtifact {
        size: 10,
        sha256,
        expires_at,
        key,
    }
}

pub async fn log_appends_are_offset_checked_and_stored_once(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    let append = |offset, data: &'static [u8], max| {
        let store = store.clone();
        async move { store.append_log(job, FENCE, offset, data, max).await }
    };
    assert_eq!(
        append(0, b"hello ", 1 << 20).await.unwrap(),
        AppendResult::Appended(6)
    );
    assert_eq!(
        append(0, b"hello ", 1 << 20).await.unwrap(),
        AppendResult::Duplicate(6)
    );
    assert_eq!(
        append(9, b"gap", 1 << 20).await.unwrap(),
        AppendResult::Gap(6)
    );
    // An overlapping resend stores only its new tail.
    assert_eq!(
        append(3, b"lo world", 1 << 20).await.unwrap(),
        AppendResult::Appended(11)
    );
    assert_eq!(
        store.read_log(job, 0, usize::MAX).await.unwrap(),
        b"hello world"
    );
    assert_eq!(store.read_log(job, 4, 3).await.unwrap(), b"o w");
    // A chunk crossing the limit is kept up to it; the next is refused.
    assert_eq!(
        append(11, b"!?", 12).await.unwrap(),
        AppendResult::Appended(12)
    );
    assert!(matches!(
        append(12, b"too much", 12).await,
        Err(StoreError::LimitExceeded(_))
    ));
    assert_eq!(
        store.read_log(job, 0, usize::MAX).await.unwrap(),
        b"hello world!"
    );
    // Bytes of every value survive the round trip.
    let job_bytes: Vec<u8> = (0..=255).collect();
    let second = JobId(2);
    store
        .finish_job(job, FENCE, AttemptEnd::Success)
        .await
        .unwrap();
    assert!(store.assign_job(second, assignment("b", 1)).await.unwrap());
    store
        .append_log(second, fence("b", 1), 0, &job_bytes, 1 << 20)
        .await
        .unwrap();
    assert_eq!(store.read_log(second, 0, 1 << 20).await.unwrap(), job_bytes);
}

pub async fn a_long_log_reads_in_pieces(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    // 300 chunks of 100 bytes: more than one page of chunks per read.
    let mut whole = Vec::new();
    for chunk in 0..300u32 {
        let data: Vec<u8> = (0..100u32)
            .map(|byte| ((chunk + byte) % 251) as u8)
            .collect();
        store
            .append_log(job, FENCE, whole.len() as u64, &data, 1 << 20)
            .await
            .unwrap();
        whole.extend_from_slice(&data);
    }
    assert_eq!(store.read_log(job, 0, usize::MAX).await.unwrap(), whole);
    let mut pieces = Vec::new();
    let mut offset = 0;
    loop {
        let piece = store.read_log(job, offset, 7_777).await.unwrap();
        if piece.is_empty() {
            break;
        }
        assert!(piece.len() <= 7_777);
        offset += piece.len() as u64;
        pieces.extend(piece);
    }
    assert_eq!(pieces, whole);
    assert_eq!(
        store.read_log(job, 12_345, 10).await.unwrap(),
        &whole[12_345..12_355]
    );
}

pub async fn a_sealed_log_takes_no_bytes_and_a_seal_is_repeatable_only_as_it_was(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    store
        .append_log(job, FENCE, 0, b"abc", 1 << 20)
        .await
        .unwrap();
    assert!(
        !store.seal_log(job, FENCE, 2, "d1").await.unwrap(),
        "a seal for another size"
    );
    assert!(store.seal_log(job, FENCE, 3, "d3").await.unwrap());
    assert!(store.seal_log(job, FENCE, 3, "D3").await.unwrap(), "repeat");
    assert!(matches!(
        store.seal_log(job, FENCE, 3, "other").await,
        Err(StoreError::Closed(_))
    ));
    assert!(matches!(
        store.append_log(job, FENCE, 3, b"more", 1 << 20).await,
        Err(StoreError::Closed(_))
    ));
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.log_size, 3);
}

pub async fn an_ended_attempt_writes_nothing_and_an_archive_is_recorded_once(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    store
        .set_artifact(job, FENCE, artifact("first", None, "k1"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_artifact(job, FENCE, artifact("second", None, "k2"))
            .await,
        Err(StoreError::Closed(_))
    ));
    assert!(store.check_artifact_open(job, FENCE).await.is_err());
    store
        .finish_job(job, FENCE, AttemptEnd::Success)
        .await
        .unwrap();
    assert!(matches!(
        store.append_log(job, FENCE, 0, b"late", 1 << 20).await,
        Err(StoreError::AttemptEnded(_))
    ));
    assert!(matches!(
        store.seal_log(job, FENCE, 0, "x").await,
        Err(StoreError::AttemptEnded(_))
    ));
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.log_size, 0);
    assert_eq!(row.artifact_sha256.as_deref(), Some("first"));
    assert_eq!(row.artifact_key.as_deref(), Some("k1"));
}

pub async fn expired_artifacts_are_forgotten_and_kept_ones_stay(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    let in_a_minute = "2026-12-01T12:01:00.000Z";
    store
        .set_artifact(job, FENCE, artifact("abc", Some(in_a_minute), "k1"))
        .await
        .unwrap();
    store
        .finish_job(job, FENCE, AttemptEnd::Success)
        .await
        .unwrap();
    let later = JobId(2);
    assert!(store
        .assign_job(later, assignment("attempt-2", 1))
        .await
        .unwrap());
    store
        .set_artifact(later, fence("attempt-2", 1), artifact("def", None, "k2"))
        .await
        .unwrap();
    assert!(
        store.expire_artifacts().await.unwrap().is_empty(),
        "not yet"
    );
    harness.clock.advance(time::Duration::minutes(1));
    assert_eq!(
        store.expire_artifacts().await.unwrap(),
        vec![(job, Some("k1".to_owned()))]
    );
    assert!(store
        .job(job)
        .await
        .unwrap()
        .unwrap()
        .artifact_size
        .is_none());
    assert!(store
        .job(later)
        .await
        .unwrap()
        .unwrap()
        .artifact_size
        .is_some());
    assert!(store.expire_artifacts().await.unwrap().is_empty());
}
