//! The coordinator's domain operations, over the store (truth) and the
//! dispatcher (in-memory cache). Transport adapters (`grpc`, `http`) call
//! these and do nothing else. Each submodule is the narrow face one role sees:
//! `session` for agent sessions, `attempts` for job-scoped agent calls, `cache`
//! for the caches of `cache:`, `pipelines` for the API; `offers` builds and
//! sends the offers the dispatcher reserves.

mod access;
mod attempts;
mod cache;
mod create;
mod deployments;
mod notify;
mod offers;
mod pipelines;
mod projects;
mod session;
mod triggers;
mod variables;

use crate::artifact_store::{ArtifactStore, ArtifactStoreConfig};
use crate::dispatch::{Dispatcher, QueuedJob};
use crate::error::{CoreError, CoreResult};
use crate::storage::prelude::*;
use crate::storage::{JobRow, SharedStore, SqlStore};
use osprey_shared::{JobId, JobStatus, PipelineId};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use access::Principal;
pub use attempts::{AttemptKey, OpenArtifact};
pub use cache::{CacheUpload, OpenCache};
pub use create::{project_facts, registry_variables, Before, PipelineRequest};
pub use deployments::deployment_view;
pub use pipelines::CreatedPipeline;
pub use session::SessionHandle;
pub use variables::ProjectContext;

/// The default key file of secret variables, under the data dir.
const SECRETS_KEY_FILE: &str = "secrets.key";

/// Where uploads are received and checked before they go to the artifact store.
const UPLOADS_DIR: &str = "uploads";

/// Settings of the domain, validated by the binary's config.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// The store's database (`None`: SQLite under `data_dir`).
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub registration_token: String,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub offer_timeout: Duration,
    pub max_log_bytes: u64,
    /// Time an agent has to confirm a cancellation before the job is marked canceled anyway.
    pub cancel_grace: Duration,
    /// `CI_SERVER_URL` for jobs.
    pub server_url: String,
    /// Which repositories may be read, and how large a pipeline file may be.
    pub repos: crate::repo::RepoSettings,
    /// Where archives and caches are kept; `None`: `file://DATA_DIR`, whose
    /// `artifacts/` and `cache/` are where they always were.
    pub artifact_store: Option<ArtifactStoreConfig>,
    /// The key file of secret variables (`None`: `DATA_DIR/secrets.key`,
    /// created 0600 on first start).
    pub secrets_key_file: Option<PathBuf>,
    /// The admin API token (`None`: read from, or generated into,
    /// `DATA_DIR/admin.token`).
    pub admin_token: Option<String>,
    /// The bearer token `/metrics` requires; `None`: loopback peers and
    /// the admin token may scrape (see `http::metrics`).
    pub metrics_token: Option<String>,
    pub notify: NotifySettings,
}

/// How notifications are sent.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub smtp_url: Option<SmtpUrl>,
    pub smtp_from: String,
    /// The delay before the second try; each further one doubles it.
    pub first_retry: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            smtp_url: None,
            smtp_from: "Osprey <osprey@localhost>".to_owned(),
            first_retry: Duration::from_secs(10),
        }
    }
}

/// An SMTP URL, which may hold a password: never shown by `Debug`.
#[derive(Clone)]
pub struct SmtpUrl(pub String);

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&osprey_shared::redact::url_credentials(&self.0))
    }
}

impl CoreSettings {
    /// The lease margin: the agent stops an unrenewed attempt this long
    /// before the TTL, the coordinator hands the job on no earlier than this
    /// long after it (docs/ARCHITECTURE.md, "Leases: never two copies at
    /// once"). A sixth of the TTL: 5 s of the default 30 s, enough for the
    /// agent's lease-loss kill grace (half the margin) and any clock-rate drift.
    pub fn lease_margin(&self) -> Duration {
        self.lease_ttl / 6
    }

    /// How long after receiving a renewal the coordinator keeps the lease.
    pub fn lease_hold(&self) -> Duration {
        self.lease_ttl + self.lease_margin()
    }

    /// An agent silent this long (no message on its session) gets no offers
    /// until it shows life again: about two heartbeats missed.
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat_interval * 2
    }
}

