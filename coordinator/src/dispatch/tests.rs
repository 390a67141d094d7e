use super::*;
use tokio::sync::mpsc;

/// The silence limit of these tests: two heartbeats of 500 ms.
const SILENCE: Duration = Duration::from_secs(1);

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
        deploys: false,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        next_epoch: 1,
        queued_at: Instant::now(),
    }
}

/// One dispatch round as the core runs it: reserve, then send each offer
/// with a spec (here an empty one) at `now`.
fn offer_all(dispatcher: &mut Dispatcher, now: Instant, offer_timeout: Duration) -> usize {
    let reservations = dispatcher.dispatch(now, offer_timeout);
    reservations
        .iter()
        .filter(|reservation| {
            dispatcher.send_offer(
                &reservation.offer_id,
                v1::JobSpec::default(),
                now,
                offer_timeout,
            )
        })
        .count()
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
    let mut dispatcher = Dispatcher::new(SILENCE);
    let (docker, mut docker_rx) = agent(&["docker"], 1);
    dispatcher.connect("docker", docker);
    for id in 1..=3 {
        dispatcher.enqueue(JobId(id), queued(&["docker"]));
    }
    dispatcher.enqueue(JobId(4), queued(&["gpu"]));
    offer_all(&mut dispatcher, Instant::now(), Duration::from_secs(5));
    assert_eq!(offer_ids(&mut docker_rx).len(), 1);
    assert!(dispatcher.is_queued(JobId(4)));
    assert!(dispatcher
        .pending_reason(&queued(&["gpu"]).tags)
        .unwrap()
        .contains("gpu"));
}

#[test]
fn an_unanswered_offer_returns_to_the_queue_without_a_lease() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let (untagged, mut rx) = agent(&[], 1);
    dispatcher.connect("a", untagged);
    dispatcher.enqueue(JobId(1), queued(&[]));
    let start = Instant::now();
    offer_all(&mut dispatcher, start, Duration::from_secs(5));
    let offer = offer_ids(&mut rx).pop().expect("an offer");
    assert!(!dispatcher.is_queued(JobId(1)));
    assert!(dispatcher.expire(start + Duration::from_secs(6)).is_empty());
    assert!(dispatcher.is_queued(JobId(1)));
    // A late accept finds nothing to take.
    assert!(dispatcher
        .accept_offer("a", &offer, start, Duration::from_secs(5))
        .is_none());
}

#[test]
fn expired_leases_are_returned_once() {
    let mut dispatcher = Dispatcher::new(SILENCE);
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
    let mut dispatcher = Dispatcher::new(SILENCE);
    let (untagged, mut rx) = agent(&[], 2);
    let session = dispatcher.connect("a", untagged);
    dispatcher.enqueue(JobId(1), queued(&[]));
    offer_all(&mut dispatcher, Instant::now(), Duration::from_secs(5));
    assert_eq!(offer_ids(&mut rx).len(), 1);
    dispatcher.disconnect("a", session);
    assert!(dispatcher.is_queued(JobId(1)));
    assert!(!dispatcher.is_connected("a"));
}

#[test]
fn a_capped_lease_expires_despite_heartbeats() {
    let mut dispatcher = Dispatcher::new(SILENCE);
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

#[test]
fn an_agent_whose_offer_timed_out_gets_no_offers_until_it_shows_life() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let start = Instant::now();
    let (silent, mut silent_rx) = agent(&[], 1);
    let silent_session = dispatcher.connect("silent", silent);
    dispatcher.seen("silent", silent_session, start);
    dispatcher.enqueue(JobId(1), queued(&[]));
    // An offer timeout shorter than the silence limit: the timeout alone
    // must take the agent out of matching.
    let offer_timeout = SILENCE / 2;
    offer_all(&mut dispatcher, start, offer_timeout);
    assert_eq!(offer_ids(&mut silent_rx).len(), 1);

    // The offer times out; an idle agent has connected meanwhile.
    let (alive, mut alive_rx) = agent(&[], 1);
    let alive_session = dispatcher.connect("alive", alive);
    let later = start + offer_timeout + Duration::from_millis(100);
    assert!(dispatcher.is_responsive("silent", later));
    dispatcher.seen("alive", alive_session, later);
    assert!(dispatcher.expire(later).is_empty());
    assert!(!dispatcher.is_responsive("silent", later));
    offer_all(&mut dispatcher, later, offer_timeout);
    assert!(
        offer_ids(&mut silent_rx).is_empty(),
        "the silent agent was offered the job again"
    );
    assert_eq!(
        offer_ids(&mut alive_rx).len(),
        1,
        "the idle agent got nothing"
    );

    // A message from the silent agent brings it back.
    assert!(dispatcher.seen("silent", silent_session, later));
    assert!(dispatcher.is_responsive("silent", later));
    dispatcher.enqueue(JobId(2), queued(&[]));
    offer_all(&mut dispatcher, later, Duration::from_secs(5));
    assert_eq!(offer_ids(&mut silent_rx).len(), 1);
}

