//! Projects and what belongs to them, as the API manages them: the
//! projects, their encrypted variables, schedules, and API tokens.

use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::schedule::Cron;
use crate::secrets::{rules, variable_aad, webhook_aad};
use crate::storage::{
    NewSchedule, NewToken, PipelineQuery, ProjectRow, ScheduleRow, TokenRow, VariableRow,
};
use osprey_shared::api::{
    format_time, CreateProject, CreateSchedule, CreateToken, CreatedProject, CreatedToken,
    PipelineFilter, PipelineView, ProjectView, Role, ScheduleView, SetVariable, TokenView,
    UpdateProject, VariableView,
};

/// Shortest repository poll interval.
const MIN_POLL_SECONDS: u64 = 5;
/// GitLab's limit on a variable's value.
const MAX_VARIABLE_BYTES: usize = 10_000;

fn invalid(text: impl Into<String>) -> CoreError {
    CoreError::InvalidArgument(text.into())
}

fn check_poll(seconds: Option<u64>) -> CoreResult<Option<i64>> {
    match seconds {
        None | Some(0) => Ok(None),
        Some(seconds) if seconds < MIN_POLL_SECONDS => Err(invalid(format!(
            "poll interval must be at least {MIN_POLL_SECONDS}s"
        ))),
        Some(seconds) => Ok(Some(seconds as i64)),
    }
}

fn check_registry(registry: Option<String>) -> CoreResult<Option<String>> {
    let Some(registry) = registry.map(|text| text.trim().trim_end_matches('/').to_owned()) else {
        return Ok(None);
    };
    if registry.is_empty() {
        return Ok(None);
    }
    if registry.contains("://") || registry.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(invalid(format!(
            "registry {registry:?} must be HOST[:PORT][/PATH], without a scheme or credentials"
        )));
    }
    Ok(Some(registry))
}

fn check_refs(patterns: Vec<String>) -> CoreResult<Vec<String>> {
    let patterns: Vec<String> = patterns
        .into_iter()
        .map(|pattern| pattern.trim().to_owned())
        .filter(|pattern| !pattern.is_empty())
        .collect();
    if let Some(bad) = patterns.iter().find(|p| p.chars().any(char::is_control)) {
        return Err(invalid(format!("invalid protected ref pattern {bad:?}")));
    }
    Ok(patterns)
}

