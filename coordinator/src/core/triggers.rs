//! What starts pipelines without a person: push webhooks, polling of the
//! repositories' refs, and schedules. Each records a trigger event durably
//! (unique per push or tick, so duplicates create nothing), and one loop
//! turns pending events into pipelines — after a crash, at the next start.

use super::create::{Before, PipelineRequest};
use super::Core;
use crate::error::{CoreError, CoreResult};
use crate::hooks::{parse_hook, HookError, HookEvent};
use crate::schedule::Cron;
use crate::storage::{NewTriggerEvent, ProjectRow, TriggerEventRow};
use osprey_shared::api::{format_time, HookAnswer};
use osprey_shared::pipeline::Variable;
use osprey_shared::plan::PipelineSource;
use std::time::Duration;

fn full_ref(name: &str, is_tag: bool) -> String {
    if is_tag {
        format!("refs/tags/{name}")
    } else {
        format!("refs/heads/{name}")
    }
}

fn push_key(project: i64, name: &str, is_tag: bool, sha: &str) -> String {
    let kind = if is_tag { "tag" } else { "branch" };
    format!("push:{project}:{kind}:{name}:{sha}")
}

impl Core {
    /// `POST /hooks/{project}`: verifies the forge's signature on the raw
    /// body, records the push, and answers before any git work.
    pub async fn handle_hook(
        &self,
        project: &str,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> CoreResult<HookAnswer> {
        let row = self.project(project).await?;
        let secret = self.webhook_secret(&row)?;
        let event = parse_hook(headers, body, &secret).map_err(|error| match error {
            HookError::Unauthorized(reason) => {
                tracing::warn!(project, reason = %reason, "webhook refused");
                CoreError::Unauthenticated(format!("webhook refused: {reason}"))
            }
            HookError::BadPayload(reason) => {
                CoreError::InvalidArgument(format!("webhook payload: {reason}"))
            }
        })?;
        let push = match event {
            HookEvent::Ignored(reason) => {
                return Ok(HookAnswer {
                    outcome: "ignored".to_owned(),
                    git_ref: None,
                    sha: None,
                    message: reason,
                })
            }
            HookEvent::Push(push) => push,
        };
        let reference = full_ref(&push.git_ref, push.is_tag);
        if push.deleted {
            self.store()
                .record_push(row.id, &reference, None, None)
                .await?;
            return Ok(HookAnswer {
                outcome: "ignored".to_owned(),
                git_ref: Some(push.git_ref),
                sha: None,
                message: "the ref was deleted: no pipeline".to_owned(),
            });
        }
        let key = push_key(row.id, &push.git_ref, push.is_tag, &push.after);
        let recorded = self
            .store()
            .record_push(
                row.id,
                &reference,
                Some(&push.after),
                Some(&NewTriggerEvent {
                    project_id: row.id,
                    source: PipelineSource::Push.as_str(),
                    git_ref: &push.git_ref,
                    ref_is_tag: push.is_tag,
                    before_sha: push.before.as_deref(),
                    after_sha: Some(&push.after),
                    variables: "[]",
                    dedupe_key: &key,
                    schedule_id: None,
                }),
            )
            .await?;
        tracing::info!(
            project,
            git_ref = %push.git_ref,
            sha = %push.after,
            delivery = push.delivery.as_deref(),
            new = recorded,
            "push received"
        );
        if recorded {
            self.wake_triggers();
        }
        Ok(HookAnswer {
            outcome: if recorded { "queued" } else { "duplicate" }.to_owned(),
            message: if recorded {
                "a pipeline will be created for this push".to_owned()
            } else {
                "this push was seen already: nothing new".to_owned()
            },
            git_ref: Some(push.git_ref),
            sha: Some(push.after),
        })
    }

    /// Turns every pending trigger event into its pipeline (or a refusal).
    pub async fn process_trigger_events(&self) -> CoreResult<()> {
        for event in self.store().pending_events().await? {
            if let Err(error) = self.process_event(&event).await {
                match error {
                    CoreError::Storage(_) | CoreError::Internal(_) => {
                        tracing::error!(event_id = event.id, error = %error, "trigger event failed; retried later");
                    }
                    refusal => {
                        tracing::info!(event_id = event.id, reason = %refusal, "trigger event made no pipeline");
                        self.store()
                            .refuse_event(event.id, &refusal.to_string())
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn process_event(&self, event: &TriggerEventRow) -> CoreResult<()> {
        let Some(project) = self.store().project_by_id(event.project_id).await? else {
            return Err(CoreError::NotFound("the project was removed".to_owned()));
        };
        let source = PipelineSource::parse(&event.source).unwrap_or(PipelineSource::Push);
        let variables: Vec<Variable> = serde_json::from_str(&event.variables).unwrap_or_default();
        let triggered_by = event.schedule_id.map(|id| format!("schedule:{id}"));
        let request = PipelineRequest {
            repo: &project.repo,
            git_ref: &event.git_ref,
            at: event.after_sha.as_deref(),
            // The hook parser gives no `before` for a new ref's zeros.
            before: Before::Known(event.before_sha.clone()),
            variables,
            source,
            project: Some(&project),
            trigger_event: Some(event.id),
            triggered_by: triggered_by.as_deref(),
        };
        self.create(request, None).await?;
        Ok(())
    }

    /// Lists the refs of every project due for a poll and records a push
    /// for each ref that moved. The first poll of a project only learns its
    /// refs, as adding a project to GitLab builds nothing.
    pub async fn poll_repositories(&self) -> CoreResult<()> {
        let now = time::OffsetDateTime::now_utc();
        for project in self.store().projects().await? {
            let Some(every) = project.poll_seconds else {
                continue;
            };
            // Jittered per project, so projects added together poll apart.
            let jitter = (project.id * 7919) % (every.max(1) / 5 + 1);
            let due = project.polled_at.as_deref().is_none_or(|polled| {
                polled <= format_time(now - time::Duration::seconds(every - jitter)).as_str()
            });
            if due {
                if let Err(error) = self.poll_project(&project).await {
                    tracing::warn!(project = %project.name, error = %error, "polling failed");
                }
                self.store().set_polled(project.id).await?;
            }
        }
        Ok(())
    }

    async fn poll_project(&self, project: &ProjectRow) -> CoreResult<()> {
        let remote = crate::repo::list_refs(&project.repo, &self.settings().repos).await?;
        let known: std::collections::HashMap<String, String> = self
            .store()
            .project_refs(project.id)
            .await?
            .into_iter()
            .collect();
        let first = project.polled_at.is_none();
        let mut woke = false;
        for (reference, sha) in &remote {
            if known.get(reference) == Some(sha) {
                continue;
            }
            let (name, is_tag) = if let Some(tag) = reference.strip_prefix("refs/tags/") {
                (tag, true)
            } else if let Some(branch) = reference.strip_prefix("refs/heads/") {
                (branch, false)
            } else {
                continue;
            };
            let key = push_key(project.id, name, is_tag, sha);
            let event = NewTriggerEvent {
                project_id: project.id,
                source: PipelineSource::Push.as_str(),
                git_ref: name,
                ref_is_tag: is_tag,
                before_sha: known.get(reference).map(String::as_str),
                after_sha: Some(sha),
                variables: "[]",
                dedupe_key: &key,
                schedule_id: None,
            };
            let event = (!first).then_some(&event);
            let recorded = self
                .store()
                .record_push(project.id, reference, Some(sha), event)
                .await?;
            if recorded {
                tracing::info!(project = %project.name, git_ref = name, %sha, "poll found a push");
                woke = true;
            }
        }
        for reference in known
            .keys()
            .filter(|name| !remote.iter().any(|(r, _)| r == *name))
        {
            self.store()
                .record_push(project.id, reference, None, None)
                .await?;
        }
        if woke {
            self.wake_triggers();
        }
        Ok(())
    }

    /// Records the tick of every schedule that is due, once: the claim moves
    /// its next run and records the tick's event in one transaction. A
    /// schedule missed while the coordinator was down runs once.
    pub async fn tick_schedules(&self) -> CoreResult<()> {
        let now = time::OffsetDateTime::now_utc();
        for schedule in self.store().due_schedules(&format_time(now)).await? {
            let next = Cron::parse(&schedule.cron, &schedule.timezone)
                .ok()
                .and_then(|cron| cron.next_after(now));
            let Some(next) = next else {
                tracing::warn!(schedule_id = schedule.id, "schedule never fires again");
                continue;
            };
            let key = format!("schedule:{}:{}", schedule.id, schedule.next_run_at);
            let claimed = self
                .store()
                .claim_schedule(
                    schedule.id,
                    &schedule.next_run_at,
                    &format_time(next),
                    &NewTriggerEvent {
                        project_id: schedule.project_id,
                        source: PipelineSource::Schedule.as_str(),
                        git_ref: &schedule.git_ref,
                        ref_is_tag: false,
                        before_sha: None,
                        after_sha: None,
                        variables: &schedule.variables,
                        dedupe_key: &key,
                        schedule_id: Some(schedule.id),
                    },
                )
                .await?;
            if claimed {
                tracing::info!(schedule_id = schedule.id, git_ref = %schedule.git_ref, "schedule fired");
                self.wake_triggers();
            }
        }
        Ok(())
    }

    /// The trigger loop: schedules, polls and pending events, every second
    /// or as soon as a push is recorded.
    pub async fn run_triggers(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            for (what, result) in [
                ("schedules", self.tick_schedules().await),
                ("polling", self.poll_repositories().await),
                ("trigger events", self.process_trigger_events().await),
            ] {
                if let Err(error) = result {
                    tracing::error!(error = %error, "{what} failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.triggers_woken() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