#[test]
fn an_agent_silent_past_the_limit_gets_no_offers_while_another_is_idle() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let start = Instant::now();
    let (silent, mut silent_rx) = agent(&[], 4);
    let (alive, mut alive_rx) = agent(&[], 1);
    let silent_session = dispatcher.connect("silent", silent);
    let alive_session = dispatcher.connect("alive", alive);
    // Both were heard from at `start`; only one goes on talking.
    dispatcher.seen("silent", silent_session, start);
    let later = start + SILENCE + Duration::from_millis(100);
    dispatcher.seen("alive", alive_session, later);
    for id in 1..=2 {
        dispatcher.enqueue(JobId(id), queued(&[]));
    }
    offer_all(&mut dispatcher, later, Duration::from_secs(5));
    assert!(offer_ids(&mut silent_rx).is_empty());
    assert_eq!(offer_ids(&mut alive_rx).len(), 1);
    // The second job waits for a slot rather than go to the silent agent.
    assert!(dispatcher.is_queued(JobId(2)));
    // Within the limit the agent still counts as alive.
    assert!(dispatcher.is_responsive("silent", start + SILENCE));
    // A message from an old session says nothing of the current one.
    assert!(!dispatcher.seen("silent", silent_session + 100, later));
}

#[test]
fn a_renewal_never_shortens_a_lease() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let start = Instant::now();
    dispatcher.add_lease(
        JobId(1),
        Lease {
            agent: "a".into(),
            attempt_id: "x".into(),
            epoch: 1,
            expires_at: start + Duration::from_secs(35),
        },
    );
    let renewed = dispatcher.renew(
        "a",
        &[(JobId(1), "x".into()), (JobId(2), "y".into())],
        start + Duration::from_secs(30),
    );
    assert_eq!(
        renewed,
        vec!["x".to_owned()],
        "only the held lease is renewed"
    );
    assert!(dispatcher
        .expire(start + Duration::from_secs(31))
        .is_empty());
    assert_eq!(dispatcher.expire(start + Duration::from_secs(35)).len(), 1);
}

#[test]
fn a_reserved_slot_is_busy_until_its_offer_is_sent_or_given_up() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let start = Instant::now();
    let (untagged, mut rx) = agent(&[], 1);
    let session = dispatcher.connect("a", untagged);
    dispatcher.seen("a", session, start);
    dispatcher.enqueue(JobId(1), queued(&[]));
    dispatcher.enqueue(JobId(2), queued(&[]));
    let first = dispatcher.dispatch(start, Duration::from_secs(5));
    assert_eq!(first.len(), 1);
    // A second round while the spec is being built picks nothing: the
    // preparing offer holds the only slot.
    assert!(dispatcher
        .dispatch(start, Duration::from_secs(5))
        .is_empty());
    assert!(
        offer_ids(&mut rx).is_empty(),
        "nothing sent before the spec"
    );
    // The job went away meanwhile: its reservation is dropped, not requeued,
    // and the slot goes to the other job.
    dispatcher.unreserve(&first[0].offer_id, false);
    assert!(!dispatcher.is_queued(first[0].job));
    let second = dispatcher.dispatch(start, Duration::from_secs(5));
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].job, first[0].job);
    // A spec for the dropped reservation arriving late is not sent.
    assert!(!dispatcher.send_offer(
        &first[0].offer_id,
        v1::JobSpec::default(),
        start,
        Duration::from_secs(5)
    ));
    assert!(dispatcher.send_offer(
        &second[0].offer_id,
        v1::JobSpec::default(),
        start,
        Duration::from_secs(5)
    ));
    assert_eq!(offer_ids(&mut rx), vec![second[0].offer_id.clone()]);
}

#[test]
fn a_canceled_or_disconnected_reservation_is_never_sent() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let now = Instant::now();
    let (untagged, mut rx) = agent(&[], 2);
    let session = dispatcher.connect("a", untagged);
    dispatcher.enqueue(JobId(1), queued(&[]));
    dispatcher.enqueue(JobId(2), queued(&[]));
    let reserved = dispatcher.dispatch(now, Duration::from_secs(5));
    assert_eq!(reserved.len(), 2);
    let canceled = reserved.iter().find(|r| r.job == JobId(1)).unwrap();
    let other = reserved.iter().find(|r| r.job == JobId(2)).unwrap();
    dispatcher.dequeue(JobId(1));
    dispatcher.disconnect("a", session);
    let spec = v1::JobSpec::default;
    let timeout = Duration::from_secs(5);
    assert!(!dispatcher.send_offer(&canceled.offer_id, spec(), now, timeout));
    assert!(!dispatcher.send_offer(&other.offer_id, spec(), now, timeout));
    assert!(offer_ids(&mut rx).is_empty());
    assert!(!dispatcher.is_queued(JobId(1)), "a canceled job stays out");
    assert!(
        dispatcher.is_queued(JobId(2)),
        "the other job waits for an agent"
    );
}

