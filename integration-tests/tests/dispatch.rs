//! The coordinator's hot path as agents see it: under a burst no offer is
//! bounced for want of a slot (a slot stays taken from its offer to its
//! assignment), and a new pipeline's commit is hinted (`Prefetch`) to the
//! connected agents that could run its jobs, and to no other.

use futures::future::join_all;
use osprey_integration_tests::fake_agent::{attempt_ref, FakeAgent};
use osprey_integration_tests::{PipelineExt, TestCluster, TestRepo};
use osprey_proto::v1::{
    agent_message, coordinator_message, AcceptOffer, JobAssignment, JobState, Prefetch,
    RejectOffer, UpdateStatusRequest,
};
use osprey_shared::PipelineStatus;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ONE_JOB: &str = "stages: [test]\nhello:\n  stage: test\n  script: [\"echo hello\"]\n";

/// How long a fake agent waits for its next message before giving up.
const QUIET: Duration = Duration::from_secs(120);

/// What the fake agents of the burst saw.
#[derive(Default)]
struct Tally {
    /// Offers that came while every slot was taken.
    rejected: AtomicUsize,
    /// Jobs run and reported.
    completed: AtomicUsize,
}

/// Plays an agent with `slots` slots as the real one counts them: an
/// accepted offer holds a slot until its outcome, a confirmed job until it
/// ends. The job ends at once; its slot is free before the report is sent,
/// so the coordinator (which frees it on the report) never lags behind it.
async fn work(mut agent: FakeAgent, slots: usize, tally: Arc<Tally>) {
    let mut taken = 0;
    let mut accepted: HashMap<String, JobAssignment> = HashMap::new();
    loop {
        match agent.next_message(QUIET).await {
            coordinator_message::Kind::Offer(offer) => {
                if taken < slots {
                    taken += 1;
                    let assignment = offer.assignment.expect("an offer carries its assignment");
                    accepted.insert(offer.offer_id.clone(), assignment);
                    agent
                        .send(agent_message::Kind::Accept(AcceptOffer {
                            offer_id: offer.offer_id,
                        }))
                        .await;
                } else {
                    tally.rejected.fetch_add(1, Ordering::SeqCst);
                    agent
                        .send(agent_message::Kind::Reject(RejectOffer {
                            offer_id: offer.offer_id,
                            reason: "no free slot".to_owned(),
                        }))
                        .await;
                }
            }
            coordinator_message::Kind::OfferOutcome(outcome) => {
                let Some(assignment) = accepted.remove(&outcome.offer_id) else {
                    continue;
                };
                taken -= 1;
                if outcome.confirmed {
                    let report = UpdateStatusRequest {
                        attempt: Some(attempt_ref(&assignment)),
                        state: JobState::Success.into(),
                        exit_code: Some(0),
                        failure_reason: String::new(),
                        failure_kind: 0,
                    };
                    agent
                        .client
                        .update_status(report)
                        .await
                        .expect("report the job's end");
                    tally.completed.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_pipelines_is_offered_without_a_bounce() {
    const PIPELINES: usize = 40;
    const SLOTS: usize = 2;
    let cluster = TestCluster::builder().start().await;
    let url = cluster.coordinator.url();
    let token = cluster.coordinator.registration_token();
    let tally = Arc::new(Tally::default());
    let mut workers = Vec::new();
    for _ in 0..2 {
        let agent = FakeAgent::connect_as(&url, token, &[], true, SLOTS as u32).await;
        workers.push(tokio::spawn(work(agent, SLOTS, tally.clone())));
    }

    let repo = TestRepo::with_pipeline(ONE_JOB);
    let created =
        join_all((0..PIPELINES).map(|_| cluster.api.start_pipeline(&repo, "master"))).await;
    for pipeline in &created {
        let done = cluster.api.wait_for_pipeline(pipeline.id).await;
        done.assert_status(PipelineStatus::Success);
    }
    for worker in &workers {
        worker.abort();
    }
    assert_eq!(tally.completed.load(Ordering::SeqCst), PIPELINES);
    assert_eq!(
        tally.rejected.load(Ordering::SeqCst),
        0,
        "offers came to agents whose slots were all taken"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_pipeline_is_prefetched_by_the_agents_that_could_run_it() {
    let cluster = TestCluster::builder().start().await;
    let url = cluster.coordinator.url();
    let token = cluster.coordinator.registration_token();
    let mut able = FakeAgent::connect_as(&url, token, &["linux"], true, 1).await;
    let mut unable = FakeAgent::connect_as(&url, token, &["gpu"], false, 1).await;
    // One untagged job and one that needs `linux`: `able` could run both,
    // and hears once; `unable` runs neither.
    let repo = TestRepo::with_pipeline(
        "stages: [test]\nplain:\n  stage: test\n  script: [\"true\"]\n\
         tagged:\n  stage: test\n  tags: [linux]\n  script: [\"true\"]\n",
    );
    let created = cluster.api.start_pipeline(&repo, "master").await;

    let prefetches = |messages: &[coordinator_message::Kind]| -> Vec<Prefetch> {
        messages
            .iter()
            .filter_map(|kind| match kind {
                coordinator_message::Kind::Prefetch(prefetch) => Some(prefetch.clone()),
                _ => None,
            })
            .collect()
    };
    // The hint is queued before the creation answers; a heartbeat's ack
    // comes after anything queued before it.
    let seen = able.sync(QUIET).await;
    assert_eq!(
        prefetches(&seen),
        [Prefetch {
            repo_url: repo.url(),
            sha: created.sha.clone(),
        }],
        "one hint with the repository the job specs carry"
    );
    assert!(prefetches(&unable.sync(QUIET).await).is_empty());

    // The job specs say the same repository and commit.
    let offered = seen.into_iter().find_map(|kind| match kind {
        coordinator_message::Kind::Offer(offer) => offer.assignment,
        _ => None,
    });
    let assignment = match offered {
        Some(assignment) => assignment,
        None => able.take_job(QUIET).await,
    };
    let spec = assignment.spec.expect("a spec");
    assert_eq!(spec.repo_url, repo.url());
    assert_eq!(spec.commit_sha, created.sha);
}
