//! The hub and the replay log on both backends.

use std::time::Duration;

use agyn_core::events::EventSink as _;
use agyn_events::{
    Delivery, EndReason, Envelope, Events, EventsConfig, GapReason, MAX_REPLAY, Replay,
    Subscription,
};
use agyn_store::sqlx;
use agyn_store::{Backend, on_both_backends};
use serde_json::json;

fn start(db: agyn_store::Db) -> Events {
    Events::start(db, EventsConfig::default()).unwrap()
}

fn room(prefix: &str) -> String {
    format!("{prefix}:{}", uuid::Uuid::new_v4())
}

fn payload(n: i64) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(map) = json!({ "n": n }) else {
        unreachable!()
    };
    map
}

async fn publish(events: &Events, rooms: &[&String], n: i64) -> Envelope {
    events
        .publish_and_wait(
            "threads".to_string(),
            "message.created".to_string(),
            rooms.iter().map(|room| room.to_string()).collect(),
            payload(n),
        )
        .await
        .unwrap()
}

/// Returns the next delivery, or `None` when none arrives within `wait`.
async fn next(
    subscription: &mut Subscription,
    wait: Duration,
) -> Option<Result<Delivery, EndReason>> {
    tokio::time::timeout(wait, subscription.recv()).await.ok()
}

async fn next_envelope(subscription: &mut Subscription) -> Envelope {
    match next(subscription, Duration::from_secs(5)).await {
        Some(Ok(Delivery::Envelope(envelope))) => Envelope::clone(&envelope),
        other => panic!("expected an envelope, got {other:?}"),
    }
}

fn resumed(replay: Replay) -> Vec<Envelope> {
    match replay {
        Replay::Resumed(envelopes) => envelopes,
        Replay::Gap(reason) => panic!("expected a resumed replay, got a gap: {reason:?}"),
    }
}

async fn publish_reaches_subscribers_of_its_room(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let mine = room("thread_participant");
    let other = room("thread_participant");
    let mut subscription = events.subscribe(vec![mine.clone()]).unwrap();

    events.publish("threads", "message.created", other.clone(), json!({"n": 1}));
    events.publish("threads", "message.created", mine.clone(), json!({"n": 2}));

    let envelope = next_envelope(&mut subscription).await;
    assert_eq!(envelope.rooms, vec![mine]);
    assert_eq!(envelope.source, "threads");
    assert_eq!(envelope.event, "message.created");
    assert_eq!(envelope.payload.get("n"), Some(&json!(2)));
    let id = uuid::Uuid::parse_str(&envelope.id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    let age = agyn_core::time::now_micros() - envelope.ts;
    assert!((0..5_000_000).contains(&age), "ts is {age} µs old");
    assert!(
        next(&mut subscription, Duration::from_millis(300))
            .await
            .is_none()
    );
}

async fn several_matching_rooms_deliver_once(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let first = room("organization");
    let second = room("agent");
    let mut both = events
        .subscribe(vec![first.clone(), second.clone()])
        .unwrap();
    let mut only_second = events.subscribe(vec![second.clone()]).unwrap();

    let published = publish(&events, &[&first, &second], 1).await;

    assert_eq!(next_envelope(&mut both).await.id, published.id);
    assert_eq!(next_envelope(&mut only_second).await.id, published.id);
    assert!(next(&mut both, Duration::from_millis(300)).await.is_none());
    assert!(
        next(&mut only_second, Duration::from_millis(100))
            .await
            .is_none()
    );
}

async fn overflow_drops_only_the_slow_subscriber(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let shared = room("workload");
    let total = agyn_events::hub::SUBSCRIBER_BUFFER + 44;
    let mut slow = events.subscribe(vec![shared.clone()]).unwrap();
    let mut fast = events.subscribe(vec![shared.clone()]).unwrap();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < total {
            seen.push(next_envelope(&mut fast).await.id);
        }
        (seen, fast)
    });

    let mut published = Vec::new();
    for n in 0..total {
        published.push(publish(&events, &[&shared], n as i64).await.id);
    }

    let (seen, mut fast) = reader.await.unwrap();
    assert_eq!(
        seen, published,
        "the fast subscriber gets every envelope in order"
    );
    assert_eq!(
        events.subscriber_count(),
        1,
        "only the slow subscriber is dropped"
    );
    for expected in &published[..agyn_events::hub::SUBSCRIBER_BUFFER] {
        assert_eq!(&next_envelope(&mut slow).await.id, expected);
    }
    assert_eq!(slow.recv().await.unwrap_err(), EndReason::TooSlow);

    let later = publish(&events, &[&shared], -1).await;
    assert_eq!(next_envelope(&mut fast).await.id, later.id);
}

