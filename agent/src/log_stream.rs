//! A job's log on its way to the coordinator. Output is masked, appended to an
//! on-disk spool (`WORK_DIR/spool/<attempt_id>.log`) as it arrives, and a
//! shipper sends the unacknowledged bytes with `AppendLog` at byte offsets.
//! Nothing is dropped before the coordinator acknowledges it: when the
//! unacknowledged backlog passes a cap the writer stops reading the job's
//! output (backpressure). The spool keeps every byte until the attempt ends, so
//! the shipper can resend from any `committed_offset` and the seal digest is
//! computed from the file.
//!
//! The writer and the shipper are one future, [`LogStream::run`], that the job
//! runner drives next to the job; it ends once the output is closed and every
//! byte is acknowledged (or shipping stopped on a limit or a fence).

use crate::client::{AppendReply, CallError};
use crate::executor::OutputSink;
use bytes::Bytes;
use futures::future::BoxFuture;
use osprey_proto::v1::AppendOutcome;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use crate::mask::{Masker, MASK};

/// Tuning of the shipper.
#[derive(Debug, Clone, Copy)]
pub struct ShipperSettings {
    /// How long bytes wait for more before they are sent, when idle.
    pub batch_delay: Duration,
    /// Largest `AppendLog` chunk; a full chunk is sent without waiting.
    pub max_chunk: usize,
    /// Unacknowledged bytes above which output stops being read.
    pub max_unacked: u64,
}

impl Default for ShipperSettings {
    fn default() -> Self {
        Self {
            batch_delay: Duration::from_millis(50),
            max_chunk: 64 * 1024,
            max_unacked: 256 * 1024 * 1024,
        }
    }
}

/// Log bytes spooled and not yet acknowledged, over every stream that
/// shares it (the agent's metrics read it). Each stream adds what it
/// writes, takes off what is acknowledged, and at its end what will never
/// be (a limit or a fence stopped shipping).
#[derive(Debug, Clone, Default)]
pub struct SpoolBacklog(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl SpoolBacklog {
    pub fn bytes(&self) -> u64 {
        u64::try_from(self.0.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn add(&self, bytes: u64) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.0
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: u64) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.0
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The log endpoint of one attempt (`AppendLog` with its fencing triple bound).
pub trait LogEndpoint: Send + Sync {
    fn append(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<AppendReply, CallError>>;
}

/// How the log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// Bytes the coordinator accepted (what to seal).
    pub size: u64,
    /// Bytes the job printed, after masking.
    pub written: u64,
    /// Shipping stopped on `RESOURCE_EXHAUSTED`.
    pub truncated: bool,
    /// The attempt was fenced while shipping: report nothing more.
    pub fenced: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct WriterState {
    written: u64,
    closed: bool,
    /// The writer could not write the spool: ship what is there and stop.
    failed: bool,
}

/// One attempt's log stream: a sink for output and the future that spools and ships it.
pub struct LogStream {
    path: PathBuf,
    output: mpsc::Receiver<Bytes>,
    sink: Option<OutputSink>,
    masker: Masker,
    settings: ShipperSettings,
    acked: watch::Sender<u64>,
    backlog: SpoolBacklog,
}

impl LogStream {
    /// A stream spooling to `path`, masking `masked_values`.
    pub fn new(path: PathBuf, masked_values: Vec<String>, settings: ShipperSettings) -> Self {
        let (sink, output) = mpsc::channel(64);
        Self {
            path,
            output,
            sink: Some(sink),
            masker: Masker::new(masked_values),
            settings,
            acked: watch::Sender::new(0),
            backlog: SpoolBacklog::default(),
        }
    }

    /// Counts this stream's unacknowledged bytes in `backlog` too.
    pub fn with_backlog(mut self, backlog: SpoolBacklog) -> Self {
        self.backlog = backlog;
        self
    }

    /// Where job output goes. The stream ends once every sink is dropped.
    pub fn sink(&mut self) -> OutputSink {
        self.sink.clone().unwrap_or_else(|| mpsc::channel(1).0)
    }

    /// Offset up to which the coordinator acknowledged the log (for `Hello`
    /// and heartbeats).
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    /// Spools and ships until the output is closed and shipped. `fenced` stops
    /// shipping at once (and is fired on a stale lease).
    pub async fn run<E: LogEndpoint>(
        mut self,
        endpoint: &E,
        fenced: &CancellationToken,
    ) -> Result<LogSummary, LogError> {
        self.sink = None;
        let spool_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| LogError::Spool { path, source }
        };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&self.path)
            .await
            .map_err(spool_err(&self.path))?;
        let reader = tokio::fs::File::open(&self.path)
            .await
            .map_err(spool_err(&self.path))?;
        let (state_tx, state_rx) = watch::channel(WriterState::default());
        let stop_writing = CancellationToken::new();
        let writer = write_spool(
            file,
            self.output,
            self.masker,
            state_tx,
            Unacked {
                acked: self.acked.subscribe(),
                max: self.settings.max_unacked,
                backlog: &self.backlog,
            },
            stop_writing.clone(),
        );
        let shipper = Shipper {
            endpoint,
            reader,
            state: state_rx,
            acked: &self.acked,
            backlog: &self.backlog,
            settings: self.settings,
            fenced,
        };
        let shipped = async {
            let summary = shipper.run().await;
            // Shipping is over (limit or fence): the job goes on, its output is dropped.
            stop_writing.cancel();
            summary
        };
        let (written, summary) = tokio::join!(writer, shipped);
        // What was not acknowledged by now never will be.
        self.backlog
            .sub(written.saturating_sub(*self.acked.borrow()));
        Ok(LogSummary { written, ..summary })
    }
}

/// What the writer knows of the bytes not yet acknowledged.
struct Unacked<'a> {
    acked: watch::Receiver<u64>,
    /// Above this many the writer holds back.
    max: u64,
    /// Where written bytes are counted (the shipper takes acknowledged ones off).
    backlog: &'a SpoolBacklog,
}

/// Appends masked output to the spool, holding back while too much is
/// unacknowledged. Returns the bytes written.
async fn write_spool(
    mut file: tokio::fs::File,
    mut output: mpsc::Receiver<Bytes>,
    mut masker: Masker,
    state: watch::Sender<WriterState>,
    mut unacked: Unacked<'_>,
    stop_writing: CancellationToken,
) -> u64 {
    let mut written = 0u64;
    let mut failed = false;
    loop {
        // Backpressure: not reading `output` makes the job block on its pipe.
        while !stop_writing.is_cancelled() && written - *unacked.acked.borrow() > unacked.max {
            tokio::select! {
                changed = unacked.acked.changed() => if changed.is_err() { break },
                () = stop_writing.cancelled() => {}
            }
        }
        let (chunk, last) = match output.recv().await {
            Some(chunk) => (masker.push(&chunk), false),
            None => (masker.finish(), true),
        };
        if !stop_writing.is_cancelled() && !failed && !chunk.is_empty() {
            let wrote = async {
                file.write_all(&chunk).await?;
                file.flush().await
            };
            match wrote.await {
                Ok(()) => {
                    written += chunk.len() as u64;
                    unacked.backlog.add(chunk.len() as u64);
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot write log spool; the rest of the output is lost");
                    failed = true;
                }
            }
            state.send_modify(|s| {
                s.written = written;
                s.failed = failed;
            });
        }
        if last {
            state.send_modify(|s| s.closed = true);
            return written;
        }
    }
}

struct Shipper<'a, E> {
    endpoint: &'a E,
    reader: tokio::fs::File,
    state: watch::Receiver<WriterState>,
    acked: &'a watch::Sender<u64>,
    backlog: &'a SpoolBacklog,
    settings: ShipperSettings,
    fenced: &'a CancellationToken,
}

