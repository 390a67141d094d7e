//! Environments and deployments following their jobs, the outdated-job
//! guard, rollbacks, auto-stop, and the notification outbox.

use super::projects::project;
use super::{assignment, fence, job, script_failure, Harness};
use osprey_coordinator::storage::deployments::{AttemptOutcome, AttemptRow, NewRule, OUTDATED};
use osprey_coordinator::storage::prelude::*;
use osprey_coordinator::storage::{AttemptEnd, CommitDetails, NewPipeline, Origin, ProjectRow};
use osprey_shared::api::NotifyEvent;
use osprey_shared::pipeline::{Environment, Pipeline};
use osprey_shared::{FailureReason, JobId, JobStatus, PipelineId};

/// build, then deploy to `production` (auto-stopped after an hour).
fn deploying() -> Pipeline {
    let mut deploy = job("deploy", "test");
    deploy.environment = Some(Environment {
        name: "production".to_owned(),
        url: Some("https://shop.example.com".to_owned()),
        action: "start".to_owned(),
        tier: None,
        auto_stop_in: Some(3600),
        on_stop: None,
    });
    Pipeline {
        stages: vec![".pre".into(), "build".into(), "test".into(), ".post".into()],
        variables: vec![],
        jobs: vec![job("compile", "build"), deploy],
    }
}

async fn create(
    store: &dyn Store,
    project: &ProjectRow,
    sha: &str,
    definition: &Pipeline,
) -> PipelineId {
    let details = CommitDetails::default();
    store
        .create_pipeline_with(&NewPipeline {
            repo: &project.repo,
            git_ref: "main",
            ref_is_tag: false,
            sha,
            pipeline: definition,
            details: &details,
            origin: Origin {
                project: Some((project.id, &project.name)),
                source: "push",
                variables: &[],
                trigger_event: None,
                triggered_by: None,
            },
        })
        .await
        .unwrap()
        .0
}

/// Runs `job` to `end` under a fresh attempt.
async fn run(store: &dyn Store, job: JobId, attempt: &str, end: AttemptEnd) {
    let epoch = store.job(job).await.unwrap().unwrap().lease_epoch as u64 + 1;
    assert!(store
        .assign_job(job, assignment(attempt, epoch))
        .await
        .unwrap());
    store
        .finish_job(job, fence(attempt, epoch), end)
        .await
        .unwrap();
}

async fn job_named(store: &dyn Store, pipeline: PipelineId, name: &str) -> JobId {
    store
        .jobs_of(pipeline)
        .await
        .unwrap()
        .into_iter()
        .find(|job| job.name == name)
        .unwrap()
        .id()
}

async fn rule(store: &dyn Store, project: i64, events: &[NotifyEvent]) {
    store
        .insert_rule(&NewRule {
            project_id: project,
            kind: "webhook",
            target: "http://127.0.0.1:9/hook",
            events,
            ref_glob: Some("ma*"),
            secret: None,
        })
        .await
        .unwrap();
}

