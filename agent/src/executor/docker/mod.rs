//! The Docker executor: runs a job in containers of its image, with its
//! services beside it, through the local Docker engine (bollard). GitLab
//! Runner's docker executor is the model.
//!
//! One run of a job:
//! 1. the image is the job's `image:` or the agent's `default_image`
//!    (`--docker-image`), checked against `allowed_images`, every service
//!    image against `allowed_services` (all before any pull), and made present
//!    under the pull policy (pulls bounded by `pull_timeout_secs`);
//! 2. a bridge network `osprey-job-<job_id>-<random>` is created (unless
//!    `network_mode` names one), and the services start on it with their
//!    alias ([`ServiceRef::effective_alias`]) as network alias; a service whose
//!    image cannot be had, that fails to create or start, or is no longer
//!    running after `service_startup_grace_ms`, is a warning in the job log
//!    with its last log lines, and the script runs anyway (see [`services`]);
//! 3. the main script runs in a container of the job image, then the
//!    `after_script` in a second one (see [`containers`] for why one
//!    container per script and how output is ordered);
//! 4. whatever happened (success, failure, timeout, cancellation), every
//!    container and the network of the run are stopped (SIGTERM, SIGKILL after
//!    `kill_grace`) and removed, found by their labels.
//!
//! The source: the job's `project_dir` on the host is bind-mounted at
//! `CI_PROJECT_DIR=/builds/<project_name>`, the working directory of the
//! scripts. A bind mount names a host path, so the agent must run on the same
//! host as the engine (not in a container of its own without that path); in
//! exchange there is no copy in or out, and artifacts are simply files in
//! `project_dir` once the job ends. The job's file variables, when it has
//! any, are mounted the same way, read-only, from their private host dir at
//! `/builds/<project_name>.tmp` (GitLab Runner's place), and each file
//! variable holds its file's path there.
//!
//! Everything created carries the labels `osprey.managed=true`,
//! `osprey.job_id`, `osprey.agent` (name), `osprey.agent_id` (once registered)
//! and `osprey.run`, so that [`DockerExecutor::reap_orphans`] removes what a
//! crashed agent left behind, and only that (see [`scope`]).
//!
//! In the agent each run also has a job guard ([`crate::guard`]), started
//! before anything is created and disarmed after the cleanup: if the agent
//! dies mid-job, the guard removes the run's containers and network at once
//! ([`remove_run`]), rather than leaving them to run until the next start.

mod config;
mod containers;
mod image;
mod scope;
mod services;

pub use config::{ConfigError, DockerConfig, MemoryLimit, PullPolicy};
pub use scope::{LABEL_AGENT, LABEL_AGENT_ID, LABEL_JOB_ID, LABEL_MANAGED, LABEL_ROLE, LABEL_RUN};

use crate::executor::{Executor, Outcome, OutputSink, PreparedJob};
use bollard::Docker;
use containers::{say, ContainerPlan};
use futures::future::BoxFuture;
use globset::GlobSet;
use osprey_shared::pipeline::ImageRef;
use scope::{AgentIdentity, JobScope};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// Where the job's source is inside its containers.
pub const BUILDS_DIR: &str = "/builds";

/// Removal after the job may not take longer than the kill grace plus this.
const CLEANUP_SLACK: Duration = Duration::from_secs(30);

