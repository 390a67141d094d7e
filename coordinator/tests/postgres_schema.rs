//! The PostgreSQL schema against SQLite's: both backends' migrations are
//! applied to empty databases and every table, column (type, nullability,
//! default), primary key, UNIQUE constraint and index must agree. Fails when a migration is
//! added to one backend and not, or not alike, to the other.

use osprey_coordinator::storage::migrate::{connect_any, Backend};
use osprey_test_support::postgres::TempPostgres;
use sqlx::AnyPool;
use std::collections::{BTreeMap, BTreeSet};

/// A column as both schemas describe it, in PostgreSQL's words.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ColumnShape {
    data_type: String,
    not_null: bool,
    default: Option<String>,
}

type Columns = BTreeMap<(String, String), ColumnShape>;

/// The PostgreSQL type a SQLite column type must become (see the
/// conventions in docs/ARCHITECTURE.md).
fn postgres_type_of(sqlite_type: &str) -> String {
    match sqlite_type.to_ascii_uppercase().as_str() {
        "INTEGER" => "bigint",
        "TEXT" => "text",
        "BLOB" => "bytea",
        "REAL" => "double precision",
        other => panic!("a SQLite column type outside the conventions: {other}"),
    }
    .to_owned()
}

async fn sqlite_schema() -> (tempfile::TempDir, AnyPool) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("osprey.db").display()
    );
    let pool = connect_any(&url).await.unwrap();
    Backend::Sqlite.migrator().run(&pool).await.unwrap();
    (dir, pool)
}

async fn postgres_schema(name: &str) -> AnyPool {
    let url = TempPostgres::shared().fresh_database(name).unwrap();
    let pool = connect_any(&url).await.unwrap();
    Backend::Postgres.migrator().run(&pool).await.unwrap();
    pool
}

async fn sqlite_columns(pool: &AnyPool) -> (Columns, BTreeMap<String, Vec<String>>) {
    let rows: Vec<(String, String, String, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk \
         FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations' \
         ORDER BY m.name, p.pk",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut columns = Columns::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column, sqlite_type, not_null, default, pk) in rows {
        if pk > 0 {
            keys.entry(table.clone()).or_default().push(column.clone());
        }
        columns.insert(
            (table, column),
            ColumnShape {
                data_type: postgres_type_of(&sqlite_type),
                // SQLite lets a non-INTEGER primary key hold NULL unless
                // declared NOT NULL; PostgreSQL's primary keys never do.
                not_null: not_null != 0 || pk > 0,
                default,
            },
        );
    }
    (columns, keys)
}

async fn postgres_columns(pool: &AnyPool) -> (Columns, BTreeMap<String, Vec<String>>) {
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT), CAST(data_type AS TEXT), \
                CAST(is_nullable AS TEXT), CAST(column_default AS TEXT) \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let columns = rows
        .into_iter()
        .map(|(table, column, data_type, nullable, default)| {
            let shape = ColumnShape {
                data_type,
                not_null: nullable == "NO",
                // PostgreSQL spells a text default `'push'::text`.
                default: default.map(|text| text.trim_end_matches("::text").to_owned()),
            };
            ((table, column), shape)
        })
        .collect();
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(k.table_name AS TEXT), CAST(k.column_name AS TEXT) \
         FROM information_schema.table_constraints c \
         JOIN information_schema.key_column_usage k \
           ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema \
         WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema() \
           AND c.table_name <> '_sqlx_migrations' \
         ORDER BY k.table_name, k.ordinal_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column) in keys {
        by_table.entry(table).or_default().push(column);
    }
    (columns, by_table)
}

/// Indexes created by the migrations (not those behind keys and UNIQUE),
/// with their tables.
async fn sqlite_indexes(pool: &AnyPool) -> BTreeSet<(String, String)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

async fn postgres_indexes(pool: &AnyPool) -> BTreeSet<(String, String)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(i.indexname AS TEXT), CAST(i.tablename AS TEXT) FROM pg_indexes i \
         WHERE i.schemaname = current_schema() AND i.tablename <> '_sqlx_migrations' \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// UNIQUE constraints as (table, column).
