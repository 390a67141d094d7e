//! PostgreSQL in a temp dir: [`TempPostgres`] runs Debian's server binaries
//! (`/usr/lib/postgresql/*/bin`, installed by `scripts/install-deps.sh`) on a
//! fresh cluster, listening on a free loopback port and on a Unix socket in
//! the temp dir, with trust authentication for the superuser `postgres`.
//! Each test takes its own empty database ([`TempPostgres::create_database`],
//! [`TempPostgres::fresh_database`]), so tests can share one server.
//!
//! PostgreSQL refuses to run as root, and tests here run as root: the cluster
//! is then owned by, and the server runs as, an unprivileged user (`nobody`
//! unless `OSPREY_TEST_PG_USER` names another), through the safe
//! [`CommandExt::uid`] and [`CommandExt::gid`].
//!
//! Stopping. Dropping the handle stops the server (fast shutdown, SIGKILL if
//! it does not stop in time) and removes the temp dir. A handle that is never
//! dropped (the process-wide [`TempPostgres::shared`] instance lives in a
//! static; a test binary may also be killed) must not leave a server behind,
//! so every server comes with a watchdog: a small `sh` whose stdin is a pipe
//! from the test process. Nothing else holds that pipe's write end (Rust
//! opens pipes close-on-exec), so it closes exactly when the test process
//! ends, however it ends; the watchdog then stops the server and removes the
//! temp dir. A clean drop first writes one line to the pipe, which tells the
//! watchdog to exit without touching anything. This was chosen over
//! `PR_SET_PDEATHSIG`, which needs `unsafe` `pre_exec`, fires when the
//! spawning *thread* ends (not the process), and is cleared by the uid change.

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, Uid, User};
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a free port (another process may take the one picked).
const PORT_ATTEMPTS: usize = 5;
const SUPERUSER: &str = "postgres";

/// The watchdog: `$1` is the server's pid, `$2` the temp dir. Ignores the
/// terminal's signals so that a Ctrl-C on the tests still gets its cleanup.
const WATCHDOG_SCRIPT: &str = r#"trap '' INT TERM HUP
if read -r line; then exit 0; fi
if kill -INT "$1" 2>/dev/null; then
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$1" 2>/dev/null
fi
rm -rf "$2"
"#;

/// A running PostgreSQL server in a temp dir, stopped when dropped.
pub struct TempPostgres {
    // Field order matters: the server stops before its directory goes.
    _server: Server,
    port: u16,
    bin_dir: PathBuf,
    dir: TempDir,
    next_database: AtomicU64,
}

impl std::fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempPostgres")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TempPostgres {
    /// Creates a cluster in a new temp dir and starts a server on it; returns
    /// once the server accepts connections. Blocking (initdb takes a second
    /// or two): call it from a test, not from a latency-sensitive task.
    pub fn start() -> anyhow::Result<TempPostgres> {
        let bin_dir = find_bin_dir()?;
        let owner = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("osprey-pg-")
            .tempdir()
            .context("creating the PostgreSQL temp dir")?;
        if let Some(owner) = &owner {
            std::os::unix::fs::chown(dir.path(), Some(owner.uid), Some(owner.gid))
                .with_context(|| format!("giving {} to {}", dir.path().display(), owner.name))?;
        }
        init_cluster(&bin_dir, dir.path(), owner.as_ref())?;

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut server = Server::spawn(&bin_dir, dir.path(), port, owner.as_ref())?;
            match server.wait_ready(&bin_dir, port) {
                Ok(()) => {
                    return Ok(TempPostgres {
                        _server: server,
                        port,
                        bin_dir,
                        dir,
                        next_database: AtomicU64::new(0),
                    })
                }
                Err(Unready::Exited(status)) if port_taken(dir.path()) => {
                    drop(server);
                    last_error = Some(format!("port {port} was taken ({status})"));
                }
                Err(unready) => {
                    drop(server);
                    bail!(
                        "PostgreSQL did not start: {unready}; server log:\n{}",
                        read_log(dir.path())
                    );
                }
            }
        }
        bail!(
            "PostgreSQL did not start after {PORT_ATTEMPTS} ports: {}; server log:\n{}",
            last_error.unwrap_or_default(),
            read_log(dir.path())
        )
    }

    /// One server for the whole test binary, started on first use and
    /// stopped by its watchdog when the process ends. Panics (failing the
    /// calling test with the reason) if the server cannot start.
    pub fn shared() -> &'static TempPostgres {
        static SHARED: OnceLock<TempPostgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            TempPostgres::start().unwrap_or_else(|error| panic!("starting PostgreSQL: {error:#}"))
        })
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of `database` over TCP (it need not exist yet).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The URL of `database` over the Unix socket.
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{}/{database}?host={}",
            self.port,
            self.socket_dir().display()
        )
    }

    /// Creates the empty database `name` (lowercase letters, digits and `_`)
    /// and returns its URL. Fails if it exists.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            bail!("database name {name:?}: use 1 to 63 of a-z, 0-9 and _");
        }
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, name])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .context("running createdb")?;
        if !output.status.success() {
            bail!(
                "createdb {name}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(self.url(name))
    }

    /// Creates an empty database named `prefix` plus a number unique to
    /// this server and returns its URL.
    pub fn fresh_database(&self, prefix: &str) -> anyhow::Result<String> {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("{prefix}_{n}"))
    }

    /// What the server has logged so far.
    pub fn server_log(&self) -> String {
        read_log(self.dir.path())
    }
}

