//! The agent's life: prepare the work dir (cleaning up after a crashed
//! predecessor), load or obtain credentials, build the executor, keep the
//! session open, and on shutdown stop taking offers, give running jobs a grace
//! period, cancel the rest, and close the session once they have reported.
//! Beside the session runs the lease watchdog, which stops any attempt whose
//! lease the coordinator has not been seen to renew in time.

use crate::client::{self, GrpcApi};
use crate::config::{Config, ExecutorKind};
use crate::credentials::{self, Credentials, CredentialsError};
use crate::executor::docker::DockerExecutor;
use crate::executor::shell::ShellExecutor;
use crate::executor::Executor;
use crate::job_runner::RunnerContext;
use crate::lease::{self, Leases};
use crate::log_stream::ShipperSettings;
use crate::metrics::AgentMetrics;
use crate::registry::{Registry, StopCause};
use crate::session::{self, SessionSettings};
use crate::tasks::Tasks;
use crate::workspace::WorkDir;
use osprey_proto::v1::RegisterRequest;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Extra time after the kill grace for canceled jobs to report their end.
const REPORT_GRACE: Duration = Duration::from_secs(30);
/// How long registration waits for an unreachable coordinator.
const REGISTER_RETRY_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("work dir {path}: {source}")]
    WorkDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] client::ConnectError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Docker(#[from] crate::executor::docker::DockerError),
    #[error("cannot find the agent binary for the job guard: {0}")]
    Guard(std::io::Error),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Registers unless credentials are stored; returns them.
pub async fn register(config: &Config) -> Result<Credentials, AgentError> {
    std::fs::create_dir_all(&config.work_dir).map_err(|source| AgentError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let channel = client::channel(&config.url, config.tls_ca.as_deref())?;
    let request = RegisterRequest {
        registration_token: String::new(),
        name: config.name.clone(),
        tags: config.tags.clone(),
        run_untagged: config.run_untagged,
        executor: config.executor.as_str().to_owned(),
        concurrency: config.concurrency,
    };
    let credentials = credentials::load_or_register(
        &config.work_dir,
        config.registration_token.as_deref(),
        |token| async move {
            let request = RegisterRequest {
                registration_token: token,
                ..request
            };
            let credentials = register_with_retry(channel, request).await?;
            tracing::info!(agent_id = %credentials.agent_id, "registered with coordinator");
            Ok(credentials)
        },
    )
    .await?;
    Ok(credentials)
}

/// Calls `Register`, retrying while the coordinator is unreachable (an agent
/// may start before it) for up to [`REGISTER_RETRY_LIMIT`]. Only `UNAVAILABLE`
/// is retried: the call is not twice-safe, and that code almost always means
/// the request never arrived.
async fn register_with_retry(
    channel: tonic::transport::Channel,
    request: RegisterRequest,
) -> Result<Credentials, CredentialsError> {
    let started = tokio::time::Instant::now();
    let mut backoff = crate::retry::backoff();
    loop {
        match client::register(channel.clone(), request.clone()).await {
            Ok(credentials) => return Ok(credentials),
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && started.elapsed() < REGISTER_RETRY_LIMIT =>
            {
                let delay = crate::retry::next_delay(&mut backoff);
                tracing::warn!(error = %status.message(), ?delay, "coordinator unreachable, retrying registration");
                tokio::time::sleep(delay).await;
            }
            Err(status) => {
                return Err(CredentialsError::Register(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                )))
            }
        }
    }
}

/// Runs the agent until `shutdown` fires and its jobs have ended.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    let work = WorkDir::create(&config.work_dir).map_err(|source| AgentError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let leftovers = work.reap_leftovers();
    if !leftovers.is_empty() {
        tracing::warn!(
            count = leftovers.len(),
            "killed and removed jobs of an earlier agent process"
        );
    }
    // Bound before anything else starts: a bad address fails the start.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let credentials = register(&config).await?;
    let channel = client::channel(&config.url, config.tls_ca.as_deref())?;
    let client = client::authenticated(channel, &credentials)?;
    let registry = Arc::new(Registry::new(config.concurrency));
    let executor = build_executor(&config, &credentials, &registry).await?;
    let leases = Arc::new(Leases::default());
    let metrics = Arc::new(AgentMetrics::new());
    let mut git = crate::git_cache::GitCache::new(work.mirrors());
    let other_user = config.executor == ExecutorKind::Shell
        && config.user.as_ref().is_some_and(|user| user.is_other());
    if other_user {
        git = git.without_dir_reuse();
    }
    let ctx = Arc::new(RunnerContext {
        api: Arc::new(GrpcApi {
            client: client.clone(),
        }),
        executor,
        work,
        registry: registry.clone(),
        agent_name: config.name.clone(),
        tags: config.tags.clone(),
        executor_name: config.executor.as_str(),
        job_timeout: config.job_timeout,
        max_job_timeout: config.max_job_timeout,
        kill_grace: config.kill_grace,
        shipper: ShipperSettings::default(),
        leases: leases.clone(),
        metrics: metrics.clone(),
        git,
    });
    let settings = SessionSettings {
        agent_token: credentials.agent_token.clone(),
        tags: config.tags.clone(),
        run_untagged: config.run_untagged,
        concurrency: config.concurrency,
    };
    tracing::info!(
        agent_id = %credentials.agent_id,
        name = %config.name,
        executor = config.executor.as_str(),
        concurrency = config.concurrency,
        "agent started"
    );
    let jobs = Tasks::new();
    let draining = CancellationToken::new();
    let close = CancellationToken::new();
    // Ends with the session (`close`), after the jobs have reported.
    let watchdog = lease::watchdog(leases, registry.clone(), config.kill_grace, close.clone());
    let session = session::run(
        client,
        settings,
        ctx,
        jobs.clone(),
        draining.clone(),
        close.clone(),
    );
    let lifecycle = async {
        shutdown.cancelled().await;
        draining.cancel();
        tracing::info!(running = registry.all().len(), grace = ?config.shutdown_grace, "shutting down: no new jobs");
        if tokio::time::timeout(config.shutdown_grace, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = registry.all().len(),
                "grace period over: stopping running jobs"
            );
            for job in registry.all() {
                job.stop(StopCause::Shutdown);
            }
            let limit = config.kill_grace + REPORT_GRACE;
            if tokio::time::timeout(limit, jobs.wait()).await.is_err() {
                tracing::error!("jobs did not finish reporting; leaving them to their lease");
            }
        }
        close.cancel();
    };
    // Serves until the session closes, so the last jobs' ends are scraped.
    let metrics_server = async {
        if let Some(listener) = metrics_listener {
            if let Ok(addr) = listener.local_addr() {
                // On stdout, as the coordinator's address: port 0 is told here.
                println!("osprey-agent metrics listening on {addr}");
                tracing::info!(%addr, "serving metrics");
            }
            crate::metrics::serve(listener, metrics, registry.clone(), close.clone()).await;
        }
    };
    tokio::join!(session, lifecycle, watchdog, metrics_server);
    tracing::info!("agent stopped");
    Ok(())
}