async fn replay_resumes_after_the_cursor(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let mine = room("thread_participant");
    let other = room("thread_participant");
    let old = publish(&events, &[&mine], 0).await;
    // Step past the lookback, so that `old` is neither after the cursor
    // nor within the lookback before it.
    tokio::time::sleep(agyn_events::REPLAY_LOOKBACK + Duration::from_millis(200)).await;
    let before = publish(&events, &[&mine], 1).await;
    let cursor = publish(&events, &[&mine], 2).await;
    let elsewhere = publish(&events, &[&other], 3).await;
    let after = publish(&events, &[&mine], 4).await;
    let both = publish(&events, &[&mine, &other], 5).await;

    let replayed = resumed(
        events
            .replay(std::slice::from_ref(&mine), &cursor.id)
            .await
            .unwrap(),
    );

    let ids: Vec<&str> = replayed
        .iter()
        .map(|envelope| envelope.id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![before.id.as_str(), after.id.as_str(), both.id.as_str()]
    );
    assert_eq!(
        replayed[1], after,
        "a replayed envelope reads back unchanged"
    );
    assert!(!ids.contains(&old.id.as_str()));

    let both_rooms = resumed(
        events
            .replay(&[mine.clone(), other.clone()], &after.id)
            .await
            .unwrap(),
    );
    let ids: Vec<&str> = both_rooms
        .iter()
        .map(|envelope| envelope.id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![
            before.id.as_str(),
            cursor.id.as_str(),
            elsewhere.id.as_str(),
            both.id.as_str()
        ],
        "an envelope of two requested rooms is replayed once"
    );

    let latest = resumed(
        events
            .replay(std::slice::from_ref(&mine), &both.id)
            .await
            .unwrap(),
    );
    let ids: Vec<&str> = latest.iter().map(|envelope| envelope.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![before.id.as_str(), cursor.id.as_str(), after.id.as_str()],
        "the lookback repeats the last two seconds before the newest cursor"
    );
}

async fn unknown_cursor_is_a_gap(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let mine = room("identity");
    publish(&events, &[&mine], 1).await;
    // An envelope of another room is unknown to this stream, so its id
    // reveals nothing.
    let theirs = publish(&events, &[&room("identity")], 2).await;
    for cursor in [
        uuid::Uuid::now_v7().to_string(),
        "not-a-uuid".to_string(),
        theirs.id,
    ] {
        assert_eq!(
            events
                .replay(std::slice::from_ref(&mine), &cursor)
                .await
                .unwrap(),
            Replay::Gap(GapReason::CursorNotFound),
            "cursor {cursor}"
        );
    }
}

async fn replay_over_the_limit_is_a_gap(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let mine = room("agent");
    let cursor = publish(&events, &[&mine], 0).await;
    let rooms = [&mine];
    let publishes = (1..=MAX_REPLAY as i64).map(|n| publish(&events, &rooms, n));
    futures::future::join_all(publishes).await;
    let at_limit = resumed(
        events
            .replay(std::slice::from_ref(&mine), &cursor.id)
            .await
            .unwrap(),
    );
    assert_eq!(at_limit.len(), MAX_REPLAY);

    publish(&events, &[&mine], -1).await;
    assert_eq!(
        events
            .replay(std::slice::from_ref(&mine), &cursor.id)
            .await
            .unwrap(),
        Replay::Gap(GapReason::ReplayLimitExceeded)
    );
}

async fn pruning_removes_envelopes_past_the_window(backend: Backend) {
    let config = EventsConfig {
        replay_window: Duration::from_secs(1),
        prune_interval: Duration::from_millis(200),
        ..EventsConfig::default()
    };
    let events = Events::start(agyn_store::testing::fresh(backend).await, config).unwrap();
    let mine = room("organization");
    let expired = publish(&events, &[&mine], 1).await;
    assert!(matches!(
        events
            .replay(std::slice::from_ref(&mine), &expired.id)
            .await
            .unwrap(),
        Replay::Resumed(_)
    ));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let replay = events
            .replay(std::slice::from_ref(&mine), &expired.id)
            .await
            .unwrap();
        if replay == Replay::Gap(GapReason::CursorNotFound) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the background task did not prune within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let fresh = publish(&events, &[&mine], 2).await;
    assert_eq!(events.prune().await.unwrap(), 0, "a fresh envelope is kept");
    assert!(matches!(
        events
            .replay(std::slice::from_ref(&mine), &fresh.id)
            .await
            .unwrap(),
        Replay::Resumed(_)
    ));
}

