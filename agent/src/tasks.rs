//! The one way the agent starts long-lived tasks: named, tracked by a
//! [`TaskTracker`] so shutdown can wait for them. Stopping is each task's own
//! business (it watches a `CancellationToken` it was given).

use std::future::Future;
use tokio_util::task::TaskTracker;

/// Spawns named, tracked tasks.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task`; `name` shows in the logs when it ends.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(async move {
            task.await;
            tracing::debug!(task = name, "task ended");
        });
    }

    /// Number of tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Waits until every task spawned so far (and later) has ended.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }
}