impl Core {
    pub async fn project(&self, name: &str) -> CoreResult<ProjectRow> {
        self.store()
            .project_by_name(name)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("project {name:?} not found")))
    }

    pub fn project_view(&self, row: &ProjectRow) -> ProjectView {
        ProjectView {
            name: row.name.clone(),
            repo: osprey_shared::redact::url_credentials(&row.repo).into_owned(),
            default_branch: row.default_branch.clone(),
            protected_refs: row.protected_refs.clone(),
            poll_seconds: row.poll_seconds.map(|seconds| seconds as u64),
            registry: row.registry.clone(),
            webhook_url: format!(
                "{}/hooks/{}",
                self.settings().server_url.trim_end_matches('/'),
                row.name
            ),
            created_at: row.created_at.clone(),
        }
    }

    /// The webhook secret of a project, decrypted.
    pub fn webhook_secret(&self, row: &ProjectRow) -> CoreResult<String> {
        let plain = self
            .keyring()
            .decrypt(&row.webhook_secret, &webhook_aad(row.id))
            .map_err(|error| {
                CoreError::Internal(format!("webhook secret of {}: {error}", row.name))
            })?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| CoreError::Internal("webhook secret is not UTF-8".to_owned()))
    }

    pub async fn create_project(&self, request: CreateProject) -> CoreResult<CreatedProject> {
        rules::validate_project_name(&request.name).map_err(invalid)?;
        let repo = request.repo.trim().to_owned();
        self.settings().repos.policy.check(&repo)?;
        let default_branch = request.default_branch.unwrap_or_else(|| "main".to_owned());
        let protected_refs = check_refs(
            request
                .protected_refs
                .unwrap_or_else(|| vec![default_branch.clone()]),
        )?;
        let row = ProjectRow {
            id: 0,
            name: request.name,
            repo,
            default_branch,
            protected_refs,
            poll_seconds: check_poll(request.poll_seconds)?,
            registry: check_registry(request.registry)?,
            // Encrypted once the id (its AAD) is known.
            webhook_secret: String::new(),
            created_at: String::new(),
            polled_at: None,
        };
        let mut row = self.store().insert_project(&row).await?;
        let secret = crate::auth::new_token();
        row.webhook_secret = self
            .keyring()
            .encrypt(secret.as_bytes(), &webhook_aad(row.id));
        self.store().update_project(&row).await?;
        tracing::info!(project = %row.name, "project created");
        self.wake_triggers();
        Ok(CreatedProject {
            project: self.project_view(&row),
            webhook_secret: secret,
        })
    }

    pub async fn update_project(
        &self,
        name: &str,
        change: UpdateProject,
    ) -> CoreResult<ProjectView> {
        let mut row = self.project(name).await?;
        if let Some(repo) = change.repo {
            self.settings().repos.policy.check(repo.trim())?;
            row.repo = repo.trim().to_owned();
        }
        if let Some(branch) = change.default_branch {
            row.default_branch = branch;
        }
        if let Some(refs) = change.protected_refs {
            row.protected_refs = check_refs(refs)?;
        }
        if change.poll_seconds.is_some() {
            row.poll_seconds = check_poll(change.poll_seconds)?;
        }
        if change.registry.is_some() {
            row.registry = check_registry(change.registry)?;
        }
        self.store().update_project(&row).await?;
        Ok(self.project_view(&row))
    }

    pub async fn delete_project(&self, name: &str) -> CoreResult<()> {
        let row = self.project(name).await?;
        self.store().delete_project(row.id).await?;
        tracing::info!(project = %row.name, "project removed");
        Ok(())
    }

    pub async fn rotate_webhook_secret(&self, name: &str) -> CoreResult<CreatedProject> {
        let mut row = self.project(name).await?;
        let secret = crate::auth::new_token();
        row.webhook_secret = self
            .keyring()
            .encrypt(secret.as_bytes(), &webhook_aad(row.id));
        self.store().update_project(&row).await?;
        tracing::info!(project = %row.name, "webhook secret rotated");
        Ok(CreatedProject {
            project: self.project_view(&row),
            webhook_secret: secret,
        })
    }

    pub async fn project_pipelines(
        &self,
        project: &ProjectRow,
        filter: &PipelineFilter,
    ) -> CoreResult<Vec<PipelineView>> {
        let rows = self
            .store()
            .project_pipelines(
                project.id,
                PipelineQuery {
                    git_ref: filter.git_ref.as_deref(),
                    status: filter.status.as_deref(),
                    before: filter.before.map(|id| id as i64),
                    limit: filter.limit.unwrap_or(20).clamp(1, 100),
                },
            )
            .await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.pipeline_view(row.id()).await?);
        }
        Ok(views)
    }

    pub async fn set_variable(
        &self,
        project: &ProjectRow,
        key: &str,
        request: SetVariable,
    ) -> CoreResult<VariableView> {
        rules::validate_key(key).map_err(invalid)?;
        let scope = request.env_scope.unwrap_or_else(|| "*".to_owned());
        rules::validate_env_scope(&scope).map_err(invalid)?;
        if request.value.len() > MAX_VARIABLE_BYTES {
            return Err(invalid(format!(
                "variable {key}: a value may be at most {MAX_VARIABLE_BYTES} bytes"
            )));
        }
        if request.masked {
            rules::validate_masked(key, &request.value).map_err(invalid)?;
        }
        let row = VariableRow {
            id: 0,
            project_id: project.id,
            key: key.to_owned(),
            value: self.keyring().encrypt(
                request.value.as_bytes(),
                &variable_aad(project.id, key, &scope),
            ),
            env_scope: scope,
            masked: request.masked,
            protected: request.protected,
            file: request.file,
            raw: request.raw,
            updated_at: String::new(),
        };
        self.store().put_variable(&row).await?;
        tracing::info!(project = %project.name, key, scope = %row.env_scope, "variable set");
        let stored = self.store().variables_of(project.id).await?;
        stored
            .iter()
            .find(|var| var.key == row.key && var.env_scope == row.env_scope)
            .map(variable_view)
            .ok_or_else(|| CoreError::Internal("variable vanished after it was set".to_owned()))
    }

    pub async fn variables(&self, project: &ProjectRow) -> CoreResult<Vec<VariableView>> {
        Ok(self
            .store()
            .variables_of(project.id)
            .await?
            .iter()
            .map(variable_view)
            .collect())
    }

    pub async fn delete_variable(
        &self,
        project: &ProjectRow,
        key: &str,
        scope: &str,
    ) -> CoreResult<()> {
        if self.store().delete_variable(project.id, key, scope).await? {
            Ok(())
        } else {
            Err(CoreError::NotFound(format!(
                "project {} has no variable {key} with scope {scope}",
                project.name
            )))
        }
    }

    pub async fn create_token(&self, request: CreateToken) -> CoreResult<CreatedToken> {
        let project = match &request.project {
            Some(name) => Some(self.project(name).await?),
            None => None,
        };
        let token = format!("osp_{}", crate::auth::new_token());
        let expires_at = request
            .expires_in_seconds
            .map(|seconds| {
                let seconds = i64::try_from(seconds).map_err(|_| invalid("expiry too far"))?;
                Ok::<_, CoreError>(format_time(
                    time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds),
                ))
            })
            .transpose()?;
        let row = self
            .store()
            .insert_token(&NewToken {
                token_sha256: &crate::auth::token_hash(&token),
                role: request.role.as_str(),
                project_id: project.as_ref().map(|project| project.id),
                description: request.description.as_deref(),
                expires_at: expires_at.as_deref(),
            })
            .await?;
        tracing::info!(token_id = row.id, role = %request.role, "api token created");
        Ok(CreatedToken {
            token,
            view: self.token_view(&row).await?,
        })
    }

    async fn token_view(&self, row: &TokenRow) -> CoreResult<TokenView> {
        let project = match row.project_id {
            Some(id) => self
                .store()
                .project_by_id(id)
                .await?
                .map(|project| project.name),
            None => None,
        };
        Ok(TokenView {
            id: row.id as u64,
            role: row.role.parse().unwrap_or(Role::Read),
            project,
            description: row.description.clone(),
            created_at: row.created_at.clone(),
            expires_at: row.expires_at.clone(),
            last_used_at: row.last_used_at.clone(),
        })
    }

    pub async fn tokens(&self) -> CoreResult<Vec<TokenView>> {
        let mut views = Vec::new();
        for row in self.store().tokens().await? {
            views.push(self.token_view(&row).await?);
        }
        Ok(views)
    }

    pub async fn revoke_token(&self, id: u64) -> CoreResult<()> {
        if self.store().delete_token(id as i64).await? {
            tracing::info!(token_id = id, "api token revoked");
            Ok(())
        } else {
            Err(CoreError::NotFound(format!("token {id} not found")))
        }
    }

    pub async fn create_schedule(
        &self,
        project: &ProjectRow,
        request: CreateSchedule,
    ) -> CoreResult<ScheduleView> {
        let timezone = request.timezone.unwrap_or_else(|| "UTC".to_owned());
        let cron = Cron::parse(&request.cron, &timezone).map_err(invalid)?;
        let next = cron
            .next_after(time::OffsetDateTime::now_utc())
            .ok_or_else(|| invalid(format!("cron {:?} never fires", request.cron)))?;
        if request.git_ref.trim().is_empty() {
            return Err(invalid("a schedule needs a ref"));
        }
        let variables = serde_json::to_string(&request.variables)
            .map_err(|error| CoreError::Internal(error.to_string()))?;
        let row = self
            .store()
            .insert_schedule(&NewSchedule {
                project_id: project.id,
                cron: &request.cron,
                timezone: &timezone,
                git_ref: request.git_ref.trim(),
                variables: &variables,
                description: request.description.as_deref(),
                next_run_at: &format_time(next),
            })
            .await?;
        tracing::info!(project = %project.name, schedule_id = row.id, "schedule created");
        Ok(schedule_view(&project.name, &row))
    }

    pub async fn schedules(&self, project: &ProjectRow) -> CoreResult<Vec<ScheduleView>> {
        Ok(self
            .store()
            .schedules_of(project.id)
            .await?
            .iter()
            .map(|row| schedule_view(&project.name, row))
            .collect())
    }

    pub async fn delete_schedule(&self, project: &ProjectRow, id: u64) -> CoreResult<()> {
        if self.store().delete_schedule(project.id, id as i64).await? {
            Ok(())
        } else {
            Err(CoreError::NotFound(format!("schedule {id} not found")))
        }
    }
}

fn variable_view(row: &VariableRow) -> VariableView {
    VariableView {
        key: row.key.clone(),
        env_scope: row.env_scope.clone(),
        masked: row.masked,
        protected: row.protected,
        file: row.file,
        raw: row.raw,
        updated_at: row.updated_at.clone(),
    }
}

fn schedule_view(project: &str, row: &ScheduleRow) -> ScheduleView {
    ScheduleView {
        id: row.id as u64,
        project: project.to_owned(),
        cron: row.cron.clone(),
        timezone: row.timezone.clone(),
        git_ref: row.git_ref.clone(),
        variables: serde_json::from_str(&row.variables).unwrap_or_default(),
        description: row.description.clone(),
        next_run_at: row.next_run_at.clone(),
        last_pipeline_id: row.last_pipeline_id.map(|id| id as u64),
    }
}