async fn shutdown_ends_subscriptions(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let mine = room("identity");
    let mut subscription = events.subscribe(vec![mine.clone()]).unwrap();
    let delivered = publish(&events, &[&mine], 1).await;

    events.shutdown();

    assert_eq!(next_envelope(&mut subscription).await.id, delivered.id);
    assert_eq!(subscription.recv().await.unwrap_err(), EndReason::Shutdown);
    let error = events.subscribe(vec![mine]).unwrap_err();
    assert_eq!(error.code(), agyn_core::error::Code::Unavailable);
}

async fn invalid_events_are_rejected(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let mine = room("identity");
    let mut subscription = events.subscribe(vec![mine.clone()]).unwrap();

    events.publish("threads", "message", mine.clone(), json!({}));
    events.publish("threads", "message.created", mine.clone(), json!([1]));
    events.publish(
        "threads",
        "message.created",
        "Bad Room".to_string(),
        json!({}),
    );
    assert!(
        next(&mut subscription, Duration::from_millis(300))
            .await
            .is_none()
    );

    let error = events
        .publish_and_wait(
            "threads".to_string(),
            "message.created".to_string(),
            vec!["Bad Room".to_string()],
            payload(1),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "rooms: invalid room \"Bad Room\": must match ^[a-z_]+(:[A-Za-z0-9_.-]{1,100})?$"
    );
    let error = events
        .publish_and_wait(
            "threads".to_string(),
            "created".to_string(),
            vec![mine],
            payload(1),
        )
        .await
        .unwrap_err();
    assert_eq!(error.message(), "event: must match ^[a-z_]+(\\.[a-z_]+)+$");
}

async fn dropped_subscription_unregisters(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let subscription = events.subscribe(vec![room("agent")]).unwrap();
    assert_eq!(events.subscriber_count(), 1);
    drop(subscription);
    assert_eq!(events.subscriber_count(), 0);
}

/// Envelopes dropped for a full publish queue are announced to current
/// subscribers, and a resume from before the drop reports a gap instead
/// of claiming a complete replay.
async fn dropped_events_are_reported(backend: Backend) {
    let events = start(agyn_store::testing::fresh(backend).await);
    let shared = room("thread_participant");
    let cursor = publish(&events, &[&shared], 0).await;
    // Gap notices go to every subscription. This one listens on a quiet
    // room, so the flood cannot overflow its buffer before the notice.
    let mut subscription = events.subscribe(vec![room("identity")]).unwrap();
    let reader = tokio::spawn(async move {
        while let Some(Ok(delivery)) = next(&mut subscription, Duration::from_secs(2)).await {
            if let Delivery::Gap(reason) = delivery {
                return Some(reason);
            }
        }
        None
    });
    // Publishing without yielding fills the queue faster than the worker
    // can drain it.
    for n in 0..(agyn_events::PUBLISH_QUEUE as i64 * 4) {
        events.publish(
            "threads",
            "message.created",
            shared.clone(),
            json!({ "n": n }),
        );
    }
    assert_eq!(reader.await.unwrap(), Some(GapReason::EventsDropped));
    let replay = events
        .replay(std::slice::from_ref(&shared), &cursor.id)
        .await
        .unwrap();
    assert_eq!(replay, Replay::Gap(GapReason::EventsDropped));
}

/// On PostgreSQL the log has a connection of its own. When the server
/// closes it, the batch being logged is logged again on a new one, so a
/// resume still finds every envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_log_survives_a_closed_connection() {
    let db = agyn_store::testing::fresh(Backend::Postgres).await;
    let events = start(db.clone());
    let mine = room("identity");
    let cursor = publish(&events, &[&mine], 0).await;

    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(!pids.is_empty(), "the log's connection is open");
    let pids = pids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({pids})"
    ))
    .execute(db.pool())
    .await
    .unwrap();
    // A closed session leaves pg_stat_activity shortly after the signal.
    let mut open = i64::MAX;
    for _ in 0..100 {
        open = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid IN ({pids})"
        ))
        .fetch_one(db.pool())
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 0, "the sessions were closed");

    let after = publish(&events, &[&mine], 1).await;
    let replayed = resumed(
        events
            .replay(std::slice::from_ref(&mine), &cursor.id)
            .await
            .unwrap(),
    );
    assert_eq!(replayed, vec![after]);
}

on_both_backends!(
    dropped_events_are_reported,
    publish_reaches_subscribers_of_its_room,
    several_matching_rooms_deliver_once,
    overflow_drops_only_the_slow_subscriber,
    replay_resumes_after_the_cursor,
    unknown_cursor_is_a_gap,
    replay_over_the_limit_is_a_gap,
    pruning_removes_envelopes_past_the_window,
    shutdown_ends_subscriptions,
    invalid_events_are_rejected,
    dropped_subscription_unregisters,
);
