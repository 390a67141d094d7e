//! [`SqlStore`]: the [`Store`] on SQLite or PostgreSQL, one set of queries
//! for both through sqlx's `Any` driver. The schemas follow conventions
//! that make one query text valid on both: `$1` placeholders, integers for
//! flags, RFC 3339 text for times, `"offset"` quoted. What differs is in
//! [`Backend`]: migrations, and how a transaction takes its locks.
//!
//! Concurrency: on PostgreSQL the transitions of one pipeline are serialised
//! by a row lock on the pipeline (`SELECT … FOR UPDATE`), resource groups by
//! a transaction-scoped advisory lock per group, and a job's records by a
//! row lock on the job; so several coordinators may share one database. On
//! SQLite, one coordinator owns the file and its writes are serialised by
//! one lock (SQLite allows one writer at a time anyway).

mod agents;
mod deployments;
mod idempotency;
mod notify;
mod pipelines;
mod projects;
mod records;
mod stats;
mod transitions;

use super::clock::{Clock, SystemClock};
use super::error::{StoreError, StoreResult};
use super::observe::{Commit, FinishedJob, StoreObserver};
use osprey_shared::api::format_time;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names (`sqlite:` or `postgres:`/`postgresql:`).
    pub fn of_url(url: &str) -> StoreResult<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Refused(
                "database URL must start with sqlite: or postgres:".to_owned(),
            ))
        }
    }

    /// This backend's migrations, as compiled into the binary.
    pub fn migrator(self) -> sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        }
    }
}

/// The store on a SQL database.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: its writers, one at a time.
    write_lock: Option<Arc<tokio::sync::Mutex<()>>>,
    clock: Arc<dyn Clock>,
    /// Told of each commit (the coordinator's metrics); shared by clones.
    observer: Arc<RwLock<Option<Arc<dyn StoreObserver>>>>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A write transaction, with the SQLite writer lock when there is one.
/// What it did is reported to the store's observer when it commits, and
/// forgotten when it is dropped uncommitted (rolled back).
pub(super) struct Write<'a> {
    pub tx: Transaction<'static, Any>,
    _guard: Option<tokio::sync::MutexGuard<'a, ()>>,
    begun: Instant,
    /// Jobs the transaction's transitions finished.
    finished: Vec<FinishedJob>,
    /// Log bytes it stores.
    log_bytes: u64,
    observer: Option<Arc<dyn StoreObserver>>,
}

impl Write<'_> {
    /// Notes a job this transaction finishes, reported once it commits.
    pub fn finished(&mut self, job: FinishedJob) {
        self.finished.push(job);
    }

    /// Notes log bytes this transaction stores.
    pub fn log_bytes(&mut self, bytes: usize) {
        self.log_bytes += bytes as u64;
    }

    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        if let Some(observer) = &self.observer {
            observer.committed(&Commit {
                held: self.begun.elapsed(),
                finished: &self.finished,
                log_bytes: self.log_bytes,
            });
        }
        Ok(())
    }
}

impl SqlStore {
    /// Connects to `url`, creating a SQLite file if needed, and applies the
    /// backend's migrations.
    pub async fn open(url: &str) -> StoreResult<SqlStore> {
        SqlStore::open_with_clock(url, Arc::new(SystemClock)).await
    }

    /// [`SqlStore::open`] reading time from `clock`.
    pub async fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> StoreResult<SqlStore> {
        let backend = Backend::of_url(url)?;
        let pool = connect(url).await?;
        backend.migrator().run(&pool).await?;
        Ok(SqlStore {
            pool,
            backend,
            write_lock: (backend == Backend::Sqlite).then(Default::default),
            clock,
            observer: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for tools that copy a whole database (`migrate-store`).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(super) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    pub(super) fn now_text(&self) -> String {
        format_time(self.clock.now())
    }

    pub(super) async fn write(&self) -> StoreResult<Write<'_>> {
        let guard = match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let tx = self.pool.begin().await?;
        let observer = self
            .observer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Ok(Write {
            tx,
            _guard: guard,
            begun: Instant::now(),
            finished: Vec::new(),
            log_bytes: 0,
            observer,
        })
    }

    /// Locks a pipeline's row until the transaction ends (PostgreSQL; on
    /// SQLite the writer lock already serialises).
    pub(super) async fn lock_pipeline(
        &self,
        tx: &mut Transaction<'static, Any>,
        pipeline: i64,
    ) -> StoreResult<bool> {
        let sql = match self.backend {
            Backend::Postgres => "SELECT id FROM pipelines WHERE id = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT id FROM pipelines WHERE id = $1",
        };
        let found: Option<i64> = sqlx::query_scalar(sql)
            .bind(pipeline)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(found.is_some())
    }

    /// Locks a job's row until the transaction ends (PostgreSQL).
    pub(super) fn job_lock_suffix(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Takes the lock of each resource group, in order (PostgreSQL).
    pub(super) async fn lock_groups(
        &self,
        tx: &mut Transaction<'static, Any>,
        groups: &std::collections::BTreeSet<String>,
    ) -> StoreResult<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        for group in groups {
            tx.execute(
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("osprey.resource_group.{group}")),
            )
            .await?;
        }
        Ok(())
    }
}

/// An `Any` pool on `url`. SQLite gets WAL with `synchronous=NORMAL` (a
/// committed transaction survives kill -9), foreign keys and a busy timeout.
pub async fn connect(url: &str) -> StoreResult<AnyPool> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    let options = AnyConnectOptions::from_str(url)?;
    let pool = match backend {
        Backend::Sqlite => {
            AnyPoolOptions::new()
                .max_connections(4)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?
        }
        Backend::Postgres => {
            AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?
        }
    };
    Ok(pool)
}

/// The SQLite URL of the default database under a data dir.
pub fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("osprey.db").display())
}

fn id(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
