//! Real coordinator and agent processes on loopback, in one temp dir per test
//! (the process and temp-dir handling is in `child.rs`).
//!
//! Processes are children of the test (so `kill9` is a real SIGKILL) and are
//! killed when their handle drops. Their stdout and stderr go to files in the
//! temp dir; when a test panics the files are printed and the dir is kept
//! (its path is printed and is part of every wait helper's panic message).

use crate::api::ApiClient;
use crate::bins::binary;
use crate::child::{read_tail, Process, Root, DUMP_BYTES};
use crate::wait::wait_for;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

/// The registration token every test coordinator accepts.
pub const REGISTRATION_TOKEN: &str = "osprey-test-registration-token";

/// The admin API token every test coordinator accepts (`OSPREY_ADMIN_TOKEN`);
/// [`ApiClient`]s and `osprey` runs of the tests present it by default.
pub const ADMIN_TOKEN: &str = "osp_test_admin_token_0123456789abcdef";

/// How long a process gets to print its `listening on` line or to connect.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of a test coordinator. Defaults are short so failures show fast.
#[derive(Debug, Clone)]
pub struct CoordinatorOpts {
    pub lease_ttl_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub offer_timeout_ms: Option<u64>,
    pub max_log_bytes: Option<u64>,
    pub extra_args: Vec<String>,
    /// Environment variables set for the process (e.g. `MALLOC_ARENA_MAX`).
    pub env: Vec<(String, String)>,
}