/// The coordinator's state and operations. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    /// Archives under `artifacts/`, caches under `cache/`.
    artifacts: Arc<dyn ArtifactStore>,
    dispatch: Mutex<Dispatcher>,
    settings: CoreSettings,
    /// Bumped whenever a log grows or a job changes status; followers wait on it.
    changes: watch::Sender<u64>,
    /// Encrypts and decrypts variables and webhook secrets.
    keyring: crate::secrets::Keyring,
    /// sha256 of the admin token.
    admin_sha256: String,
    /// Wakes the trigger loop (a push was recorded).
    triggers: tokio::sync::Notify,
    /// Slows down addresses that present bad API tokens.
    token_throttle: crate::throttle::FailureThrottle,
    /// Told of every store commit too (see `storage::observe`).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Core {
    /// Opens the store and rebuilds the in-memory state from it: pending jobs
    /// queued again, running jobs given a fresh lease so their agents can
    /// reconnect and carry on.
    pub async fn open(settings: CoreSettings) -> CoreResult<Core> {
        tokio::fs::create_dir_all(settings.data_dir.join(UPLOADS_DIR))
            .await
            .map_err(|error| CoreError::Internal(format!("creating data dir: {error}")))?;
        let url = match &settings.database_url {
            Some(url) => url.clone(),
            None => crate::storage::sqlite_url(&settings.data_dir),
        };
        let store: SharedStore = Arc::new(SqlStore::open(&url).await?);
        Core::open_with_store(settings, store).await
    }

    /// [`Core::open`] on a store the caller opened.
    pub async fn open_with_store(settings: CoreSettings, store: SharedStore) -> CoreResult<Core> {
        let artifacts = settings
            .artifact_store
            .clone()
            .unwrap_or_else(|| ArtifactStoreConfig::File(settings.data_dir.clone()))
            .open()
            .map_err(attempts::store_error)?;
        let key_file = settings
            .secrets_key_file
            .clone()
            .unwrap_or_else(|| settings.data_dir.join(SECRETS_KEY_FILE));
        let keyring = crate::secrets::Keyring::load_or_create(&key_file).map_err(|error| {
            CoreError::Internal(format!("secrets key {}: {error}", key_file.display()))
        })?;
        let admin_sha256 = crate::auth::token_hash(&access::admin_token(&settings)?);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        store.observe(metrics.clone());
        let core = Core {
            inner: Arc::new(Inner {
                store,
                artifacts,
                dispatch: Mutex::new(Dispatcher::new(settings.silence_limit())),
                settings,
                changes: watch::channel(0).0,
                keyring,
                admin_sha256,
                triggers: tokio::sync::Notify::new(),
                token_throttle: crate::throttle::FailureThrottle::new(Default::default()),
                metrics,
            }),
        };
        core.clean_upload_parts().await?;
        for pipeline in core.store().unfinished_pipelines().await? {
            core.store().advance(pipeline).await?;
        }
        // A fresh lease from now: the agents' own clocks count from renewals
        // they sent earlier, so they stop first if they cannot reconnect.
        let until = Instant::now() + core.settings().lease_hold();
        for job in core.store().jobs_with_status(JobStatus::Running).await? {
            if let (Some(agent), Some(attempt_id)) = (job.agent_id.clone(), job.attempt_id.clone())
            {
                core.dispatcher().add_lease(
                    job.id(),
                    crate::dispatch::Lease {
                        agent,
                        attempt_id,
                        epoch: job.lease_epoch as u64,
                        expires_at: until,
                    },
                );
            }
        }
        let pending = core.store().jobs_with_status(JobStatus::Pending).await?;
        core.enqueue_rows(&pending).await?;
        Ok(core)
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn settings(&self) -> &CoreSettings {
        &self.inner.settings
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// The metrics as a scrape sees them: the gauges set from the store's
    /// counts and the dispatcher's queue and agents now.
    pub async fn render_metrics(&self) -> CoreResult<String> {
        let counts = self.store().status_counts().await?;
        let snapshot = {
            let dispatcher = self.dispatcher();
            crate::metrics::Snapshot {
                counts,
                queue: dispatcher.queue_groups(Instant::now()),
                slots: dispatcher.slot_summary(),
            }
        };
        Ok(self.metrics().render(&snapshot))
    }

    pub(crate) fn keyring(&self) -> &crate::secrets::Keyring {
        &self.inner.keyring
    }

    /// Wakes the loop that turns trigger events into pipelines.
    pub(crate) fn wake_triggers(&self) {
        self.inner.triggers.notify_one();
    }

    pub(crate) async fn triggers_woken(&self) {
        self.inner.triggers.notified().await;
    }

    pub(crate) fn artifact_store(&self) -> &dyn ArtifactStore {
        self.inner.artifacts.as_ref()
    }

    /// A fresh local file for an upload in progress, named after `what`.
    fn upload_part(&self, what: &str) -> PathBuf {
        self.settings()
            .data_dir
            .join(UPLOADS_DIR)
            .join(format!("{what}.{}.part", uuid::Uuid::new_v4().simple()))
    }

    /// Removes the upload files a crash left behind: every upload in
    /// progress when the coordinator stopped was lost with its stream.
    async fn clean_upload_parts(&self) -> CoreResult<()> {
        let dir = self.settings().data_dir.join(UPLOADS_DIR);
        let clean = || -> std::io::Result<()> {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|ext| ext == "part") {
                    std::fs::remove_file(&path)?;
                }
            }
            Ok(())
        };
        clean().map_err(|error| CoreError::Internal(format!("cleaning uploads: {error}")))
    }

    fn dispatcher(&self) -> MutexGuard<'_, Dispatcher> {
        // A poisoned lock means a panic mid-update; the cache may be wrong, but
        // the store is not, and every path tolerates a stale cache.
        self.inner
            .dispatch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes log followers and status watchers.
    fn notify(&self) {
        self.inner.changes.send_modify(|version| *version += 1);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Queues newly pending jobs and offers what can be offered.
    async fn enqueue(&self, jobs: &[JobId]) -> CoreResult<()> {
        let mut rows = Vec::with_capacity(jobs.len());
        for &job_id in jobs {
            if let Some(job) = self.store().job(job_id).await? {
                rows.push(job);
            }
        }
        self.enqueue_rows(&rows).await
    }

    /// Queues these pending jobs by their tags and next epoch only; the spec
    /// is built when a job is offered (`offers`), so the queue stays small.
    async fn enqueue_rows(&self, jobs: &[JobRow]) -> CoreResult<()> {
        let mut queued = Vec::with_capacity(jobs.len());
        for job in jobs {
            let job_def = job
                .definition()
                .map_err(|error| CoreError::Internal(format!("decoding job: {error}")))?;
            queued.push((
                job.id(),
                QueuedJob {
                    deploys: job_def
                        .environment
                        .as_ref()
                        .is_some_and(|env| env.deploys()),
                    tags: job_def.tags.into_iter().collect::<BTreeSet<_>>(),
                    next_epoch: job.lease_epoch as u64 + 1,
                    queued_at: Instant::now(),
                },
            ));
        }
        {
            let mut dispatcher = self.dispatcher();
            for (job, queued) in queued {
                dispatcher.enqueue(job, queued);
            }
        }
        // Just read: their offers need not read them again.
        self.dispatch_with(jobs).await;
        self.notify();
        Ok(())
    }

    /// One tick of the housekeeping loop: delayed jobs whose time has come
    /// are queued, expired offers go back to the queue, expired leases end
    /// their attempts with `agent lost`.
    pub async fn expire(&self) -> CoreResult<()> {
        let due = self.store().start_due_jobs().await?;
        self.enqueue(&due).await?;
        let expired = self.dispatcher().expire(Instant::now());
        let changed = !expired.is_empty();
        for (job, lease) in expired {
            tracing::warn!(job_id = %job, agent_id = %lease.agent, "lease expired: agent lost");
            let result = self
                .store()
                .expire_lease(
                    job,
                    crate::storage::Fence {
                        attempt_id: &lease.attempt_id,
                        lease_epoch: lease.epoch,
                    },
                )
                .await?;
            self.dispatcher().send(
                &lease.agent,
                osprey_proto::v1::coordinator_message::Kind::Abandon(
                    osprey_proto::v1::AbandonAttempt {
                        job_id: job.0,
                        attempt_id: lease.attempt_id.clone(),
                        reason: "lease expired".to_owned(),
                    },
                ),
            );
            self.enqueue(&result.newly_pending).await?;
        }
        // Expired offers may have returned jobs to the queue.
        self.dispatch_now().await;
        if changed {
            self.notify();
        }
        Ok(())
    }

    /// The live pending reason of a pending job, if no connected agent can take it.
    fn pending_reason(&self, tags: &BTreeSet<String>) -> Option<String> {
        self.dispatcher().pending_reason(tags)
    }

    /// Pipeline of a job (for authorising artifact downloads).
    async fn pipeline_of(&self, job: JobId) -> CoreResult<PipelineId> {
        self.store()
            .job(job)
            .await?
            .map(|row| row.pipeline_id())
            .ok_or_else(|| CoreError::NotFound(format!("job {job} not found")))
    }
}
