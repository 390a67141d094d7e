//! The agent's command line and configuration file, layered once into an
//! immutable [`Config`]: built-in defaults, then the TOML file (`--config`),
//! then environment variables (`OSPREY_*`), then flags. Nothing else reads the
//! environment or the file; the rest of the crate takes a `Config`.

pub use crate::executor::docker::DockerConfig;
pub use crate::executor::user::JobUser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default job timeout when the job does not set one (GitLab's project default).
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default time between SIGTERM and SIGKILL on timeout or agent shutdown.
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// Default time running jobs get to finish after SIGTERM to the agent.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `osprey-agent`: runs CI jobs for an Osprey coordinator.
#[derive(Debug, Parser)]
#[command(name = "osprey-agent", version, about)]
pub struct Cli {
    /// How logs are written to stderr: `text` for people, `json` for
    /// collectors (one object per line).
    #[arg(
        long,
        env = "OSPREY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The format of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line, the event's fields at its top level.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to the coordinator and run jobs until SIGTERM / SIGINT.
    Run(AgentArgs),
    /// Register with the coordinator and store the credentials, then exit.
    Register(AgentArgs),
    /// Run one job of ./.gitlab-ci.yml locally, without a coordinator.
    Exec(ExecArgs),
    /// The per-job guard the agent starts itself (see `guard.rs`).
    #[command(hide = true)]
    Guard(crate::guard::GuardArgs),
}

/// Flags of `run` and `register`. Every flag is optional here: the file and the
/// defaults fill the gaps, and [`AgentArgs::load`] checks what is required.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// TOML configuration file; flags and environment override its keys.
    #[arg(long, env = "OSPREY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Coordinator URL (`http://host:port` or `https://...`).
    #[arg(long, env = "OSPREY_URL")]
    pub url: Option<String>,
    /// Registration token, used only when WORK_DIR/credentials.json is missing.
    #[arg(long, env = "OSPREY_REGISTRATION_TOKEN", hide_env_values = true)]
    pub registration_token: Option<String>,
    /// Agent name shown by the coordinator.
    #[arg(long, env = "OSPREY_NAME")]
    pub name: Option<String>,
    /// Comma-separated tags.
    #[arg(long, env = "OSPREY_TAGS", value_delimiter = ',')]
    pub tags: Option<Vec<String>>,
    /// Also take untagged jobs (always on for an agent without tags).
    #[arg(long, env = "OSPREY_RUN_UNTAGGED")]
    pub run_untagged: bool,
    /// `shell` or `docker`.
    #[arg(long, env = "OSPREY_EXECUTOR")]
    pub executor: Option<ExecutorKind>,
    /// Number of jobs run at once.
    #[arg(long, env = "OSPREY_CONCURRENCY")]
    pub concurrency: Option<u32>,
    /// Holds credentials.json, builds/, spool/ and running/.
    #[arg(long, env = "OSPREY_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// PEM file of the CA that signed the coordinator's certificate (https
    /// only; without it the built-in public roots are trusted).
    #[arg(long, env = "OSPREY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Default image of the Docker executor.
    #[arg(long, env = "OSPREY_DOCKER_IMAGE")]
    pub docker_image: Option<String>,
    /// Timeout of a job that sets none, in seconds.
    #[arg(long, env = "OSPREY_JOB_TIMEOUT_SECS")]
    pub job_timeout_secs: Option<u64>,
    /// Longest timeout any job gets here, whatever its `timeout:` says
    /// (GitLab Runner's `maximum_timeout`), in seconds.
    #[arg(long, env = "OSPREY_MAX_JOB_TIMEOUT_SECS")]
    pub max_job_timeout_secs: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, env = "OSPREY_KILL_GRACE_SECS")]
    pub kill_grace_secs: Option<u64>,
    /// Seconds running jobs get to finish after SIGTERM to the agent.
    #[arg(long, env = "OSPREY_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Shell executor: run jobs as this user (the agent must run as root).
    #[arg(long, env = "OSPREY_USER")]
    pub user: Option<String>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (port 0 picks one,
    /// printed on stdout). Off by default.
    #[arg(long, env = "OSPREY_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Flags of `exec` (owned by the `exec` implementation).
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// `shell` or `docker`.
    pub executor: ExecutorKind,
    /// Name of the job in ./.gitlab-ci.yml.
    pub job_name: String,
    /// Extra variables, `KEY=VALUE`.
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// Image of a job that names none (Docker executor), as `run --docker-image`.
    #[arg(long, env = "OSPREY_DOCKER_IMAGE")]
    pub docker_image: Option<String>,
    /// TOML file as `run --config`; only its Docker settings (`[docker]`,
    /// `docker_image`) are used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Extra mount of the job container, `SRC:DST[:ro]` (repeatable), added
    /// to the file's `[docker] volumes`.
    #[arg(long = "docker-volume", value_name = "SRC:DST[:ro]")]
    pub docker_volumes: Vec<String>,
    /// Run the containers privileged (e.g. for docker:dind).
    #[arg(long)]
    pub docker_privileged: bool,
}