impl Default for CoordinatorOpts {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 3000,
            heartbeat_interval_ms: 500,
            offer_timeout_ms: None,
            max_log_bytes: None,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running `osprey-coordinator serve` with its own data dir.
pub struct Coordinator {
    process: Process,
    /// The S3 server holding its artifacts, if one was started for it.
    _s3: Option<osprey_test_support::s3::S3Server>,
    root: Arc<Root>,
    data_dir: PathBuf,
    addr: SocketAddr,
    opts: CoordinatorOpts,
    api: ApiClient,
}

impl Coordinator {
    /// Starts on a free loopback port; returns once `/healthz` answers.
    ///
    /// With `OSPREY_TEST_STORE=postgres` the coordinator keeps its state in
    /// a fresh database of a PostgreSQL server this test binary starts
    /// (kept across restarts of the coordinator).
    /// With `OSPREY_TEST_ARTIFACTS=s3` its artifacts and caches go to a
    /// bucket of an S3-compatible server started for it.
    pub async fn start(mut opts: CoordinatorOpts) -> Self {
        let mut s3 = None;
        let on_s3 = std::env::var("OSPREY_TEST_ARTIFACTS").is_ok_and(|store| store == "s3");
        if on_s3 && !opts.extra_args.iter().any(|arg| arg == "--artifact-store") {
            let server = osprey_test_support::s3::S3Server::start()
                .await
                .expect("start the S3 test server");
            opts.extra_args.extend([
                "--artifact-store".to_owned(),
                format!("s3://{}/osprey", server.bucket()),
            ]);
            opts.env.extend(server.env());
            s3 = Some(server);
        }
        let on_postgres = std::env::var("OSPREY_TEST_STORE").is_ok_and(|store| store == "postgres");
        if on_postgres && !opts.extra_args.iter().any(|arg| arg == "--database-url") {
            let url = osprey_test_support::postgres::TempPostgres::shared()
                .fresh_database("it")
                .expect("a fresh PostgreSQL database");
            opts.extra_args.extend(["--database-url".to_owned(), url]);
        }
        let root = Root::new();
        let data_dir = root.path.join("coordinator-data");
        std::fs::create_dir_all(&data_dir).expect("create the coordinator's data dir");
        let (process, addr) = launch(&root, &data_dir, "127.0.0.1:0", &opts).await;
        let context = format!("test dir {}", root.path.display());
        let api = ApiClient::with_context(&format!("http://{addr}"), &context);
        let coordinator = Self {
            process,
            _s3: s3,
            root,
            data_dir,
            addr,
            opts,
            api,
        };
        coordinator.wait_healthy().await;
        coordinator
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for agents and the CLI.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn api(&self) -> ApiClient {
        self.api.clone()
    }

    pub fn registration_token(&self) -> &str {
        REGISTRATION_TOKEN
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The test's temp dir (process output, agent work dirs, scratch files).
    pub fn dir(&self) -> &Path {
        &self.root.path
    }

    /// The process id while it runs (to read its memory in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid().map(|pid| pid.as_raw() as u32)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM (graceful shutdown); see [`Coordinator::wait_exit`].
    pub fn sigterm(&self) {
        self.process.signal(Signal::SIGTERM);
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }

    /// Sets `flag VALUE` for the next [`Coordinator::restart`], replacing an
    /// earlier value of the flag.
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        let args = &mut self.opts.extra_args;
        if let Some(at) = args.iter().position(|arg| arg == flag) {
            args.drain(at..(at + 2).min(args.len()));
        }
        args.extend([flag.to_owned(), value.to_owned()]);
    }

    /// Starts the coordinator again on the same port and data dir (killing it
    /// first if it still runs); returns once `/healthz` answers.
    pub async fn restart(&mut self) {
        self.process.kill9();
        let listen = self.addr.to_string();
        let (process, addr) = launch(&self.root, &self.data_dir, &listen, &self.opts).await;
        assert_eq!(addr, self.addr, "the restarted coordinator moved");
        self.process = process;
        self.wait_healthy().await;
    }

    async fn wait_healthy(&self) {
        let api = &self.api;
        wait_for("the coordinator's /healthz", START_TIMEOUT, || async {
            api.healthz().await.map_err(|error| error.to_string())
        })
        .await;
    }
}

/// Spawns the coordinator and waits for its `listening on ADDR` line. Retries
/// a few times when the process exits first (the old port may be held
/// briefly after a kill).
async fn launch(
    root: &Root,
    data_dir: &Path,
    listen: &str,
    opts: &CoordinatorOpts,
) -> (Process, SocketAddr) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut command = Command::new(binary("osprey-coordinator"));
        command
            .arg("serve")
            .args(["--listen", listen])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--registration-token", REGISTRATION_TOKEN])
            .args(["--lease-ttl-ms", &opts.lease_ttl_ms.to_string()])
            .args([
                "--heartbeat-interval-ms",
                &opts.heartbeat_interval_ms.to_string(),
            ]);
        if let Some(timeout) = opts.offer_timeout_ms {
            command.args(["--offer-timeout-ms", &timeout.to_string()]);
        }
        if let Some(max) = opts.max_log_bytes {
            command.args(["--max-log-bytes", &max.to_string()]);
        }
        // Test repositories are local paths, which the default refuses.
        if !opts.extra_args.iter().any(|arg| arg == "--repo-allow") {
            command.args(["--repo-allow", "/*"]);
        }
        command.args(&opts.extra_args);
        if !opts
            .extra_args
            .iter()
            .any(|arg| arg.starts_with("--admin-token"))
        {
            command.env("OSPREY_ADMIN_TOKEN", ADMIN_TOKEN);
        }
        command.envs(opts.env.iter().map(|(key, value)| (key, value)));
        let (process, ready) = Process::spawn("coordinator", command, &root.path);
        match tokio::time::timeout(START_TIMEOUT, ready).await {
            Ok(Ok(addr)) => {
                let addr = addr.parse().unwrap_or_else(|error| {
                    panic!("coordinator printed an unparsable address {addr:?}: {error}")
                });
                return (process, addr);
            }
            Ok(Err(_exited)) if attempts < 5 => {
                drop(process);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(Err(_exited)) => panic!(
                "the coordinator exited before printing `listening on` (test dir {}): {}",
                root.path.display(),
                read_tail(&process.stderr_path, DUMP_BYTES)
            ),
            Err(_) => panic!(
                "the coordinator printed no `listening on` line within {START_TIMEOUT:?} (test dir {}): {}",
                root.path.display(),
                read_tail(&process.stderr_path, DUMP_BYTES)
            ),
        }
    }
}

/// Flags of a test agent.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    pub name: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub concurrency: u32,
    pub executor: String,
    pub extra_args: Vec<String>,
    /// Where the agent connects instead of the coordinator (a proxy).
    pub url: Option<String>,
}

impl AgentOpts {
    /// A shell agent without tags, concurrency 1.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            tags: Vec::new(),
            run_untagged: false,
            concurrency: 1,
            executor: "shell".to_owned(),
            extra_args: Vec::new(),
            url: None,
        }
    }

    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
        self
    }

    pub fn run_untagged(mut self) -> Self {
        self.run_untagged = true;
        self
    }

    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = concurrency;
        self
    }
}

impl Default for AgentOpts {
    fn default() -> Self {
        Self::named("agent-1")
    }
}

/// A running `osprey-agent run`, with its own work dir in the test's dir.
pub struct Agent {
    process: Process,
    name: String,
    work_dir: PathBuf,
    opts: AgentOpts,
    coordinator_url: String,
    root: Arc<Root>,
}