impl<E: LogEndpoint> Shipper<'_, E> {
    async fn run(mut self) -> LogSummary {
        let mut next = 0u64;
        let mut retry = crate::retry::backoff();
        let summary = |size, truncated, fenced| LogSummary {
            size,
            written: 0,
            truncated,
            fenced,
        };
        loop {
            if self.fenced.is_cancelled() {
                return summary(next, false, true);
            }
            let state = *self.state.borrow_and_update();
            if next >= state.written {
                if state.closed || state.failed {
                    return summary(next, false, false);
                }
                tokio::select! {
                    _ = self.state.changed() => {}
                    () = self.fenced.cancelled() => {}
                }
                // Idle until now: give the job a moment to print more.
                self.wait_for_batch(next).await;
                continue;
            }
            let len = (state.written - next).min(self.settings.max_chunk as u64);
            let data = match self.read(next, len).await {
                Ok(data) => data,
                Err(err) => {
                    tracing::error!(error = %err, "cannot read log spool; log cut short");
                    return summary(next, true, false);
                }
            };
            let reply = tokio::select! {
                reply = self.endpoint.append(next, data) => reply,
                () = self.fenced.cancelled() => continue,
            };
            match reply {
                Ok(AppendReply {
                    committed_offset,
                    outcome,
                }) => {
                    retry = crate::retry::backoff();
                    if outcome == AppendOutcome::Gap {
                        tracing::debug!(offset = next, committed_offset, "log gap, resending");
                    }
                    // On every outcome the coordinator holds exactly the bytes
                    // before `committed_offset`: continue from there.
                    next = committed_offset.min(state.written);
                    let before = self.acked.send_replace(next);
                    self.backlog.sub(next.saturating_sub(before));
                }
                Err(CallError::Exhausted(message)) => {
                    tracing::warn!(%message, accepted = next, "log limit reached; output no longer shipped");
                    return summary(next, true, false);
                }
                Err(CallError::Fenced(message)) => {
                    tracing::warn!(%message, "log append refused: attempt fenced");
                    self.fenced.cancel();
                    return summary(next, false, true);
                }
                Err(error) => {
                    let delay = crate::retry::next_delay(&mut retry);
                    tracing::debug!(%error, ?delay, "log append failed, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.fenced.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Waits until a full chunk is pending, the output closes, or the batch delay passes.
    async fn wait_for_batch(&mut self, next: u64) {
        let deadline = tokio::time::Instant::now() + self.settings.batch_delay;
        loop {
            let state = *self.state.borrow();
            if state.closed
                || state.written - next.min(state.written) >= self.settings.max_chunk as u64
            {
                return;
            }
            tokio::select! {
                changed = self.state.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(deadline) => return,
                () = self.fenced.cancelled() => return,
            }
        }
    }

    async fn read(&mut self, offset: u64, len: u64) -> std::io::Result<Bytes> {
        self.reader.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut data = vec![0; len as usize];
        self.reader.read_exact(&mut data).await?;
        Ok(data.into())
    }
}

#[cfg(test)]
#[path = "log_stream_tests.rs"]
mod tests;