async fn sqlite_uniques(pool: &AnyPool) -> BTreeSet<(String, String)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, ii.name FROM sqlite_master m \
         JOIN pragma_index_list(m.name) il JOIN pragma_index_info(il.name) ii \
         WHERE m.type = 'table' AND il.origin = 'u'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

async fn postgres_uniques(pool: &AnyPool) -> BTreeSet<(String, String)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(k.table_name AS TEXT), CAST(k.column_name AS TEXT) \
         FROM information_schema.table_constraints c \
         JOIN information_schema.key_column_usage k \
           ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema \
         WHERE c.constraint_type = 'UNIQUE' AND c.table_schema = current_schema()",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn the_postgres_schema_is_the_sqlite_schema() {
    let (_dir, sqlite) = sqlite_schema().await;
    let postgres = postgres_schema("schema").await;

    let (sqlite_columns, sqlite_keys) = sqlite_columns(&sqlite).await;
    let (postgres_columns, postgres_keys) = postgres_columns(&postgres).await;
    assert!(
        sqlite_columns.len() > 40,
        "the SQLite schema was not read: {sqlite_columns:?}"
    );
    for (column, shape) in &sqlite_columns {
        match postgres_columns.get(column) {
            Some(found) => assert_eq!(found, shape, "column {column:?} differs"),
            None => panic!("column {column:?} ({shape:?}) is missing in PostgreSQL"),
        }
    }
    for column in postgres_columns.keys() {
        assert!(
            sqlite_columns.contains_key(column),
            "column {column:?} exists only in PostgreSQL"
        );
    }
    assert_eq!(sqlite_keys, postgres_keys, "primary keys differ");
    assert_eq!(
        sqlite_indexes(&sqlite).await,
        postgres_indexes(&postgres).await,
        "indexes differ"
    );
    let uniques = sqlite_uniques(&sqlite).await;
    assert!(uniques.contains(&("agents".to_owned(), "token_sha256".to_owned())));
    assert_eq!(
        uniques,
        postgres_uniques(&postgres).await,
        "UNIQUE constraints differ"
    );
}

#[tokio::test]
async fn the_postgres_migrations_apply_twice_and_ids_are_identities() {
    let postgres = postgres_schema("twice").await;
    // A second run finds everything applied and changes nothing.
    Backend::Postgres.migrator().run(&postgres).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&postgres)
            .await
            .unwrap();
    let known: Vec<i64> = Backend::Postgres
        .migrator()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, known);

    // Ids are generated by default, and an explicit id is accepted.
    let generated: i64 = sqlx::query_scalar(
        "INSERT INTO pipelines (repo, git_ref, ref_is_tag, sha, status, definition, created_at) \
         VALUES ('r', 'main', 0, 'abc', 'created', '{}', '2024-01-01T00:00:00Z') RETURNING id",
    )
    .fetch_one(&postgres)
    .await
    .unwrap();
    assert_eq!(generated, 1);
    sqlx::query(
        "INSERT INTO pipelines (id, repo, git_ref, ref_is_tag, sha, status, definition, created_at) \
         VALUES (42, 'r', 'main', 0, 'abc', 'created', '{}', '2024-01-01T00:00:00Z')",
    )
    .execute(&postgres)
    .await
    .unwrap();
    // The quoted "offset" column takes the same query text on both backends.
    sqlx::query(
        "INSERT INTO jobs (pipeline_id, position, name, stage, stage_index, status, \
         allow_failure, when_, definition) VALUES (42, 0, 'build', 'build', 0, 'created', 0, \
         'on_success', '{}')",
    )
    .execute(&postgres)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO log_chunks (job_id, attempt, \"offset\", data) VALUES ($1, $2, $3, $4)",
    )
    .bind(1_i64)
    .bind(1_i64)
    .bind(0_i64)
    .bind(vec![0_u8, 255])
    .execute(&postgres)
    .await
    .unwrap();
}
