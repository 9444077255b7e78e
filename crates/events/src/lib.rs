//! The platform event bus.
//!
//! Producers publish envelopes to rooms through [`Events`], which
//! implements [`agyn_core::events::EventSink`]. Each envelope gets a
//! UUIDv7 id and a timestamp, is appended to the replay log
//! (`notification_log`, ordered by `seq`), and is then delivered to this
//! replica's subscribers through the in-process [`hub`]. With Redis
//! configured, it also goes to every other replica over [`bridge`].
//!
//! Delivery is best effort. A subscriber that resumes within the replay
//! window gets what it missed from the log ([`Events::replay`]), and one
//! that cannot be served learns about the gap.

pub mod bridge;
pub mod hub;
mod log;
pub mod names;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use agyn_core::{Error, Result};
use agyn_store::sqlx::AnyConnection;
use agyn_store::{Backend, Db};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

pub use hub::{Delivery, EndReason, Subscription};

/// Default time an envelope stays in the replay log.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Default interval between two prunings of the replay log.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Maximum number of envelopes one resume replays. A resume that would
/// replay more is a gap.
pub const MAX_REPLAY: usize = 10_000;

/// How far before the cursor's timestamp a replay also reaches, in case
/// envelopes with a lower `seq` committed after the cursor's envelope
/// was delivered.
pub const REPLAY_LOOKBACK: Duration = Duration::from_secs(2);

/// Envelopes waiting to be logged and delivered. Beyond this, `publish`
/// drops new envelopes and counts them.
pub const PUBLISH_QUEUE: usize = 4096;

/// Maximum number of queued envelopes logged in one transaction.
const MAX_BATCH: usize = 256;

/// Subscribers get at most one [`GapReason::EventsDropped`] notice per
/// this interval while events are being dropped.
const DROP_NOTICE_INTERVAL_MICROS: i64 = 1_000_000;

/// One event as the bus stores and delivers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7 assigned by the bus; the resume cursor.
    pub id: String,
    /// Microseconds since the Unix epoch when the bus accepted the
    /// envelope.
    pub ts: i64,
    /// Producing component, such as `threads`.
    pub source: String,
    /// Dotted event name, such as `message.created`.
    pub event: String,
    /// Rooms, each valid and listed once.
    pub rooms: Vec<String>,
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// Reason that envelopes cannot be delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The resume cursor is not in the replay log: pruned, or never
    /// logged.
    CursorNotFound,
    /// More than [`MAX_REPLAY`] envelopes follow the resume cursor.
    ReplayLimitExceeded,
    /// The Redis connection was lost, so envelopes from other replicas may
    /// be missing.
    BusInterrupted,
    /// This replica dropped envelopes because its publish queue was full,
    /// so some are missing and are not in the replay log.
    EventsDropped,
}

/// Outcome of [`Events::replay`].
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// The cursor was found. These are the envelopes for the requested
    /// rooms logged after it, plus those logged up to [`REPLAY_LOOKBACK`]
    /// before it, in `seq` order.
    Resumed(Vec<Envelope>),
    /// Nothing can be replayed.
    Gap(GapReason),
}

/// Settings of an [`Events`] bus.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Name of this replica on the Redis channel, unique among the
    /// replicas that share one Redis. Defaults to a random UUID.
    pub replica_id: String,
    /// `redis://` URL. `None` runs the bus on this replica alone.
    pub redis_url: Option<String>,
    /// Time an envelope stays in the replay log.
    pub replay_window: Duration,
    /// Interval between two prunings of the replay log.
    pub prune_interval: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            replica_id: uuid::Uuid::new_v4().to_string(),
            redis_url: None,
            replay_window: DEFAULT_REPLAY_WINDOW,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
        }
    }
}

/// An envelope on its way to the log, with the channel that returns it
/// once logged and delivered.
struct Job {
    envelope: Envelope,
    done: Option<oneshot::Sender<Envelope>>,
}