/// The user the server runs as, when the tests run as root.
struct Owner {
    name: String,
    uid: u32,
    gid: u32,
}

fn server_user() -> anyhow::Result<Option<Owner>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let name = std::env::var("OSPREY_TEST_PG_USER").unwrap_or_else(|_| "nobody".to_owned());
    let user = User::from_name(&name)
        .with_context(|| format!("looking up the user {name}"))?
        .with_context(|| {
            format!(
                "no user {name} to run PostgreSQL as (it refuses root); set OSPREY_TEST_PG_USER"
            )
        })?;
    Ok(Some(Owner {
        name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding initdb and
/// postgres, or `OSPREY_TEST_PG_BIN` if set.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("OSPREY_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server under {}/*/bin: run scripts/install-deps.sh \
             (or set OSPREY_TEST_PG_BIN)",
            root.display()
        ),
    }
}

/// A command run as the cluster's owner, in the temp dir.
fn as_owner(program: PathBuf, dir: &Path, owner: Option<&Owner>) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some(owner) = owner {
        // std drops supplementary groups before setuid when running as root.
        command.uid(owner.uid).gid(owner.gid);
    }
    command
}

fn init_cluster(bin_dir: &Path, dir: &Path, owner: Option<&Owner>) -> anyhow::Result<()> {
    let output = as_owner(bin_dir.join("initdb"), dir, owner)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
        .arg("--no-sync")
        .output()
        .context("running initdb")?;
    if !output.status.success() {
        bail!(
            "initdb: {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("picking a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("server.log")
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(log_path(dir)).unwrap_or_else(|e| format!("(no server log: {e})"))
}

fn port_taken(dir: &Path) -> bool {
    let log = read_log(dir);
    log.contains("could not bind") || log.contains("Address already in use")
}

/// Why a server never became ready.
#[derive(Debug)]
enum Unready {
    Exited(ExitStatus),
    TimedOut,
    Io(std::io::Error),
}

impl std::fmt::Display for Unready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unready::Exited(status) => write!(f, "the server exited ({status})"),
            Unready::TimedOut => write!(
                f,
                "no connection accepted within {}s",
                START_TIMEOUT.as_secs()
            ),
            Unready::Io(error) => write!(f, "{error}"),
        }
    }
}

/// The server process and its watchdog.
struct Server {
    child: Child,
    watchdog: Child,
    watchdog_pipe: Option<ChildStdin>,
}

impl Server {
    fn spawn(
        bin_dir: &Path,
        dir: &Path,
        port: u16,
        owner: Option<&Owner>,
    ) -> anyhow::Result<Server> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path(dir))
            .context("opening the server log")?;
        let child = as_owner(bin_dir.join("postgres"), dir, owner)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            // A throwaway cluster: durability buys nothing.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C on the tests reaches the
            // watchdog's orderly stop, not the server directly.
            .process_group(0)
            .spawn()
            .context("starting postgres")?;
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG_SCRIPT, "osprey-pg-watchdog"])
            .arg(child.id().to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let mut watchdog = match watchdog {
            Ok(watchdog) => watchdog,
            Err(error) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(error).context("starting the PostgreSQL watchdog");
            }
        };
        let watchdog_pipe = watchdog.stdin.take();
        Ok(Server {
            child,
            watchdog,
            watchdog_pipe,
        })
    }

    fn wait_ready(&mut self, bin_dir: &Path, port: u16) -> Result<(), Unready> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(Unready::Io)? {
                return Err(Unready::Exited(status));
            }
            let ready = Command::new(bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", SUPERUSER, "-d", "postgres", "-t", "5"])
                .stdin(Stdio::null())
                .status()
                .map_err(Unready::Io)?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Unready::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGINT is PostgreSQL's fast shutdown: sessions are ended and
            // the server exits without waiting for clients.
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = kill(pid, Signal::SIGINT);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The server is stopped and reaped: tell the watchdog to leave.
        if let Some(mut pipe) = self.watchdog_pipe.take() {
            let _ = pipe.write_all(b"stopped\n");
        }
        let _ = self.watchdog.wait();
    }
}
