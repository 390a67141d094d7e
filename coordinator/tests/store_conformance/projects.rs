//! Projects, their variables, schedules, tokens, pushes and retries.

use super::{assignment, fence, pipeline, running_job, script_failure, Harness};
use osprey_coordinator::storage::prelude::*;
use osprey_coordinator::storage::{
    CommitDetails, NewPipeline, NewSchedule, NewToken, NewTriggerEvent, Origin, PipelineQuery,
    ProjectRow, StoreError, VariableRow,
};
use osprey_shared::{JobId, JobStatus, PipelineId, PipelineStatus};

pub fn project(name: &str) -> ProjectRow {
    ProjectRow {
        id: 0,
        name: name.to_owned(),
        repo: "/srv/git/app.git".to_owned(),
        default_branch: "main".to_owned(),
        protected_refs: vec!["main".to_owned(), "v*".to_owned()],
        poll_seconds: Some(60),
        registry: None,
        webhook_secret: "v1:envelope".to_owned(),
        created_at: String::new(),
        polled_at: None,
    }
}

fn push<'a>(project_id: i64, key: &'a str, sha: &'a str) -> NewTriggerEvent<'a> {
    NewTriggerEvent {
        project_id,
        source: "push",
        git_ref: "main",
        ref_is_tag: false,
        before_sha: None,
        after_sha: Some(sha),
        variables: "[]",
        dedupe_key: key,
        schedule_id: None,
    }
}

async fn project_pipeline(
    store: &dyn Store,
    project: &ProjectRow,
    event: Option<i64>,
) -> Result<PipelineId, StoreError> {
    let details = CommitDetails::default();
    let definition = pipeline();
    store
        .create_pipeline_with(&NewPipeline {
            repo: &project.repo,
            git_ref: "main",
            ref_is_tag: false,
            sha: "abc",
            pipeline: &definition,
            details: &details,
            origin: Origin {
                project: Some((project.id, &project.name)),
                source: "api",
                variables: &[],
                trigger_event: event,
                triggered_by: None,
            },
        })
        .await
        .map(|(id, _)| id)
}

