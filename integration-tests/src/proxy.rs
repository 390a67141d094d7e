//! A TCP proxy on loopback that can freeze: while frozen it forwards nothing
//! in either direction but keeps every connection open (no FIN, no RST), so
//! the peers see a network partition, not a closed connection. Bytes already
//! read when the freeze starts are held and delivered after `thaw`.
//!
//! Connections made while frozen are accepted (the kernel completes the
//! handshake anyway) and frozen like the others. The proxy and its
//! connections stop when it is dropped.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A freezing proxy in front of one upstream address.
pub struct FreezingProxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FreezingProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on loopback");
        let addr = listener.local_addr().expect("the proxy's address");
        let (frozen, watcher) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, upstream, watcher));
        Self { addr, frozen, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for an agent's `--url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops forwarding in both directions; connections stay open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, held bytes first.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts the pumps.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, frozen: watch::Receiver<bool>) {
    let mut pumps = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let Ok(server) = TcpStream::connect(upstream).await else {
            // Upstream down: dropping the client looks like a refused connection.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        pumps.spawn(pump(client_read, server_write, frozen.clone()));
        pumps.spawn(pump(server_read, client_write, frozen.clone()));
        // Reap finished pumps so a long test does not accumulate them.
        while pumps.try_join_next().is_some() {}
    }
}

/// Copies `from` to `to` while not frozen; ends (half-closing `to`) at EOF.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Frozen while waiting for bytes: stop reading (reads are cancel-safe).
            _ = frozen.wait_for(|frozen| *frozen) => continue,
        };
        let count = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(count) => count,
        };
        // Bytes read just before a freeze wait for the thaw.
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..count]).await.is_err() {
            return;
        }
    }
}
