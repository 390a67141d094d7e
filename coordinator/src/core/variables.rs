//! A project's variables joining a job at dispatch: decrypted only here,
//! filtered by the ref's protection and the job's environment (the most
//! specific scope wins), and never written back anywhere. Precedence as
//! GitLab's: pipeline variables > project variables > job `variables:` >
//! global `variables:` > predefined — the agent applies the list in order,
//! later entries winning.

use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::secrets::{rules, variable_aad};
use crate::storage::{PipelineRow, ProjectRow, VariableRow};
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
    /// Decrypts one stored variable of `project`.
    fn decrypt_variable(&self, project: &ProjectRow, row: &VariableRow) -> CoreResult<String> {
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
        String::from_utf8(plain.to_vec())
            .map_err(|_| CoreError::Internal(format!("variable {} is not UTF-8", row.key)))
    }

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
            let value = self.decrypt_variable(project, &row)?;
            out.push(osprey_shared::pipeline::Variable {
                key: row.key,
                value,
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
            let value = self.decrypt_variable(&project, &row)?;
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
        let candidates = self
            .secrets
            .iter()
            .filter(|secret| !secret.protected || self.protected_ref)
            .map(|secret| (secret.key.as_str(), secret.env_scope.as_str(), secret));
        rules::pick_scoped(candidates, environment)
            .into_iter()
            .map(|(_, secret)| v1::Variable {
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
