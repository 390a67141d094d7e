//! Serving: gRPC and the HTTP API on one listener (TLS with rustls when
//! configured), plus the housekeeping task, until the shutdown token fires.

use crate::config::ServerConfig;
use crate::core::Core;
use crate::grpc::AgentGrpc;
use crate::tasks::Tasks;
use anyhow::Context;
use osprey_proto::v1::agent_service_server::AgentServiceServer;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// How often expired offers and leases are looked for.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// How often expired artifacts are looked for.
const ARTIFACT_EXPIRY_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait for open streams to end after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the coordinator on a bound listener until `shutdown` is cancelled.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let core = Core::open(config.settings.clone())
        .await
        .context("opening the coordinator state")?;
    let tasks = Tasks::new(shutdown.clone());

    let housekeeping_core = core.clone();
    let housekeeping_stop = tasks.token();
    // Expires offers and leases every tick; stops with the shutdown token.
    tasks.spawn("housekeeping", async move {
        let mut ticker = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            tokio::select! {
                _ = housekeeping_stop.cancelled() => break,
                _ = ticker.tick() => {
                    if let Err(error) = housekeeping_core.expire().await {
                        tracing::error!(error = %error, "housekeeping failed");
                    }
                    if let Err(error) = housekeeping_core.auto_stop().await {
                        tracing::error!(error = %error, "stopping environments failed");
                    }
                }
            }
        }
    });

    let notifier_core = core.clone();
    let notifier_stop = tasks.token();
    // Delivers the outbox's notifications; stops with the shutdown token.
    tasks.spawn("notifier", async move {
        notifier_core.run_notifier(notifier_stop).await;
    });

    let expiry_core = core.clone();
    let expiry_stop = tasks.token();
    // Deletes expired artifacts every interval; stops with the shutdown token.
    tasks.spawn("artifact-expiry", async move {
        let mut ticker = tokio::time::interval(ARTIFACT_EXPIRY_INTERVAL);
        loop {
            tokio::select! {
                _ = expiry_stop.cancelled() => break,
                _ = ticker.tick() => {
                    if let Err(error) = expiry_core.expire_artifacts().await {
                        tracing::error!(error = %error, "artifact expiry failed");
                    }
                }
            }
        }
    });

    let trigger_core = core.clone();
    let trigger_stop = tasks.token();
    // Pushes, polls and schedules become pipelines; stops with the shutdown token.
    tasks.spawn("triggers", async move {
        trigger_core.run_triggers(trigger_stop).await;
    });

    let grpc = AgentServiceServer::new(AgentGrpc::new(
        core.clone(),
        tasks.clone(),
        config.max_artifact_bytes,
    ))
    .max_decoding_message_size(8 << 20);
    let routes = tonic::service::Routes::from(crate::http::router(core.clone())).add_service(grpc);
    let mut builder = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some((cert, key)) = &config.tls {
        let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .context("configuring TLS")?;
    }
    let address = listener.local_addr()?;
    let incoming = incoming(listener);
    let stop = shutdown.clone();
    let server = builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    println!("osprey-coordinator listening on {address}");
    tracing::info!(%address, tls = config.tls.is_some(), "coordinator ready");

    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.context("serving")?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("open streams did not end in time; stopping anyway");
        }
    }
    tasks.wait().await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// The listener's connections with Nagle's algorithm off. gRPC sessions and
/// the HTTP API share the listener, and both write small frames that must go
/// out now: with Nagle on, an offer for a pipeline's next stage waited for the
/// agent's delayed ACK (tens of milliseconds) behind the previous frame.
/// TLS, when configured, runs over these same sockets.
fn incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            // The connection still works, only slower: serve it anyway.
            tracing::warn!(error = %error, "setting TCP_NODELAY on an accepted connection");
        }
        Ok(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `run` serves from has Nagle off on every accepted socket.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = Box::pin(incoming(listener));
        for _ in 0..2 {
            let client = TcpStream::connect(address).await.unwrap();
            let accepted = incoming.next().await.unwrap().unwrap();
            assert!(
                accepted.nodelay().unwrap(),
                "TCP_NODELAY on the accepted socket"
            );
            drop(client);
        }
    }
}