/// Why the Docker executor cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot reach the Docker engine: {0}")]
    Unreachable(#[source] bollard::errors::Error),
    #[error("docker engine call failed: {0}")]
    Engine(#[source] bollard::errors::Error),
}

/// Runs jobs in Docker containers. Cheap to share: one per agent.
pub struct DockerExecutor {
    config: DockerConfig,
    allowed_images: Option<GlobSet>,
    allowed_services: Option<GlobSet>,
    agent: AgentIdentity,
    /// Connected but not yet version-negotiated client.
    unversioned: Docker,
    /// The client once it speaks the engine's API version (engine 20.10 is at
    /// 1.41, older than bollard's default, and refuses newer clients).
    docker: OnceCell<Docker>,
    /// The agent binary, run as `guard docker` beside each job.
    guard: Option<PathBuf>,
}

impl DockerExecutor {
    /// Validates `config` and connects to the local engine (`DOCKER_HOST` or
    /// the default socket). The engine is first spoken to on first use; call
    /// [`DockerExecutor::check_engine`] to find out at start-up.
    pub fn new(config: DockerConfig) -> Result<Self, DockerError> {
        config.validate()?;
        let allowed_images = config.allowed_images_matcher()?;
        let allowed_services = config.allowed_services_matcher()?;
        let unversioned =
            Docker::connect_with_local_defaults().map_err(DockerError::Unreachable)?;
        Ok(Self {
            config,
            allowed_images,
            allowed_services,
            agent: AgentIdentity {
                name: "osprey-agent".to_owned(),
                id: None,
            },
            unversioned,
            docker: OnceCell::new(),
            guard: None,
        })
    }

    /// Starts the job guard `program` (the agent binary,
    /// `std::env::current_exe()`) beside each job, so its containers are
    /// removed if the agent dies.
    pub fn with_guard(mut self, program: PathBuf) -> Self {
        self.guard = Some(program);
        self
    }

    /// Names the agent in the `osprey.agent` label (default `osprey-agent`).
    pub fn with_agent_name(mut self, agent_name: impl Into<String>) -> Self {
        self.agent.name = agent_name.into();
        self
    }

    /// The agent's registered id, set as the `osprey.agent_id` label and used
    /// by [`DockerExecutor::reap_orphans`]; without it (`osprey-agent exec`)
    /// resources carry the name only.
    pub fn with_agent_id(mut self, agent_id: impl Into<String>) -> Self {
        self.agent.id = Some(agent_id.into());
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    async fn docker(&self) -> Result<&Docker, DockerError> {
        self.docker
            .get_or_try_init(|| async {
                self.unversioned
                    .clone()
                    .negotiate_version()
                    .await
                    .map_err(DockerError::Unreachable)
            })
            .await
    }

    /// Asks the engine for its version: an error says it cannot be used.
    pub async fn check_engine(&self) -> Result<String, DockerError> {
        let docker = self.docker().await?;
        let version = docker.version().await.map_err(DockerError::Unreachable)?;
        Ok(version.version.unwrap_or_else(|| "unknown".to_owned()))
    }

    /// Removes every container and network of this agent's id, and those of
    /// its name that carry no id (from versions before the id label): jobs of
    /// an earlier process of this agent that crashed. Call before taking jobs.
    /// Returns how many containers and networks were removed.
    pub async fn reap_orphans(&self) -> Result<(usize, usize), DockerError> {
        let docker = self.docker().await?;
        let (containers, networks) = scope::reap(docker, &self.agent)
            .await
            .map_err(DockerError::Engine)?;
        if containers + networks > 0 {
            tracing::info!(
                agent = %self.agent.name,
                agent_id = self.agent.id.as_deref().unwrap_or(""),
                containers,
                networks,
                "removed docker resources left by an earlier run"
            );
        }
        Ok((containers, networks))
    }

    async fn run_job(
        &self,
        job: &PreparedJob,
        output: OutputSink,
        cancel: CancellationToken,
    ) -> Outcome {
        let docker = match self.docker().await {
            Ok(docker) => docker,
            Err(error) => return failed(error.to_string()),
        };
        let scope = JobScope::new(job.job_id, &self.agent);
        tracing::info!(job_id = %job.job_id, run = %scope.run_id, "docker job starting");
        // Before anything exists on the engine, so nothing outlives the agent.
        let guard = match &self.guard {
            Some(program) => match crate::guard::DockerGuard::spawn(
                program,
                &scope.run_id,
                job.files_dir.as_deref(),
            ) {
                Ok(guard) => Some(guard),
                Err(err) => return failed(format!("cannot start the job guard: {err}")),
            },
            None => None,
        };
        let outcome = tokio::select! {
            outcome = self.execute(docker, &scope, job, &output) => outcome,
            () = cancel.cancelled() => Outcome::Canceled,
            () = tokio::time::sleep(job.timeout) => Outcome::TimedOut,
        };
        // A lost lease asks for less than the whole grace (see StopGrace).
        let grace = job.stop_grace.within(job.kill_grace);
        let cleanup_limit = grace + CLEANUP_SLACK;
        if tokio::time::timeout(cleanup_limit, scope.cleanup(docker, grace))
            .await
            .is_err()
        {
            // The guard, dropped armed, tries once more; reap_orphans at the next start after that.
            tracing::warn!(job_id = %job.job_id, run = %scope.run_id, "docker cleanup did not finish; left to the job guard");
        } else if let Some(guard) = guard {
            guard.disarm().await;
        }
        // The reason is left to the job runner, which masks it.
        tracing::info!(job_id = %job.job_id, outcome = outcome.ci_job_status(), "docker job finished");
        outcome
    }

    /// Everything up to the job's result; cleanup is the caller's.
    async fn execute(
        &self,
        docker: &Docker,
        scope: &JobScope,
        job: &PreparedJob,
        output: &OutputSink,
    ) -> Outcome {
        let image = match self.job_image(job) {
            Ok(image) => image,
            Err(reason) => return failed(reason),
        };
        if let Err(reason) = self.check_services(job) {
            return failed(reason);
        }
        say(output, format!("Using docker image {}\n", image.name)).await;
        let pull_timeout = self.config.pull_timeout();
        if let Err(reason) =
            image::ensure_image(docker, &image.name, self.config.pull_policy, pull_timeout).await
        {
            return failed(reason);
        }
        // A service whose image cannot be had is a warning, not a failure (as GitLab).
        let mut services = Vec::with_capacity(job.services.len());
        for service in &job.services {
            match image::ensure_image(docker, &service.name, self.config.pull_policy, pull_timeout)
                .await
            {
                Ok(()) => services.push(service.clone()),
                Err(reason) => {
                    tracing::warn!(job_id = %job.job_id, service = %service.name, %reason, "service image not available");
                    let warning =
                        services::failed_to_start(service, self.config.privileged, &reason);
                    say(output, warning).await;
                }
            }
        }
        let (network, aliases) = match &self.config.network_mode {
            Some(mode) => (mode.clone(), is_user_defined_network(mode)),
            None => match scope.create_network(docker).await {
                Ok(name) => (name, true),
                Err(reason) => return failed(reason),
            },
        };
        let project_dir = format!("{BUILDS_DIR}/{}", project_dir_name(&job.project_name));
        let files = job
            .files_dir
            .as_ref()
            .map(|host| (host.clone(), format!("{project_dir}.tmp")));
        let mut env = job.env.clone();
        if let Some((host, container)) = &files {
            in_container_paths(&mut env, host, container);
        }
        env.push(("CI_PROJECT_DIR".to_owned(), project_dir.clone()));
        env.push(("CI_BUILDS_DIR".to_owned(), BUILDS_DIR.to_owned()));
        let plan = ContainerPlan {
            docker,
            config: &self.config,
            scope,
            network,
            aliases,
            image,
            env,
            project_dir,
            host_project_dir: job.project_dir.display().to_string(),
            files: files.map(|(host, container)| (host.display().to_string(), container)),
        };
        plan.start_services(&services, output).await;
        let outcome = match plan
            .run_script("step_script", &job.main_script, output)
            .await
        {
            Ok(0) => Outcome::Success,
            Ok(code) => Outcome::Failed {
                exit_code: Some(i32::try_from(code).unwrap_or(-1)),
                reason: "script failure".to_owned(),
            },
            Err(reason) => return failed(reason),
        };
        if let Some(after_script) = &job.after_script {
            say(output, "Running after_script\n".to_owned()).await;
            // As GitLab: the after_script's own result never changes the job's.
            let after_script = outcome.after_script(after_script);
            match plan.run_script("after_script", &after_script, output).await {
                Ok(0) => {}
                Ok(code) => {
                    say(
                        output,
                        format!("after_script failed with exit code {code}\n"),
                    )
                    .await;
                }
                Err(reason) => say(output, format!("after_script not run: {reason}\n")).await,
            }
        }
        outcome
    }

    fn job_image(&self, job: &PreparedJob) -> Result<ImageRef, String> {
        let image = match (&job.image, &self.config.default_image) {
            (Some(image), _) => image.clone(),
            (None, Some(name)) => ImageRef {
                name: name.clone(),
                entrypoint: None,
            },
            (None, None) => {
                return Err(
                    "no image: the job names none and the agent has no --docker-image".to_owned(),
                )
            }
        };
        if let Some(allowed) = &self.allowed_images {
            if !allowed.is_match(&image.name) {
                return Err(format!(
                    "image {} is not allowed: it matches none of the agent's allowed_images ({})",
                    image.name,
                    self.config.allowed_images.join(", ")
                ));
            }
        }
        Ok(image)
    }

    /// Refuses the job when a service image matches none of
    /// `allowed_services`; checked before anything is pulled, so a refused
    /// image never reaches the engine.
    fn check_services(&self, job: &PreparedJob) -> Result<(), String> {
        let Some(allowed) = &self.allowed_services else {
            return Ok(());
        };
        match job.services.iter().find(|service| !allowed.is_match(&service.name)) {
            Some(service) => Err(format!(
                "service image {} is not allowed: it matches none of the agent's allowed_services ({})",
                service.name,
                self.config.allowed_services.join(", ")
            )),
            None => Ok(()),
        }
    }
}

impl Executor for DockerExecutor {
    fn run<'a>(
        &'a self,
        job: &'a PreparedJob,
        output: OutputSink,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run_job(job, output, cancel))
    }
}