/// The event bus of this replica. Cloning is cheap, and every clone
/// shares one hub, queue and set of background tasks.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    hub: Arc<hub::Hub>,
    replica_id: String,
    replay_window: Duration,
    queue: mpsc::Sender<Job>,
    stop: watch::Sender<bool>,
    /// Envelopes dropped because the queue was full or the payload
    /// invalid, for the log line of each drop.
    dropped: AtomicU64,
    /// Time of the last envelope dropped for a full queue, in
    /// microseconds; 0 before any.
    last_drop: AtomicI64,
    /// Time of the last drop notice sent to subscribers.
    last_drop_notice: AtomicI64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("replica_id", &self.inner.replica_id)
            .field("hub", &self.inner.hub)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Starts the bus and its background tasks on the current tokio
    /// runtime: the worker that logs and delivers queued envelopes, the
    /// pruning of the replay log, and with `redis_url` set the Redis
    /// publisher and subscriber. An unreachable Redis is retried in the
    /// background. Fails only on a `redis_url` that does not parse.
    ///
    /// Panics outside a tokio runtime, and on a zero `prune_interval`.
    pub fn start(db: Db, config: EventsConfig) -> Result<Self> {
        assert!(
            !config.prune_interval.is_zero(),
            "the prune interval must be positive"
        );
        let redis = config
            .redis_url
            .as_deref()
            .map(redis::Client::open)
            .transpose()
            .map_err(|error| {
                Error::invalid_argument(format!("redis_url: invalid Redis URL: {error}"))
            })?;
        let hub = Arc::new(hub::Hub::default());
        let (stop, stopped) = watch::channel(false);
        let (queue, jobs) = mpsc::channel(PUBLISH_QUEUE);

        let to_redis = redis.map(|client| {
            let (sender, messages) = mpsc::channel(bridge::PUBLISH_QUEUE);
            tokio::spawn(bridge::publish_loop(client.clone(), messages));
            tokio::spawn(bridge::subscribe_loop(
                client,
                Arc::clone(&hub),
                config.replica_id.clone(),
                stopped.clone(),
            ));
            sender
        });
        tokio::spawn(run_worker(Worker {
            db: db.clone(),
            hub: Arc::clone(&hub),
            replica_id: config.replica_id.clone(),
            to_redis,
            jobs,
            log_connection: None,
        }));
        tokio::spawn(prune_loop(
            db.clone(),
            config.replay_window,
            config.prune_interval,
            stopped,
        ));
        tracing::info!(
            replica_id = %config.replica_id,
            redis = config.redis_url.is_some(),
            replay_window_seconds = config.replay_window.as_secs(),
            "Started the event bus"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                hub,
                replica_id: config.replica_id,
                replay_window: config.replay_window,
                queue,
                stop,
                dropped: AtomicU64::new(0),
                last_drop: AtomicI64::new(0),
                last_drop_notice: AtomicI64::new(0),
            }),
        })
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// Validates, logs and delivers one envelope, and returns it once
    /// every local subscriber has it. Waits while the queue is full.
    /// A failed log insert is logged and the envelope is still delivered.
    ///
    /// Fails with `invalid_argument` on an invalid event name or room, and
    /// with `unavailable` once the bus has stopped.
    pub async fn publish_and_wait(
        &self,
        source: String,
        event: String,
        rooms: Vec<String>,
        payload: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Envelope> {
        let envelope = new_envelope(source, event, rooms, payload)?;
        let (done, logged) = oneshot::channel();
        let job = Job {
            envelope,
            done: Some(done),
        };
        if self.inner.queue.send(job).await.is_err() {
            return Err(Error::unavailable("the event bus has stopped"));
        }
        logged
            .await
            .map_err(|_| Error::unavailable("the event bus has stopped"))
    }

    /// Registers a subscription to `rooms` in this replica's hub. From
    /// here on, every envelope delivered to one of the rooms is buffered
    /// for it. Fails with `unavailable` after [`Events::shutdown`].
    pub fn subscribe(&self, rooms: Vec<String>) -> Result<Subscription> {
        self.inner
            .hub
            .subscribe(rooms)
            .ok_or_else(|| Error::unavailable("server is shutting down"))
    }

    /// Reads from the replay log what a stream of `rooms` missed after
    /// envelope `last_event_id`. That is every envelope for those rooms
    /// with a greater `seq`, plus those with a smaller `seq` accepted at
    /// most [`REPLAY_LOOKBACK`] before the cursor, in `seq` order and
    /// without the cursor itself. The lookback repeats envelopes the
    /// client may already have, so clients de-duplicate by id.
    ///
    /// A cursor that is not in the log is a gap, and so is one logged for
    /// none of `rooms`, and a replay of more than [`MAX_REPLAY`]
    /// envelopes.
    pub async fn replay(&self, rooms: &[String], last_event_id: &str) -> Result<Replay> {
        if uuid::Uuid::try_parse(last_event_id).is_err() {
            return Ok(Replay::Gap(GapReason::CursorNotFound));
        }
        let last_drop = self.inner.last_drop.load(Ordering::Relaxed);
        log::replay(
            &self.inner.db,
            rooms,
            last_event_id,
            (last_drop > 0).then_some(last_drop),
        )
        .await
    }

    /// Deletes the envelopes older than the replay window and returns how
    /// many. The background task calls it every prune interval.
    pub async fn prune(&self) -> Result<u64> {
        prune_once(&self.inner.db, self.inner.replay_window).await
    }

    /// Ends every subscription with [`EndReason::Shutdown`], rejects new
    /// ones and stops the pruning and the Redis subscription. Envelopes
    /// published afterwards are still logged and sent to other replicas.
    pub fn shutdown(&self) {
        self.inner.hub.close();
        let _ = self.inner.stop.send(true);
        tracing::info!("Closed every event subscription");
    }

    /// Returns the number of subscriptions registered on this replica.
    pub fn subscriber_count(&self) -> usize {
        self.inner.hub.subscriber_count()
    }

    /// Records that an envelope was lost, so that resumes report a gap,
    /// and tells current subscribers, at most once per second.
    fn note_lost_event(&self) {
        let now = agyn_core::time::now_micros();
        self.inner.last_drop.store(now, Ordering::Relaxed);
        let last_notice = self.inner.last_drop_notice.load(Ordering::Relaxed);
        if now - last_notice >= DROP_NOTICE_INTERVAL_MICROS
            && self
                .inner
                .last_drop_notice
                .compare_exchange(last_notice, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.inner.hub.deliver_gap(GapReason::EventsDropped);
        }
    }

    fn count_drop(&self, reason: &str, source: &str, event: &str) {
        let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // The first drop and then every hundredth are logged.
        if dropped == 1 || dropped.is_multiple_of(100) {
            tracing::error!(reason, source, event, dropped, "Dropped an event");
        }
    }
}

