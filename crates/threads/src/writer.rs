//! The SendMessage writer: one task per [`Threads`](crate::Threads) that
//! takes the sends which passed their checks from a queue and stores all
//! those waiting in one write transaction (group commit).
//!
//! A batch shares its statements: it locks and reads its threads once,
//! inserts every message and recipient row with multi-row INSERTs, and
//! commits once. Each send still gets its own result. A send that fails
//! inside the transaction (a thread that is gone or closed, a reused
//! request id) is left out of the inserts and fails alone. When the
//! transaction itself fails, each send of the batch is stored again in a
//! transaction of its own.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use agyn_core::events::EventSink;
use agyn_core::id::new_id;
use agyn_core::time::now_micros;
use agyn_core::{Error, IdentityKind, Result};
use agyn_store::sqlx::{self, AnyConnection};
use agyn_store::{Backend, Db};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ops::{WRITE_ATTEMPTS, ensure_open, write_conflict};
use crate::store::{
    self, MessageRecord, NewMessage, ParticipantRecord, ThreadCounters, ThreadRecord,
};
use crate::thread_cache::ThreadCache;
use crate::{PostSendHook, SentMessage, keys};

/// Sends waiting for the writer. A send that finds the queue full waits
/// for space.
const QUEUE_CAPACITY: usize = 1_024;

/// Maximum number of sends stored in one transaction.
const MAX_BATCH: usize = 256;

/// Maximum number of batches in flight on PostgreSQL, where batches on
/// other threads do not wait for each other and each transaction spends
/// most of its time waiting for the server. On SQLite one batch runs at a
/// time, because the database has one writer connection.
const POSTGRES_BATCHES: usize = 4;

const SEND_SCOPE: &str = "threads.SendMessage";

/// A SendMessage call that passed every check before the transaction.
pub(crate) struct SendRequest {
    pub sender_id: String,
    pub sender_kind: IdentityKind,
    pub thread_id: String,
    pub body: String,
    /// Canonical file ids, in the order sent.
    pub file_ids: Vec<String>,
    /// Client request key, empty for none.
    pub request_id: String,
    /// Digest of the request for its key, see [`keys::fingerprint`].
    pub fingerprint: String,
}

struct Pending {
    request: SendRequest,
    stored: oneshot::Sender<Result<MessageRecord>>,
}

/// The sending side of a writer's queue.
pub(crate) struct Queue {
    sender: mpsc::Sender<Pending>,
}

impl Queue {
    /// Starts `writer` on the current tokio runtime. It stops when the
    /// queue is dropped.
    pub(crate) fn start(writer: Writer) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(Arc::new(writer).run(receiver));
        Self { sender }
    }

    /// Queues `request` and returns the stored message, or the error that
    /// failed this send.
    pub(crate) async fn submit(&self, request: SendRequest) -> Result<MessageRecord> {
        let (stored, result) = oneshot::channel();
        self.sender
            .send(Pending { request, stored })
            .await
            .map_err(|_| Error::unavailable("the message writer has stopped; retry the call"))?;
        result.await.map_err(|_| {
            Error::unavailable("the message writer failed to store the message; retry the call")
        })?
    }
}

/// The parts of [`Threads`](crate::Threads) that the writer uses.
pub(crate) struct Writer {
    pub db: Db,
    pub events: Arc<dyn EventSink>,
    pub hooks: Vec<Arc<dyn PostSendHook>>,
    pub cache: Arc<ThreadCache>,
}

/// A message stored by a transaction, with its recipients.
struct Stored {
    sent: SentMessage,
    recipients: Vec<ParticipantRecord>,
}

/// Result of one send inside a transaction.
enum Outcome {
    /// A new message, whose events are published after the commit.
    Stored(Stored),
    /// The message that an earlier call with the same request id stored.
    Replayed(MessageRecord),
    /// The send failed, and the transaction stores nothing for it.
    Failed(Error),
}

