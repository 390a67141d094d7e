//! The `[docker]` table of the agent's configuration: what the Docker executor
//! may run and how. Only data and its validation; the executor reads it.

use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::time::Duration;

/// Settings of the Docker executor. Every field has a default, so an empty
/// `[docker]` table (or none) is valid; [`DockerConfig::validate`] checks the
/// values once at start-up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Image of jobs that name none (`--docker-image`); `image` in the TOML too.
    #[serde(alias = "image")]
    pub default_image: Option<String>,
    /// When images are pulled.
    pub pull_policy: PullPolicy,
    /// Globs the job image must match (`*` stops at `/`, `**` does not); empty allows any.
    pub allowed_images: Vec<String>,
    /// Globs every service image must match, as `allowed_images` (GitLab
    /// Runner's name); empty allows any.
    pub allowed_services: Vec<String>,
    /// Run job and service containers privileged (needed for docker-in-docker).
    pub privileged: bool,
    /// Extra mounts of every job container: `host:container[:ro|rw]`, or a bare
    /// `/container/path` for an anonymous volume removed with the container.
    pub volumes: Vec<String>,
    /// Memory limit of each container: bytes, or a number with `k`, `m`, `g` (`512m`).
    pub memory: Option<MemoryLimit>,
    /// CPU limit of each container, in CPUs (`1.5`).
    pub cpus: Option<f64>,
    /// Network of the containers instead of a per-job bridge network (`host`,
    /// or the name of an existing network). Services are reachable by alias only
    /// on a user-defined network.
    pub network_mode: Option<String>,
    /// Longest time an image pull may take before the job fails.
    pub pull_timeout_secs: u64,
    /// How long a service must stay up after its start to count as started;
    /// one that does not is a warning in the job log, not a failure.
    pub service_startup_grace_ms: u64,
    /// Run an init process (docker-init) as PID 1 of every container, so a stop
    /// signal reaches the script and cancellation is prompt.
    pub init: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            default_image: None,
            pull_policy: PullPolicy::default(),
            allowed_images: Vec::new(),
            allowed_services: Vec::new(),
            privileged: false,
            volumes: Vec::new(),
            memory: None,
            cpus: None,
            network_mode: None,
            pull_timeout_secs: 300,
            service_startup_grace_ms: 1000,
            init: true,
        }
    }
}

/// When the executor pulls an image, as GitLab Runner's `pull_policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull before every job; a failed pull fails the job.
    Always,
    /// Use the local image, pull only when it is missing.
    #[default]
    IfNotPresent,
    /// Use the local image only.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(PullPolicy::Always),
            "if-not-present" => Ok(PullPolicy::IfNotPresent),
            "never" => Ok(PullPolicy::Never),
            other => Err(ConfigError::PullPolicy(other.to_owned())),
        }
    }
}

/// A memory limit as written: bytes (`536870912`) or with a unit (`512m`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum MemoryLimit {
    Bytes(u64),
    Text(String),
}

impl MemoryLimit {
    /// The limit in bytes.
    pub fn bytes(&self) -> Result<u64, ConfigError> {
        match self {
            MemoryLimit::Bytes(bytes) => Ok(*bytes),
            MemoryLimit::Text(text) => parse_memory(text),
        }
    }
}

/// A value of the `[docker]` table that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("docker pull_policy {0:?}: expected always, if-not-present or never")]
    PullPolicy(String),
    #[error("docker memory {0:?}: expected bytes or a number with k, m or g (512m)")]
    Memory(String),
    #[error("docker cpus {0}: expected a positive number")]
    Cpus(String),
    #[error("docker volume {0:?}: expected host:container[:ro|rw] or an absolute container path")]
    Volume(String),
    #[error("docker allowed_images {0:?}: {1}")]
    AllowedImage(String, String),
    #[error("docker allowed_services {0:?}: {1}")]
    AllowedService(String, String),
}

impl DockerConfig {
    /// Checks every value, so the executor never meets a bad one mid-job.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.memory_bytes()?;
        self.nano_cpus()?;
        for volume in &self.volumes {
            parse_volume(volume)?;
        }
        self.allowed_images_matcher()?;
        self.allowed_services_matcher()?;
        Ok(())
    }

    pub(crate) fn memory_bytes(&self) -> Result<Option<i64>, ConfigError> {
        match &self.memory {
            None => Ok(None),
            Some(limit) => {
                let bytes = limit.bytes()?;
                i64::try_from(bytes)
                    .map(Some)
                    .map_err(|_| ConfigError::Memory(bytes.to_string()))
            }
        }
    }

    pub(crate) fn nano_cpus(&self) -> Result<Option<i64>, ConfigError> {
        match self.cpus {
            None => Ok(None),
            Some(cpus) if cpus.is_finite() && cpus > 0.0 && cpus < 1.0e6 => {
                // Bounded above, so the product fits an i64.
                Ok(Some((cpus * 1e9).round() as i64))
            }
            Some(cpus) => Err(ConfigError::Cpus(cpus.to_string())),
        }
    }

    /// `None` when every job image is allowed.
    pub(crate) fn allowed_images_matcher(&self) -> Result<Option<GlobSet>, ConfigError> {
        image_globs(&self.allowed_images, ConfigError::AllowedImage)
    }

    /// `None` when every service image is allowed.
    pub(crate) fn allowed_services_matcher(&self) -> Result<Option<GlobSet>, ConfigError> {
        image_globs(&self.allowed_services, ConfigError::AllowedService)
    }

    pub(crate) fn pull_timeout(&self) -> Duration {
        Duration::from_secs(self.pull_timeout_secs.max(1))
    }

    pub(crate) fn service_startup_grace(&self) -> Duration {
        Duration::from_millis(self.service_startup_grace_ms)
    }
}

