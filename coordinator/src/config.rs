//! Command line and configuration of `osprey-coordinator`, validated once.

use crate::artifact_store::ArtifactStoreConfig;
use crate::core::{CoreSettings, NotifySettings, SmtpUrl};
use crate::repo::policy::RepoPolicy;
use crate::repo::RepoSettings;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "osprey-coordinator",
    version,
    about = "The Osprey CI coordinator"
)]
pub struct Cli {
    /// How logs are written to stderr: `text` for people, `json` for
    /// collectors (one object per line).
    #[arg(
        long,
        env = "OSPREY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The format of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line, the event's fields at its top level.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC for agents and the HTTP API on one port.
    Serve(Box<ServeArgs>),
    /// Copy a stopped coordinator's whole state from one database to
    /// another, e.g. from its SQLite file to PostgreSQL.
    MigrateStore(MigrateStoreArgs),
    /// Make a new current key in the secrets key file (keeping the old ones
    /// for reading) and re-encrypt every stored variable and webhook secret
    /// with it. Run it with the coordinator stopped.
    RotateSecretsKey(RotateKeyArgs),
}

#[derive(Debug, clap::Args)]
pub struct RotateKeyArgs {
    #[arg(long, env = "OSPREY_DATA_DIR", default_value = "./osprey-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "OSPREY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Default: DATA_DIR/secrets.key.
    #[arg(long, env = "OSPREY_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateStoreArgs {
    /// The database to copy from, e.g. `sqlite://./osprey-data/osprey.db`.
    /// The coordinator using it must be stopped.
    #[arg(long)]
    pub from: String,
    /// The database to copy into, e.g. `postgres://osprey@db.example.com/osprey`:
    /// it gets the schema and must hold no pipeline and no agent.
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "OSPREY_LISTEN", default_value = "127.0.0.1:8710")]
    pub listen: SocketAddr,
    /// Where the SQLite database and artifacts live.
    #[arg(long, env = "OSPREY_DATA_DIR", default_value = "./osprey-data")]
    pub data_dir: PathBuf,
    /// Where the state lives: `postgres://USER@HOST/DB` for PostgreSQL, or
    /// `sqlite://PATH`. Default: SQLite at DATA_DIR/osprey.db.
    #[arg(long, env = "OSPREY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Secret agents present to register.
    #[arg(long, env = "OSPREY_REGISTRATION_TOKEN")]
    pub registration_token: String,
    /// Lease of a running job: an agent stops a job it could not renew for
    /// TTL - TTL/6; the coordinator fails it (`agent lost`) after TTL + TTL/6.
    /// See docs/ARCHITECTURE.md, "Leases: never two copies at once".
    #[arg(long, env = "OSPREY_LEASE_TTL_MS", default_value_t = 30_000)]
    pub lease_ttl_ms: u64,
    /// How often agents send heartbeats.
    #[arg(long, env = "OSPREY_HEARTBEAT_INTERVAL_MS", default_value_t = 5_000)]
    pub heartbeat_interval_ms: u64,
    /// An offer not accepted within this goes back to the queue.
    #[arg(long, env = "OSPREY_OFFER_TIMEOUT_MS", default_value_t = 5_000)]
    pub offer_timeout_ms: u64,
    /// Largest log of one job; output past it is refused.
    #[arg(long, env = "OSPREY_MAX_LOG_BYTES", default_value_t = 64 << 20)]
    pub max_log_bytes: u64,
    /// Largest artifact archive of one job.
    #[arg(long, env = "OSPREY_MAX_ARTIFACT_BYTES", default_value_t = 1 << 30)]
    pub max_artifact_bytes: u64,
    /// Grace between SIGTERM and SIGKILL when a job is canceled.
    #[arg(long, env = "OSPREY_CANCEL_GRACE_MS", default_value_t = 5_000)]
    pub cancel_grace_ms: u64,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "OSPREY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "OSPREY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// `CI_SERVER_URL` given to jobs (default: http(s)://LISTEN).
    #[arg(long, env = "OSPREY_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// Largest `.gitlab-ci.yml`, and largest included file (GitLab: 2 MB).
    #[arg(long, env = "OSPREY_MAX_PIPELINE_FILE_BYTES", default_value_t = 2 << 20)]
    pub max_pipeline_file_bytes: u64,
    /// Repository URLs the coordinator may read: glob patterns (`*` any
    /// text, `?` one character), e.g. `https://git.example.com/*`,
    /// `/srv/git/*`. Repeatable; replaces the default (https://, ssh:// and
    /// scp-like `user@host:path`; no local paths).
    #[arg(long = "repo-allow", env = "OSPREY_REPO_ALLOW", value_delimiter = ',')]
    pub repo_allow: Vec<String>,
    /// Where job artifacts and caches are kept: `file:///PATH` (a directory)
    /// or `s3://BUCKET/PREFIX` (endpoint, region and credentials from the
    /// `AWS_*` environment). Default: `file://DATA_DIR`.
    #[arg(long, env = "OSPREY_ARTIFACT_STORE")]
    pub artifact_store: Option<String>,
    /// Key file of the secret variables (XChaCha20-Poly1305 keys, one per
    /// line, the first current). Default: DATA_DIR/secrets.key, generated
    /// with mode 0600 on first start.
    #[arg(long, env = "OSPREY_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// File holding the admin API token. Default: DATA_DIR/admin.token,
    /// generated with mode 0600 on first start.
    #[arg(long, env = "OSPREY_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin API token itself (at least 16 characters).
    #[arg(long, env = "OSPREY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The SMTP server of e-mail notifications, in lettre's URL form:
    /// `smtps://user:pass@host:465`, `smtp://host:587?tls=required`,
    /// `smtp://host:25`. Without it, e-mail rules fail their deliveries.
    #[arg(long, env = "OSPREY_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The From address of e-mail notifications.
    #[arg(
        long,
        env = "OSPREY_SMTP_FROM",
        default_value = "Osprey <osprey@localhost>"
    )]
    pub smtp_from: String,
    /// Delay before the second try of a notification; each further try
    /// waits twice as long (at most an hour), for 24 hours.
    #[arg(long, env = "OSPREY_NOTIFY_RETRY_MS", default_value_t = 10_000)]
    pub notify_retry_ms: u64,
    /// Bearer token `GET /metrics` requires (at least 16 characters).
    /// Without it, only loopback peers and callers with the admin API
    /// token may scrape.
    #[arg(long, env = "OSPREY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub settings: CoreSettings,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_artifact_bytes: u64,
}

