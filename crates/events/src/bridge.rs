//! The Redis bridge between replicas.
//!
//! Every replica publishes the envelopes it accepts on one Redis channel
//! and delivers the envelopes other replicas publish there to its own
//! subscribers. Redis pub/sub keeps nothing, so a replica that loses its
//! connection misses what was published meanwhile. When it subscribes
//! again, it sends every local subscriber a gap notice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::hub::Hub;
use crate::{Envelope, GapReason};

/// The Redis channel that carries envelopes between replicas.
pub const CHANNEL: &str = "agyn:events";

/// Messages waiting for the Redis publisher. Beyond this, new messages are
/// dropped and counted.
pub const PUBLISH_QUEUE: usize = 4096;

/// Interval between PINGs on the subscription connection, which detect a
/// connection that died without closing.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Maximum wait for a connection or a PING reply.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// The JSON message on [`CHANNEL`].
#[derive(Debug, Serialize, Deserialize)]
pub struct WireMessage {
    /// Replica that accepted the envelope. Replicas skip their own
    /// messages, which they have already delivered.
    pub replica_id: String,
    /// Position of the envelope in the replay log, or `None` when it could
    /// not be logged.
    pub seq: Option<i64>,
    pub envelope: Envelope,
}

/// Doubling delay between reconnection attempts.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: FIRST_RETRY }
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MAX_RETRY);
    }
}

/// Logs the first failure of a series and then every tenth, so that a
/// long outage does not flood the log.
fn log_failure(what: &str, attempt: u64, error: &dyn std::fmt::Display) {
    if attempt == 1 || attempt.is_multiple_of(10) {
        tracing::warn!(%error, attempt, "{what} failed; retrying");
    }
}

/// Sends queued messages to [`CHANNEL`], reconnecting with backoff. A
/// message that fails is retried on the next connection. Returns when
/// every sender of `queue` is dropped.
pub async fn publish_loop(client: redis::Client, mut queue: mpsc::Receiver<String>) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Backoff::new();
    let mut failures = 0u64;
    while let Some(message) = queue.recv().await {
        loop {
            let active = match connection.as_mut() {
                Some(active) => active,
                None => match connect(&client).await {
                    Ok(opened) => connection.insert(opened),
                    Err(error) => {
                        failures += 1;
                        log_failure("Connecting to Redis to publish", failures, &error);
                        backoff.wait().await;
                        continue;
                    }
                },
            };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&message)
                .query_async(active)
                .await;
            match sent {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(failures, "Publishing to Redis again");
                        failures = 0;
                    }
                    backoff.reset();
                    break;
                }
                Err(error) => {
                    failures += 1;
                    log_failure("Publishing to Redis", failures, &error);
                    connection = None;
                    backoff.wait().await;
                }
            }
        }
    }
}

async fn connect(client: &redis::Client) -> Result<redis::aio::MultiplexedConnection, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("connection timed out".to_string()),
    }
}

/// Delivers other replicas' envelopes from [`CHANNEL`] to `hub` until
/// `stop` turns true, resubscribing with backoff after a lost connection.
pub async fn subscribe_loop(
    client: redis::Client,
    hub: Arc<Hub>,
    replica_id: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    let mut failures = 0u64;
    // Set after any failure, so that the next subscription sends a gap.
    let mut interrupted = false;
    loop {
        let subscribed = tokio::select! {
            () = stopped(&mut stop) => return,
            subscribed = subscribe(&client) => subscribed,
        };
        let (mut sink, mut messages) = match subscribed {
            Ok(pubsub) => pubsub,
            Err(error) => {
                failures += 1;
                interrupted = true;
                log_failure("Subscribing to Redis", failures, &error);
                tokio::select! {
                    () = stopped(&mut stop) => return,
                    () = backoff.wait() => continue,
                }
            }
        };
        if interrupted {
            tracing::info!(
                channel = CHANNEL,
                subscribers = hub.subscriber_count(),
                "Subscribed to Redis again; sending subscribers a gap notice"
            );
            hub.deliver_gap(GapReason::BusInterrupted);
        } else {
            tracing::info!(channel = CHANNEL, "Subscribed to Redis");
        }
        failures = 0;
        backoff.reset();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let lost = loop {
            tokio::select! {
                () = stopped(&mut stop) => return,
                message = messages.next() => match message {
                    Some(message) => receive(&hub, &replica_id, message.get_payload_bytes()),
                    None => break "the connection closed".to_string(),
                },
                // A subscribed connection replies to PING with an array
                // (`pong` and an empty message), not a status string.
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
                    match pong {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break error.to_string(),
                        Err(_) => break "PING timed out".to_string(),
                    }
                }
            }
        };
        tracing::warn!(error = %lost, "Lost the Redis subscription; resubscribing");
        interrupted = true;
    }
}

/// Waits until `stop` turns true or its sender is dropped.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn subscribe(
    client: &redis::Client,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), String> {
    let subscribe = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(CHANNEL).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match tokio::time::timeout(REDIS_TIMEOUT, subscribe).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("subscription timed out".to_string()),
    }
}

/// Delivers one message from another replica to the local subscribers.
fn receive(hub: &Hub, replica_id: &str, payload: &[u8]) {
    let message: WireMessage = match serde_json::from_slice(payload) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%error, bytes = payload.len(), "Ignoring a malformed message from Redis");
            return;
        }
    };
    if message.replica_id == replica_id {
        return;
    }
    hub.deliver(&Arc::new(message.envelope));
}
