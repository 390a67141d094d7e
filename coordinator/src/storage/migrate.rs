//! `migrate-store`: copies a stopped coordinator's whole durable state from
//! one database to another (SQLite to PostgreSQL, or back), through sqlx's
//! `Any` driver. Independent of the rest of storage: it needs only pools and
//! the two migrators.
//!
//! The copy is generic: each table's columns are read from the source, each
//! value is copied as the type the source stored it as (integer, float,
//! text, bytes, NULL; bytes verbatim, so encrypted secrets stay encrypted),
//! every table in foreign-key order inside one destination transaction.
//! A table in the source that this module does not know is an error, so a
//! table added by a later migration is never silently left behind.

pub use super::Backend;
use futures::TryStreamExt;
use sqlx::any::{AnyArguments, AnyTypeInfoKind};
use sqlx::{Any, AnyPool, Column, Executor, Row, TypeInfo, ValueRef};
use std::collections::BTreeSet;
use std::fmt;

/// The tables copied, parents before children, each with its primary key
/// (the order rows are read in).
const TABLES: &[(&str, &[&str])] = &[
    ("agents", &["id"]),
    ("pipelines", &["id"]),
    ("jobs", &["id"]),
    ("log_chunks", &["job_id", "attempt", "offset"]),
    ("idempotency_keys", &["key"]),
    ("projects", &["id"]),
    ("project_variables", &["id"]),
    ("api_tokens", &["id"]),
    ("schedules", &["id"]),
    ("project_refs", &["project_id", "git_ref"]),
    ("trigger_events", &["id"]),
    ("environments", &["id"]),
    ("deployments", &["id"]),
    ("notification_rules", &["id"]),
    ("notifications", &["id"]),
    ("notification_attempts", &["id"]),
];
/// Tables whose `id` is an autoincrement (an identity on PostgreSQL).
const IDENTITY_TABLES: &[&str] = &[
    "pipelines",
    "jobs",
    "projects",
    "project_variables",
    "api_tokens",
    "schedules",
    "trigger_events",
    "environments",
    "deployments",
    "notification_rules",
    "notifications",
    "notification_attempts",
];
/// Largest number of bind parameters in one INSERT (SQLite allows 32766,
/// PostgreSQL 65535).
const MAX_PARAMETERS: usize = 8_000;
/// An INSERT is sent once its rows hold this many bytes of text and blobs.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The backend a URL names, or the error naming the URL.
fn backend_of(url: &str) -> Result<Backend, MigrateError> {
    Backend::of_url(url).map_err(|_| MigrateError::UnsupportedUrl(redact(url)))
}

/// Why a migration of the store failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        source: super::StoreError,
    },
    #[error("applying the migrations to {url}: {source}")]
    Migrations {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(
        "the source {url} is not at this coordinator's schema ({detail}); \
         start this version of osprey-coordinator on it once (it applies its \
         migrations), stop it, then migrate"
    )]
    SourceSchema { url: String, detail: String },
    #[error(
        "the destination {url} already holds {pipelines} pipeline(s) and {agents} agent(s): \
         migrate-store only fills an empty database"
    )]
    DestinationNotEmpty {
        url: String,
        pipelines: i64,
        agents: i64,
    },
    #[error(
        "the source has table(s) migrate-store does not know: {}; nothing was copied",
        .0.join(", ")
    )]
    UnknownTables(Vec<String>),
    #[error("table {table}: the destination has no column {column}")]
    MissingColumn { table: String, column: String },
    #[error("table {table}, column {column}: {detail}")]
    Value {
        table: String,
        column: String,
        detail: String,
    },
    #[error("copying {table}: {source}")]
    Copy { table: String, source: sqlx::Error },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// What was copied: rows per table, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    pub tables: Vec<(String, u64)>,
}

impl fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, rows) in &self.tables {
            writeln!(f, "{table:<18} {rows:>10} rows")?;
        }
        Ok(())
    }
}

/// Opens a pool on `url` through the `Any` driver, as the store does. The
/// URL is used as given: a SQLite file is created only with `?mode=rwc`.
pub async fn connect_any(url: &str) -> Result<AnyPool, MigrateError> {
    backend_of(url)?;
    super::connect(url)
        .await
        .map_err(|source| MigrateError::Connect {
            url: redact(url),
            source,
        })
}

