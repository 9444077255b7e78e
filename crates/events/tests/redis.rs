//! Two replicas on one PostgreSQL database, bridged by the local Redis.
//!
//! Redis tests use `AGYN_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Each test publishes to rooms with fresh ids,
//! so tests that share the Redis channel do not see each other's
//! envelopes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agyn_events::{Delivery, EndReason, Envelope, Events, EventsConfig, GapReason, Subscription};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn redis_url() -> String {
    std::env::var("AGYN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

fn room(prefix: &str) -> String {
    format!("{prefix}:{}", uuid::Uuid::new_v4())
}

async fn replica(database_url: &str, replica_id: &str, redis_url: String) -> Events {
    let db = agyn_store::Db::open(database_url).await.unwrap();
    let config = EventsConfig {
        replica_id: replica_id.to_string(),
        redis_url: Some(redis_url),
        ..EventsConfig::default()
    };
    Events::start(db, config).unwrap()
}

async fn publish(events: &Events, room: &str) -> Envelope {
    events
        .publish_and_wait(
            "threads".to_string(),
            "message.created".to_string(),
            vec![room.to_string()],
            serde_json::Map::new(),
        )
        .await
        .unwrap()
}

async fn next(
    subscription: &mut Subscription,
    wait: Duration,
) -> Option<Result<Delivery, EndReason>> {
    tokio::time::timeout(wait, subscription.recv()).await.ok()
}

/// Publishes on `from` until `to` receives one of the envelopes, which
/// shows that both replicas' Redis connections are up.
async fn wait_until_bridged(from: &Events, to: &Events) {
    let probe = room("agent");
    let mut subscription = to.subscribe(vec![probe.clone()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        publish(from, &probe).await;
        if let Some(Ok(Delivery::Envelope(_))) =
            next(&mut subscription, Duration::from_millis(200)).await
        {
            return;
        }
    }
    panic!(
        "replica {} never received from {}",
        to.replica_id(),
        from.replica_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_crosses_replicas_once() {
    let database_url = agyn_store::testing::fresh_postgres_url().await;
    let a = replica(&database_url, "replica-a", redis_url()).await;
    let b = replica(&database_url, "replica-b", redis_url()).await;
    wait_until_bridged(&a, &b).await;
    wait_until_bridged(&b, &a).await;
    let shared = room("thread_participant");
    let mut on_a = a.subscribe(vec![shared.clone()]).unwrap();
    let mut on_b = b.subscribe(vec![shared.clone()]).unwrap();

    let published = publish(&a, &shared).await;

    match next(&mut on_b, Duration::from_secs(1)).await {
        Some(Ok(Delivery::Envelope(envelope))) => assert_eq!(*envelope, published),
        other => panic!("replica B did not get the envelope within 1 s: {other:?}"),
    }
    match next(&mut on_a, Duration::from_secs(1)).await {
        Some(Ok(Delivery::Envelope(envelope))) => assert_eq!(envelope.id, published.id),
        other => panic!("replica A did not deliver its own envelope: {other:?}"),
    }
    // Replica A's own message comes back from Redis; it must not be
    // delivered again.
    assert!(
        next(&mut on_a, Duration::from_millis(500)).await.is_none(),
        "replica A delivered its Redis echo"
    );
    assert!(next(&mut on_b, Duration::from_millis(100)).await.is_none());

    // Both replicas log into one database, so B can resume from A's
    // envelope.
    let later = publish(&a, &shared).await;
    let replay = b
        .replay(std::slice::from_ref(&shared), &published.id)
        .await
        .unwrap();
    assert_eq!(replay, agyn_events::Replay::Resumed(vec![later]));
}

/// A TCP proxy in front of Redis whose connections the test can cut.
struct Proxy {
    url: String,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::clone(&connections);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let connection = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                accepted.lock().unwrap().push(connection);
            }
        });
        Self {
            url,
            connections,
            _accept: accept,
        }
    }

    /// Closes every proxied connection, as a Redis restart would.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_redis_connection_is_a_gap() {
    let upstream = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(upstream).await;
    let database_url = agyn_store::testing::fresh_postgres_url().await;
    let a = replica(&database_url, "replica-a", redis_url()).await;
    let b = replica(&database_url, "replica-b", proxy.url.clone()).await;
    wait_until_bridged(&a, &b).await;
    let shared = room("organization");
    let mut on_b = b.subscribe(vec![shared.clone()]).unwrap();

    proxy.cut();

    match next(&mut on_b, Duration::from_secs(10)).await {
        Some(Ok(Delivery::Gap(reason))) => assert_eq!(reason, GapReason::BusInterrupted),
        other => panic!("expected a gap notice after the connection was cut: {other:?}"),
    }
    wait_until_bridged(&a, &b).await;
    let published = publish(&a, &shared).await;
    match next(&mut on_b, Duration::from_secs(1)).await {
        Some(Ok(Delivery::Envelope(envelope))) => assert_eq!(envelope.id, published.id),
        other => panic!("replica B did not get the envelope after reconnecting: {other:?}"),
    }
}
