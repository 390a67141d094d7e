//! `migrate-store` on real databases: a used SQLite store (every table,
//! NULLs, floats, binary logs, more rows than one INSERT takes) moves to
//! PostgreSQL and back with every row equal, ids keep counting past the
//! copied ones, and a non-empty destination or an unknown table is refused.

use osprey_coordinator::storage::migrate::{connect_any, migrate_store, Backend, MigrateError};
use osprey_test_support::postgres::TempPostgres;
use sqlx::any::AnyTypeInfoKind;
use sqlx::{AnyPool, Column, Row, TypeInfo, ValueRef};
use std::collections::BTreeMap;

const TABLES: &[(&str, &str)] = &[
    ("agents", "id"),
    ("pipelines", "id"),
    ("jobs", "id"),
    ("log_chunks", "job_id, attempt, \"offset\""),
    ("idempotency_keys", "key"),
    ("projects", "id"),
    ("project_variables", "id"),
    ("api_tokens", "id"),
    ("schedules", "id"),
    ("project_refs", "project_id, git_ref"),
    ("trigger_events", "id"),
    ("environments", "id"),
    ("deployments", "id"),
    ("notification_rules", "id"),
    ("notifications", "id"),
    ("notification_attempts", "id"),
];
/// More jobs than one INSERT of migrate-store carries (8000 parameters / 32
/// columns), so that batches follow each other.
const GENERATED_JOBS: i64 = 600;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Integer(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

type Dump = BTreeMap<String, Vec<BTreeMap<String, Value>>>;

/// Every row of every table, by primary key, each as column -> value.
async fn dump(pool: &AnyPool) -> Dump {
    let mut dump = Dump::new();
    for (table, key) in TABLES {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {key}"))
            .fetch_all(pool)
            .await
            .unwrap();
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let raw = row.try_get_raw(i).unwrap();
                        let value = if raw.is_null() {
                            Value::Null
                        } else {
                            match raw.type_info().kind() {
                                AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
                                    Value::Integer(row.get(i))
                                }
                                AnyTypeInfoKind::Double => Value::Float(row.get(i)),
                                AnyTypeInfoKind::Text => Value::Text(row.get(i)),
                                AnyTypeInfoKind::Blob => Value::Blob(row.get(i)),
                                other => {
                                    panic!("{table}: a {other:?} ({})", raw.type_info().name())
                                }
                            }
                        };
                        (row.columns()[i].name().to_owned(), value)
                    })
                    .collect()
            })
            .collect();
        dump.insert((*table).to_owned(), rows);
    }
    dump
}

/// A SQLite store as a coordinator leaves it: its migrations, then rows in
/// every table.
async fn used_sqlite_store(dir: &std::path::Path) -> String {
    let url = format!("sqlite://{}", dir.join("osprey.db").display());
    let pool = connect_any(&format!("{url}?mode=rwc")).await.unwrap();
    Backend::Sqlite.migrator().run(&pool).await.unwrap();
    let seed = format!(
        r#"
INSERT INTO agents VALUES ('a-1', 'builder', 'aa11', '["linux","docker"]', 1, 'docker', 4, '2024-05-01T10:00:00Z', '2024-05-02T08:00:00Z');
INSERT INTO agents VALUES ('a-2', 'spare', 'bb22', '[]', 0, 'shell', 1, '2024-05-01T10:01:00Z', NULL);
INSERT INTO pipelines VALUES (3, 'https://git.example.com/app.git', 'main', 0, 'c0ffee', 'success', '{{"stages":["build"]}}',
    '2024-05-01T11:00:00Z', '2024-05-01T11:05:00Z', 'beef', 'Fix: “quotes” ünïcode', 'main',
    4, 'app', 1, 'push', '[{{"key":"A","value":"b"}}]', 'token:ci bot');
INSERT INTO pipelines (id, repo, git_ref, ref_is_tag, sha, status, definition, created_at)
    VALUES (9, 'https://git.example.com/app.git', 'v1.0', 1, 'd00d', 'running', '{{}}', '2024-05-02T09:00:00Z');
INSERT INTO jobs VALUES (1, 3, 0, 'build', 'build', 0, 'success', 0, 'on_success', '{{}}', 'a-1', 'builder',
    'att-1', 2, 'tok1', 0, '2024-05-01T11:00:01Z', '2024-05-01T11:02:00Z', 0, NULL, 11, 1, 'sha-log', 2048,
    'sha-art', 1, 'deploy', 1, NULL, 87.5, '2024-06-01T00:00:00Z', 1, 'artifacts/1/att-1-k.tar', NULL, NULL);
INSERT INTO jobs VALUES (2, 3, 1, 'test', 'test', 1, 'failed', 1, 'on_success', '{{}}', 'a-1', 'builder',
    'att-2', 1, NULL, 1, '2024-05-01T11:02:01Z', '2024-05-01T11:04:00Z', -9, 'script failure', 5, 1, NULL, NULL,
    NULL, 2, NULL, 0, '2024-05-01T12:00:00Z', 0.1, NULL, NULL, NULL, 'script_failure', '{{"retry":{{"max":0,"when":[],"exit_codes":[]}}}}');
INSERT INTO jobs (id, pipeline_id, position, name, stage, stage_index, status, allow_failure, when_, definition)
    VALUES (7, 9, 0, 'release', 'deploy', 0, 'pending', 0, 'manual', '{{}}');
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {GENERATED_JOBS})
INSERT INTO jobs (id, pipeline_id, position, name, stage, stage_index, status, allow_failure, when_, definition, coverage)
    SELECT 100 + i, 9, i, 'matrix ' || i, 'test', 1, 'created', i % 2, 'on_success', '{{}}', i / 8.0 FROM n;
INSERT INTO log_chunks VALUES (1, 1, 0, X'68656c6c6f20');
INSERT INTO log_chunks VALUES (1, 1, 6, X'00ff80fe0a');
INSERT INTO log_chunks VALUES (2, 1, 0, X'6f6b');
INSERT INTO log_chunks VALUES (2, 2, 0, X'');
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 39)
INSERT INTO log_chunks SELECT 7, 1, i * 300000, randomblob(300000) FROM n;
INSERT INTO idempotency_keys VALUES ('key-1', 'req-sha', 3, '2024-05-01T11:00:00Z');
INSERT INTO projects VALUES (4, 'app', 'https://git.example.com/app.git', 'main', '["main","v*"]', 60,
    'registry.example.com/team/app', 'v1:k:n:c', '2024-05-01T09:00:00Z', NULL);
