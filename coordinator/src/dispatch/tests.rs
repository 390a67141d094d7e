use super::*;
use tokio::sync::mpsc;

fn agent(
    tags: &[&str],
    capacity: usize,
) -> (
    ConnectedAgent,
    mpsc::UnboundedReceiver<Result<v1::CoordinatorMessage, tonic::Status>>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        ConnectedAgent {
            session: 0,
            name: "a".into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            run_untagged: tags.is_empty(),
            capacity,
            sender,
        },
        receiver,
    )
}

fn queued(tags: &[&str]) -> QueuedJob {
    QueuedJob {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        next_epoch: 1,
        spec: v1::JobSpec::default(),
    }
}

fn offer_ids(
    receiver: &mut mpsc::UnboundedReceiver<Result<v1::CoordinatorMessage, tonic::Status>>,
) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(Ok(message)) = receiver.try_recv() {
        if let Some(Kind::Offer(offer)) = message.kind {
            ids.push(offer.offer_id);
        }
    }
    ids
}

#[test]
fn offers_never_exceed_capacity_and_respect_tags() {
    let mut dispatcher = Dispatcher::default();
    let (docker, mut docker_rx) = agent(&["docker"], 1);
    dispatcher.connect("docker", docker);
    for id in 1..=3 {
        dispatcher.enqueue(JobId(id), queued(&["docker"]));
    }
    dispatcher.enqueue(JobId(4), queued(&["gpu"]));
    dispatcher.dispatch(Instant::now(), Duration::from_secs(5));
    assert_eq!(offer_ids(&mut docker_rx).len(), 1);
    assert!(dispatcher.is_queued(JobId(4)));
    assert!(dispatcher
        .pending_reason(&queued(&["gpu"]).tags)
        .unwrap()
        .contains("gpu"));
}

#[test]
fn an_unanswered_offer_returns_to_the_queue_without_a_lease() {
    let mut dispatcher = Dispatcher::default();
    let (untagged, mut rx) = agent(&[], 1);
    dispatcher.connect("a", untagged);
    dispatcher.enqueue(JobId(1), queued(&[]));
    let start = Instant::now();
    dispatcher.dispatch(start, Duration::from_secs(5));
    let offer = offer_ids(&mut rx).pop().expect("an offer");
    assert!(!dispatcher.is_queued(JobId(1)));
    assert!(dispatcher.expire(start + Duration::from_secs(6)).is_empty());
    assert!(dispatcher.is_queued(JobId(1)));
    // A late accept finds nothing to take.
    assert!(dispatcher.take_offer("a", &offer).is_none());
}

#[test]
fn expired_leases_are_returned_once() {
    let mut dispatcher = Dispatcher::default();
    let start = Instant::now();
    dispatcher.add_lease(
        JobId(7),
        Lease {
            agent: "a".into(),
            attempt_id: "x".into(),
            epoch: 1,
            expires_at: start + Duration::from_secs(3),
        },
    );
    dispatcher.renew(
        "a",
        &[(JobId(7), "x".into())],
        start + Duration::from_secs(10),
    );
    assert!(dispatcher.expire(start + Duration::from_secs(5)).is_empty());
    assert_eq!(dispatcher.expire(start + Duration::from_secs(11)).len(), 1);
    assert!(dispatcher
        .expire(start + Duration::from_secs(12))
        .is_empty());
}

#[test]
fn a_disconnected_agent_gets_no_offers_and_its_offers_return() {
    let mut dispatcher = Dispatcher::default();
    let (untagged, mut rx) = agent(&[], 2);
    let session = dispatcher.connect("a", untagged);
    dispatcher.enqueue(JobId(1), queued(&[]));
    dispatcher.dispatch(Instant::now(), Duration::from_secs(5));
    assert_eq!(offer_ids(&mut rx).len(), 1);
    dispatcher.disconnect("a", session);
    assert!(dispatcher.is_queued(JobId(1)));
    assert!(!dispatcher.is_connected("a"));
}

#[test]
fn a_capped_lease_expires_despite_heartbeats() {
    let mut dispatcher = Dispatcher::default();
    let start = Instant::now();
    let lease = Lease {
        agent: "a".into(),
        attempt_id: "x".into(),
        epoch: 1,
        expires_at: start + Duration::from_secs(30),
    };
    dispatcher.add_lease(JobId(1), lease.clone());
    dispatcher.add_lease(
        JobId(2),
        Lease {
            attempt_id: "y".into(),
            ..lease
        },
    );
    dispatcher.cap_lease(JobId(1), start + Duration::from_secs(5));
    dispatcher.renew(
        "a",
        &[(JobId(1), "x".into())],
        start + Duration::from_secs(60),
    );
    assert_eq!(dispatcher.expire(start + Duration::from_secs(6)).len(), 1);
    // Reconnecting without attempt "y" gives it up at once.
    assert_eq!(dispatcher.expire_unlisted("a", &[], start), 1);
    assert_eq!(dispatcher.expire(start + Duration::from_secs(7)).len(), 1);
}
