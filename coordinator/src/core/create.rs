//! Creating a pipeline, however it is started: read the commit, plan the
//! file for the ref and source, record the pipeline (with its project, iid
//! and the trigger event it answers, in one transaction), cancel what it
//! makes redundant, and queue its first jobs.

use super::pipelines::CreatedPipeline;
use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::repo;
use crate::repo::{GitTree, ResolvedCommit};
use crate::storage::{CommitDetails, IdempotencyKey, Keyed, NewPipeline, Origin, ProjectRow};
use osprey_proto::v1::{self, coordinator_message::Kind};
use osprey_shared::pipeline::{Pipeline, Variable};
use osprey_shared::plan::{plan, PipelineSource, Plan, PlanContext};
use osprey_shared::variables::predefined::{pipeline_predefined, Facts, ProjectFacts};
use std::collections::BTreeSet;

/// The commit before the pipeline's, for `changes:` and `CI_COMMIT_BEFORE_SHA`.
#[derive(Debug, Clone)]
pub enum Before {
    /// The commit of the ref's latest pipeline.
    LastPipeline,
    /// What the push said (`None`: a new ref, or a pipeline that is no push,
    /// whose `changes:` are all true as in GitLab).
    Known(Option<String>),
}

/// What to create a pipeline for.
#[derive(Debug, Clone)]
pub struct PipelineRequest<'a> {
    pub repo: &'a str,
    /// Branch or tag name (or a commit, for bare-repository pipelines).
    pub git_ref: &'a str,
    /// The commit to build, when known (a push's `after`); else the ref's head.
    pub at: Option<&'a str>,
    pub before: Before,
    pub variables: Vec<Variable>,
    pub source: PipelineSource,
    pub project: Option<&'a ProjectRow>,
    pub trigger_event: Option<i64>,
    /// Who started it (`admin`, `token:ID`, `schedule:ID`); `None`: its source.
    pub triggered_by: Option<&'a str>,
}

impl Core {
    /// A pipeline of a project's ref started by a person or a program (api,
    /// trigger, web): the ref's head, `changes:` all true as in GitLab.
    pub async fn create_for_project(
        &self,
        project: &ProjectRow,
        git_ref: &str,
        variables: Vec<Variable>,
        source: PipelineSource,
        triggered_by: &str,
        key: Option<IdempotencyKey<'_>>,
    ) -> CoreResult<CreatedPipeline> {
        let request = PipelineRequest {
            repo: &project.repo,
            git_ref,
            at: None,
            before: Before::Known(None),
            variables,
            source,
            project: Some(project),
            trigger_event: None,
            triggered_by: Some(triggered_by),
        };
        self.create(request, key).await
    }

    /// Creates the pipeline a request names (once per `key`, when given).
    pub async fn create(
        &self,
        request: PipelineRequest<'_>,
        key: Option<IdempotencyKey<'_>>,
    ) -> CoreResult<CreatedPipeline> {
        if let Some(key) = key {
            if let Some(seen) = self.store().keyed_pipeline(key).await? {
                return self.replay(key, seen).await;
            }
        }
        let repo = request.repo;
        let git_ref = request.git_ref;
        let mirrors = self.settings().data_dir.join("mirrors");
        let commit =
            repo::resolve_at(repo, git_ref, request.at, &mirrors, &self.settings().repos).await?;
        let max_file_bytes = self.settings().repos.max_pipeline_file_bytes;
        let before = match &request.before {
            // A second pipeline of the same commit compares with nothing:
            // its `changes:` are true, as for any pipeline that is no push.
            Before::LastPipeline => self
                .store()
                .last_sha(repo, git_ref)
                .await?
                .filter(|last| *last != commit.sha),
            Before::Known(before) => before.clone(),
        };
        let project_predefined = project_facts(request.project, repo, &self.settings().server_url);
        let rule_variables = match request.project {
            Some(project) => self.rule_variables(project, git_ref).await?,
            None => Vec::new(),
        };
        let server_url = self.settings().server_url.clone();
        let (planned, default_branch) = {
            let commit = commit.clone();
            let git_ref = git_ref.to_owned();
            let before = before.clone();
            let variables = request.variables.clone();
            let source = request.source;
            // Planning reads included files with blocking git calls.
            tokio::task::spawn_blocking(move || {
                plan_pipeline(&PlanInput {
                    commit: &commit,
                    git_ref: &git_ref,
                    before,
                    variables,
                    project_predefined,
                    server_url,
                    rule_variables,
                    source,
                    max_file_bytes,
                })
            })
            .await
            .map_err(|error| CoreError::Internal(format!("planning task failed: {error}")))??
        };
        let details = CommitDetails {
            before_sha: before,
            message: Some(commit.message.clone()),
            default_branch: default_branch.or_else(|| {
                request
                    .project
                    .map(|project| project.default_branch.clone())
            }),
        };
        let new = NewPipeline {
            repo,
            git_ref,
            ref_is_tag: commit.ref_is_tag,
            sha: &commit.sha,
            pipeline: &planned,
            details: &details,
            origin: Origin {
                project: request
                    .project
                    .map(|project| (project.id, project.name.as_str())),
                source: request.source.as_str(),
                variables: &request.variables,
                trigger_event: request.trigger_event,
                triggered_by: request.triggered_by,
            },
        };
        let (id, pending) = match key {
            None => self.store().create_pipeline_with(&new).await?,
            Some(key) => match self.store().create_pipeline_keyed(&new, key).await? {
                Keyed::Created(id, pending) => (id, pending),
                // Another request with this key won the race.
                seen => return self.replay(key, seen).await,
            },
        };
        tracing::info!(
            pipeline_id = %id,
            project = request.project.map(|project| project.name.as_str()),
            git_ref,
            sha = %commit.sha,
            source = request.source.as_str(),
            jobs = planned.jobs.len(),
            "pipeline created"
        );
        // Committed: agents that may run its jobs can fetch the commit now,
        // while its first jobs are still being offered.
        self.send_prefetch(repo, &commit.sha, &planned);
        // Only once the new pipeline is stored: a failure before leaves the
        // old ones running.
        self.auto_cancel_redundant(repo, git_ref, &commit.sha, id)
            .await?;
        self.enqueue(&pending).await?;
        Ok(CreatedPipeline {
            view: self.pipeline_view(id).await?,
            replayed: false,
        })
    }
}

