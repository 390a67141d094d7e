//! `osprey-coordinator`: parses the command line, sets up tracing and
//! signals, binds the listener and hands over to [`osprey_coordinator::server::run`].

use clap::Parser;
use osprey_coordinator::config::{Cli, Command, LogFormat};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed first: the subscriber's format is a flag. (A parse error is
    // printed by clap itself, before any log line could be.)
    let Cli {
        log_format,
        command,
    } = Cli::parse();
    init_tracing(log_format);
    match command {
        Command::Serve(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            let config = args.validate(listener.local_addr()?)?;
            let shutdown = CancellationToken::new();
            let signal_token = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown requested");
                signal_token.cancel();
            });
            osprey_coordinator::server::run(config, listener, shutdown).await
        }
        Command::MigrateStore(args) => {
            let report =
                osprey_coordinator::storage::migrate::migrate_store(&args.from, &args.to).await?;
            print!("{report}");
            Ok(())
        }
        Command::RotateSecretsKey(args) => {
            print!("{}", osprey_coordinator::rotate::rotate(args).await?);
            Ok(())
        }
    }
}

/// Logs to stderr as `format` says, filtered by `RUST_LOG` (default: info).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour only on a terminal: logs redirected to a file stay plain.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
