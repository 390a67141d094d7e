//! The containers of a job: services started first on the job's network, then
//! one container per script (`step_script`, then `after_script`) from the job
//! image, as GitLab Runner does. State shared between the scripts lives in the
//! bind-mounted project directory, like GitLab's builds volume.
//!
//! Output: each script runs as `sh -c 'exec 2>&1; <script>'` with no TTY, so
//! stdout and stderr share one pipe and reach the log in exactly the order the
//! script wrote them (two pipes would be merged by the engine in an order it
//! does not promise; a TTY would rewrite `\n` into `\r\n`). The container is
//! attached before it starts, so no output is lost and it streams live.

use super::config::{parse_volume, DockerConfig, VolumeSpec};
use super::scope::JobScope;
use crate::executor::OutputSink;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;
use osprey_shared::pipeline::ImageRef;
use std::collections::HashMap;

/// Settings shared by every container of one job.
pub(crate) struct ContainerPlan<'a> {
    pub docker: &'a Docker,
    pub config: &'a DockerConfig,
    pub scope: &'a JobScope,
    /// `HostConfig.NetworkMode` of the containers.
    pub network: String,
    /// Whether services get their alias on `network` (a user-defined network).
    pub aliases: bool,
    /// The job image, entrypoint override included.
    pub image: ImageRef,
    /// Environment of the scripts, `CI_PROJECT_DIR` already the container path.
    pub env: Vec<(String, String)>,
    /// `CI_PROJECT_DIR` inside the containers.
    pub project_dir: String,
    /// The host directory bind-mounted at `project_dir`.
    pub host_project_dir: String,
    /// The job's file variables: host dir, and where it is mounted read-only.
    pub files: Option<(String, String)>,
}

impl ContainerPlan<'_> {
    pub(super) fn host_config(&self, binds: Vec<String>) -> Result<HostConfig, String> {
        let memory = self.config.memory_bytes().map_err(|e| e.to_string())?;
        let nano_cpus = self.config.nano_cpus().map_err(|e| e.to_string())?;
        Ok(HostConfig {
            binds: Some(binds),
            privileged: Some(self.config.privileged),
            memory,
            nano_cpus,
            network_mode: Some(self.network.clone()),
            init: Some(self.config.init),
            ..Default::default()
        })
    }

    pub(super) async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, String> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|created| created.id)
            .map_err(|e| e.to_string())
    }

    /// Runs `script` in a fresh container of the job image and returns its exit code.
    pub async fn run_script(
        &self,
        stage: &str,
        script: &str,
        output: &OutputSink,
    ) -> Result<i64, String> {
        let image = &self.image;
        let mut binds = vec![format!("{}:{}", self.host_project_dir, self.project_dir)];
        if let Some((host, container)) = &self.files {
            binds.push(format!("{host}:{container}:ro"));
        }
        let mut volumes = Vec::new();
        for volume in &self.config.volumes {
            match parse_volume(volume).map_err(|e| e.to_string())? {
                VolumeSpec::Bind(bind) => binds.push(bind),
                VolumeSpec::Anonymous(path) => volumes.push(path),
            }
        }
        let body = ContainerCreateBody {
            image: Some(image.name.clone()),
            // `None` keeps the image's entrypoint; `[""]` clears it (the engine
            // reads a single empty string as "no entrypoint", as `--entrypoint ""`).
            entrypoint: image.entrypoint.clone(),
            cmd: Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                format!("exec 2>&1\n{script}"),
            ]),
            env: Some(env_list(self.env.iter().cloned())),
            working_dir: Some(self.project_dir.clone()),
            labels: Some(self.scope.labels("build")),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            volumes: (!volumes.is_empty()).then_some(volumes),
            host_config: Some(self.host_config(binds)?),
            ..Default::default()
        };
        let name = format!("{}-{stage}", self.scope.name());
        let id = self.create(&name, body).await?;
        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .logs(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut attached = self
            .docker
            .attach_container(&id, Some(attach))
            .await
            .map_err(|e| format!("attaching to {stage} container: {e}"))?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| format!("starting {stage} container: {e}"))?;
        tracing::debug!(job_id = %self.scope.job_id, stage, container = %id, "script container started");
        while let Some(chunk) = attached.output.next().await {
            match chunk {
                // A closed sink means nobody keeps the log: the job still runs to its end.
                Ok(chunk) => {
                    let _ = output.send(chunk.into_bytes()).await;
                }
                Err(error) => {
                    tracing::warn!(job_id = %self.scope.job_id, %error, "job output stream broke");
                    break;
                }
            }
        }
        let wait = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waiting = self.docker.wait_container(&id, Some(wait));
        match waiting.next().await {
            Some(Ok(exit)) => Ok(exit.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(error)) => Err(format!("waiting for {stage} container: {error}")),
            None => Err(format!("waiting for {stage} container: no answer")),
        }
    }
}

/// Writes an executor message (not script output) to the job log.
pub(crate) async fn say(output: &OutputSink, line: String) {
    let _ = output.send(Bytes::from(line)).await;
}

/// `KEY=VALUE` strings, each key once with its last value, in first-seen order.
pub(super) fn env_list(pairs: impl Iterator<Item = (String, String)>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    for (key, value) in pairs {
        if values.insert(key.clone(), value).is_none() {
            order.push(key);
        }
    }
    order
        .into_iter()
        .map(|key| {
            let value = values.remove(&key).unwrap_or_default();
            format!("{key}={value}")
        })
        .collect()
}

/// Lowercase letters, digits and `-` only, for container names.
pub(super) fn dns_label(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keeps_the_last_value_of_a_key() {
        let env = env_list(
            [("A", "1"), ("B", "2"), ("A", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(env, vec!["A=3".to_owned(), "B=2".to_owned()]);
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(dns_label("registry:5000-Team/pg"), "registry-5000-team-pg");
    }
}