impl Core {
    /// Hints the connected agents that could run one of the pipeline's jobs
    /// to fetch its commit (`Prefetch`). Never waits: the session channels
    /// do not block, and a hint that cannot be queued is dropped. The URL
    /// is the one their job specs carry (`spec::job_spec`: the pipeline's repo).
    fn send_prefetch(&self, repo: &str, sha: &str, pipeline: &Pipeline) {
        let tag_sets: Vec<BTreeSet<String>> = pipeline
            .jobs
            .iter()
            .map(|job| job.tags.iter().cloned().collect())
            .collect();
        let hint = Kind::Prefetch(v1::Prefetch {
            repo_url: repo.to_owned(),
            sha: sha.to_owned(),
        });
        let agents = self.dispatcher().prefetch(&tag_sets, &hint);
        tracing::debug!(sha, agents, "prefetch hinted");
    }
}

/// What jobs see of a pipeline's project (`CI_PROJECT_*`, `CI_REGISTRY*`):
/// a registered project's name and registry, or just what the repository
/// URL says.
pub fn project_facts(project: Option<&ProjectRow>, repo: &str, server_url: &str) -> ProjectFacts {
    osprey_shared::variables::predefined::project_facts(
        repo,
        project.map(|project| project.name.as_str()),
        server_url,
        project.and_then(registry_variables),
    )
}

/// `CI_REGISTRY` and `CI_REGISTRY_IMAGE` of a project's `--registry
/// HOST[/PATH]`: the host, and HOST/PATH (HOST/NAME without a path), lower
/// case as image names must be.
pub fn registry_variables(project: &ProjectRow) -> Option<(String, String)> {
    let registry = project.registry.as_deref()?;
    let (host, path) = match registry.split_once('/') {
        Some((host, path)) => (host, path.to_owned()),
        None => (registry, project.name.clone()),
    };
    Some((host.to_owned(), format!("{host}/{}", path.to_lowercase())))
}

struct PlanInput<'a> {
    commit: &'a ResolvedCommit,
    git_ref: &'a str,
    before: Option<String>,
    variables: Vec<Variable>,
    project_predefined: ProjectFacts,
    server_url: String,
    /// The project's variables, for `rules:` only.
    rule_variables: Vec<Variable>,
    source: PipelineSource,
    max_file_bytes: u64,
}

/// Parses the pipeline file at the commit (following `include:` in git) and
/// plans it for the ref and source: which jobs exist, with which variables.
fn plan_pipeline(input: &PlanInput<'_>) -> CoreResult<(Pipeline, Option<String>)> {
    let commit = input.commit;
    let tree = GitTree::new(
        commit.git_dir.clone(),
        commit.sha.clone(),
        input.max_file_bytes,
    );
    let parsed =
        osprey_shared::yaml::parse_pipeline_with(repo::PIPELINE_FILE, &commit.pipeline_file, &tree);
    // An include over the limit is refused as the pipeline file is (400,
    // naming the file and the limit), not as a lint error.
    if let Some(refusal) = tree.oversized.take() {
        return Err(refusal);
    }
    tree.parsed();
    let definition = parsed.map_err(CoreError::InvalidPipeline)?;
    let default_branch = tree.default_branch();
    let predefined = pipeline_predefined(&Facts {
        git_ref: input.git_ref,
        is_tag: commit.ref_is_tag,
        source: input.source.as_str(),
        default_branch: default_branch.as_deref(),
        sha: Some(&commit.sha),
        before_sha: input.before.as_deref(),
        message: Some(&commit.message),
        server_url: Some(&input.server_url),
        project: Some(&input.project_predefined),
    });
    let changed_files = tree.changed_files(input.before.as_deref());
    let context = PlanContext {
        git_ref: input.git_ref.to_owned(),
        is_tag: commit.ref_is_tag,
        source: input.source,
        changed_files,
        files: &tree,
        predefined,
        variables: input.variables.clone(),
        project_variables: input.rule_variables.clone(),
    };
    match plan(&definition, &context) {
        Ok(Plan::Created { pipeline }) => Ok((pipeline, default_branch)),
        Ok(Plan::NotCreated { reason }) => Err(CoreError::PipelineRefused {
            reason,
            errors: Vec::new(),
        }),
        Err(errors) => Err(CoreError::PipelineRefused {
            reason: "planning failed".to_owned(),
            errors: errors.iter().map(ToString::to_string).collect(),
        }),
    }
}