/// Copies the whole state of the (stopped) coordinator database `from` into
/// the database `to`, which gets the migrations of its backend first and
/// must hold no pipeline and no agent. All or nothing: the copy is one
/// destination transaction.
pub async fn migrate_store(from: &str, to: &str) -> Result<MigrateReport, MigrateError> {
    let from_backend = backend_of(from)?;
    let to_backend = backend_of(to)?;
    let source = connect_any(from).await?;
    check_source_schema(&source, from_backend, from).await?;

    let to_url = match to_backend {
        // The destination may be a new file.
        Backend::Sqlite if !to.contains("mode=") => {
            format!("{to}{}mode=rwc", if to.contains('?') { '&' } else { '?' })
        }
        _ => to.to_owned(),
    };
    let destination = connect_any(&to_url).await?;
    to_backend
        .migrator()
        .run(&destination)
        .await
        .map_err(|source| MigrateError::Migrations {
            url: redact(to),
            source,
        })?;
    let pipelines = count(&destination, "pipelines").await?;
    let agents = count(&destination, "agents").await?;
    if pipelines > 0 || agents > 0 {
        return Err(MigrateError::DestinationNotEmpty {
            url: redact(to),
            pipelines,
            agents,
        });
    }

    let known: BTreeSet<&str> = TABLES.iter().map(|(table, _)| *table).collect();
    let unknown: Vec<String> = list_tables(&source, from_backend)
        .await?
        .into_iter()
        .filter(|table| !known.contains(table.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(MigrateError::UnknownTables(unknown));
    }

    let mut tx = destination.begin().await?;
    let mut report = MigrateReport { tables: Vec::new() };
    for (table, key) in TABLES {
        let rows = copy_table(&source, &mut tx, table, key).await?;
        tracing::info!(table, rows, "table copied");
        report.tables.push(((*table).to_owned(), rows));
    }
    if to_backend == Backend::Postgres {
        // Explicit ids do not advance an identity: without this the next
        // pipeline would be given id 1 again.
        for table in IDENTITY_TABLES {
            let reset = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            );
            tx.execute(reset.as_str()).await?;
        }
    }
    // SQLite's AUTOINCREMENT follows the largest id ever inserted, explicit
    // ones included: nothing to reset there.
    tx.commit().await?;
    source.close().await;
    destination.close().await;
    Ok(report)
}

/// The source must have had exactly this binary's migrations applied: its
/// columns are then the ones the destination's schema holds.
async fn check_source_schema(
    source: &AnyPool,
    backend: Backend,
    url: &str,
) -> Result<(), MigrateError> {
    let schema_error = |detail: String| MigrateError::SourceSchema {
        url: redact(url),
        detail,
    };
    let applied: BTreeSet<i64> =
        sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(source)
            .await
            .map_err(|error| schema_error(format!("no migration record: {error}")))?
            .into_iter()
            .collect();
    let known: BTreeSet<i64> = backend.migrator().iter().map(|m| m.version).collect();
    if let Some(missing) = known.difference(&applied).next() {
        return Err(schema_error(format!("migration {missing} not applied")));
    }
    if let Some(newer) = applied.difference(&known).next() {
        return Err(schema_error(format!(
            "migration {newer} is newer than this osprey-coordinator"
        )));
    }
    Ok(())
}

async fn count(pool: &AnyPool, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
}

/// The source's tables, without the migration record.
async fn list_tables(pool: &AnyPool, backend: Backend) -> Result<Vec<String>, sqlx::Error> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             AND table_name <> '_sqlx_migrations' ORDER BY table_name"
        }
    };
    sqlx::query_scalar::<_, String>(sql).fetch_all(pool).await
}

/// One stored value, as the source's driver typed it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Integer(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn read(row: &sqlx::any::AnyRow, index: usize) -> Result<Value, String> {
        let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let kind = raw.type_info().kind();
        let value = match kind {
            AnyTypeInfoKind::Bool => row
                .try_get::<bool, _>(index)
                .map(|b| Value::Integer(b.into())),
            AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
                row.try_get::<i64, _>(index).map(Value::Integer)
            }
            AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => {
                row.try_get::<f64, _>(index).map(Value::Float)
            }
            AnyTypeInfoKind::Text => row.try_get::<String, _>(index).map(Value::Text),
            AnyTypeInfoKind::Blob => row.try_get::<Vec<u8>, _>(index).map(Value::Blob),
            AnyTypeInfoKind::Null => return Ok(Value::Null),
        };
        value.map_err(|e| format!("reading a {} value: {e}", raw.type_info().name()))
    }

    fn size(&self) -> usize {
        match self {
            Value::Text(text) => text.len(),
            Value::Blob(bytes) => bytes.len(),
            _ => 8,
        }
    }

    /// Binds the value for a destination column of type `column`: a NULL
    /// takes the column's type (PostgreSQL types every parameter), an
    /// integer bound to a float column becomes a float.
    fn bind(self, args: &mut AnyArguments<'_>, column: AnyTypeInfoKind) -> Result<(), String> {
        use sqlx::Arguments;
        let bound = match (self, column) {
            (Value::Null, AnyTypeInfoKind::Text) => args.add(None::<String>),
            (Value::Null, AnyTypeInfoKind::Blob) => args.add(None::<Vec<u8>>),
            (Value::Null, AnyTypeInfoKind::Real | AnyTypeInfoKind::Double) => args.add(None::<f64>),
            (Value::Null, _) => args.add(None::<i64>),
            (Value::Integer(i), AnyTypeInfoKind::Real | AnyTypeInfoKind::Double) => {
                args.add(i as f64)
            }
            (Value::Integer(i), _) => args.add(i),
            (
                Value::Float(f),
                AnyTypeInfoKind::Real | AnyTypeInfoKind::Double | AnyTypeInfoKind::Null,
            ) => args.add(f),
            (Value::Float(f), other) => {
                return Err(format!("the float {f} does not fit a {other:?} column"))
            }
            (Value::Text(text), _) => args.add(text),
            (Value::Blob(bytes), _) => args.add(bytes),
        };
        bound.map_err(|e| e.to_string())
    }
}

