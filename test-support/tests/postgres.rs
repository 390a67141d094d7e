//! The PostgreSQL harness itself: a server starts, takes databases, and
//! leaves nothing behind when dropped.

use osprey_test_support::postgres::TempPostgres;
use std::process::Command;

fn psql(pg: &TempPostgres, url: &str, sql: &str) -> String {
    let psql = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("running psql");
    assert!(
        psql.status.success(),
        "psql {sql}: {}\nserver log:\n{}",
        String::from_utf8_lossy(&psql.stderr),
        pg.server_log()
    );
    String::from_utf8(psql.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_server_serves_fresh_databases_over_tcp_and_the_socket_and_stops_on_drop() {
    let pg = TempPostgres::start().expect("starting PostgreSQL");
    let first = pg.create_database("first").unwrap();
    let second = pg.fresh_database("test").unwrap();
    assert_ne!(first, second);

    psql(&pg, &first, "CREATE TABLE t (id BIGINT PRIMARY KEY)");
    psql(&pg, &first, "INSERT INTO t VALUES (7)");
    assert_eq!(psql(&pg, &first, "SELECT id FROM t"), "7");
    // A fresh database is empty: the table of the first is not there.
    assert_eq!(
        psql(
            &pg,
            &second,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'"
        ),
        "0"
    );
    // The socket reaches the same server.
    assert_eq!(psql(&pg, &pg.socket_url("first"), "SELECT id FROM t"), "7");
    // A database cannot be created twice.
    let again = pg.create_database("first").unwrap_err();
    assert!(format!("{again:#}").contains("already exists"), "{again:#}");

    let dir = pg.socket_dir().to_owned();
    let port = pg.port();
    drop(pg);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on port {port}"
    );
}

#[test]
fn the_shared_server_is_one_server() {
    let a = TempPostgres::shared();
    let b = TempPostgres::shared();
    assert_eq!(a.port(), b.port());
    let url = a.fresh_database("shared").unwrap();
    assert_eq!(psql(a, &url, "SELECT 1"), "1");
}
