//! What one job owns on the engine, found again by label: its containers and
//! its network. Removal goes by label rather than by remembered ids, so a
//! container whose create call was cut short by a cancellation is removed too,
//! and so [`reap`] finds what a crashed agent left behind.
//!
//! Orphans are matched by the agent's id (`osprey.agent_id`, from its
//! credentials), which is unique per coordinator, rather than by its name,
//! which two agents on one engine may share. Resources labelled with a name but
//! no id come from agents older than the id label (or from `osprey-agent
//! exec`, which has no id); they are still reaped by name.

use bollard::models::{ContainerSummary, Network, NetworkCreateRequest};
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
/// The name of the agent that created it (informative; see [`LABEL_AGENT_ID`]).
pub const LABEL_AGENT: &str = "osprey.agent";
/// The id of the agent that created it, as registered with the coordinator.
pub const LABEL_AGENT_ID: &str = "osprey.agent_id";
/// One run of one job on this agent (a random id): what cleanup removes.
pub const LABEL_RUN: &str = "osprey.run";
/// `build`, `service` or `network`.
pub const LABEL_ROLE: &str = "osprey.role";

/// The resources of one run of one job.
#[derive(Debug, Clone)]
pub(crate) struct JobScope {
    pub job_id: JobId,
    pub agent: AgentIdentity,
    pub run_id: String,
}

/// Who creates the resources: the name always, the id once registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub name: String,
    pub id: Option<String>,
}

impl JobScope {
    pub fn new(job_id: JobId, agent: &AgentIdentity) -> Self {
        let run_id = format!("{:08x}", rand::random::<u32>());
        Self {
            job_id,
            agent: agent.clone(),
            run_id,
        }
    }

    /// `osprey-job-<job_id>-<run>`, the prefix of every name in this run.
    pub fn name(&self) -> String {
        format!("osprey-job-{}-{}", self.job_id, self.run_id)
    }

    pub fn labels(&self, role: &str) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_JOB_ID.to_owned(), self.job_id.to_string()),
            (LABEL_AGENT.to_owned(), self.agent.name.clone()),
            (LABEL_RUN.to_owned(), self.run_id.clone()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ]);
        if let Some(id) = &self.agent.id {
            labels.insert(LABEL_AGENT_ID.to_owned(), id.clone());
        }
        labels
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
        remove_run(docker, &self.run_id, grace).await;
        tracing::debug!(job_id = %self.job_id, run = %self.run_id, "docker resources removed");
    }
}

/// Stops and removes every container of the run `run_id` (SIGTERM, SIGKILL
/// after `grace`; at once for a zero grace), then its network: what cleanup
/// after a job and the job guard of a dead agent both do.
pub(crate) async fn remove_run(docker: &Docker, run_id: &str, grace: Duration) {
    let filter = HashMap::from([("label".to_owned(), vec![format!("{LABEL_RUN}={run_id}")])]);
    let containers = match list_containers(docker, &filter).await {
        Ok(found) => ids(found, |c| c.id),
        Err(error) => {
            tracing::warn!(%error, "listing containers to remove failed");
            Vec::new()
        }
    };
    remove_containers(docker, &containers, grace).await;
    // Listed after the containers are gone: a network in use cannot be removed.
    let networks = match list_networks(docker, &filter).await {
        Ok(found) => ids(found, |n| n.id),
        Err(error) => {
            tracing::warn!(%error, "listing networks to remove failed");
            Vec::new()
        }
    };
    remove_networks(docker, &networks).await;
}

/// Removes the containers and networks `agent` left behind: those labelled
/// with its id, and those labelled with its name that carry no id label at
/// all. Another agent of the same name labels its resources with its own id,
/// so they are left alone. Returns how many containers and networks were
/// removed.
pub(crate) async fn reap(
    docker: &Docker,
    agent: &AgentIdentity,
) -> Result<(usize, usize), bollard::errors::Error> {
    let mut containers = Vec::new();
    let mut networks = Vec::new();
    if let Some(id) = &agent.id {
        let by_id = managed_filter(format!("{LABEL_AGENT_ID}={id}"));
        containers.extend(ids(list_containers(docker, &by_id).await?, |c| c.id));
        networks.extend(ids(list_networks(docker, &by_id).await?, |n| n.id));
    }
    // The engine's filters cannot say "label absent", so that is checked here.
    let by_name = managed_filter(format!("{LABEL_AGENT}={}", agent.name));
    let unowned = |labels: Option<&HashMap<String, String>>| {
        !labels.is_some_and(|labels| labels.contains_key(LABEL_AGENT_ID))
    };
    containers.extend(ids(
        list_containers(docker, &by_name)
            .await?
            .into_iter()
            .filter(|c| unowned(c.labels.as_ref())),
        |c| c.id,
    ));
    networks.extend(ids(
        list_networks(docker, &by_name)
            .await?
            .into_iter()
            .filter(|n| unowned(n.labels.as_ref())),
        |n| n.id,
    ));
    // Orphans get no grace: their agent is gone, nobody waits for their output.
    remove_containers(docker, &containers, Duration::ZERO).await;
    remove_networks(docker, &networks).await;
    Ok((containers.len(), networks.len()))
}

fn managed_filter(label: String) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_MANAGED}=true"), label],
    )])
}

fn ids<T>(found: impl IntoIterator<Item = T>, id: impl Fn(T) -> Option<String>) -> Vec<String> {
    found.into_iter().filter_map(id).collect()
}

async fn list_containers(
    docker: &Docker,
    filter: &HashMap<String, Vec<String>>,
) -> Result<Vec<ContainerSummary>, bollard::errors::Error> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(filter)
        .build();
    docker.list_containers(Some(options)).await
}

async fn list_networks(
    docker: &Docker,
    filter: &HashMap<String, Vec<String>>,
) -> Result<Vec<Network>, bollard::errors::Error> {
    let options = ListNetworksOptionsBuilder::default()
        .filters(filter)
        .build();
    docker.list_networks(Some(options)).await
}

/// Best effort: every failure is logged, none stops the other removals.
async fn remove_containers(docker: &Docker, containers: &[String], grace: Duration) {
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
}

/// Best effort, as [`remove_containers`]; call it once their containers are gone.
async fn remove_networks(docker: &Docker, networks: &[String]) {
    for id in networks {
        match docker.remove_network(id).await {
            Ok(()) => {}
            Err(error) if super::image::is_not_found(&error) => {}
            Err(error) => tracing::warn!(network = %id, %error, "removing network failed"),
        }
    }
}