/// A column as both sides see it.
struct CopiedColumn {
    name: String,
    destination_kind: AnyTypeInfoKind,
}

/// Streams `table` from the source in primary-key order into the
/// destination transaction, in multi-row INSERTs.
async fn copy_table(
    source: &AnyPool,
    tx: &mut sqlx::Transaction<'_, Any>,
    table: &str,
    key: &[&str],
) -> Result<u64, MigrateError> {
    let copy_error = |source: sqlx::Error| MigrateError::Copy {
        table: table.to_owned(),
        source,
    };
    let select_all = format!("SELECT * FROM {table}");
    let source_columns = source.describe(&select_all).await.map_err(copy_error)?;
    let destination_columns = (&mut **tx)
        .describe(&select_all)
        .await
        .map_err(copy_error)?;
    let columns = source_columns
        .columns()
        .iter()
        .map(|column| {
            let name = column.name().to_owned();
            let destination = destination_columns
                .columns()
                .iter()
                .find(|d| d.name() == name)
                .ok_or_else(|| MigrateError::MissingColumn {
                    table: table.to_owned(),
                    column: name.clone(),
                })?;
            Ok(CopiedColumn {
                destination_kind: destination.type_info().kind(),
                name,
            })
        })
        .collect::<Result<Vec<_>, MigrateError>>()?;
    let column_list = columns
        .iter()
        .map(|column| quote(&column.name))
        .collect::<Vec<_>>()
        .join(", ");
    let order = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let select = format!("SELECT {column_list} FROM {table} ORDER BY {order}");
    let rows_per_insert = (MAX_PARAMETERS / columns.len().max(1)).max(1);

    let mut rows = sqlx::query(&select).fetch(source);
    let mut batch: Vec<Vec<Value>> = Vec::new();
    let mut batch_bytes = 0;
    let mut copied = 0;
    while let Some(row) = rows.try_next().await.map_err(copy_error)? {
        let mut values = Vec::with_capacity(columns.len());
        for (index, column) in columns.iter().enumerate() {
            let value = Value::read(&row, index).map_err(|detail| MigrateError::Value {
                table: table.to_owned(),
                column: column.name.clone(),
                detail,
            })?;
            batch_bytes += value.size();
            values.push(value);
        }
        batch.push(values);
        if batch.len() >= rows_per_insert || batch_bytes >= MAX_BATCH_BYTES {
            copied += insert(
                tx,
                table,
                &columns,
                &column_list,
                std::mem::take(&mut batch),
            )
            .await?;
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        copied += insert(tx, table, &columns, &column_list, batch).await?;
    }
    Ok(copied)
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, Any>,
    table: &str,
    columns: &[CopiedColumn],
    column_list: &str,
    batch: Vec<Vec<Value>>,
) -> Result<u64, MigrateError> {
    let mut sql = format!("INSERT INTO {table} ({column_list}) VALUES ");
    let mut args = AnyArguments::default();
    let mut parameter = 0;
    for (row_index, row) in batch.into_iter().enumerate() {
        if row_index > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (column_index, (value, column)) in row.into_iter().zip(columns).enumerate() {
            if column_index > 0 {
                sql.push_str(", ");
            }
            parameter += 1;
            sql.push_str(&format!("${parameter}"));
            value
                .bind(&mut args, column.destination_kind)
                .map_err(|detail| MigrateError::Value {
                    table: table.to_owned(),
                    column: column.name.clone(),
                    detail,
                })?;
        }
        sql.push(')');
    }
    // Not a cached prepared statement: the parameter types of a batch
    // depend on its NULLs (sqlx 0.8.6's Any driver even binds a NULL f64 as
    // a float4), so a statement prepared for one batch could mistype the
    // next batch of the same shape.
    let result = sqlx::query_with(&sql, args)
        .persistent(false)
        .execute(&mut **tx)
        .await
        .map_err(|source| MigrateError::Copy {
            table: table.to_owned(),
            source,
        })?;
    Ok(result.rows_affected())
}

/// A quoted identifier (`offset` and `key` are reserved words in places).
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The URL without its credentials, for messages (the project's one mask).
fn redact(url: &str) -> String {
    osprey_shared::redact::url_credentials(url).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_lose_their_password_in_messages() {
        assert_eq!(
            backend_of("sqlite:///x/osprey.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(backend_of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            backend_of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(backend_of("mysql://u@h/db").is_err());
        assert_eq!(
            redact("postgres://u:secret@h/db"),
            "postgres://[MASKED]@h/db"
        );
    }
}