impl ServeArgs {
    /// Checks the values and builds the immutable config; `bound` is the
    /// address actually bound (port 0 resolved).
    pub fn validate(self, bound: SocketAddr) -> anyhow::Result<ServerConfig> {
        anyhow::ensure!(
            self.registration_token.len() >= 8,
            "--registration-token must be at least 8 characters"
        );
        anyhow::ensure!(
            self.heartbeat_interval_ms > 0 && self.heartbeat_interval_ms * 2 <= self.lease_ttl_ms,
            "--lease-ttl-ms must be at least twice --heartbeat-interval-ms"
        );
        anyhow::ensure!(
            self.max_pipeline_file_bytes > 0,
            "--max-pipeline-file-bytes must be positive"
        );
        let repo_allow: Vec<String> = self
            .repo_allow
            .into_iter()
            .map(|pattern| pattern.trim().to_owned())
            .filter(|pattern| !pattern.is_empty())
            .collect();
        let artifact_store = self
            .artifact_store
            .as_deref()
            .map(ArtifactStoreConfig::parse)
            .transpose()
            .context("--artifact-store")?;
        let admin_token = match (&self.admin_token_file, self.admin_token) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --admin-token-file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, token) => token,
        };
        let metrics_token = self.metrics_token.filter(|token| !token.is_empty());
        anyhow::ensure!(
            metrics_token.as_ref().is_none_or(|token| token.len() >= 16),
            "--metrics-token must be at least 16 characters"
        );
        let tls = self.tls_cert.zip(self.tls_key);
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(ServerConfig {
            settings: CoreSettings {
                database_url: self.database_url,
                data_dir: self.data_dir,
                registration_token: self.registration_token,
                lease_ttl: Duration::from_millis(self.lease_ttl_ms),
                heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
                offer_timeout: Duration::from_millis(self.offer_timeout_ms),
                max_log_bytes: self.max_log_bytes,
                cancel_grace: Duration::from_millis(self.cancel_grace_ms),
                server_url: self
                    .external_url
                    .unwrap_or_else(|| format!("{scheme}://{bound}")),
                repos: RepoSettings {
                    policy: RepoPolicy { allow: repo_allow },
                    max_pipeline_file_bytes: self.max_pipeline_file_bytes,
                },
                artifact_store,
                secrets_key_file: self.secrets_key_file,
                admin_token,
                metrics_token,
                notify: NotifySettings {
                    smtp_url: self.smtp_url.map(SmtpUrl),
                    smtp_from: self.smtp_from,
                    first_retry: Duration::from_millis(self.notify_retry_ms.max(1)),
                },
            },
            tls,
            max_artifact_bytes: self.max_artifact_bytes,
        })
    }
}
