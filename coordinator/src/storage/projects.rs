//! What the store keeps of projects: the projects themselves, their
//! variables (values as encrypted envelopes: the store never sees a secret),
//! schedules, API tokens, the refs last seen of each repository, and trigger
//! events — a push or a schedule tick recorded durably before its pipeline is
//! planned, unique per dedupe key so a redelivered hook creates nothing.

use super::rows::flag;
use super::StoreResult;
use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: i64,
    pub name: String,
    pub repo: String,
    pub default_branch: String,
    pub protected_refs: Vec<String>,
    pub poll_seconds: Option<i64>,
    pub registry: Option<String>,
    /// Encrypted envelope of the webhook secret.
    pub webhook_secret: String,
    pub created_at: String,
    pub polled_at: Option<String>,
}

/// A project variable; `value` is its encrypted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableRow {
    pub id: i64,
    pub project_id: i64,
    pub key: String,
    pub env_scope: String,
    pub value: String,
    pub masked: bool,
    pub protected: bool,
    pub file: bool,
    pub raw: bool,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub token_sha256: String,
    pub role: String,
    pub project_id: Option<i64>,
    pub description: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub id: i64,
    pub project_id: i64,
    pub cron: String,
    pub timezone: String,
    pub git_ref: String,
    /// JSON array of `{key, value}`.
    pub variables: String,
    pub description: Option<String>,
    pub next_run_at: String,
    pub last_pipeline_id: Option<i64>,
    pub created_at: String,
}

/// A push or schedule tick waiting for (or done with) its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerEventRow {
    pub id: i64,
    pub project_id: i64,
    pub source: String,
    pub git_ref: String,
    pub ref_is_tag: bool,
    pub before_sha: Option<String>,
    pub after_sha: Option<String>,
    pub variables: String,
    pub dedupe_key: String,
    pub state: String,
    pub pipeline_id: Option<i64>,
    pub error: Option<String>,
    pub schedule_id: Option<i64>,
}

/// A trigger event to record.
#[derive(Debug, Clone)]
pub struct NewTriggerEvent<'a> {
    pub project_id: i64,
    /// `push` or `schedule`.
    pub source: &'a str,
    pub git_ref: &'a str,
    pub ref_is_tag: bool,
    pub before_sha: Option<&'a str>,
    /// `None`: the ref's head when the pipeline is planned.
    pub after_sha: Option<&'a str>,
    pub variables: &'a str,
    /// One event per key: `push:{project}:{kind}:{name}:{sha}`,
    /// `schedule:{id}:{tick}`.
    pub dedupe_key: &'a str,
    pub schedule_id: Option<i64>,
}

/// What a new project, variable, token or schedule is made of.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub token_sha256: &'a str,
    pub role: &'a str,
    pub project_id: Option<i64>,
    pub description: Option<&'a str>,
    pub expires_at: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct NewSchedule<'a> {
    pub project_id: i64,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub git_ref: &'a str,
    pub variables: &'a str,
    pub description: Option<&'a str>,
    pub next_run_at: &'a str,
}

/// Filter of a project's pipeline list, newest first.
#[derive(Debug, Clone, Default)]
pub struct PipelineQuery<'a> {
    pub git_ref: Option<&'a str>,
    pub status: Option<&'a str>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// The state a trigger event ends in.
pub const EVENT_CREATED: &str = "created";
pub const EVENT_REFUSED: &str = "refused";