async fn build_executor(
    config: &Config,
    credentials: &Credentials,
    registry: &Arc<Registry>,
) -> Result<Arc<dyn Executor>, AgentError> {
    // Every job runs beside a guard, this binary, that ends it if the agent dies.
    let guard = std::env::current_exe().map_err(AgentError::Guard)?;
    match config.executor {
        ExecutorKind::Shell => {
            let registry = registry.clone();
            let hook = Arc::new(move |job_id: osprey_shared::JobId, pgid: Option<i32>| {
                if let Some(job) = registry.by_job(job_id.0) {
                    job.set_pgid(pgid);
                }
            });
            let mut executor = ShellExecutor::new()
                .with_process_hook(hook)
                .with_guard(guard);
            if let Some(user) = config.user.clone() {
                tracing::info!(user = %user.name, uid = user.uid, "jobs run as another user");
                executor = executor.with_user(user);
            }
            Ok(Arc::new(executor))
        }
        ExecutorKind::Docker => {
            let executor = DockerExecutor::new(config.docker.clone())?
                .with_agent_name(config.name.clone())
                .with_agent_id(credentials.agent_id.clone())
                .with_guard(guard);
            match executor.check_engine().await {
                Ok(version) => tracing::info!(%version, "docker engine reachable"),
                Err(err) => tracing::warn!(error = %err, "docker engine not reachable yet"),
            }
            if let Err(err) = executor.reap_orphans().await {
                tracing::warn!(error = %err, "cannot remove containers of an earlier agent process");
            }
            Ok(Arc::new(executor))
        }
    }
}