impl Writer {
    /// Takes batches from `queue` while fewer than the backend's maximum
    /// are in flight, until every sender of the queue is dropped.
    async fn run(self: Arc<Self>, mut queue: mpsc::Receiver<Pending>) {
        let in_flight = Arc::new(Semaphore::new(match self.db.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_BATCHES,
        }));
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let permit = Arc::clone(&in_flight)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
            let pending = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
            let sends = pending.len();
            let writer = Arc::clone(&self);
            let store = tokio::spawn(async move { writer.store_and_reply(pending).await });
            // The batch runs in a task of its own, so that a panic fails
            // only that batch's sends and the writer goes on.
            tokio::spawn(async move {
                if let Err(error) = store.await {
                    tracing::error!(%error, sends, "The message writer failed on a batch");
                }
                drop(permit);
            });
        }
    }

    async fn store_and_reply(&self, batch: Vec<Pending>) {
        let requests: Vec<&SendRequest> = batch.iter().map(|pending| &pending.request).collect();
        let results = self.store(&requests).await;
        drop(requests);
        for (pending, result) in batch.into_iter().zip(results) {
            // The caller may have gone away. Its message is stored anyway.
            let _ = pending.stored.send(result);
        }
    }

    /// Stores `requests` in one transaction, or each in its own when that
    /// fails, and returns one result per request, in order.
    async fn store(&self, requests: &[&SendRequest]) -> Vec<Result<MessageRecord>> {
        if requests.len() > 1 {
            match self.commit(requests).await {
                Ok(outcomes) => {
                    return outcomes
                        .into_iter()
                        .map(|outcome| self.finish(outcome))
                        .collect();
                }
                Err(error) => tracing::warn!(
                    %error,
                    sends = requests.len(),
                    "Failed to store a batch of messages; storing each on its own"
                ),
            }
        }
        let mut results = Vec::with_capacity(requests.len());
        for request in requests {
            results.push(self.store_one(request).await);
        }
        results
    }

    /// Stores one send, starting over when a concurrent transaction on
    /// another replica recorded the same request id first.
    async fn store_one(&self, request: &SendRequest) -> Result<MessageRecord> {
        for _ in 0..WRITE_ATTEMPTS {
            match self.commit(&[request]).await {
                Ok(outcomes) => {
                    let outcome = outcomes.into_iter().next().expect("one outcome per send");
                    return self.finish(outcome);
                }
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            }
        }
        Err(write_conflict())
    }

    /// Publishes the events of a committed outcome and returns the send's
    /// result.
    fn finish(&self, outcome: Outcome) -> Result<MessageRecord> {
        match outcome {
            Outcome::Stored(stored) => {
                publish_created(self.events.as_ref(), &stored.sent, &stored.recipients);
                Ok(stored.sent.message)
            }
            Outcome::Replayed(message) => Ok(message),
            Outcome::Failed(error) => Err(error),
        }
    }

    /// Runs one transaction for `requests`. An error means nothing was
    /// stored for any of them.
    async fn commit(&self, requests: &[&SendRequest]) -> Result<Vec<Outcome>> {
        let mut tx = self.db.begin_write().await?;
        let thread_ids: Vec<String> = requests
            .iter()
            .map(|request| request.thread_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The rows are locked before the request ids are looked up, so that
        // on PostgreSQL a concurrent first call with the same id waits and
        // then finds the id recorded.
        let mut threads = store::lock_threads(&mut tx, self.db.backend(), &thread_ids).await?;
        for id in &thread_ids {
            match threads.get(id) {
                Some(thread) => self.cache.store(thread),
                None => self.cache.forget(id),
            }
        }
        let now = now_micros();

        let mut outcomes: Vec<Outcome> = Vec::with_capacity(requests.len());
        // Request ids stored earlier in this batch: (sender, key) to the
        // fingerprint and the index of the outcome.
        let mut batch_keys: HashMap<(&str, &str), (&str, usize)> = HashMap::new();
        for request in requests {
            let outcome = if request.request_id.is_empty() {
                self.number(request, &mut threads, now)
            } else {
                let key = (request.sender_id.as_str(), request.request_id.as_str());
                match batch_keys.get(&key) {
                    Some(&(fingerprint, index)) if fingerprint == request.fingerprint => {
                        match &outcomes[index] {
                            Outcome::Stored(stored) => {
                                Outcome::Replayed(stored.sent.message.clone())
                            }
                            _ => unreachable!("only stored sends record their key"),
                        }
                    }
                    Some(_) => Outcome::Failed(keys::key_reused()),
                    None => {
                        let outcome = self.replay_or_number(&mut tx, request, &mut threads, now);
                        let outcome = outcome.await?;
                        if matches!(outcome, Outcome::Stored(_)) {
                            batch_keys.insert(key, (&request.fingerprint, outcomes.len()));
                        }
                        outcome
                    }
                }
            };
            outcomes.push(outcome);
        }

        self.insert(&mut tx, requests, &outcomes, &threads).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Returns the message of an earlier call with the request's id, or
    /// numbers a new one.
    async fn replay_or_number(
        &self,
        connection: &mut AnyConnection,
        request: &SendRequest,
        threads: &mut HashMap<String, ThreadRecord>,
        now: i64,
    ) -> Result<Outcome> {
        let replayed = keys::replayed(
            connection,
            SEND_SCOPE,
            &request.sender_id,
            &request.request_id,
            &request.fingerprint,
        )
        .await;
        match replayed {
            Ok(None) => Ok(self.number(request, threads, now)),
            Ok(Some(id)) => Ok(match store::message_by_id(connection, &id).await? {
                Some((message, _)) => Outcome::Replayed(message),
                None => Outcome::Failed(Error::not_found("message", &id)),
            }),
            Err(error) if error.reason() == Some("IDEMPOTENCY_KEY_REUSED") => {
                Ok(Outcome::Failed(error))
            }
            Err(error) => Err(error),
        }
    }

    /// Gives a new message the next `seq` of its thread and advances the
    /// thread's counters in `threads`, or fails the send when the thread
    /// is gone or closed.
    fn number(
        &self,
        request: &SendRequest,
        threads: &mut HashMap<String, ThreadRecord>,
        now: i64,
    ) -> Outcome {
        let Some(thread) = threads.get_mut(&request.thread_id) else {
            return Outcome::Failed(Error::not_found("thread", &request.thread_id));
        };
        if let Err(error) = ensure_open(thread.status) {
            return Outcome::Failed(error);
        }
        let message = MessageRecord {
            id: new_id(),
            thread_id: thread.id.clone(),
            seq: thread.message_count + 1,
            sender_id: request.sender_id.clone(),
            body: request.body.clone(),
            file_ids: request.file_ids.clone(),
            created_at: now.max(thread.last_message_at.unwrap_or(i64::MIN)),
        };
        thread.message_count = message.seq;
        thread.last_message_at = Some(message.created_at);
        thread.updated_at = now.max(thread.updated_at);
        let recipients = thread
            .participants
            .iter()
            .filter(|participant| participant.id != request.sender_id)
            .cloned()
            .collect();
        Outcome::Stored(Stored {
            sent: SentMessage {
                message,
                organization_id: thread.organization_id.clone(),
                sender_kind: request.sender_kind,
            },
            recipients,
        })
    }

    /// Inserts the stored outcomes' rows, advances their threads, records
    /// their request ids and runs the hooks.
    async fn insert(
        &self,
        connection: &mut AnyConnection,
        requests: &[&SendRequest],
        outcomes: &[Outcome],
        threads: &HashMap<String, ThreadRecord>,
    ) -> Result<()> {
        let stored: Vec<(&SendRequest, &Stored)> = requests
            .iter()
            .zip(outcomes)
            .filter_map(|(request, outcome)| match outcome {
                Outcome::Stored(stored) => Some((*request, stored)),
                _ => None,
            })
            .collect();
        if stored.is_empty() {
            return Ok(());
        }
        let new: Vec<NewMessage> = stored
            .iter()
            .map(|(_, stored)| NewMessage {
                message: &stored.sent.message,
                recipients: &stored.recipients,
            })
            .collect();
        let advanced: BTreeSet<&str> = stored
            .iter()
            .map(|(_, stored)| stored.sent.message.thread_id.as_str())
            .collect();
        let counters: Vec<ThreadCounters> = advanced
            .into_iter()
            .map(|id| {
                let thread = &threads[id];
                ThreadCounters {
                    id,
                    message_count: thread.message_count,
                    last_message_at: thread
                        .last_message_at
                        .expect("a thread with a new message has its time"),
                    updated_at: thread.updated_at,
                }
            })
            .collect();
        store::store_messages(connection, self.db.backend(), &new, &counters).await?;

        for (request, stored) in &stored {
            keys::record(
                connection,
                SEND_SCOPE,
                &request.sender_id,
                &request.request_id,
                &request.fingerprint,
                &stored.sent.message.id,
            )
            .await?;
        }

        let sent: Vec<&SentMessage> = stored.iter().map(|(_, stored)| &stored.sent).collect();
        self.run_hooks(connection, &sent).await
    }

    /// Runs each hook on the messages it applies to, behind a savepoint
    /// that a failing hook rolls back to.
    async fn run_hooks(&self, connection: &mut AnyConnection, sent: &[&SentMessage]) -> Result<()> {
        for hook in &self.hooks {
            let selected: Vec<&SentMessage> = sent
                .iter()
                .copied()
                .filter(|sent| hook.applies_to(sent))
                .collect();
            if selected.is_empty() {
                continue;
            }
            sqlx::query("SAVEPOINT post_send_hook")
                .execute(&mut *connection)
                .await?;
            match hook.in_transaction(connection, &selected).await {
                Ok(()) => {
                    sqlx::query("RELEASE SAVEPOINT post_send_hook")
                        .execute(&mut *connection)
                        .await?;
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        messages = selected.len(),
                        first_message_id = %selected[0].message.id,
                        thread_id = %selected[0].message.thread_id,
                        "Post-send hook failed; its writes are rolled back"
                    );
                    sqlx::query("ROLLBACK TO SAVEPOINT post_send_hook")
                        .execute(&mut *connection)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Publishes `message.created` once to each recipient's
/// `thread_participant:<id>` room and, when a recipient is a non-passive
/// agent, once to `agent_messages` with their ids.
fn publish_created(events: &dyn EventSink, sent: &SentMessage, recipients: &[ParticipantRecord]) {
    let message = &sent.message;
    let payload = json!({
        "thread_id": message.thread_id,
        "message_id": message.id,
        "sender_id": message.sender_id,
        "organization_id": sent.organization_id,
        "seq": message.seq,
    });
    for recipient in recipients {
        events.publish(
            "threads",
            "message.created",
            format!("thread_participant:{}", recipient.id),
            payload.clone(),
        );
    }
    let agent_ids: Vec<&str> = recipients
        .iter()
        .filter(|recipient| recipient.kind == IdentityKind::Agent && !recipient.passive)
        .map(|recipient| recipient.id.as_str())
        .collect();
    if !agent_ids.is_empty() {
        let mut payload = payload;
        payload["agent_ids"] = json!(agent_ids);
        events.publish(
            "threads",
            "message.created",
            "agent_messages".to_string(),
            payload,
        );
    }
}

#[cfg(test)]
mod tests;