pub async fn a_deploy_job_records_a_deployment_that_follows_it(harness: Harness) {
    let store = harness.store.as_ref();
    let app = store.insert_project(&project("app")).await.unwrap();
    rule(
        store,
        app.id,
        &[NotifyEvent::DeploymentSuccess, NotifyEvent::PipelineSuccess],
    )
    .await;
    let pipeline = create(store, &app, "aaa", &deploying()).await;

    let environments = store.environments(app.id).await.unwrap();
    assert_eq!(environments.len(), 1);
    let production = &environments[0];
    assert_eq!(
        (
            production.name.as_str(),
            production.tier.as_str(),
            production.state.as_str()
        ),
        ("production", "production", "available")
    );
    assert_eq!(production.url.as_deref(), Some("https://shop.example.com"));
    let history = store.deployments(production.id, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].status.as_str(), history[0].iid),
        ("created", Some(1))
    );
    assert_eq!(store.last_success(production.id).await.unwrap(), None);

    run(
        store,
        job_named(store, pipeline, "compile").await,
        "a1",
        AttemptEnd::Success,
    )
    .await;
    let deploy = job_named(store, pipeline, "deploy").await;
    run(store, deploy, "a2", AttemptEnd::Success).await;

    let done = store.deployment(history[0].id).await.unwrap().unwrap();
    assert_eq!(done.status, "success");
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(
        store.last_success(production.id).await.unwrap(),
        Some(done.clone())
    );
    let production = store
        .environment(app.id, "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        production.auto_stop_at.as_deref(),
        Some("2026-12-01T13:00:00.000Z"),
        "auto_stop_in counts from the deployment's success"
    );
    // One notification per event and matching rule, written with the change.
    let due = store.due_notifications(10).await.unwrap();
    let mut events: Vec<NotifyEvent> = due.iter().map(|n| n.event).collect();
    events.sort();
    assert_eq!(
        events,
        vec![NotifyEvent::PipelineSuccess, NotifyEvent::DeploymentSuccess]
    );
    let deployment_note = due
        .iter()
        .find(|n| n.event == NotifyEvent::DeploymentSuccess)
        .unwrap();
    assert_eq!(deployment_note.deployment_id, Some(done.id));
    assert_ne!(due[0].webhook_id, due[1].webhook_id);

    // The timer runs out: the environment is claimed once.
    harness.clock.advance(time::Duration::hours(1));
    let claimed = store.claim_auto_stops().await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(store.claim_auto_stops().await.unwrap().is_empty());
    store.stop_environment(claimed[0].id).await.unwrap();
    let stopped = store
        .environment(app.id, "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.state, "stopped");
}

pub async fn an_outdated_deploy_job_fails_and_a_rollback_runs(harness: Harness) {
    let store = harness.store.as_ref();
    let app = store.insert_project(&project("app")).await.unwrap();
    let old = create(store, &app, "old", &deploying()).await;
    let new = create(store, &app, "new", &deploying()).await;
    for pipeline in [old, new] {
        run(
            store,
            job_named(store, pipeline, "compile").await,
            &format!("c{}", pipeline.0),
            AttemptEnd::Success,
        )
        .await;
    }
    // The newer pipeline deploys first.
    let new_deploy = job_named(store, new, "deploy").await;
    assert_eq!(store.prevent_outdated(new_deploy).await.unwrap(), None);
    run(store, new_deploy, "d-new", AttemptEnd::Success).await;
    // The older one's deploy job would start after it: it fails instead.
    let old_deploy = job_named(store, old, "deploy").await;
    let prevented = store.prevent_outdated(old_deploy).await.unwrap().unwrap();
    assert_eq!(prevented.stored, Some(JobStatus::Failed));
    let row = store.job(old_deploy).await.unwrap().unwrap();
    assert_eq!(
        row.failure_kind,
        Some(FailureReason::ForwardDeploymentFailure)
    );
    let outdated = store.deployment_of_job(old_deploy).await.unwrap().unwrap();
    assert_eq!(
        (outdated.status.as_str(), outdated.reason.as_deref()),
        ("failed", Some(OUTDATED))
    );

    // A third pipeline deploys; then production goes back to `new`.
    let third = create(store, &app, "third", &deploying()).await;
    run(
        store,
        job_named(store, third, "compile").await,
        "c3",
        AttemptEnd::Success,
    )
    .await;
    run(
        store,
        job_named(store, third, "deploy").await,
        "d3",
        AttemptEnd::Success,
    )
    .await;
    let target = store.deployment_of_job(new_deploy).await.unwrap().unwrap();
    let (rollback, pending) = store.rollback(&target, "token:7").await.unwrap();
    assert_eq!(pending, vec![new_deploy], "the deploy job runs again");
    assert_eq!(rollback.rollback_of, Some(target.id));
    assert_eq!(
        (rollback.source.as_str(), rollback.triggered_by.as_str()),
        ("rollback", "token:7")
    );
    assert_eq!(
        (rollback.sha.as_str(), rollback.status.as_str()),
        ("new", "created")
    );
    assert!(rollback.iid > target.iid);
    // A rollback is older than the latest deployment, and still runs.
    assert_eq!(store.prevent_outdated(new_deploy).await.unwrap(), None);
    run(store, new_deploy, "d-back", AttemptEnd::Success).await;
    let production = store
        .environment(app.id, "production")
        .await
        .unwrap()
        .unwrap();
    let last = store.last_success(production.id).await.unwrap().unwrap();
    assert_eq!((last.id, last.sha.as_str()), (rollback.id, "new"));
    let history = store.deployments(production.id, 10).await.unwrap();
    assert_eq!(history.len(), 4, "old, new, third and the rollback");
    assert!(
        history.windows(2).all(|pair| pair[0].id > pair[1].id),
        "newest first"
    );
}