impl Agent {
    /// Starts the agent; returns once the coordinator lists it as connected.
    pub async fn start(coordinator: &Coordinator, opts: AgentOpts) -> Self {
        let root = coordinator.root.clone();
        let work_dir = root.path.join("agents").join(&opts.name);
        std::fs::create_dir_all(&work_dir).expect("create the agent's work dir");
        let coordinator_url = opts.url.clone().unwrap_or_else(|| coordinator.url());
        let process = spawn_agent(&root, &coordinator_url, &work_dir, &opts);
        let agent = Self {
            process,
            name: opts.name.clone(),
            work_dir,
            opts,
            coordinator_url,
            root,
        };
        agent.wait_connected(&coordinator.api()).await;
        agent
    }

    /// Starts the agent again with the same flags and work dir (so the same
    /// credentials), killing it first if it still runs; returns once connected.
    pub async fn restart(&mut self, api: &ApiClient) {
        self.process.kill9();
        // The old session must be seen gone first, or `wait_connected` could
        // return on it just before the coordinator notices the kill.
        self.wait_connection(api, false).await;
        self.process = spawn_agent(
            &self.root,
            &self.coordinator_url,
            &self.work_dir,
            &self.opts,
        );
        self.wait_connected(api).await;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// SIGKILL: the agent's job processes are left behind, as on a crash.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM (graceful shutdown); see [`Agent::wait_exit`].
    pub fn sigterm(&self) {
        self.process.signal(Signal::SIGTERM);
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }

    /// Waits until `GET /api/v1/agents` lists this agent as connected.
    pub async fn wait_connected(&self, api: &ApiClient) {
        self.wait_connection(api, true).await;
    }

    async fn wait_connection(&self, api: &ApiClient, connected: bool) {
        let state = if connected { "connect" } else { "disconnect" };
        let what = format!("agent {} to {state} [{}]", self.name, api.context());
        wait_for(&what, START_TIMEOUT, || async {
            match api.agents().await {
                Ok(agents)
                    if agents
                        .iter()
                        .any(|a| a.name == self.name && a.connected == connected) =>
                {
                    Ok(())
                }
                Ok(agents) => Err(format!("{agents:?}")),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
    }
}

fn spawn_agent(root: &Root, url: &str, work_dir: &Path, opts: &AgentOpts) -> Process {
    let mut command = Command::new(binary("osprey-agent"));
    command
        .arg("run")
        .args(["--url", url])
        .args(["--registration-token", REGISTRATION_TOKEN])
        .args(["--name", &opts.name])
        .args(["--executor", &opts.executor])
        .args(["--concurrency", &opts.concurrency.to_string()])
        .arg("--work-dir")
        .arg(work_dir);
    if !opts.tags.is_empty() {
        command.args(["--tags", &opts.tags.join(",")]);
    }
    if opts.run_untagged {
        command.arg("--run-untagged");
    }
    command.args(&opts.extra_args);
    let label = format!("agent-{}", opts.name);
    Process::spawn(&label, command, &root.path).0
}

/// A coordinator and its agents. Agents drop (are killed) first.
pub struct TestCluster {
    pub agents: Vec<Agent>,
    pub coordinator: Coordinator,
    pub api: ApiClient,
}

impl TestCluster {
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// The agent called `name`.
    pub fn agent(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|agent| agent.name == name)
            .unwrap_or_else(|| panic!("no agent {name:?} in the cluster"))
    }

    pub fn dir(&self) -> &Path {
        self.coordinator.dir()
    }
}

/// Builds a [`TestCluster`]: `TestCluster::builder().agents(2).start().await`.
#[derive(Debug, Default)]
pub struct TestClusterBuilder {
    coordinator: CoordinatorOpts,
    agents: Vec<AgentOpts>,
    concurrency: Option<u32>,
}

impl TestClusterBuilder {
    /// Adds `count` untagged shell agents named `agent-1`, `agent-2`, ...
    pub fn agents(mut self, count: usize) -> Self {
        let first = self.agents.len() + 1;
        for index in first..first + count {
            self.agents
                .push(AgentOpts::named(&format!("agent-{index}")));
        }
        self
    }

    /// Adds one agent as described.
    pub fn agent(mut self, opts: AgentOpts) -> Self {
        self.agents.push(opts);
        self
    }

    /// Sets the concurrency of every agent.
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    pub fn coordinator(mut self, opts: CoordinatorOpts) -> Self {
        self.coordinator = opts;
        self
    }

    pub async fn start(self) -> TestCluster {
        let coordinator = Coordinator::start(self.coordinator).await;
        let mut agents = Vec::new();
        for mut opts in self.agents {
            if let Some(concurrency) = self.concurrency {
                opts.concurrency = concurrency;
            }
            agents.push(Agent::start(&coordinator, opts).await);
        }
        TestCluster {
            api: coordinator.api(),
            agents,
            coordinator,
        }
    }
}
