//! Tests of the spool and shipper against an in-process fake of `AppendLog`
//! that follows the coordinator's contract (APPENDED / DUPLICATE / GAP).

use super::*;
use std::collections::VecDeque;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Store the chunk but lose the answer (the agent sees a transient error).
    LoseResponse,
    /// Coordinator down: nothing stored.
    Unavailable,
    /// Coordinator lost everything after this offset before this call.
    Forget(usize),
}

#[derive(Default)]
struct FakeLog {
    stored: Mutex<Vec<u8>>,
    faults: Mutex<VecDeque<Fault>>,
    calls: Mutex<Vec<(u64, usize, AppendOutcome)>>,
    limit: Option<usize>,
}

impl FakeLog {
    fn with_faults(faults: &[Fault]) -> Self {
        Self {
            faults: Mutex::new(faults.iter().copied().collect()),
            ..Self::default()
        }
    }

    fn stored(&self) -> Vec<u8> {
        self.stored.lock().unwrap().clone()
    }

    fn outcomes(&self) -> Vec<AppendOutcome> {
        self.calls.lock().unwrap().iter().map(|c| c.2).collect()
    }
}

impl LogEndpoint for FakeLog {
    fn append(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<AppendReply, CallError>> {
        Box::pin(async move {
            let fault = self.faults.lock().unwrap().pop_front();
            let mut stored = self.stored.lock().unwrap();
            match fault {
                Some(Fault::Unavailable) => return Err(CallError::Transient("down".into())),
                Some(Fault::Forget(n)) => stored.truncate(n),
                _ => {}
            }
            let offset = offset as usize;
            let end = offset + data.len();
            let outcome = if offset > stored.len() {
                AppendOutcome::Gap
            } else if end <= stored.len() {
                assert_eq!(
                    &stored[offset..end],
                    &data[..],
                    "duplicate with other bytes"
                );
                AppendOutcome::Duplicate
            } else {
                if self.limit.is_some_and(|limit| end > limit) {
                    return Err(CallError::Exhausted("log too large".into()));
                }
                assert_eq!(&stored[offset..], &data[..stored.len() - offset]);
                let new = data[stored.len() - offset..].to_vec();
                stored.extend_from_slice(&new);
                AppendOutcome::Appended
            };
            self.calls
                .lock()
                .unwrap()
                .push((offset as u64, data.len(), outcome));
            if matches!(fault, Some(Fault::LoseResponse)) {
                return Err(CallError::Transient("response lost".into()));
            }
            Ok(AppendReply {
                committed_offset: stored.len() as u64,
                outcome,
            })
        })
    }
}

fn settings() -> ShipperSettings {
    ShipperSettings {
        batch_delay: Duration::from_millis(5),
        max_chunk: 8,
        max_unacked: 1024,
    }
}

/// Sends `chunks` through a stream shipping to `endpoint`; returns the summary.
async fn ship(
    endpoint: &FakeLog,
    chunks: &[&str],
    masked: &[&str],
    settings: ShipperSettings,
) -> LogSummary {
    let dir = tempfile::tempdir().unwrap();
    let mut stream = LogStream::new(
        dir.path().join("a.log"),
        masked.iter().map(|s| s.to_string()).collect(),
        settings,
    );
    let sink = stream.sink();
    let fenced = CancellationToken::new();
    let producer = async move {
        for chunk in chunks {
            sink.send(Bytes::copy_from_slice(chunk.as_bytes()))
                .await
                .unwrap();
        }
    };
    let (summary, ()) = tokio::join!(stream.run(endpoint, &fenced), producer);
    summary.unwrap()
}

#[tokio::test]
async fn ships_every_byte_in_order_at_increasing_offsets() {
    let fake = FakeLog::default();
    let text = ["hello ", "world\n", "a much longer line than one chunk\n"];
    let summary = ship(&fake, &text, &[], settings()).await;
    let all = text.concat();
    assert_eq!(fake.stored(), all.as_bytes());
    assert_eq!(summary.size, all.len() as u64);
    assert_eq!(summary.written, all.len() as u64);
    assert!(!summary.truncated && !summary.fenced);
    let calls = fake.calls.lock().unwrap().clone();
    let mut expected = 0;
    for (offset, len, outcome) in calls {
        assert_eq!(offset, expected, "chunks are contiguous");
        assert!(len <= 8, "chunk of {len} bytes over max_chunk");
        assert_eq!(outcome, AppendOutcome::Appended);
        expected += len as u64;
    }
}

#[tokio::test]
async fn lost_response_is_resent_and_answered_duplicate() {
    let fake = FakeLog::with_faults(&[Fault::LoseResponse, Fault::Unavailable]);
    let summary = ship(&fake, &["0123456789"], &[], settings()).await;
    assert_eq!(fake.stored(), b"0123456789");
    assert_eq!(summary.size, 10);
    assert_eq!(
        fake.outcomes()[..2],
        [AppendOutcome::Appended, AppendOutcome::Duplicate]
    );
}

#[tokio::test]
async fn gap_answer_moves_offset_back() {
    // The coordinator loses the stored log (say, a restart before it was
    // durable): the next append is a GAP at 8 and the shipper resends from 0.
    let fake = FakeLog::default();
    let dir = tempfile::tempdir().unwrap();
    let mut stream = LogStream::new(dir.path().join("g.log"), Vec::new(), settings());
    let sink = stream.sink();
    let mut acked = stream.acked();
    let fenced = CancellationToken::new();
    let producer = async {
        sink.send(Bytes::from_static(b"abcdefgh")).await.unwrap();
        acked.wait_for(|acked| *acked == 8).await.unwrap();
        fake.faults.lock().unwrap().push_back(Fault::Forget(0));
        sink.send(Bytes::from_static(b"ijkl")).await.unwrap();
        drop(sink);
    };
    let (summary, ()) = tokio::join!(stream.run(&fake, &fenced), producer);
    let summary = summary.unwrap();
    assert_eq!(fake.stored(), b"abcdefghijkl");
    assert_eq!(summary.size, 12);
    assert!(
        fake.outcomes().contains(&AppendOutcome::Gap),
        "{:?}",
        fake.outcomes()
    );
}

#[tokio::test]
async fn resource_exhausted_stops_shipping_but_not_the_job() {
    let fake = FakeLog {
        limit: Some(10),
        ..FakeLog::default()
    };
    let chunks = ["12345678", "abcdefgh", "more", "and more"];
    let summary = ship(&fake, &chunks, &[], settings()).await;
    assert_eq!(fake.stored(), b"12345678");
    assert!(summary.truncated);
    assert_eq!(summary.size, 8, "seal with the accepted size");
}

#[tokio::test]
async fn masked_values_never_reach_the_log_even_split_across_chunks() {
    let fake = FakeLog::default();
    let chunks = ["token=sup", "ersecret; again supersecret", " sup"];
    let summary = ship(&fake, &chunks, &["supersecret"], settings()).await;
    let stored = String::from_utf8(fake.stored()).unwrap();
    assert_eq!(stored, "token=[MASKED]; again [MASKED] sup");
    assert_eq!(summary.size, stored.len() as u64);
}

#[tokio::test]
async fn backpressure_stops_reading_output_while_unacknowledged() {
    let fake = FakeLog::with_faults(&[Fault::Unavailable; 3]);
    let dir = tempfile::tempdir().unwrap();
    let mut stream = LogStream::new(
        dir.path().join("b.log"),
        Vec::new(),
        ShipperSettings {
            max_unacked: 16,
            ..settings()
        },
    );
    let sink = stream.sink();
    let acked = stream.acked();
    let fenced = CancellationToken::new();
    let producer = async {
        // While the coordinator is down, the writer stops reading after
        // 16 unacked bytes, so the channel (64 slots) fills up.
        let mut refused = false;
        for _ in 0..200 {
            if sink.try_send(Bytes::from_static(b"0123456789")).is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "output kept being read without acknowledgement");
        assert!(*acked.borrow() <= 16);
        drop(sink);
    };
    let (summary, ()) = tokio::join!(stream.run(&fake, &fenced), producer);
    let summary = summary.unwrap();
    assert_eq!(
        summary.size, summary.written,
        "all spooled bytes shipped at the end"
    );
    assert_eq!(fake.stored().len() as u64, summary.size);
}

#[tokio::test]
async fn fence_stops_shipping() {
    let fake = FakeLog::default();
    let dir = tempfile::tempdir().unwrap();
    let mut stream = LogStream::new(dir.path().join("f.log"), Vec::new(), settings());
    let sink = stream.sink();
    let fenced = CancellationToken::new();
    fenced.cancel();
    let producer = async {
        sink.send(Bytes::from_static(b"late")).await.unwrap();
        drop(sink);
    };
    let (summary, ()) = tokio::join!(stream.run(&fake, &fenced), producer);
    assert!(summary.unwrap().fenced);
    assert!(fake.stored().is_empty());
}

/// Sends `chunks` through a stream counting into `backlog`.
async fn ship_counted(endpoint: &FakeLog, chunks: &[&str], backlog: &SpoolBacklog) -> LogSummary {
    let dir = tempfile::tempdir().unwrap();
    let mut stream = LogStream::new(dir.path().join("a.log"), Vec::new(), settings())
        .with_backlog(backlog.clone());
    let sink = stream.sink();
    let fenced = CancellationToken::new();
    let producer = async move {
        for chunk in chunks {
            sink.send(Bytes::copy_from_slice(chunk.as_bytes()))
                .await
                .unwrap();
        }
    };
    let (summary, ()) = tokio::join!(stream.run(endpoint, &fenced), producer);
    summary.unwrap()
}

#[tokio::test]
async fn the_backlog_empties_once_streams_end_acknowledged_or_cut() {
    let backlog = SpoolBacklog::default();
    let fake = FakeLog::with_faults(&[Fault::Unavailable, Fault::LoseResponse]);
    let summary = ship_counted(&fake, &["hello ", "world\n"], &backlog).await;
    assert_eq!(summary.size, 12);
    assert_eq!(backlog.bytes(), 0);

    // Cut at a limit: what was never acknowledged leaves the backlog too.
    let limited = FakeLog {
        limit: Some(8),
        ..FakeLog::default()
    };
    let summary = ship_counted(&limited, &["0123456789", "abcdef"], &backlog).await;
    assert!(summary.truncated);
    assert_eq!(backlog.bytes(), 0);
}
