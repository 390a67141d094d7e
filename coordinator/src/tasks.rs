//! Named long-lived tasks tied to one shutdown token and one tracker, so
//! shutdown can stop them all and wait for them.

use std::future::Future;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Spawns and tracks the coordinator's background tasks.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Tasks {
    pub fn new(token: CancellationToken) -> Self {
        Tasks {
            tracker: TaskTracker::new(),
            token,
        }
    }

    /// The token every task watches to stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a named task; it must stop when [`Tasks::token`] is cancelled.
    pub fn spawn<F>(&self, name: &'static str, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracing::debug!(task = name, "task started");
        self.tracker.spawn(future);
    }

    /// Stops accepting tasks and waits for the running ones.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}
