//! Builds the `JobSpec` an agent receives: the job definition, its
//! predefined variables, the global and job variables, the earlier jobs
//! whose artifacts it gets, and its caches.

use crate::core::ProjectContext;
use crate::storage::{JobRow, PipelineRow};
use osprey_proto::v1;
use osprey_shared::pipeline::{
    ArtifactsExpiry, ArtifactsWhen, Cache, CachePolicy, CacheWhen, JobDef, Pipeline, Variable,
};
use osprey_shared::variables::predefined::{
    id_predefined, job_predefined, pipeline_predefined, Facts, Ids, JobFacts,
};
use std::collections::HashMap;

fn variable(key: &str, value: impl Into<String>) -> v1::Variable {
    v1::Variable {
        key: key.to_owned(),
        value: value.into(),
        masked: false,
        file: false,
    }
}

/// What a job's spec is built from beyond the job itself.
pub struct SpecInputs<'a> {
    pub pipeline: &'a PipelineRow,
    pub definition: &'a Pipeline,
    pub server_url: &'a str,
    /// The pipeline's project, with its variables decrypted.
    pub project: &'a ProjectContext,
}

fn user_variables(variables: &[Variable]) -> impl Iterator<Item = v1::Variable> + '_ {
    variables
        .iter()
        .map(|var| variable(&var.key, var.value.clone()))
}

/// The jobs whose artifacts `job` downloads, as GitLab chooses them:
/// `dependencies:` when given; else the `needs:` with `artifacts: true`; else
/// every job of the earlier stages. Every such job that stored an archive
/// counts, failed ones too (`artifacts: when: on_failure` / `always`).
pub fn artifact_sources<'a>(
    job: &JobRow,
    def: &JobDef,
    pipeline_jobs: &'a [JobRow],
) -> Vec<&'a JobRow> {
    let wanted = |other: &JobRow| match (&def.dependencies, &def.needs) {
        (Some(names), _) => names.contains(&other.name),
        (None, Some(needs)) => needs
            .iter()
            .any(|need| need.artifacts && need.job == other.name),
        (None, None) => other.stage_index < job.stage_index,
    };
    pipeline_jobs
        .iter()
        .filter(|other| other.id != job.id && wanted(other))
        // Whatever its status: a failed job that uploaded (`artifacts:
        // when: on_failure` or `always`) passes its archive on, as on GitLab.
        .filter(|other| other.artifact_size.is_some())
        .collect()
}

