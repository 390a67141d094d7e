//! What one job owns on the engine, found again by label: its containers and
//! its network. Removal goes by label rather than by remembered ids, so a
//! container whose create call was cut short by a cancellation is removed too,
//! and so [`reap`] finds what a crashed agent left behind.

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use osprey_shared::JobId;
use std::collections::HashMap;
use std::time::Duration;

/// Set on everything the executor creates.
pub const LABEL_MANAGED: &str = "osprey.managed";
/// The job a container or network belongs to.
pub const LABEL_JOB_ID: &str = "osprey.job_id";
/// The agent that created it.
pub const LABEL_AGENT: &str = "osprey.agent";
/// One run of one job on this agent (a random id): what cleanup removes.
pub const LABEL_RUN: &str = "osprey.run";
/// `build`, `service` or `network`.
pub const LABEL_ROLE: &str = "osprey.role";

/// The resources of one run of one job.
#[derive(Debug, Clone)]
pub(crate) struct JobScope {
    pub job_id: JobId,
    pub agent: String,
    pub run_id: String,
}

impl JobScope {
    pub fn new(job_id: JobId, agent: &str) -> Self {
        let run_id = format!("{:08x}", rand::random::<u32>());
        Self {
            job_id,
            agent: agent.to_owned(),
            run_id,
        }
    }

    /// `osprey-job-<job_id>-<run>`, the prefix of every name in this run.
    pub fn name(&self) -> String {
        format!("osprey-job-{}-{}", self.job_id, self.run_id)
    }

    pub fn labels(&self, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_JOB_ID.to_owned(), self.job_id.to_string()),
            (LABEL_AGENT.to_owned(), self.agent.clone()),
            (LABEL_RUN.to_owned(), self.run_id.clone()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ])
    }

    fn run_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_RUN}={}", self.run_id)],
        )])
    }

    /// Creates the job's bridge network, named after the run.
    pub async fn create_network(&self, docker: &Docker) -> Result<String, String> {
        let name = self.name();
        docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".to_owned()),
                labels: Some(self.labels("network")),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating network {name}: {e}"))?;
        Ok(name)
    }

    /// Stops every container of the run (SIGTERM, SIGKILL after `grace`), then
    /// removes containers, their anonymous volumes and the network.
    pub async fn cleanup(&self, docker: &Docker, grace: Duration) {
        remove_matching(docker, self.run_filter(), grace).await;
        tracing::debug!(job_id = %self.job_id, run = %self.run_id, "docker resources removed");
    }
}

/// Removes containers and networks an agent named `agent` left behind.
/// Returns how many containers and networks were removed.
pub(crate) async fn reap(
    docker: &Docker,
    agent: &str,
) -> Result<(usize, usize), bollard::errors::Error> {
    let filter = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_AGENT}={agent}"),
        ],
    )]);
    let containers = list_containers(docker, &filter).await?;
    let networks = list_networks(docker, &filter).await?;
    let counts = (containers.len(), networks.len());
    // Orphans get no grace: their agent is gone, nobody waits for their output.
    remove_matching(docker, filter, Duration::ZERO).await;
    Ok(counts)
}

async fn list_containers(
    docker: &Docker,
    filter: &HashMap<String, Vec<String>>,
) -> Result<Vec<String>, bollard::errors::Error> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(filter)
        .build();
    Ok(docker
        .list_containers(Some(options))
        .await?
        .into_iter()
        .filter_map(|c| c.id)
        .collect())
}

async fn list_networks(
    docker: &Docker,
    filter: &HashMap<String, Vec<String>>,
) -> Result<Vec<String>, bollard::errors::Error> {
    let options = ListNetworksOptionsBuilder::default()
        .filters(filter)
        .build();
    Ok(docker
        .list_networks(Some(options))
        .await?
        .into_iter()
        .filter_map(|n| n.id)
        .collect())
}

/// Best effort: every failure is logged, none stops the rest of the removal.
async fn remove_matching(docker: &Docker, filter: HashMap<String, Vec<String>>, grace: Duration) {
    let containers = match list_containers(docker, &filter).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(%error, "listing containers to remove failed");
            Vec::new()
        }
    };
    let grace_secs = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
    let removals = containers.iter().map(|id| async move {
        if grace_secs > 0 {
            let stop = StopContainerOptionsBuilder::default().t(grace_secs).build();
            // A container that already stopped answers 304, which bollard treats as success.
            if let Err(error) = docker.stop_container(id, Some(stop)).await {
                tracing::debug!(container = %id, %error, "stopping container failed");
            }
        }
        let remove = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(id, Some(remove)).await {
            Ok(()) => {}
            Err(error) if super::image::is_not_found(&error) => {}
            Err(error) => tracing::warn!(container = %id, %error, "removing container failed"),
        }
    });
    futures::future::join_all(removals).await;

    let networks = match list_networks(docker, &filter).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(%error, "listing networks to remove failed");
            Vec::new()
        }
    };
    for id in networks {
        match docker.remove_network(&id).await {
            Ok(()) => {}
            Err(error) if super::image::is_not_found(&error) => {}
            Err(error) => tracing::warn!(network = %id, %error, "removing network failed"),
        }
    }
}
