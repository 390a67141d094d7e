//! The pages' templates (askama, under `coordinator/templates/`) and the
//! plain values they show: what a handler has read, formatted once.

use askama::Template;
use osprey_shared::api::{JobView, PipelineView};

/// The frame of every signed-in page: who is signed in and the CSRF token
/// of its forms.
pub struct Chrome {
    pub title: String,
    pub who: String,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub next: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub message: String,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub chrome: Chrome,
    pub projects: Vec<ProjectSummary>,
    /// Newest pipelines of every project and none (admins only).
    pub recent: Vec<PipelineLine>,
}

pub struct ProjectSummary {
    pub name: String,
    pub repo: String,
    /// The newest pipeline of each ref.
    pub refs: Vec<PipelineLine>,
}

#[derive(Template)]
#[template(path = "project.html")]
pub struct ProjectPage {
    pub chrome: Chrome,
    pub name: String,
    pub repo: String,
    pub default_branch: String,
    pub pipelines: Vec<PipelineLine>,
    pub filter_ref: String,
    pub filter_status: String,
    /// The link to the next (older) page, if there may be one.
    pub next_page: Option<String>,
    pub can_run: bool,
    pub statuses: &'static [&'static str],
}

#[derive(Template)]
#[template(path = "environments.html")]
pub struct EnvironmentsPage {
    pub chrome: Chrome,
    pub project: String,
    pub environments: Vec<EnvironmentBlock>,
    pub can_deploy: bool,
}

pub struct EnvironmentBlock {
    pub name: String,
    pub tier: String,
    pub state: String,
    pub url: Option<String>,
    pub deployments: Vec<DeploymentLine>,
}

pub struct DeploymentLine {
    pub id: i64,
    pub iid: i64,
    pub status: String,
    pub short_sha: String,
    pub git_ref: String,
    pub pipeline: i64,
    pub job: i64,
    pub job_name: String,
    pub triggered_by: String,
    pub rollback_of: Option<i64>,
    pub created: String,
    /// Whether it can be the target of a rollback (it succeeded once).
    pub rollback_target: bool,
}

#[derive(Template)]
#[template(path = "pipeline.html")]
pub struct PipelinePage {
    pub chrome: Chrome,
    pub pipeline: PipelineLine,
    pub graph: String,
    pub jobs: Vec<JobLine>,
    pub can_run: bool,
}

#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage {
    pub chrome: Chrome,
    pub job: JobLine,
    pub pipeline: PipelineLine,
    /// The rendered lines shown first (the log's last part).
    pub log_html: String,
    /// Offset of the first shown line (0: the whole log is shown).
    pub log_start: u64,
    /// Where the live stream starts (after the last complete line shown).
    pub stream_from: u64,
    pub finished: bool,
    pub has_artifacts: bool,
    pub can_run: bool,
}

#[derive(Template)]
#[template(path = "agents.html")]
pub struct AgentsPage {
    pub chrome: Chrome,
    pub agents: Vec<AgentLine>,
}

pub struct AgentLine {
    pub name: String,
    pub tags: String,
    pub executor: String,
    pub concurrency: u32,
    pub connected: bool,
    pub running: Vec<(u64, String)>,
    pub last_seen: String,
}

/// A pipeline as lists and headers show it.
pub struct PipelineLine {
    pub id: u64,
    pub iid: Option<u64>,
    pub project: Option<String>,
    pub git_ref: String,
    pub short_sha: String,
    pub status: &'static str,
    pub source: String,
    pub created: String,
    pub duration: String,
}

impl PipelineLine {
    pub fn of(view: &PipelineView) -> Self {
        let started = view
            .jobs
            .iter()
            .filter_map(|job| job.started_at.as_deref())
            .min();
        let finished = view
            .jobs
            .iter()
            .filter_map(|job| job.finished_at.as_deref())
            .max();
        let duration = if view.status.is_finished() {
            span(started, finished)
        } else {
            span(started, None)
        };
        PipelineLine {
            id: view.id.0,
            iid: view.iid,
            project: view.project.clone(),
            git_ref: view.git_ref.clone(),
            short_sha: short_sha(&view.sha),
            status: view.status.as_str(),
            source: view.source.clone(),
            created: view
                .created_at
                .as_deref()
                .map(short_time)
                .unwrap_or_default(),
            duration,
        }
    }
}

/// A job as the job list and the job page show it.
pub struct JobLine {
    pub id: u64,
    pub name: String,
    pub stage: String,
    pub status: &'static str,
    pub duration: String,
    pub agent: String,
    pub allow_failure: bool,
    pub failure_reason: Option<String>,
    pub pending_reason: Option<String>,
    pub attempt: u32,
    pub coverage: Option<f64>,
}

impl JobLine {
    pub fn of(view: &JobView) -> Self {
        JobLine {
            id: view.id.0,
            name: view.name.clone(),
            stage: view.stage.clone(),
            status: view.status.as_str(),
            duration: job_duration(view),
            agent: view.agent.clone().unwrap_or_default(),
            allow_failure: view.allow_failure,
            failure_reason: view.failure_reason.clone(),
            pending_reason: view.pending_reason.clone(),
            attempt: view.attempt,
            coverage: view.coverage,
        }
    }
}

/// How long a job ran (so far, while it runs).
pub fn job_duration(view: &JobView) -> String {
    span(view.started_at.as_deref(), view.finished_at.as_deref())
}

/// The first 8 characters of a commit.
pub fn short_sha(sha: &str) -> String {
    sha.chars().take(8).collect()
}

/// A stored time as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn short_time(stored: &str) -> String {
    stored.get(..19).unwrap_or(stored).replace('T', " ")
}

fn parse(stored: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(stored, &time::format_description::well_known::Rfc3339).ok()
}

/// The time from `start` to `end` (now when `None`) as `1h 2m`, `3m 4s`
/// or `5s`; empty when it has not started.
pub fn span(start: Option<&str>, end: Option<&str>) -> String {
    let Some(start) = start.and_then(parse) else {
        return String::new();
    };
    let end = end
        .and_then(parse)
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let seconds = (end - start).whole_seconds().max(0);
    match seconds {
        s if s >= 3600 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_a_person_would_say_them() {
        let at = |s: &str| Some(s.to_owned());
        let start = at("2026-12-01T10:00:00.000Z");
        assert_eq!(
            span(start.as_deref(), at("2026-12-01T10:00:07.900Z").as_deref()),
            "7s"
        );
        assert_eq!(
            span(start.as_deref(), at("2026-12-01T10:03:04.000Z").as_deref()),
            "3m 4s"
        );
        assert_eq!(
            span(start.as_deref(), at("2026-12-01T12:05:00.000Z").as_deref()),
            "2h 5m"
        );
        assert_eq!(span(None, None), "");
        assert_eq!(
            short_time("2026-12-01T10:00:00.000Z"),
            "2026-12-01 10:00:00"
        );
        assert_eq!(short_sha("0123456789abcdef"), "01234567");
    }
}