impl ExecArgs {
    /// The Docker executor's settings of `exec`: the `--config` file's, if
    /// any, with the flags over them; validated.
    pub fn docker_config(&self) -> Result<DockerConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut docker = file.docker.unwrap_or_default();
        if let Some(image) = self.docker_image.clone().or(file.docker_image) {
            docker.default_image = Some(image);
        }
        docker.volumes.extend(self.docker_volumes.iter().cloned());
        docker.privileged |= self.docker_privileged;
        docker.validate().map_err(|err| ConfigError::Invalid {
            key: "docker",
            message: err.to_string(),
        })?;
        Ok(docker)
    }
}

/// Which executor runs the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Shell,
    Docker,
}

impl ExecutorKind {
    /// The name sent to the coordinator at registration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Docker => "docker",
        }
    }
}

/// The TOML file: the same keys as the flags, with `_` for `-`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub registration_token: Option<String>,
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub run_untagged: Option<bool>,
    pub executor: Option<ExecutorKind>,
    pub concurrency: Option<u32>,
    pub work_dir: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub docker_image: Option<String>,
    pub job_timeout_secs: Option<u64>,
    pub max_job_timeout_secs: Option<u64>,
    pub kill_grace_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub user: Option<String>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub docker: Option<DockerConfig>,
}