/// Projects and everything they own.
#[async_trait]
pub trait ProjectStore: Send + Sync + std::fmt::Debug {
    /// Records a project; `Conflict` if the name is taken. `row.id` is ignored.
    async fn insert_project(&self, row: &ProjectRow) -> StoreResult<ProjectRow>;
    async fn project_by_name(&self, name: &str) -> StoreResult<Option<ProjectRow>>;
    async fn project_by_id(&self, id: i64) -> StoreResult<Option<ProjectRow>>;
    async fn projects(&self) -> StoreResult<Vec<ProjectRow>>;
    /// Stores every field of `row` but its id, name and creation time.
    async fn update_project(&self, row: &ProjectRow) -> StoreResult<()>;
    /// Forgets a project with its variables, schedules, tokens, refs and
    /// events. Its pipelines stay, readable by id.
    async fn delete_project(&self, id: i64) -> StoreResult<()>;
    async fn project_pipelines(
        &self,
        project_id: i64,
        query: PipelineQuery<'_>,
    ) -> StoreResult<Vec<super::PipelineRow>>;
    /// The newest pipeline of each ref of a project, newest first (at most
    /// `limit` refs).
    async fn latest_pipelines_by_ref(
        &self,
        project_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<super::PipelineRow>>;

    /// Creates or replaces the variable of (project, key, scope).
    async fn put_variable(&self, row: &VariableRow) -> StoreResult<()>;
    async fn variables_of(&self, project_id: i64) -> StoreResult<Vec<VariableRow>>;
    /// Every variable (for re-encryption under a new key).
    async fn all_variables(&self) -> StoreResult<Vec<VariableRow>>;
    async fn set_variable_value(&self, id: i64, envelope: &str) -> StoreResult<()>;
    /// False if there was no such variable.
    async fn delete_variable(&self, project_id: i64, key: &str, scope: &str) -> StoreResult<bool>;

    async fn insert_token(&self, token: &NewToken<'_>) -> StoreResult<TokenRow>;
    async fn token_by_hash(&self, token_sha256: &str) -> StoreResult<Option<TokenRow>>;
    async fn tokens(&self) -> StoreResult<Vec<TokenRow>>;
    async fn touch_token(&self, id: i64) -> StoreResult<()>;
    /// False if there was no such token.
    async fn delete_token(&self, id: i64) -> StoreResult<bool>;

    async fn insert_schedule(&self, schedule: &NewSchedule<'_>) -> StoreResult<ScheduleRow>;
    async fn schedules_of(&self, project_id: i64) -> StoreResult<Vec<ScheduleRow>>;
    async fn delete_schedule(&self, project_id: i64, id: i64) -> StoreResult<bool>;
    /// Schedules whose `next_run_at` is at or before `now` (RFC 3339).
    async fn due_schedules(&self, now: &str) -> StoreResult<Vec<ScheduleRow>>;
    /// Moves a schedule from `due` to `next` and records its tick's event, in
    /// one transaction: false (and nothing recorded) if another claim won.
    async fn claim_schedule(
        &self,
        id: i64,
        due: &str,
        next: &str,
        event: &NewTriggerEvent<'_>,
    ) -> StoreResult<bool>;

    /// The refs last seen of a project's repository, `(refs/..., sha)`.
    async fn project_refs(&self, project_id: i64) -> StoreResult<Vec<(String, String)>>;
    /// Records a ref's new head (`None`: deleted) and, with it, the event of
    /// its push. True if the event is new (its dedupe key unseen).
    async fn record_push(
        &self,
        project_id: i64,
        full_ref: &str,
        sha: Option<&str>,
        event: Option<&NewTriggerEvent<'_>>,
    ) -> StoreResult<bool>;
    async fn set_polled(&self, project_id: i64) -> StoreResult<()>;
    /// Events still waiting for their pipeline, oldest first.
    async fn pending_events(&self) -> StoreResult<Vec<TriggerEventRow>>;
    async fn trigger_event(&self, id: i64) -> StoreResult<Option<TriggerEventRow>>;
    /// Ends an event that made no pipeline (its file invalid, no job to run).
    async fn refuse_event(&self, id: i64, error: &str) -> StoreResult<()>;
}

impl<'r> sqlx::FromRow<'r, AnyRow> for ProjectRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        let refs: String = row.try_get("protected_refs")?;
        Ok(ProjectRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            repo: row.try_get("repo")?,
            default_branch: row.try_get("default_branch")?,
            protected_refs: serde_json::from_str(&refs).map_err(|error| {
                sqlx::Error::ColumnDecode {
                    index: "protected_refs".into(),
                    source: Box::new(error),
                }
            })?,
            poll_seconds: row.try_get("poll_seconds")?,
            registry: row.try_get("registry")?,
            webhook_secret: row.try_get("webhook_secret")?,
            created_at: row.try_get("created_at")?,
            polled_at: row.try_get("polled_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for VariableRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(VariableRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            key: row.try_get("key")?,
            env_scope: row.try_get("env_scope")?,
            value: row.try_get("value")?,
            masked: flag(row, "masked")?,
            protected: flag(row, "protected")?,
            file: flag(row, "file")?,
            raw: flag(row, "raw")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for TokenRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(TokenRow {
            id: row.try_get("id")?,
            token_sha256: row.try_get("token_sha256")?,
            role: row.try_get("role")?,
            project_id: row.try_get("project_id")?,
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for ScheduleRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(ScheduleRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            cron: row.try_get("cron")?,
            timezone: row.try_get("timezone")?,
            git_ref: row.try_get("git_ref")?,
            variables: row.try_get("variables")?,
            description: row.try_get("description")?,
            next_run_at: row.try_get("next_run_at")?,
            last_pipeline_id: row.try_get("last_pipeline_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl<'r> sqlx::FromRow<'r, AnyRow> for TriggerEventRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(TriggerEventRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            source: row.try_get("source")?,
            git_ref: row.try_get("git_ref")?,
            ref_is_tag: flag(row, "ref_is_tag")?,
            before_sha: row.try_get("before_sha")?,
            after_sha: row.try_get("after_sha")?,
            variables: row.try_get("variables")?,
            dedupe_key: row.try_get("dedupe_key")?,
            state: row.try_get("state")?,
            pipeline_id: row.try_get("pipeline_id")?,
            error: row.try_get("error")?,
            schedule_id: row.try_get("schedule_id")?,
        })
    }
}