#[test]
fn the_offer_deadline_counts_from_the_send_and_a_lapsed_reservation_spares_the_agent() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let start = Instant::now();
    let (untagged, mut rx) = agent(&[], 1);
    let session = dispatcher.connect("a", untagged);
    dispatcher.seen("a", session, start);
    dispatcher.enqueue(JobId(1), queued(&[]));
    let timeout = Duration::from_millis(400);
    let reserved = dispatcher.dispatch(start, timeout).pop().unwrap();
    // The spec took a while to build: the answer is due `timeout` after the
    // send, not after the reservation.
    let sent_at = start + Duration::from_millis(300);
    assert!(dispatcher.send_offer(&reserved.offer_id, v1::JobSpec::default(), sent_at, timeout));
    assert_eq!(offer_ids(&mut rx).len(), 1);
    dispatcher.expire(start + Duration::from_millis(500));
    assert!(!dispatcher.is_queued(JobId(1)), "the offer is still open");
    assert!(dispatcher
        .accept_offer("a", &reserved.offer_id, start, timeout)
        .is_some());
    dispatcher.withdraw_offer("a", &reserved.offer_id, false);

    // A reservation whose builder never came back lapses after the offer
    // timeout; the agent did nothing wrong and stays responsive.
    dispatcher.enqueue(JobId(2), queued(&[]));
    let lapsed = dispatcher.dispatch(start, timeout).pop().unwrap();
    let later = start + timeout;
    assert!(dispatcher.expire(later).is_empty());
    assert!(dispatcher.is_queued(JobId(2)));
    assert!(dispatcher.is_responsive("a", later));
    assert!(!dispatcher.send_offer(&lapsed.offer_id, v1::JobSpec::default(), later, timeout));
    assert!(dispatcher
        .accept_offer("a", &lapsed.offer_id, later, timeout)
        .is_none());
}

fn lease_of(agent: &str, attempt_id: &str, expires_at: Instant) -> Lease {
    Lease {
        agent: agent.into(),
        attempt_id: attempt_id.into(),
        epoch: 1,
        expires_at,
    }
}

/// Outcomes the agent was told, in order, as (offer id, confirmed).
fn outcomes(
    receiver: &mut mpsc::UnboundedReceiver<Result<v1::CoordinatorMessage, tonic::Status>>,
) -> Vec<(String, bool)> {
    let mut seen = Vec::new();
    while let Ok(Ok(message)) = receiver.try_recv() {
        if let Some(Kind::OfferOutcome(outcome)) = message.kind {
            seen.push((outcome.offer_id, outcome.confirmed));
        }
    }
    seen
}

#[test]
fn an_accepted_offer_keeps_its_slot_until_the_assignment_is_recorded() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let now = Instant::now();
    let timeout = Duration::from_secs(5);
    let (untagged, mut rx) = agent(&[], 1);
    let session = dispatcher.connect("a", untagged);
    dispatcher.seen("a", session, now);
    dispatcher.enqueue(JobId(1), queued(&[]));
    dispatcher.enqueue(JobId(2), queued(&[]));
    assert_eq!(offer_all(&mut dispatcher, now, timeout), 1);
    let offer = offer_ids(&mut rx).pop().unwrap();
    let accepted = dispatcher.accept_offer("a", &offer, now, timeout).unwrap();
    assert_eq!(accepted.job, JobId(1));

    // While the store records the assignment, another round finds no slot.
    assert_eq!(offer_all(&mut dispatcher, now, timeout), 0);
    assert_eq!(dispatcher.slot_summary().free_slots, 0);
    // A reject or a second accept of it changes nothing.
    dispatcher.reject_offer("a", &offer);
    assert!(dispatcher.accept_offer("a", &offer, now, timeout).is_none());
    assert!(!dispatcher.is_queued(JobId(1)));

    // Recorded: the slot is the lease's, the agent is told, still no offer.
    dispatcher.confirm_offer(&offer, JobId(1), lease_of("a", "x", now + timeout));
    assert_eq!(outcomes(&mut rx), [(offer.clone(), true)]);
    assert_eq!(offer_all(&mut dispatcher, now, timeout), 0);
    assert!(dispatcher.lease(JobId(1)).is_some());

    // The job ends: now job 2 is offered.
    dispatcher.remove_lease(JobId(1));
    assert_eq!(offer_all(&mut dispatcher, now, timeout), 1);
}

