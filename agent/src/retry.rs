//! Retrying job-scoped calls: jittered exponential backoff for transient
//! failures, stop at once on a fence. One policy for status, seal, upload and
//! download, so a coordinator restart looks the same to all of them.

use crate::client::CallError;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The agent's backoff: 200 ms doubling to 5 s, ±50 % jitter, never giving up.
pub fn backoff() -> ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(200))
        .with_multiplier(2.0)
        .with_randomization_factor(0.5)
        .with_max_interval(Duration::from_secs(5))
        .with_max_elapsed_time(None)
        .build()
}

/// The next delay of `backoff` (its cap when it has none).
pub fn next_delay(backoff: &mut ExponentialBackoff) -> Duration {
    backoff.next_backoff().unwrap_or(backoff.max_interval)
}

/// Why a retried call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GaveUp {
    /// The attempt is not ours any more (stale lease, or fenced meanwhile).
    #[error("attempt fenced")]
    Fenced,
    /// Refused for good, or still failing after `max_elapsed`.
    #[error("{0}")]
    Failed(CallError),
}

/// Calls `call` until it succeeds, retrying transient failures with backoff
/// for up to `max_elapsed` (forever for `None`). A fence answer fires `fenced`.
pub async fn with_backoff<T, F, Fut>(
    what: &str,
    fenced: &CancellationToken,
    max_elapsed: Option<Duration>,
    mut call: F,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let started = tokio::time::Instant::now();
    let mut backoff = backoff();
    loop {
        if fenced.is_cancelled() {
            return Err(GaveUp::Fenced);
        }
        let result = tokio::select! {
            result = call() => result,
            () = fenced.cancelled() => return Err(GaveUp::Fenced),
        };
        match result {
            Ok(value) => return Ok(value),
            Err(CallError::Fenced(message)) => {
                tracing::warn!(call = what, %message, "attempt fenced by coordinator");
                fenced.cancel();
                return Err(GaveUp::Fenced);
            }
            Err(CallError::Transient(message))
                if max_elapsed.is_none_or(|max| started.elapsed() < max) =>
            {
                let delay = next_delay(&mut backoff);
                tracing::debug!(call = what, %message, ?delay, "call failed, retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = fenced.cancelled() => return Err(GaveUp::Fenced),
                }
            }
            Err(error) => return Err(GaveUp::Failed(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retries_transient_then_stops_on_fence() {
        let fenced = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let value = with_backoff("t", &fenced, None, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(CallError::Transient("down".into())),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(value, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let result: Result<(), _> = with_backoff("t", &fenced, None, || async {
            Err(CallError::Fenced("stale lease".into()))
        })
        .await;
        assert_eq!(result, Err(GaveUp::Fenced));
        assert!(fenced.is_cancelled());
    }

    #[tokio::test]
    async fn gives_up_after_max_elapsed_or_refusal() {
        let fenced = CancellationToken::new();
        let result: Result<(), _> =
            with_backoff("t", &fenced, Some(Duration::from_millis(500)), || async {
                Err(CallError::Transient("down".into()))
            })
            .await;
        assert!(matches!(
            result,
            Err(GaveUp::Failed(CallError::Transient(_)))
        ));
        let result: Result<(), _> = with_backoff("t", &fenced, None, || async {
            Err(CallError::Refused("bad".into()))
        })
        .await;
        assert!(matches!(result, Err(GaveUp::Failed(CallError::Refused(_)))));
        assert!(!fenced.is_cancelled());
    }

    #[tokio::test]
    async fn a_corrupt_download_is_not_retried() {
        let fenced = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_backoff("t", &fenced, None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            crate::client::check_downloaded(Some((4, "ab".repeat(32))), 4, &"cd".repeat(32))
        })
        .await;
        assert!(
            matches!(result, Err(GaveUp::Failed(CallError::Corrupt(_)))),
            "{result:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