/// Validated configuration of a running agent. Built once, never changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub url: String,
    /// Needed only when the agent has no stored credentials yet.
    pub registration_token: Option<String>,
    pub name: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: ExecutorKind,
    pub concurrency: u32,
    pub work_dir: PathBuf,
    pub tls_ca: Option<PathBuf>,
    pub docker: DockerConfig,
    pub job_timeout: Duration,
    /// Caps every job's timeout, when set.
    pub max_job_timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub shutdown_grace: Duration,
    /// Shell executor: the user jobs run as; `None` runs them as the agent.
    pub user: Option<JobUser>,
    /// Where `/metrics` is served; `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("missing {0} (flag, environment variable or config file key)")]
    Missing(&'static str),
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl AgentArgs {
    /// Reads the file named by `--config`, if any, and layers everything.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        self.layer_over(file)
    }

    /// Layers the flags (clap has already put environment values in them) over
    /// `file` and the defaults, then validates.
    pub fn layer_over(&self, file: FileConfig) -> Result<Config, ConfigError> {
        let url = self
            .url
            .clone()
            .or(file.url)
            .ok_or(ConfigError::Missing("url"))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                key: "url",
                message: format!("{url:?} is not an http:// or https:// URL"),
            });
        }
        let tags: Vec<String> = self
            .tags
            .clone()
            .or(file.tags)
            .unwrap_or_default()
            .into_iter()
            .map(|tag| tag.trim().to_owned())
            .filter(|tag| !tag.is_empty())
            .collect();
        // GitLab: an agent without tags takes untagged jobs whatever it says.
        let run_untagged =
            tags.is_empty() || self.run_untagged || file.run_untagged.unwrap_or(false);
        let concurrency = self.concurrency.or(file.concurrency).unwrap_or(1);
        if concurrency == 0 {
            return Err(ConfigError::Invalid {
                key: "concurrency",
                message: "must be at least 1".into(),
            });
        }
        let work_dir = self
            .work_dir
            .clone()
            .or(file.work_dir)
            .ok_or(ConfigError::Missing("work_dir"))?;
        let name = self
            .name
            .clone()
            .or(file.name)
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(default_name);
        let mut docker = file.docker.unwrap_or_default();
        if let Some(image) = self.docker_image.clone().or(file.docker_image) {
            docker.default_image = Some(image);
        }
        docker.validate().map_err(|err| ConfigError::Invalid {
            key: "docker",
            message: err.to_string(),
        })?;
        let tls_ca = self.tls_ca.clone().or(file.tls_ca);
        if let Some(path) = tls_ca.as_deref().filter(|_| url.starts_with("http://")) {
            // Not an error: one file can serve agents on both schemes. The
            // file is not read (see `client::trust`), so it need not exist.
            tracing::warn!(tls_ca = %path.display(), %url, "tls_ca is ignored with an http:// url");
        }
        let executor = self
            .executor
            .or(file.executor)
            .unwrap_or(ExecutorKind::Shell);
        let user = match self.user.clone().or(file.user) {
            None => None,
            Some(_) if executor != ExecutorKind::Shell => {
                return Err(ConfigError::Invalid {
                    key: "user",
                    message: "only the shell executor runs jobs as another user".into(),
                })
            }
            Some(name) => Some(JobUser::resolve(&name).map_err(|err| ConfigError::Invalid {
                key: "user",
                message: err.to_string(),
            })?),
        };
        let secs = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map_or(default, Duration::from_secs)
        };
        Ok(Config {
            url,
            registration_token: self.registration_token.clone().or(file.registration_token),
            name,
            tags,
            run_untagged,
            executor,
            concurrency,
            work_dir,
            tls_ca,
            docker,
            job_timeout: secs(
                self.job_timeout_secs,
                file.job_timeout_secs,
                DEFAULT_JOB_TIMEOUT,
            ),
            max_job_timeout: self
                .max_job_timeout_secs
                .or(file.max_job_timeout_secs)
                .map(Duration::from_secs),
            kill_grace: secs(
                self.kill_grace_secs,
                file.kill_grace_secs,
                DEFAULT_KILL_GRACE,
            ),
            shutdown_grace: secs(
                self.shutdown_grace_secs,
                file.shutdown_grace_secs,
                DEFAULT_SHUTDOWN_GRACE,
            ),
            user,
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
        })
    }
}

