//! An S3-compatible server on loopback for tests: moto's server mode
//! (`moto_server`, PyPI `moto[server]`), started on a free port with one
//! bucket, killed when the handle drops.
//!
//! Why moto: it is a maintained, in-memory implementation of the S3 API
//! (multipart uploads, conditional gets, ListObjectsV2) that starts in about
//! a second, keeps nothing on disk, and installs from PyPI into a venv with
//! no daemon, image or account (`scripts/install-deps.sh` puts it in
//! `/var/cache/osprey-test/moto-venv`). MinIO needs a prebuilt binary this
//! machine cannot download; the Rust S3 servers on crates.io are young or
//! unmaintained. moto accepts any credentials and checks none, so the
//! signing path is exercised but not verified.
//!
//! Found as `$OSPREY_MOTO_SERVER`, then in the venvs install-deps uses, then
//! on `PATH`.

use anyhow::{bail, Context};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto S3 server with one bucket.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    bucket: String,
    _logs: tempfile::TempDir,
}

fn moto_server() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("OSPREY_MOTO_SERVER") {
        candidates.push(PathBuf::from(path));
    }
    candidates.push(PathBuf::from(
        "/var/cache/osprey-test/moto-venv/bin/moto_server",
    ));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/osprey-test/moto-venv/bin/moto_server"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("moto_server")));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .context("moto_server not found: run scripts/install-deps.sh (or set OSPREY_MOTO_SERVER)")
}

impl S3Server {
    /// Starts the server on a free loopback port and creates the bucket.
    pub async fn start() -> anyhow::Result<S3Server> {
        // reqwest may be built with rustls and no provider (the coordinator's
        // S3 client is): install ring, as the coordinator does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let program = moto_server()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let logs = tempfile::tempdir()?;
        let log = std::fs::File::create(logs.path().join("moto.log"))?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = S3Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            bucket: "osprey-test".to_owned(),
            _logs: logs,
        };
        server.wait_ready().await?;
        // moto takes unsigned requests: a plain PUT creates the bucket.
        let response = reqwest::Client::new()
            .put(format!("{}/{}", server.endpoint(), server.bucket))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "creating bucket: {}",
            response.status()
        );
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self._logs.path().join("moto.log")).unwrap_or_default();
                bail!("moto_server exited with {status}: {log}");
            }
            if client.get(self.endpoint()).send().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server did not answer on {} within {READY_TIMEOUT:?}",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Access key id and secret (moto accepts any).
    pub fn credentials(&self) -> (&'static str, &'static str) {
        ("osprey-test", "osprey-test-secret")
    }

    /// The `AWS_*` variables that point a client (a coordinator) at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        let (key_id, secret) = self.credentials();
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", key_id.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// The keys of the objects under `prefix` (ListObjectsV2, unsigned).
    pub async fn list_keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let response = reqwest::Client::new()
            // The prefixes tests use are plain path characters: no escaping.
            .get(format!(
                "{}/{}?list-type=2&max-keys=1000&prefix={prefix}",
                self.endpoint(),
                self.bucket
            ))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "listing: {}",
            response.status()
        );
        let body = response.text().await?;
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