/// Removes every container and the network of the run `run_id` at once,
/// connecting as [`DockerExecutor::new`] does: what the job guard of a dead
/// agent does.
pub async fn remove_run(run_id: &str) -> Result<(), DockerError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(DockerError::Unreachable)?
        .negotiate_version()
        .await
        .map_err(DockerError::Unreachable)?;
    scope::remove_run(&docker, run_id, Duration::ZERO).await;
    Ok(())
}

fn failed(reason: String) -> Outcome {
    Outcome::Failed {
        exit_code: None,
        reason,
    }
}

/// Whether services can get a network alias on `mode` (only on user-defined networks).
fn is_user_defined_network(mode: &str) -> bool {
    !matches!(mode, "host" | "bridge" | "none" | "default") && !mode.starts_with("container:")
}

/// Gives each file variable (a value naming a file of `host_dir`) the path
/// of that file under `container_dir`, where the dir is mounted.
fn in_container_paths(env: &mut [(String, String)], host_dir: &Path, container_dir: &str) {
    for (_, value) in env.iter_mut() {
        let path = Path::new(value.as_str());
        if path.parent() == Some(host_dir) {
            if let Some(name) = path.file_name() {
                *value = format!("{container_dir}/{}", name.to_string_lossy());
            }
        }
    }
}