INSERT INTO project_variables VALUES (2, 4, 'DEPLOY_TOKEN', 'prod', 'v1:k:n:c2', 1, 1, 0, 0, '2024-05-01T09:01:00Z');
INSERT INTO api_tokens VALUES (5, 'tokhash', 'read', 4, 'ci bot', '2024-05-01T09:02:00Z', NULL, NULL);
INSERT INTO schedules VALUES (6, 4, '0 3 * * *', 'Europe/Lisbon', 'main', '[]', 'nightly',
    '2024-05-02T02:00:00.000Z', 3, '2024-05-01T09:03:00Z');
INSERT INTO project_refs VALUES (4, 'refs/heads/main', 'c0ffee');
INSERT INTO trigger_events VALUES (8, 4, 'push', 'main', 0, 'beef', 'c0ffee', '[]', 'push:4:branch:main:c0ffee',
    'created', 3, NULL, '2024-05-01T10:59:00Z', NULL);
INSERT INTO environments VALUES (10, 4, 'production', 'production', 'production', 'https://app.example.com',
    'available', NULL, '2024-05-01T11:04:00Z', '2024-05-01T11:05:00Z');
INSERT INTO deployments VALUES (11, 4, 1, 10, 'start', 3, 1, 'c0ffee', 'main', 0, 'success', 'push', 'push', NULL, NULL,
    'https://app.example.com', 3600, 'stop app', '2024-05-01T11:00:00Z', '2024-05-01T11:00:01Z', '2024-05-01T11:02:00Z');
INSERT INTO notification_rules VALUES (12, 4, 'webhook', 'https://hooks.example.com/x', '["pipeline_failed"]',
    'v*', 'v1:k:n:c3', '2024-05-01T09:04:00Z');
INSERT INTO notifications VALUES (13, 4, 12, 'pipeline_failed', 3, NULL, 'msg_1', 'delivered', '{{"object_kind":"pipeline"}}',
    NULL, '2024-05-01T11:05:00Z', '2024-05-01T11:05:01Z');
INSERT INTO notification_attempts VALUES (14, 13, '2024-05-01T11:05:01Z', 1, 200, 'ok', 12);
INSERT INTO idempotency_keys VALUES ('key "2"', 'req-sha-2', 9, '2024-05-02T09:00:00Z');
"#
    );
    sqlx::raw_sql(&seed).execute(&pool).await.unwrap();
    pool.close().await;
    url
}

fn rows_of(dump: &Dump, table: &str) -> usize {
    dump[table].len()
}

