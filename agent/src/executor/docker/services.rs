//! The service containers of a job (`services:`), started on the job's network
//! before its scripts. As GitLab Runner does, a service that cannot be pulled,
//! created or started, or is no longer running after the startup grace, does
//! not fail the job: the job log gets a warning with the service's last log
//! lines, and the script runs anyway (it may not need the service, or its own
//! error says more than ours would).

use super::containers::{dns_label, env_list, say, ContainerPlan};
use crate::executor::OutputSink;
use bollard::models::{ContainerCreateBody, EndpointSettings, NetworkingConfig};
use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt;
use osprey_shared::pipeline::ServiceRef;
use std::collections::HashMap;

/// How many of a failed service's last log lines reach the job log.
pub(crate) const LOG_TAIL_LINES: usize = 20;

impl ContainerPlan<'_> {
    /// Starts every service, then checks each still runs after the startup
    /// grace; each one that does not gets a warning in the job log.
    pub async fn start_services(&self, services: &[ServiceRef], output: &OutputSink) {
        let mut started = Vec::with_capacity(services.len());
        for (index, service) in services.iter().enumerate() {
            let alias = service.effective_alias();
            say(
                output,
                format!("Starting service {} as {alias}\n", service.name),
            )
            .await;
            match self.start_service(index, service, &alias).await {
                Ok(id) => started.push((service, alias, id)),
                Err(reason) => {
                    let warning = failed_to_start(service, self.config.privileged, &reason);
                    say(output, warning).await;
                }
            }
        }
        if started.is_empty() {
            return;
        }
        tokio::time::sleep(self.config.service_startup_grace()).await;
        for (service, alias, id) in started {
            let state = match self.docker.inspect_container(&id, None).await {
                Ok(inspected) => inspected.state.unwrap_or_default(),
                Err(error) => {
                    let reason = format!("cannot inspect its container: {error}");
                    say(
                        output,
                        not_running(service, &alias, self.config.privileged, &reason, ""),
                    )
                    .await;
                    continue;
                }
            };
            if state.running != Some(true) {
                let reason = format!("exited with code {}", state.exit_code.unwrap_or(-1));
                let tail = self.log_tail(&id).await;
                tracing::warn!(job_id = %self.scope.job_id, service = %service.name, alias, %reason, "service is not running");
                say(
                    output,
                    not_running(service, &alias, self.config.privileged, &reason, &tail),
                )
                .await;
            }
        }
    }

    async fn start_service(
        &self,
        index: usize,
        service: &ServiceRef,
        alias: &str,
    ) -> Result<String, String> {
        let name = format!("{}-svc-{index}-{}", self.scope.name(), dns_label(alias));
        // GitLab passes the job's variables to services, then the service's own.
        let env = self.env.iter().cloned().chain(
            service
                .variables
                .iter()
                .map(|v| (v.key.clone(), v.value.clone())),
        );
        let networking_config = self.aliases.then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                self.network.clone(),
                EndpointSettings {
                    aliases: Some(vec![alias.to_owned()]),
                    ..Default::default()
                },
            )])),
        });
        let body = ContainerCreateBody {
            image: Some(service.name.clone()),
            entrypoint: service.entrypoint.clone(),
            cmd: service.command.clone(),
            env: Some(env_list(env)),
            labels: Some(self.scope.labels("service")),
            host_config: Some(self.host_config(Vec::new())?),
            networking_config,
            ..Default::default()
        };
        let id = self.create(&name, body).await?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(job_id = %self.scope.job_id, service = %service.name, alias, "service started");
        Ok(id)
    }

    async fn log_tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&LOG_TAIL_LINES.to_string())
            .build();
        let mut logs = self.docker.logs(id, Some(options));
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.extend_from_slice(&chunk.into_bytes());
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// The warning for a service whose image could not be made present, or whose
/// container could not be created or started.
pub(crate) fn failed_to_start(service: &ServiceRef, privileged: bool, reason: &str) -> String {
    let mut warning = format!(
        "WARNING: Service {} failed to start: {reason}\n",
        service.name
    );
    warning.push_str(&dind_hint(service, privileged));
    warning
}

/// The warning for a service that started but is not running after the
/// startup grace, with up to [`LOG_TAIL_LINES`] of its log, each line prefixed.
pub(crate) fn not_running(
    service: &ServiceRef,
    alias: &str,
    privileged: bool,
    reason: &str,
    log: &str,
) -> String {
    let mut warning = format!(
        "WARNING: service {} (alias {alias}) is not running: {reason}\n",
        service.name
    );
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if !tail.is_empty() {
        warning.push_str(&format!("Service {alias} logs:\n"));
        for line in tail {
            warning.push_str(&format!("[service {alias}] {line}\n"));
        }
    }
    warning.push_str(&dind_hint(service, privileged));
    warning
}

/// Docker-in-Docker only runs privileged: say so when the agent is not.
fn dind_hint(service: &ServiceRef, privileged: bool) -> String {
    if !privileged && service.name.contains("dind") {
        format!(
            "WARNING: {} needs privileged = true in the agent's Docker settings\n",
            service.name
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceRef {
        ServiceRef {
            name: name.to_owned(),
            alias: None,
            command: None,
            entrypoint: None,
            variables: Vec::new(),
        }
    }

    #[test]
    fn a_stopped_service_shows_its_last_lines_prefixed() {
        let log: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let warning = not_running(
            &service("redis"),
            "cache",
            false,
            "exited with code 1",
            &log,
        );
        assert!(warning.starts_with(
            "WARNING: service redis (alias cache) is not running: exited with code 1\n"
        ));
        assert!(warning.contains("[service cache] line 11\n"), "{warning}");
        assert!(warning.contains("[service cache] line 30\n"), "{warning}");
        assert!(!warning.contains("line 10\n"), "{warning}");
        assert!(!warning.contains("privileged"), "{warning}");
    }

    #[test]
    fn dind_without_privileged_gets_the_hint() {
        let dind = service("docker:dind");
        let warning = not_running(&dind, "docker", false, "exited with code 1", "");
        assert!(warning.ends_with(
            "WARNING: docker:dind needs privileged = true in the agent's Docker settings\n"
        ));
        assert!(!not_running(&dind, "docker", true, "exited", "").contains("privileged"));
        assert!(failed_to_start(&dind, false, "no such image").contains("needs privileged"));
    }
}
