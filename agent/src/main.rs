//! `osprey-agent`: parses the command line, sets up logging and signals, and
//! hands over to the library.

use anyhow::Context;
use clap::Parser;
use osprey_agent::config::{Cli, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run(args) => {
            let config = args.load().context("invalid configuration")?;
            let shutdown = CancellationToken::new();
            let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
            let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
            let agent = async {
                let result = osprey_agent::agent::run(config, shutdown.clone()).await;
                // Ends the signal watch when the agent stops on its own (an error).
                shutdown.cancel();
                result
            };
            let signals = async {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                    _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                    () = shutdown.cancelled() => {}
                }
                shutdown.cancel();
            };
            let (result, ()) = tokio::join!(agent, signals);
            result?;
            Ok(())
        }
        Command::Register(args) => {
            let config = args.load().context("invalid configuration")?;
            let credentials = osprey_agent::agent::register(&config).await?;
            println!("registered agent {}", credentials.agent_id);
            Ok(())
        }
        Command::Exec(args) => {
            let code = osprey_agent::exec::run(args).await?;
            std::process::exit(code);
        }
    }
}