#[tokio::test]
async fn a_sqlite_store_moves_to_postgres_and_back_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = used_sqlite_store(dir.path()).await;
    let source = dump(&connect_any(&sqlite_url).await.unwrap()).await;
    assert_eq!(rows_of(&source, "jobs"), 3 + GENERATED_JOBS as usize);
    assert_eq!(rows_of(&source, "log_chunks"), 44);

    let postgres_url = TempPostgres::shared().fresh_database("moved").unwrap();
    let report = migrate_store(&sqlite_url, &postgres_url).await.unwrap();
    let counts: Vec<(String, u64)> = TABLES
        .iter()
        .map(|(table, _)| ((*table).to_owned(), rows_of(&source, table) as u64))
        .collect();
    assert_eq!(report.tables, counts);

    let postgres = connect_any(&postgres_url).await.unwrap();
    let moved = dump(&postgres).await;
    for (table, _) in TABLES {
        assert!(
            source[*table] == moved[*table],
            "{table} differs after the move to PostgreSQL"
        );
    }

    // The identities continue past the copied ids.
    let pipeline: i64 = sqlx::query_scalar(
        "INSERT INTO pipelines (repo, git_ref, ref_is_tag, sha, status, definition, created_at) \
         VALUES ('r', 'main', 0, 'abc', 'created', '{}', '2024-05-03T00:00:00Z') RETURNING id",
    )
    .fetch_one(&postgres)
    .await
    .unwrap();
    assert_eq!(pipeline, 10);
    let job: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (pipeline_id, position, name, stage, stage_index, status, \
         allow_failure, when_, definition) VALUES ($1, 0, 'b', 'b', 0, 'created', 0, \
         'on_success', '{}') RETURNING id",
    )
    .bind(pipeline)
    .fetch_one(&postgres)
    .await
    .unwrap();
    assert_eq!(job, 100 + GENERATED_JOBS + 1);
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(job)
        .execute(&postgres)
        .await
        .unwrap();
    sqlx::query("DELETE FROM pipelines WHERE id = $1")
        .bind(pipeline)
        .execute(&postgres)
        .await
        .unwrap();

    // And back: PostgreSQL to a new SQLite file.
    let back_url = format!("sqlite://{}", dir.path().join("back.db").display());
    migrate_store(&postgres_url, &back_url).await.unwrap();
    let back_pool = connect_any(&back_url).await.unwrap();
    let back = dump(&back_pool).await;
    for (table, _) in TABLES {
        assert!(
            source[*table] == back[*table],
            "{table} differs after the move back to SQLite"
        );
    }
    // SQLite's AUTOINCREMENT saw the explicit ids.
    let pipeline: i64 = sqlx::query_scalar(
        "INSERT INTO pipelines (repo, git_ref, ref_is_tag, sha, status, definition, created_at) \
         VALUES ('r', 'main', 0, 'abc', 'created', '{}', '2024-05-03T00:00:00Z') RETURNING id",
    )
    .fetch_one(&back_pool)
    .await
    .unwrap();
    assert_eq!(pipeline, 10);
}

#[tokio::test]
async fn a_destination_holding_a_store_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = used_sqlite_store(dir.path()).await;
    let postgres_url = TempPostgres::shared().fresh_database("full").unwrap();
    migrate_store(&sqlite_url, &postgres_url).await.unwrap();
    let before = dump(&connect_any(&postgres_url).await.unwrap()).await;

    let error = migrate_store(&sqlite_url, &postgres_url).await.unwrap_err();
    assert!(
        matches!(
            error,
            MigrateError::DestinationNotEmpty {
                pipelines: 2,
                agents: 2,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("already holds"), "{error}");
    assert!(before == dump(&connect_any(&postgres_url).await.unwrap()).await);
}

#[tokio::test]
async fn a_table_migrate_store_does_not_know_stops_it_before_anything_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = used_sqlite_store(dir.path()).await;
    let source = connect_any(&sqlite_url).await.unwrap();
    sqlx::query("CREATE TABLE secrets (name TEXT PRIMARY KEY, sealed BLOB NOT NULL)")
        .execute(&source)
        .await
        .unwrap();
    source.close().await;

    let postgres_url = TempPostgres::shared().fresh_database("unknown").unwrap();
    let error = migrate_store(&sqlite_url, &postgres_url).await.unwrap_err();
    assert!(
        matches!(&error, MigrateError::UnknownTables(tables) if tables == &["secrets"]),
        "{error}"
    );
    assert!(error.to_string().contains("secrets"), "{error}");
    let postgres = connect_any(&postgres_url).await.unwrap();
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&postgres)
        .await
        .unwrap();
    assert_eq!(copied, 0);
}

#[tokio::test]
async fn a_missing_source_file_is_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nothing.db").display());
    let postgres_url = TempPostgres::shared().fresh_database("missing").unwrap();
    let error = migrate_store(&missing, &postgres_url).await.unwrap_err();
    assert!(matches!(error, MigrateError::Connect { .. }), "{error}");
    assert!(!dir.path().join("nothing.db").exists());
}
