//! `osprey-agent`: parses the command line, sets up logging and signals, and
//! hands over to the library. The hidden `guard` mode (see `guard.rs`) runs
//! before any runtime exists: it may switch users, which must apply to the
//! whole process.

use anyhow::Context;
use clap::Parser;
use osprey_agent::config::{Cli, Command, LogFormat};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let Cli {
        log_format,
        command,
    } = Cli::parse();
    // A shell guard's stderr is the job's log: nothing of the agent goes there.
    if !matches!(&command, Command::Guard(args) if args.writes_job_output()) {
        init_tracing(log_format);
    }
    if let Command::Guard(args) = command {
        std::process::exit(osprey_agent::guard::main(args));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(command))
}

/// Logs to stderr as `format` says, filtered by `RUST_LOG` (default: info).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
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
        // Handled before the runtime starts.
        Command::Guard(args) => std::process::exit(osprey_agent::guard::main(args)),
    }
}