#[test]
fn a_withdrawn_accept_frees_the_slot_and_tells_the_agent_first() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let now = Instant::now();
    let timeout = Duration::from_secs(5);
    let (untagged, mut rx) = agent(&[], 1);
    let session = dispatcher.connect("a", untagged);
    dispatcher.seen("a", session, now);
    dispatcher.enqueue(JobId(1), queued(&[]));
    dispatcher.enqueue(JobId(2), queued(&[]));
    offer_all(&mut dispatcher, now, timeout);
    let first = offer_ids(&mut rx).pop().unwrap();
    dispatcher.accept_offer("a", &first, now, timeout).unwrap();

    // The store failed: the job is queued again, first in line.
    dispatcher.withdraw_offer("a", &first, true);
    assert!(dispatcher.is_queued(JobId(1)));
    assert_eq!(offer_all(&mut dispatcher, now, timeout), 1);
    let mut messages = Vec::new();
    while let Ok(Ok(message)) = rx.try_recv() {
        messages.push(message.kind);
    }
    assert!(
        matches!(&messages[..], [Some(Kind::OfferOutcome(outcome)), Some(Kind::Offer(offer))]
            if outcome.offer_id == first && !outcome.confirmed
                && offer.assignment.as_ref().and_then(|a| a.spec.as_ref()).is_some()),
        "the outcome goes out before the next offer: {messages:?}"
    );
    assert!(dispatcher.is_queued(JobId(2)));
}

#[test]
fn an_accepted_offer_survives_a_disconnect_and_lapses_only_if_never_resolved() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let now = Instant::now();
    let timeout = Duration::from_secs(5);
    let (untagged, mut rx) = agent(&[], 1);
    let session = dispatcher.connect("a", untagged);
    dispatcher.seen("a", session, now);
    dispatcher.enqueue(JobId(1), queued(&[]));
    offer_all(&mut dispatcher, now, timeout);
    let offer = offer_ids(&mut rx).pop().unwrap();
    dispatcher.accept_offer("a", &offer, now, timeout).unwrap();
    dispatcher.disconnect("a", session);
    assert!(
        !dispatcher.is_queued(JobId(1)),
        "the accept path resolves it"
    );
    assert!(dispatcher.expire(now + timeout / 2).is_empty());
    assert!(!dispatcher.is_queued(JobId(1)));
    dispatcher.expire(now + timeout);
    assert!(
        dispatcher.is_queued(JobId(1)),
        "a lost accept gives its job back"
    );
}

#[test]
fn jobs_are_reserved_in_queue_order() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let now = Instant::now();
    let (untagged, _rx) = agent(&[], 3);
    let session = dispatcher.connect("a", untagged);
    dispatcher.seen("a", session, now);
    for id in [5, 2, 9, 1, 7] {
        dispatcher.enqueue(JobId(id), queued(&[]));
    }
    let jobs: Vec<JobId> = dispatcher
        .dispatch(now, Duration::from_secs(5))
        .into_iter()
        .map(|reservation| reservation.job)
        .collect();
    assert_eq!(jobs, [JobId(1), JobId(2), JobId(5)]);
}

#[test]
fn a_prefetch_goes_once_to_each_agent_that_could_run_a_job() {
    let mut dispatcher = Dispatcher::new(SILENCE);
    let (docker, mut docker_rx) = agent(&["docker"], 1);
    let (untagged, mut untagged_rx) = agent(&[], 1);
    let (gpu, mut gpu_rx) = agent(&["gpu"], 1);
    dispatcher.connect("docker", docker);
    dispatcher.connect("untagged", untagged);
    dispatcher.connect("gpu", gpu);
    let hint = Kind::Prefetch(v1::Prefetch {
        repo_url: "file:///repo".into(),
        sha: "abc".into(),
    });
    // Two docker jobs and an untagged one: no agent hears twice, gpu not at all.
    let tag_sets = [
        queued(&["docker"]).tags,
        queued(&["docker"]).tags,
        queued(&[]).tags,
    ];
    assert_eq!(dispatcher.prefetch(&tag_sets, &hint), 2);
    let count = |rx: &mut mpsc::UnboundedReceiver<_>| {
        let mut prefetches = 0;
        while let Ok(Ok(v1::CoordinatorMessage { kind: Some(kind) })) = rx.try_recv() {
            assert_eq!(kind, hint);
            prefetches += 1;
        }
        prefetches
    };
    assert_eq!(count(&mut docker_rx), 1);
    assert_eq!(count(&mut untagged_rx), 1);
    assert_eq!(count(&mut gpu_rx), 0);
}
