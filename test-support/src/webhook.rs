//! An HTTP server on loopback that receives webhooks for tests: it answers
//! each POST with the next status of a script (then 200 forever) and records
//! every request. Runs in the test's tokio runtime; stopped when the handle
//! drops.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// With the answer it was given.
    pub status: u16,
    pub received_at: SystemTime,
}

impl ReceivedRequest {
    /// A header's value as text (`None` when absent or not UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

struct Shared {
    answers: Mutex<VecDeque<u16>>,
    /// Every request so far; a watch so `wait_for` wakes on each one.
    requests: watch::Sender<Vec<ReceivedRequest>>,
}

/// A running webhook receiver.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on a free loopback port. POSTs get `answers` in order (a
    /// non-2xx answer's body is `answer N`), then 200; other methods get 405
    /// and are recorded too.
    pub async fn start(answers: Vec<u16>) -> anyhow::Result<WebhookReceiver> {
        let shared = Arc::new(Shared {
            answers: Mutex::new(answers.into()),
            requests: watch::Sender::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Aborted on drop; it serves nothing that outlives the test.
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests.borrow().clone()
    }

    /// Waits until at least `count` requests arrived; returns them all.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedRequest>> {
        let mut requests = self.shared.requests.subscribe();
        let seen = tokio::time::timeout(timeout, requests.wait_for(|seen| seen.len() >= count))
            .await
            .ok()
            .and_then(|seen| seen.ok().map(|seen| seen.clone()));
        seen.ok_or_else(|| {
            anyhow::anyhow!(
                "the webhook receiver got {} requests, not {count}, within {timeout:?}",
                self.shared.requests.borrow().len()
            )
        })
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let status = if method == Method::POST {
        let next = shared.answers.lock().expect("answers lock").pop_front();
        next.unwrap_or(200)
    } else {
        405
    };
    shared.requests.send_modify(|requests| {
        requests.push(ReceivedRequest {
            method,
            uri,
            headers,
            body,
            status,
            received_at: SystemTime::now(),
        })
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let answer = if code.is_success() {
        String::new()
    } else {
        format!("answer {status}")
    };
    (code, answer)
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