impl agyn_core::events::EventSink for Events {
    /// Queues the event and returns at once. An invalid event or a full
    /// queue is logged and the event is dropped.
    fn publish(
        &self,
        source: &'static str,
        event: &'static str,
        room: String,
        payload: serde_json::Value,
    ) {
        let serde_json::Value::Object(payload) = payload else {
            self.count_drop("the payload is not a JSON object", source, event);
            return;
        };
        let envelope =
            match new_envelope(source.to_string(), event.to_string(), vec![room], payload) {
                Ok(envelope) => envelope,
                Err(error) => {
                    self.count_drop(error.message(), source, event);
                    return;
                }
            };
        let job = Job {
            envelope,
            done: None,
        };
        match self.inner.queue.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.count_drop("the publish queue is full", source, event);
                self.note_lost_event();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.count_drop("the event bus has stopped", source, event);
            }
        }
    }
}

/// Checks the names, removes repeated rooms and assigns the id and time.
fn new_envelope(
    source: String,
    event: String,
    rooms: Vec<String>,
    payload: serde_json::Map<String, serde_json::Value>,
) -> Result<Envelope> {
    if !names::is_valid_event(&event) {
        return Err(Error::invalid_field(
            "event",
            &format!("must match {}", names::EVENT_PATTERN),
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(rooms.len());
    for room in rooms {
        if !names::is_valid_room(&room) {
            return Err(Error::invalid_field(
                "rooms",
                &format!(
                    "invalid room {}: must match {}",
                    names::quoted(&room),
                    names::ROOM_PATTERN
                ),
            ));
        }
        if !unique.contains(&room) {
            unique.push(room);
        }
    }
    if unique.is_empty() {
        return Err(Error::invalid_field(
            "rooms",
            "at least one room is required",
        ));
    }
    Ok(Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        ts: agyn_core::time::now_micros(),
        source,
        event,
        rooms: unique,
        payload,
    })
}

/// The task that logs queued envelopes in batches and then delivers them.
struct Worker {
    db: Db,
    hub: Arc<hub::Hub>,
    replica_id: String,
    to_redis: Option<mpsc::Sender<String>>,
    jobs: mpsc::Receiver<Job>,
    /// On PostgreSQL, the connection that appends to the replay log, once
    /// opened.
    log_connection: Option<AnyConnection>,
}

impl Worker {
    /// Appends `envelopes` to the replay log and returns their `seq`s.
    /// On PostgreSQL a failed append is tried once more on a new
    /// connection, so that a dropped connection loses no envelope. When
    /// the first try did commit, the second fails on the envelopes'
    /// unique ids and logs nothing twice.
    async fn log(&mut self, envelopes: &[Envelope]) -> Result<Vec<i64>> {
        if self.db.backend() == Backend::Sqlite {
            return log::append_sqlite(&self.db, envelopes).await;
        }
        match self.append_postgres(envelopes).await {
            Ok(seqs) => Ok(seqs),
            Err(error) => {
                tracing::warn!(%error, "Failed to log events; trying again on a new connection");
                self.append_postgres(envelopes).await
            }
        }
    }

    async fn append_postgres(&mut self, envelopes: &[Envelope]) -> Result<Vec<i64>> {
        let connection = match &mut self.log_connection {
            Some(connection) => connection,
            None => {
                // A connection of its own saves the health check and the
                // wait of a pool acquire before every batch.
                let connection = self.db.pool().acquire().await?.detach();
                self.log_connection.insert(connection)
            }
        };
        let result = log::append_postgres(connection, envelopes).await;
        if result.is_err() {
            self.log_connection = None;
        }
        result
    }
}

/// Runs the worker until every [`Events`] clone is dropped.
async fn run_worker(mut worker: Worker) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut redis_drops = 0u64;
    while worker.jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let envelopes: Vec<Envelope> = batch.iter().map(|job| job.envelope.clone()).collect();
        let seqs = match worker.log(&envelopes).await {
            Ok(seqs) => seqs.into_iter().map(Some).collect(),
            Err(error) => {
                tracing::error!(
                    %error,
                    envelopes = envelopes.len(),
                    "Failed to log events; they are delivered but cannot be replayed"
                );
                vec![None; envelopes.len()]
            }
        };
        for (job, seq) in batch.drain(..).zip(seqs) {
            let envelope = Arc::new(job.envelope);
            worker.hub.deliver(&envelope);
            if let Some(to_redis) = &worker.to_redis {
                let message = bridge::WireMessage {
                    replica_id: worker.replica_id.clone(),
                    seq,
                    envelope: Envelope::clone(&envelope),
                };
                let message = serde_json::to_string(&message).expect("an envelope encodes as JSON");
                if to_redis.try_send(message).is_err() {
                    redis_drops += 1;
                    if redis_drops == 1 || redis_drops.is_multiple_of(100) {
                        tracing::error!(
                            dropped = redis_drops,
                            "The Redis publish queue is full; other replicas miss this event"
                        );
                    }
                }
            }
            if let Some(done) = job.done {
                let _ = done.send(Envelope::clone(&envelope));
            }
        }
    }
}

async fn prune_once(db: &Db, replay_window: Duration) -> Result<u64> {
    let window = i64::try_from(replay_window.as_micros()).unwrap_or(i64::MAX);
    let cutoff = agyn_core::time::now_micros().saturating_sub(window);
    log::prune(db, cutoff).await
}

/// Prunes the replay log every `interval` until `stop` turns true.
///
/// NOTE: every replica prunes, because the event bus starts this loop
/// and does not know the leader. The deletes are idempotent, so
/// concurrent prunes only repeat work.
async fn prune_loop(
    db: Db,
    replay_window: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = bridge::stopped(&mut stop) => return,
            _ = ticks.tick() => {}
        }
        match prune_once(&db, replay_window).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "Pruned the replay log"),
            Err(error) => tracing::warn!(%error, "Failed to prune the replay log"),
        }
    }
}