/// The last path segment of `/builds/<name>`: never empty, `.`/`..` or with a `/`.
fn project_dir_name(project_name: &str) -> String {
    let name: String = project_name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c == ':' {
                '-'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        "project".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_become_one_path_segment() {
        assert_eq!(project_dir_name("osprey"), "osprey");
        assert_eq!(project_dir_name("a/b"), "a-b");
        assert_eq!(project_dir_name(".."), "project");
        assert_eq!(project_dir_name(""), "project");
    }

    #[test]
    fn file_variables_get_their_in_container_paths() {
        let host = Path::new("/w/builds/1-abc.tmp");
        let mut env = vec![
            (
                "KUBECONFIG".to_owned(),
                "/w/builds/1-abc.tmp/KUBECONFIG".to_owned(),
            ),
            ("PLAIN".to_owned(), "/w/builds/1-abc.tmp".to_owned()),
            ("OTHER".to_owned(), "/elsewhere/KUBECONFIG".to_owned()),
        ];
        in_container_paths(&mut env, host, "/builds/demo.tmp");
        assert_eq!(env[0].1, "/builds/demo.tmp/KUBECONFIG");
        assert_eq!(env[1].1, "/w/builds/1-abc.tmp");
        assert_eq!(env[2].1, "/elsewhere/KUBECONFIG");
    }

    #[test]
    fn only_named_networks_take_aliases() {
        assert!(is_user_defined_network("ci-net"));
        assert!(!is_user_defined_network("host"));
        assert!(!is_user_defined_network("container:abc"));
    }
}