/// The spec of a job about to be queued. `server_url` is `CI_SERVER_URL`.
pub fn job_spec(
    inputs: &SpecInputs<'_>,
    job: &JobRow,
    job_def: &JobDef,
    artifact_sources: &[&JobRow],
) -> v1::JobSpec {
    let SpecInputs {
        pipeline,
        definition,
        server_url,
        project: context,
    } = *inputs;
    let facts = crate::core::project_facts(context.project.as_ref(), &pipeline.repo, server_url);
    let project = facts.name.clone();
    let mut predefined = pipeline_predefined(&Facts {
        git_ref: &pipeline.git_ref,
        is_tag: pipeline.ref_is_tag,
        source: &pipeline.source,
        default_branch: pipeline.default_branch.as_deref(),
        sha: Some(&pipeline.sha),
        before_sha: pipeline.before_sha.as_deref(),
        message: Some(pipeline.commit_message.as_deref().unwrap_or_default()),
        server_url: Some(server_url),
        project: Some(&facts),
    });
    predefined.extend(job_predefined(&JobFacts {
        name: &job.name,
        stage: &job.stage,
        node: job_def.node,
    }));
    let ids = id_predefined(
        server_url,
        &Ids {
            pipeline_id: pipeline.id as u64,
            pipeline_iid: pipeline.iid.unwrap_or(pipeline.id) as u64,
            job_id: job.id as u64,
        },
    );
    predefined.extend(ids.iter().cloned());
    let mut variables: Vec<v1::Variable> = user_variables(&predefined).collect();
    // Precedence, lowest first: predefined, global, job, project, pipeline.
    let secrets = context.job_variables(job_def.environment.as_ref().map(|env| env.name.as_str()));
    // What planning could not know joins the job's own values now: the
    // ids (`$CI_JOB_ID`) and the project's variables.
    let mut known: Vec<v1::Variable> = user_variables(&ids).collect();
    known.extend(secrets.iter().cloned());
    variables.extend(user_variables(&definition.variables));
    variables.extend(
        job_def
            .variables
            .iter()
            .map(|var| variable(&var.key, context.expand(&var.value, &known))),
    );
    variables.extend(secrets);
    variables.extend(user_variables(&pipeline.pipeline_variables()));

    v1::JobSpec {
        job_id: job.id as u64,
        pipeline_id: pipeline.id as u64,
        name: job.name.clone(),
        stage: job.stage.clone(),
        repo_url: pipeline.repo.clone(),
        commit_sha: pipeline.sha.clone(),
        ref_name: pipeline.git_ref.clone(),
        ref_is_tag: pipeline.ref_is_tag,
        before_script: job_def.before_script.clone(),
        script: job_def.script.clone(),
        after_script: job_def.after_script.clone(),
        artifact_paths: job_def.artifacts.paths.clone(),
        artifact_exclude: job_def.artifacts.exclude.clone(),
        artifact_untracked: job_def.artifacts.untracked,
        artifact_when: artifact_when(job_def.artifacts.when) as i32,
        artifact_name: job_def.artifacts.name.clone().unwrap_or_default(),
        artifact_expire_in_seconds: match job_def.artifacts.expire_in {
            Some(ArtifactsExpiry::After(seconds)) => seconds,
            Some(ArtifactsExpiry::Never) | None => 0,
        },
        dependencies: artifact_sources
            .iter()
            .map(|source| v1::ArtifactSource {
                job_id: source.id as u64,
                job_name: source.name.clone(),
            })
            .collect(),
        image: job_def.image.as_ref().map(|image| v1::Image {
            name: image.name.clone(),
            entrypoint: image.entrypoint.clone().unwrap_or_default(),
        }),
        services: job_def
            .services
            .iter()
            .map(|service| v1::Service {
                name: service.name.clone(),
                alias: service.effective_alias(),
                command: service.command.clone().unwrap_or_default(),
                entrypoint: service.entrypoint.clone().unwrap_or_default(),
                variables: user_variables(&service.variables).collect(),
            })
            .collect(),
        timeout_seconds: job_def.timeout_seconds.unwrap_or(0),
        project_name: project,
        caches: caches(&job_def.caches, &variables),
        variables,
    }
}

/// `cache:` for the agent. The planner expanded the variables it knew; what
/// only the job knows (`$CI_COMMIT_SHA`, `$CI_PIPELINE_ID`...) is expanded
/// here with the job's variables, as GitLab expands keys for the job.
fn caches(caches: &[Cache], variables: &[v1::Variable]) -> Vec<v1::CacheSpec> {
    if caches.is_empty() {
        return Vec::new();
    }
    let lookup: HashMap<&str, &str> = variables
        .iter()
        .map(|var| (var.key.as_str(), var.value.as_str()))
        .collect();
    let get = |name: &str| lookup.get(name).map(|value| (*value).to_owned());
    let expand = |text: &str| {
        if text.contains('$') {
            osprey_shared::variables::expand(text, &get)
        } else {
            text.to_owned()
        }
    };
    caches
        .iter()
        .map(|cache| v1::CacheSpec {
            key: expand(&cache.key),
            paths: cache.paths.clone(),
            untracked: cache.untracked,
            policy: match cache.policy {
                CachePolicy::PullPush => v1::CachePolicy::PullPush,
                CachePolicy::Pull => v1::CachePolicy::Pull,
                CachePolicy::Push => v1::CachePolicy::Push,
            } as i32,
            when: match cache.when {
                CacheWhen::OnSuccess => v1::CacheWhen::OnSuccess,
                CacheWhen::OnFailure => v1::CacheWhen::OnFailure,
                CacheWhen::Always => v1::CacheWhen::Always,
            } as i32,
            fallback_keys: cache.fallback_keys.iter().map(|key| expand(key)).collect(),
        })
        .collect()
}

fn artifact_when(when: ArtifactsWhen) -> v1::ArtifactWhen {
    match when {
        ArtifactsWhen::OnSuccess => v1::ArtifactWhen::OnSuccess,
        ArtifactsWhen::OnFailure => v1::ArtifactWhen::OnFailure,
        ArtifactsWhen::Always => v1::ArtifactWhen::Always,
    }
}
