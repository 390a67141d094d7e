//! What the web UI reads: the newest pipeline of each ref, the newest
//! pipelines of all, and when an agent was last seen.

use super::projects::project;
use super::{pipeline, Harness};
use osprey_coordinator::storage::prelude::*;
use osprey_coordinator::storage::{CommitDetails, NewAgent, NewPipeline, Origin, ProjectRow};
use osprey_shared::PipelineId;

async fn on_ref(store: &dyn Store, project: &ProjectRow, git_ref: &str) -> PipelineId {
    let details = CommitDetails::default();
    let definition = pipeline();
    store
        .create_pipeline_with(&NewPipeline {
            repo: &project.repo,
            git_ref,
            ref_is_tag: false,
            sha: "abc",
            pipeline: &definition,
            details: &details,
            origin: Origin {
                project: Some((project.id, &project.name)),
                source: "web",
                variables: &[],
                trigger_event: None,
                triggered_by: None,
            },
        })
        .await
        .unwrap()
        .0
}

pub async fn the_newest_pipeline_of_each_ref_and_of_all_are_listed(harness: Harness) {
    let store = harness.store;
    let app = store.insert_project(&project("app")).await.unwrap();
    let other = store.insert_project(&project("other")).await.unwrap();
    let main_1 = on_ref(store.as_ref(), &app, "main").await;
    let dev = on_ref(store.as_ref(), &app, "dev").await;
    let main_2 = on_ref(store.as_ref(), &app, "main").await;
    let elsewhere = on_ref(store.as_ref(), &other, "main").await;
    let bare = store
        .create_pipeline("/repo", "main", false, "abc", &pipeline())
        .await
        .unwrap()
        .0;

    let ids = |rows: Vec<osprey_coordinator::storage::PipelineRow>| {
        rows.iter().map(|row| row.id()).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.latest_pipelines_by_ref(app.id, 10).await.unwrap()),
        vec![main_2, dev],
        "one per ref, newest first, of this project only"
    );
    assert_eq!(
        ids(store.latest_pipelines_by_ref(app.id, 1).await.unwrap()),
        vec![main_2]
    );
    assert_eq!(
        ids(store.recent_pipelines(None, 10).await.unwrap()),
        vec![bare, elsewhere, main_2, dev, main_1]
    );
    assert_eq!(
        ids(store
            .recent_pipelines(Some(main_2.0 as i64), 2)
            .await
            .unwrap()),
        vec![dev, main_1],
        "pages go on below the given id"
    );
}

pub async fn an_agent_is_seen_when_its_session_opens_and_closes(harness: Harness) {
    let store = harness.store;
    let tags = vec!["docker".to_owned()];
    store
        .insert_agent(NewAgent {
            id: "agent-a",
            name: "eagle-1",
            token_sha256: "hash-a",
            tags: &tags,
            run_untagged: false,
            executor: "shell",
            concurrency: 1,
        })
        .await
        .unwrap();
    let seen = |agents: Vec<osprey_coordinator::storage::AgentRow>| agents[0].last_seen_at.clone();
    assert_eq!(seen(store.agents().await.unwrap()), None, "never connected");

    store
        .update_agent("agent-a", &tags, false, 2)
        .await
        .unwrap();
    let opened = seen(store.agents().await.unwrap()).expect("seen when it connects");
    harness.clock.advance(time::Duration::minutes(5));
    store.touch_agent("agent-a").await.unwrap();
    let closed = seen(store.agents().await.unwrap()).expect("seen when it leaves");
    assert!(closed > opened, "{closed} after {opened}");
    assert_eq!(
        store
            .agent_by_token("hash-a")
            .await
            .unwrap()
            .unwrap()
            .last_seen_at,
        Some(closed)
    );
}