pub async fn a_fixed_pipeline_is_notified_and_deliveries_keep_their_tries(harness: Harness) {
    let store = harness.store.as_ref();
    let app = store.insert_project(&project("app")).await.unwrap();
    rule(
        store,
        app.id,
        &[NotifyEvent::PipelineFailed, NotifyEvent::PipelineFixed],
    )
    .await;
    let plain = super::pipeline();
    let red = create(store, &app, "red", &plain).await;
    run(
        store,
        job_named(store, red, "compile").await,
        "r1",
        script_failure(1),
    )
    .await;
    let green = create(store, &app, "green", &plain).await;
    run(
        store,
        job_named(store, green, "compile").await,
        "g1",
        AttemptEnd::Success,
    )
    .await;
    run(
        store,
        job_named(store, green, "unit").await,
        "g2",
        AttemptEnd::Success,
    )
    .await;

    let due = store.due_notifications(10).await.unwrap();
    let events: Vec<(NotifyEvent, Option<i64>)> =
        due.iter().map(|n| (n.event, n.pipeline_id)).collect();
    assert_eq!(
        events,
        vec![
            (NotifyEvent::PipelineFailed, Some(red.0 as i64)),
            (NotifyEvent::PipelineFixed, Some(green.0 as i64)),
        ]
    );
    let failed = &due[0];
    assert_eq!(store.keep_body(failed.id, "first").await.unwrap(), "first");
    assert_eq!(
        store.keep_body(failed.id, "second").await.unwrap(),
        "first",
        "a retry sends the first body"
    );
    let attempt = |ok| AttemptRow {
        notification_id: failed.id,
        at: "2026-12-01T12:00:00.000Z".to_owned(),
        ok,
        status: Some(if ok { 200 } else { 500 }),
        detail: "answer".to_owned(),
        millis: 3,
    };
    store
        .record_attempt(
            &attempt(false),
            &AttemptOutcome::RetryAt("2026-12-01T12:00:10.000Z".to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(
        store.due_notifications(10).await.unwrap().len(),
        1,
        "not due before its time"
    );
    harness.clock.advance(time::Duration::seconds(10));
    assert_eq!(store.due_notifications(10).await.unwrap().len(), 2);
    store
        .record_attempt(&attempt(true), &AttemptOutcome::Delivered)
        .await
        .unwrap();
    let delivered = store.notification(failed.id).await.unwrap().unwrap();
    assert_eq!(delivered.state, "delivered");
    assert_eq!(store.attempts_of(&[failed.id]).await.unwrap().len(), 2);
    assert!(store.redeliver(failed.id).await.unwrap());
    assert_eq!(
        store.notification(failed.id).await.unwrap().unwrap().state,
        "pending"
    );
    assert_eq!(store.notifications_of(app.id, 10).await.unwrap().len(), 2);
}