/// One parsed entry of `volumes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VolumeSpec {
    /// A bind mount, passed to the engine as written.
    Bind(String),
    /// An anonymous volume at this container path.
    Anonymous(String),
}

/// The globs of `allowed_images` or `allowed_services`; `None` when empty
/// (anything allowed). `*` does not cross `/`, so `library/*` cannot match
/// `evil.example.com/library/x`; `**` does.
fn image_globs(
    patterns: &[String],
    error: fn(String, String) -> ConfigError,
) -> Result<Option<GlobSet>, ConfigError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| error(pattern.clone(), e.to_string()))?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| error(patterns.join(","), e.to_string()))
}

pub(crate) fn parse_volume(text: &str) -> Result<VolumeSpec, ConfigError> {
    let invalid = || ConfigError::Volume(text.to_owned());
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        [path] if path.starts_with('/') => Ok(VolumeSpec::Anonymous((*path).to_owned())),
        [host, container] if !host.is_empty() && container.starts_with('/') => {
            Ok(VolumeSpec::Bind(text.to_owned()))
        }
        [host, container, mode]
            if !host.is_empty()
                && container.starts_with('/')
                && mode.split(',').all(|m| !m.is_empty()) =>
        {
            Ok(VolumeSpec::Bind(text.to_owned()))
        }
        _ => Err(invalid()),
    }
}

fn parse_memory(text: &str) -> Result<u64, ConfigError> {
    let invalid = || ConfigError::Memory(text.to_owned());
    let trimmed = text.trim().to_ascii_lowercase();
    let trimmed = trimmed.strip_suffix('b').unwrap_or(&trimmed);
    let (number, multiplier) = match trimmed.char_indices().last() {
        Some((i, 'k')) => (&trimmed[..i], 1u64 << 10),
        Some((i, 'm')) => (&trimmed[..i], 1 << 20),
        Some((i, 'g')) => (&trimmed[..i], 1 << 30),
        Some((i, 't')) => (&trimmed[..i], 1 << 40),
        Some(_) => (trimmed, 1),
        None => return Err(invalid()),
    };
    let value: f64 = number.trim().parse().map_err(|_| invalid())?;
    if !value.is_finite() || value <= 0.0 {
        return Err(invalid());
    }
    let bytes = value * multiplier as f64;
    if bytes >= u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_accepts_bytes_and_units() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5G"), Ok(3 << 29));
        assert_eq!(parse_memory("2048"), Ok(2048));
        assert_eq!(parse_memory("64kb"), Ok(64 << 10));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-1m").is_err());
        assert!(parse_memory("").is_err());
    }

    #[test]
    fn volumes_are_checked() {
        assert_eq!(
            parse_volume("/var/run/docker.sock:/var/run/docker.sock"),
            Ok(VolumeSpec::Bind(
                "/var/run/docker.sock:/var/run/docker.sock".into()
            ))
        );
        assert!(matches!(
            parse_volume("/data:/data:ro"),
            Ok(VolumeSpec::Bind(_))
        ));
        assert_eq!(
            parse_volume("/cache"),
            Ok(VolumeSpec::Anonymous("/cache".into()))
        );
        assert!(parse_volume("relative").is_err());
        assert!(parse_volume("/a:relative").is_err());
        assert!(parse_volume("/a:/b:ro:x").is_err());
    }

    #[test]
    fn toml_table_deserializes_with_defaults() {
        let config: DockerConfig = toml::from_str(
            "default_image = \"alpine:3.19\"\npull_policy = \"never\"\nmemory = \"512m\"\ncpus = 1.5\n",
        )
        .expect("valid table");
        assert_eq!(config.pull_policy, PullPolicy::Never);
        assert_eq!(config.memory_bytes(), Ok(Some(512 << 20)));
        assert_eq!(config.nano_cpus(), Ok(Some(1_500_000_000)));
        assert!(config.init);
        let bytes: DockerConfig = toml::from_str("memory = 1024").expect("valid table");
        assert_eq!(bytes.memory_bytes(), Ok(Some(1024)));
        assert!(toml::from_str::<DockerConfig>("pull_policy = \"sometimes\"").is_err());
        assert_eq!(DockerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn allowed_images_are_globs() {
        let config = DockerConfig {
            allowed_images: vec!["osprey-test/*".into(), "alpine:*".into()],
            ..DockerConfig::default()
        };
        let matcher = config.allowed_images_matcher().unwrap().unwrap();
        assert!(matcher.is_match("osprey-test/busybox:latest"));
        assert!(matcher.is_match("alpine:3.19"));
        assert!(!matcher.is_match("evil/alpine:3.19"));
        assert!(!matcher.is_match("osprey-test/a/b"));
    }

    #[test]
    fn allowed_services_are_globs_of_their_own() {
        let config: DockerConfig =
            toml::from_str("allowed_images = [\"alpine:*\"]\nallowed_services = [\"postgres:*\", \"registry.example.com/**\"]")
                .expect("valid table");
        let services = config.allowed_services_matcher().unwrap().unwrap();
        assert!(services.is_match("postgres:16"));
        assert!(services.is_match("registry.example.com/ci/redis:7"));
        assert!(!services.is_match("alpine:3.19"));
        assert!(matches!(
            DockerConfig::default().allowed_services_matcher(),
            Ok(None)
        ));
        let bad = DockerConfig {
            allowed_services: vec!["[".into()],
            ..DockerConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::AllowedService(pattern, _)) if pattern == "["
        ));
    }
}