/// Parses a TOML configuration file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "osprey-agent".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> AgentArgs {
        let mut argv = vec!["osprey-agent", "run"];
        argv.extend_from_slice(list);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Run(args) => args,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let file = file(
            r#"
            url = "http://file:1"
            name = "from-file"
            tags = ["a", "b"]
            executor = "docker"
            concurrency = 4
            work_dir = "/file"
            [docker]
            image = "alpine:3"
            "#,
        );
        let config = args(&["--url", "http://flag:2", "--concurrency", "2"])
            .layer_over(file)
            .expect("valid");
        assert_eq!(config.url, "http://flag:2");
        assert_eq!(config.concurrency, 2);
        assert_eq!(config.name, "from-file");
        assert_eq!(config.tags, vec!["a", "b"]);
        assert_eq!(config.executor, ExecutorKind::Docker);
        assert_eq!(config.work_dir, PathBuf::from("/file"));
        assert_eq!(config.docker.default_image.as_deref(), Some("alpine:3"));
        assert_eq!(config.job_timeout, DEFAULT_JOB_TIMEOUT);
        assert!(
            !config.run_untagged,
            "tagged agent defaults to tagged jobs only"
        );
    }

    #[test]
    fn run_untagged_follows_gitlab_defaults() {
        let base = ["--url", "http://x", "--work-dir", "/w"];
        let untagged = args(&base).layer_over(FileConfig::default()).unwrap();
        assert!(untagged.run_untagged, "no tags: on");
        let mut tagged = base.to_vec();
        tagged.extend(["--tags", "linux, docker"]);
        let config = args(&tagged).layer_over(FileConfig::default()).unwrap();
        assert_eq!(config.tags, vec!["linux", "docker"]);
        assert!(!config.run_untagged);
        tagged.push("--run-untagged");
        assert!(
            args(&tagged)
                .layer_over(FileConfig::default())
                .unwrap()
                .run_untagged
        );
    }

    #[test]
    fn docker_image_flag_fills_docker_table() {
        let config = args(&[
            "--url",
            "http://x",
            "--work-dir",
            "/w",
            "--docker-image",
            "i:1",
        ])
        .layer_over(file("[docker]\nimage = \"file:1\""))
        .unwrap();
        assert_eq!(config.docker.default_image.as_deref(), Some("i:1"));
    }

    #[test]
    fn missing_or_invalid_values_are_reported() {
        let err = args(&["--work-dir", "/w"])
            .layer_over(FileConfig::default())
            .unwrap_err();
        assert!(matches!(err, ConfigError::Missing("url")), "{err}");
        let err = args(&["--url", "ftp://x", "--work-dir", "/w"])
            .layer_over(FileConfig::default())
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "url", .. }),
            "{err}"
        );
        let err = args(&[
            "--url",
            "http://x",
            "--work-dir",
            "/w",
            "--concurrency",
            "0",
        ])
        .layer_over(FileConfig::default())
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                key: "concurrency",
                ..
            }
        ));
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
    }

    #[test]
    fn user_is_resolved_and_checked() {
        let base = ["--url", "http://x", "--work-dir", "/w"];
        let err = args(&base)
            .layer_over(file("user = \"no-such-user-osprey\""))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid user: unknown user \"no-such-user-osprey\""
        );
        let err = args(&[&base[..], &["--executor", "docker", "--user", "root"]].concat())
            .layer_over(FileConfig::default())
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "user", .. }),
            "{err}"
        );
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap();
        let config = args(&[&base[..], &["--user", &me.name]].concat())
            .layer_over(FileConfig::default())
            .unwrap();
        assert_eq!(config.user.map(|user| user.uid), Some(me.uid.as_raw()));
    }

    fn exec_args(list: &[&str]) -> ExecArgs {
        let mut argv = vec!["osprey-agent", "exec", "docker", "build"];
        argv.extend_from_slice(list);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Exec(args) => args,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn exec_takes_docker_settings_from_its_file_and_flags() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "url = \"http://ignored:1\"\ndocker_image = \"file:1\"\n[docker]\nvolumes = [\"/cache\"]\nmemory = \"1g\"\n",
        )
        .expect("write config");
        let config = exec_args(&[
            "--config",
            &path.display().to_string(),
            "--docker-volume",
            "/var/run/docker.sock:/var/run/docker.sock",
            "--docker-volume",
            "/srv/data:/data:ro",
            "--docker-privileged",
        ])
        .docker_config()
        .expect("valid");
        assert_eq!(config.default_image.as_deref(), Some("file:1"));
        assert_eq!(
            config.volumes,
            vec![
                "/cache".to_owned(),
                "/var/run/docker.sock:/var/run/docker.sock".to_owned(),
                "/srv/data:/data:ro".to_owned()
            ]
        );
        assert!(config.privileged);
        assert_eq!(config.memory_bytes().expect("memory"), Some(1 << 30));

        let plain = exec_args(&[]).docker_config().expect("valid");
        assert_eq!(plain, DockerConfig::default());
        let err = exec_args(&["--docker-volume", "relative"])
            .docker_config()
            .expect_err("a volume must name a container path");
        assert!(
            matches!(err, ConfigError::Invalid { key: "docker", .. }),
            "{err}"
        );
    }
}
