//! One behaviour suite run against every [`ArtifactStore`] backend: the
//! directory store, and the S3 store against a real S3-compatible server
//! (moto, from `osprey-test-support`).

use super::file::FileStore;
use super::s3::S3Store;
use super::{ArtifactStore, StoredObject};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Bytes that differ at every offset, so a reordered or truncated part shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|index| (index as u64 * 31 + seed as u64 + (index as u64 >> 12)) as u8)
        .collect()
}

async fn read_all(object: StoredObject) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut reader = object.reader;
    reader.read_to_end(&mut bytes).await.unwrap();
    bytes
}

async fn conformance(store: &dyn ArtifactStore, scratch: &Path) {
    // Larger than a multipart part (8 MiB) and not a multiple of it.
    let big = pattern((17 << 20) + 12_345, 7);
    let source = scratch.join("big.tar");
    std::fs::write(&source, &big).unwrap();
    store.put("artifacts/1/a-1.tar", &source).await.unwrap();
    assert!(source.exists(), "the source file is left where it was");
    let object = store
        .get("artifacts/1/a-1.tar")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(object.size, big.len() as u64);
    let read = read_all(object).await;
    assert_eq!(read.len(), big.len());
    assert_eq!(Sha256::digest(&read), Sha256::digest(&big), "round trip");

    // The tail is the object's last bytes; the reader still starts at 0.
    let object = store
        .get_with_tail("artifacts/1/a-1.tar", 48)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(object.tail, big[big.len() - 48..]);
    assert_eq!(read_all(object).await[..16], big[..16]);

    // A small object, a tail longer than it, and replacement (last writer wins).
    let small = scratch.join("small");
    std::fs::write(&small, b"first").unwrap();
    store.put("cache/r/k.tar", &small).await.unwrap();
    std::fs::write(&small, b"second!").unwrap();
    store.put("cache/r/k.tar", &small).await.unwrap();
    let object = store
        .get_with_tail("cache/r/k.tar", 48)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((object.size, object.tail.as_slice()), (7, &b"second!"[..]));
    assert_eq!(read_all(object).await, b"second!");

    // An empty object.
    let empty = scratch.join("empty");
    std::fs::write(&empty, b"").unwrap();
    store.put("cache/r/empty.tar", &empty).await.unwrap();
    let object = store.get("cache/r/empty.tar").await.unwrap().unwrap();
    assert_eq!(object.size, 0);
    assert!(read_all(object).await.is_empty());

    assert!(store.get("artifacts/404.tar").await.unwrap().is_none());

    let mut listed = store.list("cache/").await.unwrap();
    listed.sort();
    assert_eq!(listed, vec!["cache/r/empty.tar", "cache/r/k.tar"]);
    assert_eq!(
        store.list("artifacts/").await.unwrap(),
        vec!["artifacts/1/a-1.tar"]
    );

    store.delete("artifacts/1/a-1.tar").await.unwrap();
    assert!(store.get("artifacts/1/a-1.tar").await.unwrap().is_none());
    store.delete("artifacts/1/a-1.tar").await.unwrap();
    assert!(store.list("artifacts/").await.unwrap().is_empty());

    for hostile in ["../escape.tar", "/abs.tar", "a/../../b"] {
        assert!(store.put(hostile, &small).await.is_err(), "{hostile}");
        assert!(store.get(hostile).await.is_err(), "{hostile}");
    }
}

#[tokio::test]
async fn the_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("store"));
    conformance(&store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_store_conforms() {
    let server = osprey_test_support::s3::S3Server::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = S3Store::with_env(server.bucket(), "ci/osprey", &server.env()).unwrap();
    conformance(&store, dir.path()).await;
    // Objects live under the prefix in the bucket.
    let keys = server.list_keys("").await.unwrap();
    assert!(
        keys.iter().all(|key| key.starts_with("ci/osprey/")),
        "{keys:?}"
    );
    assert_eq!(keys.len(), 2, "{keys:?}");
}
