//! A project's variables joining a job at dispatch: decrypted only here,
//! filtered by the ref's protection and the job's environment (the most
//! specific scope wins), and never written back anywhere. Precedence as
//! GitLab's: pipeline variables > project variables > job `variables:` >
//! global `variables:` > predefined — the agent applies the list in order,
//! later entries winning.

use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::secrets::{rules, variable_aad};
use crate::storage::{PipelineRow, ProjectRow};
use osprey_proto::v1;
use zeroize::Zeroizing;

/// One decrypted project variable.
pub struct ProjectSecret {
    pub key: String,
    pub env_scope: String,
    pub value: Zeroizing<String>,
    pub masked: bool,
    pub protected: bool,
    pub file: bool,
    pub raw: bool,
}

/// What a pipeline's jobs receive of their project.
#[derive(Default)]
pub struct ProjectContext {
    pub project: Option<ProjectRow>,
    pub secrets: Vec<ProjectSecret>,
    /// The pipeline's ref matches the project's protected patterns.
    pub protected_ref: bool,
}

impl Core {
    /// A project's variables as `rules:` see them when a pipeline of
    /// `git_ref` is planned: those of scope `*` (GitLab resolves
    /// environment scopes only for jobs), protected ones only on protected
    /// refs, file ones not at all. Values for evaluation only: planning
    /// never copies them into jobs.
    pub(super) async fn rule_variables(
        &self,
        project: &ProjectRow,
        git_ref: &str,
    ) -> CoreResult<Vec<osprey_shared::pipeline::Variable>> {
        let protected = rules::ref_is_protected(git_ref, &project.protected_refs);
        let mut out = Vec::new();
        for row in self.store().variables_of(project.id).await? {
            if row.env_scope != "*" || row.file || (row.protected && !protected) {
                continue;
            }
            let plain = self
                .keyring()
                .decrypt(
                    &row.value,
                    &variable_aad(project.id, &row.key, &row.env_scope),
                )
                .map_err(|error| {
                    CoreError::Internal(format!(
                        "variable {} of project {}: {error}",
                        row.key, project.name
                    ))
                })?;
            out.push(osprey_shared::pipeline::Variable {
                key: row.key,
                value: String::from_utf8_lossy(&plain).into_owned(),
            });
        }
        Ok(out)
    }

    /// The project of a pipeline and its variables, decrypted.
    pub(super) async fn project_context(
        &self,
        pipeline: &PipelineRow,
    ) -> CoreResult<ProjectContext> {
        let Some(project_id) = pipeline.project_id else {
            return Ok(ProjectContext::default());
        };
        let Some(project) = self.store().project_by_id(project_id).await? else {
            return Ok(ProjectContext::default());
        };
        let mut secrets = Vec::new();
        for row in self.store().variables_of(project_id).await? {
            let plain = self
                .keyring()
                .decrypt(
                    &row.value,
                    &variable_aad(project_id, &row.key, &row.env_scope),
                )
                .map_err(|error| {
                    CoreError::Internal(format!(
                        "variable {} of project {}: {error}",
                        row.key, project.name
                    ))
                })?;
            let value = String::from_utf8(plain.to_vec())
                .map_err(|_| CoreError::Internal(format!("variable {} is not UTF-8", row.key)))?;
            secrets.push(ProjectSecret {
                key: row.key,
                env_scope: row.env_scope,
                value: Zeroizing::new(value),
                masked: row.masked,
                protected: row.protected,
                file: row.file,
                raw: row.raw,
            });
        }
        Ok(ProjectContext {
            protected_ref: rules::ref_is_protected(&pipeline.git_ref, &project.protected_refs),
            project: Some(project),
            secrets,
        })
    }
}

impl ProjectContext {
    /// The project variables a job gets: protected ones only on protected
    /// refs, and per key the most specific scope matching its environment.
    pub fn job_variables(&self, environment: Option<&str>) -> Vec<v1::Variable> {
        let mut best: Vec<(&ProjectSecret, u32)> = Vec::new();
        for secret in &self.secrets {
            if secret.protected && !self.protected_ref {
                continue;
            }
            let Some(rank) = rules::scope_specificity(&secret.env_scope, environment) else {
                continue;
            };
            match best.iter_mut().find(|(seen, _)| seen.key == secret.key) {
                Some(entry) if entry.1 < rank => *entry = (secret, rank),
                Some(_) => {}
                None => best.push((secret, rank)),
            }
        }
        best.into_iter()
            .map(|(secret, _)| v1::Variable {
                key: secret.key.clone(),
                value: secret.value.to_string(),
                masked: secret.masked,
                file: secret.file,
            })
            .collect()
    }

    /// Expands references to project variables in a job's own variable
    /// value (`URL: https://$TOKEN@host`), for the agent only: what is
    /// stored keeps `$TOKEN`. File and raw variables are not expanded into
    /// others.
    pub fn expand(&self, value: &str, given: &[v1::Variable]) -> String {
        if !value.contains('$') || given.is_empty() {
            return value.to_owned();
        }
        let lookup = |name: &str| {
            given
                .iter()
                .find(|var| var.key == name && !var.file)
                .map(|var| var.value.clone())
        };
        osprey_shared::variables::expand(value, &lookup)
    }
}