pub async fn projects_are_unique_by_name_and_number_their_pipelines(harness: Harness) {
    let store = harness.store;
    let app = store.insert_project(&project("app")).await.unwrap();
    let web = store.insert_project(&project("web")).await.unwrap();
    assert!(matches!(
        store.insert_project(&project("app")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.project_by_name("app").await.unwrap(),
        Some(app.clone())
    );
    assert_eq!(app.protected_refs, vec!["main", "v*"]);

    let first = project_pipeline(store.as_ref(), &app, None).await.unwrap();
    project_pipeline(store.as_ref(), &web, None).await.unwrap();
    let second = project_pipeline(store.as_ref(), &app, None).await.unwrap();
    let row = store.pipeline(second).await.unwrap().unwrap();
    assert_eq!((row.iid, row.project.as_deref()), (Some(2), Some("app")));
    assert_eq!(row.source, "api");
    let listed = store
        .project_pipelines(
            app.id,
            PipelineQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<_> = listed.iter().map(|row| row.id()).collect();
    assert_eq!(ids, vec![second, first], "newest first, only app's");
    let before = store
        .project_pipelines(
            app.id,
            PipelineQuery {
                before: Some(second.0 as i64),
                git_ref: Some("main"),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(before.len(), 1);

    store.delete_project(app.id).await.unwrap();
    assert_eq!(store.project_by_name("app").await.unwrap(), None);
    assert!(
        store.pipeline(first).await.unwrap().is_some(),
        "pipelines outlive their project"
    );
}

pub async fn variables_are_one_per_key_and_scope_and_go_with_their_project(harness: Harness) {
    let store = harness.store;
    let app = store.insert_project(&project("app")).await.unwrap();
    let variable = |scope: &str, value: &str| VariableRow {
        id: 0,
        project_id: app.id,
        key: "TOKEN".to_owned(),
        env_scope: scope.to_owned(),
        value: value.to_owned(),
        masked: true,
        protected: false,
        file: false,
        raw: false,
        updated_at: String::new(),
    };
    store.put_variable(&variable("*", "v1:a")).await.unwrap();
    store.put_variable(&variable("prod", "v1:b")).await.unwrap();
    store.put_variable(&variable("*", "v1:c")).await.unwrap();
    let stored = store.variables_of(app.id).await.unwrap();
    let values: Vec<_> = stored
        .iter()
        .map(|row| (row.env_scope.as_str(), row.value.as_str()))
        .collect();
    assert_eq!(values, vec![("*", "v1:c"), ("prod", "v1:b")]);
    store
        .set_variable_value(stored[0].id, "v1:rotated")
        .await
        .unwrap();
    assert_eq!(store.all_variables().await.unwrap()[0].value, "v1:rotated");
    assert!(store
        .delete_variable(app.id, "TOKEN", "prod")
        .await
        .unwrap());
    assert!(!store
        .delete_variable(app.id, "TOKEN", "prod")
        .await
        .unwrap());
    store.delete_project(app.id).await.unwrap();
    assert!(store.all_variables().await.unwrap().is_empty());
}

pub async fn a_push_is_recorded_once_and_its_pipeline_closes_it(harness: Harness) {
    let store = harness.store;
    let app = store.insert_project(&project("app")).await.unwrap();
    let event = push(app.id, "push:1:branch:main:abc", "abc");
    assert!(store
        .record_push(app.id, "refs/heads/main", Some("abc"), Some(&event))
        .await
        .unwrap());
    assert!(
        !store
            .record_push(app.id, "refs/heads/main", Some("abc"), Some(&event))
            .await
            .unwrap(),
        "a redelivery records nothing"
    );
    assert_eq!(
        store.project_refs(app.id).await.unwrap(),
        vec![("refs/heads/main".to_owned(), "abc".to_owned())]
    );
    let pending = store.pending_events().await.unwrap();
    assert_eq!(pending.len(), 1);
    let id = project_pipeline(store.as_ref(), &app, Some(pending[0].id))
        .await
        .unwrap();
    let closed = store.trigger_event(pending[0].id).await.unwrap().unwrap();
    assert_eq!(
        (closed.state.as_str(), closed.pipeline_id),
        ("created", Some(id.0 as i64))
    );
    assert!(store.pending_events().await.unwrap().is_empty());
    assert!(
        matches!(
            project_pipeline(store.as_ref(), &app, Some(pending[0].id)).await,
            Err(StoreError::Conflict(_))
        ),
        "an event makes one pipeline"
    );

    let other = push(app.id, "push:1:branch:main:def", "def");
    store
        .record_push(app.id, "refs/heads/main", Some("def"), Some(&other))
        .await
        .unwrap();
    let refused = store.pending_events().await.unwrap()[0].id;
    store.refuse_event(refused, "no jobs").await.unwrap();
    assert!(store.pending_events().await.unwrap().is_empty());
    store
        .record_push(app.id, "refs/heads/main", None, None)
        .await
        .unwrap();
    assert!(store.project_refs(app.id).await.unwrap().is_empty());
}

pub async fn a_schedule_tick_is_claimed_once(harness: Harness) {
    let store = harness.store;
    let app = store.insert_project(&project("app")).await.unwrap();
    let schedule = store
        .insert_schedule(&NewSchedule {
            project_id: app.id,
            cron: "* * * * *",
            timezone: "UTC",
            git_ref: "main",
            variables: "[]",
            description: Some("nightly"),
            next_run_at: "2026-12-01T12:00:00.000Z",
        })
        .await
        .unwrap();
    assert!(store
        .due_schedules("2026-12-01T11:59:59.000Z")
        .await
        .unwrap()
        .is_empty());
    let due = store
        .due_schedules("2026-12-01T12:00:00.000Z")
        .await
        .unwrap();
    assert_eq!(due, vec![schedule.clone()]);
    let tick = |key| NewTriggerEvent {
        source: "schedule",
        after_sha: None,
        schedule_id: Some(schedule.id),
        ..push(app.id, key, "")
    };
    let claim = |key| {
        let store = store.clone();
        async move {
            store
                .claim_schedule(
                    schedule.id,
                    "2026-12-01T12:00:00.000Z",
                    "2026-12-01T12:01:00.000Z",
                    &tick(key),
                )
                .await
                .unwrap()
        }
    };
    let (a, b) = tokio::join!(claim("schedule:1:a"), claim("schedule:1:b"));
    assert!(a ^ b, "exactly one claim wins: {a} {b}");
    let events = store.pending_events().await.unwrap();
    assert_eq!(events.len(), 1);
    project_pipeline(store.as_ref(), &app, Some(events[0].id))
        .await
        .unwrap();
    let after = &store.schedules_of(app.id).await.unwrap()[0];
    assert_eq!(after.next_run_at, "2026-12-01T12:01:00.000Z");
    assert!(after.last_pipeline_id.is_some());
    assert!(store.delete_schedule(app.id, schedule.id).await.unwrap());
}

pub async fn tokens_are_found_by_hash_and_revoked(harness: Harness) {
    let store = harness.store;
    let app = store.insert_project(&project("app")).await.unwrap();
    let token = store
        .insert_token(&NewToken {
            token_sha256: "h1",
            role: "read",
            project_id: Some(app.id),
            description: Some("ci bot"),
            expires_at: None,
        })
        .await
        .unwrap();
    assert_eq!(
        store.token_by_hash("h1").await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.token_by_hash("h2").await.unwrap(), None);
    store.touch_token(token.id).await.unwrap();
    assert!(store.tokens().await.unwrap()[0].last_used_at.is_some());
    assert!(store.delete_token(token.id).await.unwrap());
    assert_eq!(store.token_by_hash("h1").await.unwrap(), None);
}

pub async fn a_retry_reruns_failed_jobs_and_what_was_skipped_after_them(harness: Harness) {
    let store = harness.store;
    let job = running_job(&store).await;
    store
        .finish_job(job, fence("attempt-1", 1), script_failure(1))
        .await
        .unwrap();
    let pipeline = store.job(job).await.unwrap().unwrap().pipeline_id();
    assert_eq!(
        store.pipeline(pipeline).await.unwrap().unwrap().status(),
        PipelineStatus::Failed
    );
    assert_eq!(
        store.job(JobId(2)).await.unwrap().unwrap().status(),
        JobStatus::Skipped
    );
    assert!(
        store.retry_jobs(pipeline, &[JobId(2)]).await.is_err(),
        "a skipped job is not retried"
    );
    let pending = store.retry_jobs(pipeline, &[job]).await.unwrap();
    assert_eq!(pending, vec![job]);
    let reopened = store.pipeline(pipeline).await.unwrap().unwrap().status();
    assert!(
        !reopened.is_finished(),
        "the pipeline runs again: {reopened}"
    );
    assert_eq!(
        store.job(JobId(2)).await.unwrap().unwrap().status(),
        JobStatus::Created,
        "the skipped job waits again"
    );
    assert!(store
        .assign_job(job, assignment("attempt-2", 2))
        .await
        .unwrap());
    let done = store
        .finish_job(
            job,
            fence("attempt-2", 2),
            osprey_coordinator::storage::AttemptEnd::Success,
        )
        .await
        .unwrap();
    assert_eq!(done.newly_pending, vec![JobId(2)]);
    assert_eq!(store.job(job).await.unwrap().unwrap().attempt, 2);
}
