//! Polling: a project with `poll_seconds` learns its refs on the first poll
//! (building nothing, as adding a project to GitLab builds nothing) and
//! builds a commit pushed afterwards with no webhook at all.

use super::{create_project, project_pipelines, wait_for_project_pipeline, Remote};
use osprey_integration_tests::TestCluster;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_polled_project_builds_a_new_commit() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let remote = Remote::new("build:\n  script: ['echo built $CI_COMMIT_SHA']\n");
    let first = remote.head();
    remote.push(&["main"]);
    let created = create_project(api, "app", &remote.url(), json!({ "poll_seconds": 5 })).await;
    assert_eq!(created.project.poll_seconds, Some(5));

    // Creating a project wakes the trigger loop, which polls it at once; its
    // first poll is not observable through the API, so give it a moment and
    // check it built nothing for the commit that was already there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = project_pipelines(api, "app").await.expect("list pipelines");
    assert!(
        before.is_empty(),
        "the first poll builds nothing: {before:?}"
    );

    let second = remote.push_commit("main", "two.txt");
    let found = wait_for_project_pipeline(api, "app", "the polled push", |p| p.sha == second).await;
    assert_eq!(
        (
            found.source.as_str(),
            found.git_ref.as_str(),
            found.before_sha.as_deref()
        ),
        ("push", "main", Some(first.as_str())),
        "{found:?}"
    );
    let pipelines = project_pipelines(api, "app").await.expect("list pipelines");
    assert_eq!(
        pipelines.len(),
        1,
        "only the new commit is built: {pipelines:?}"
    );
}
