//! Message and read-state operations: SendMessage with its events and
//! post-send hooks, AckMessages, the unacked lists and counts, GetMessages
//! and the internal message lookups. Each operation states its
//! authorization rule first.

use agyn_authz::ObjectRef;
use agyn_core::error::Code;
use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};
use serde_json::json;

use crate::ops::{WRITE_ATTEMPTS, ensure_open, write_conflict};
use crate::store::{self, MessageRecord, ParticipantRecord, PendingWork};
use crate::{SentMessage, Threads, identity_of, keys, thread_object};

/// Maximum message body size, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 65_536;
/// Maximum number of files attached to one message.
pub const MAX_FILES: usize = 10;
/// Maximum number of message ids in one AckMessages call.
pub const MAX_ACK_IDS: usize = 500;
/// Maximum number of thread ids in one ListPendingAgentWork filter.
pub const MAX_PENDING_THREADS: usize = 200;

const SEND_SCOPE: &str = "threads.SendMessage";

/// Request of SendMessage.
#[derive(Debug, Clone, Copy)]
pub struct SendInput<'a> {
    pub thread_id: &'a str,
    pub body: &'a str,
    pub file_ids: &'a [String],
    pub request_id: &'a str,
}

impl Threads {
    /// SendMessage: `can_write` on the thread, which participants hold
    /// and so do apps granted `thread_write` on the organization. The
    /// thread must be ACTIVE. Every participant except the sender gets an
    /// unacked row. A repeat with the same `request_id` returns the first
    /// message and creates no rows, events or hook runs.
    pub async fn send_message(
        &self,
        caller: &Caller,
        input: &SendInput<'_>,
    ) -> Result<MessageRecord> {
        let (sender_id, sender_kind) = identity_of(caller)?;
        let thread_id = parse_id("thread_id", input.thread_id)?;
        let file_ids = validate_content(input.body, input.file_ids)?;
        keys::validate(input.request_id)?;
        let thread = self.thread_or_not_found(&thread_id).await?;
        self.authorizer
            .require(
                &ObjectRef::identity(sender_id),
                "can_write",
                &thread_object(&thread_id),
            )
            .await?;
        ensure_open(thread.status)?;
        self.ensure_organization_active(&thread.organization_id)
            .await?;

        self.check_attachments(caller, &file_ids).await?;
        let fingerprint = keys::fingerprint(
            [thread_id.as_str(), input.body]
                .into_iter()
                .chain(file_ids.iter().map(String::as_str)),
        );
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            // The lock comes first, so that on PostgreSQL a concurrent
            // first call with the same key waits here and then finds the
            // key recorded.
            store::lock_thread(&mut tx, self.db.backend(), &thread_id).await?;
            if let Some(id) = keys::replayed(
                &mut tx,
                SEND_SCOPE,
                sender_id,
                input.request_id,
                &fingerprint,
            )
            .await?
            {
                tx.commit().await?;
                return self.message_or_not_found(&id).await;
            }
            let current = store::thread_by_id(&mut tx, &thread_id)
                .await?
                .ok_or_else(|| Error::not_found("thread", &thread_id))?;
            ensure_open(current.status)?;

            let now = now_micros();
            let message = MessageRecord {
                id: new_id(),
                thread_id: thread_id.clone(),
                seq: current.message_count + 1,
                sender_id: sender_id.to_string(),
                body: input.body.to_string(),
                file_ids: file_ids.clone(),
                created_at: now.max(current.last_message_at.unwrap_or(i64::MIN)),
            };
            let recipients: Vec<&ParticipantRecord> = current
                .participants
                .iter()
                .filter(|participant| participant.id != sender_id)
                .collect();
            let stored = async {
                store::insert_message(&mut tx, &message, &recipients, now.max(current.updated_at))
                    .await?;
                keys::record(
                    &mut tx,
                    SEND_SCOPE,
                    sender_id,
                    input.request_id,
                    &fingerprint,
                    &message.id,
                )
                .await
            }
            .await;

            match stored {
                Ok(()) => {}
                // A concurrent call recorded the key or took the sequence
                // number first: start over under the lock.
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }

            let sent = SentMessage {
                message,
                organization_id: current.organization_id.clone(),
                sender_kind,
            };
            self.run_hooks(&sent).await;
            self.publish_created(&sent, &recipients);
            return Ok(sent.message);
        }
        Err(write_conflict())
    }

    /// AckMessages: acts only on the caller's own recipient rows, so it
    /// needs no relationship check. Returns how many rows were newly
    /// acked. Unknown ids, other recipients' messages and acked rows are
    /// ignored.
    pub async fn ack_messages(
        &self,
        caller: &Caller,
        message_ids: &[String],
        thread_id: Option<&str>,
    ) -> Result<u64> {
        let (caller_id, _) = identity_of(caller)?;
        if message_ids.len() > MAX_ACK_IDS {
            return Err(Error::invalid_field(
                "message_ids",
                &format!("must name at most {MAX_ACK_IDS} ids"),
            ));
        }
        let mut ids = message_ids
            .iter()
            .enumerate()
            .map(|(index, id)| parse_id(&format!("message_ids[{index}]"), id))
            .collect::<Result<Vec<_>>>()?;
        ids.sort();
        ids.dedup();
        let thread_id = thread_id.map(|id| parse_id("thread_id", id)).transpose()?;
        if ids.is_empty() && thread_id.is_none() {
            return Ok(0);
        }
        let listed = (!ids.is_empty()).then_some(ids.as_slice());
        let mut connection = self.db.pool().acquire().await?;
        store::ack(
            &mut connection,
            caller_id,
            listed,
            thread_id.as_deref(),
            now_micros(),
        )
        .await
    }

    /// GetUnackedMessages: the caller's own unacked messages, so no
    /// relationship check applies. A thread the caller is not in yields
    /// nothing. It never changes read state.
    pub async fn unacked_messages(
        &self,
        caller: &Caller,
        thread_id: Option<&str>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<MessageRecord>, String)> {
        let (caller_id, _) = identity_of(caller)?;
        let thread_id = thread_id.map(|id| parse_id("thread_id", id)).transpose()?;
        let fingerprint = Fingerprint::new("agynio.api.threads.v1.GetUnackedMessages")
            .with(caller_id)
            .with(thread_id.as_deref().unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let mut connection = self.db.pool().acquire().await?;
        store::list_unacked(&mut connection, caller_id, thread_id.as_deref(), &page).await
    }

    /// GetMessages: `can_read` on the thread. Works on archived and
    /// degraded threads and never acks.
    pub async fn get_messages(
        &self,
        caller: &Caller,
        thread_id: &str,
        order: SortOrder,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<MessageRecord>, String)> {
        let (caller_id, _) = identity_of(caller)?;
        let thread_id = parse_id("thread_id", thread_id)?;
        self.thread_or_not_found(&thread_id).await?;
        self.authorizer
            .require(
                &ObjectRef::identity(caller_id),
                "can_read",
                &thread_object(&thread_id),
            )
            .await?;
        let fingerprint = Fingerprint::new("agynio.api.threads.v1.GetMessages")
            .with(caller_id)
            .with(&thread_id);
        let page = Page::parse(page_size, page_token, order, fingerprint)?;
        let mut connection = self.db.pool().acquire().await?;
        store::list_messages(&mut connection, &thread_id, &page).await
    }

    /// GetUnackedMessageCounts (internal): `participant_id`'s unacked
    /// message count by thread id, only for threads with at least one,
    /// optionally in one organization.
    pub async fn unacked_message_counts(
        &self,
        participant_id: &str,
        organization_id: Option<&str>,
    ) -> Result<Vec<(String, i64)>> {
        let participant_id = parse_id("participant_id", participant_id)?;
        let org_id = organization_id
            .map(|id| parse_id("organization_id", id))
            .transpose()?;
        let mut connection = self.db.pool().acquire().await?;
        store::unacked_counts(&mut connection, &participant_id, org_id.as_deref()).await
    }

    /// ListPendingAgentWork (internal): the backlog of every non-passive
    /// agent participant with an unacked message in an ACTIVE thread,
    /// ordered by `(oldest_unacked_at, thread_id, agent_id)`. A present but
    /// empty `thread_ids` filter returns nothing.
    pub async fn list_pending_agent_work(
        &self,
        caller: &Caller,
        thread_ids: Option<&[String]>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<PendingWork>, String)> {
        let thread_ids = match thread_ids {
            None => None,
            Some(ids) if ids.len() > MAX_PENDING_THREADS => {
                return Err(Error::invalid_field(
                    "thread_ids.values",
                    &format!("must name at most {MAX_PENDING_THREADS} ids"),
                ));
            }
            Some(ids) => {
                let mut parsed = ids
                    .iter()
                    .enumerate()
                    .map(|(index, id)| parse_id(&format!("thread_ids.values[{index}]"), id))
                    .collect::<Result<Vec<_>>>()?;
                parsed.sort();
                parsed.dedup();
                Some(parsed)
            }
        };
        let filter = thread_ids
            .as_ref()
            .map_or_else(|| "*".to_string(), |ids| ids.join(","));
        let fingerprint = Fingerprint::new("agynio.api.threads.v1.ListPendingAgentWork")
            .with(caller_label(caller))
            .with(&filter);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let mut connection = self.db.pool().acquire().await?;
        store::list_pending_work(&mut connection, thread_ids.as_deref(), &page).await
    }

    /// ListThreadsReferencingFile (internal): ids of the threads with a
    /// message that attaches `file_id`, each once and sorted.
    pub async fn threads_referencing_file(&self, file_id: &str) -> Result<Vec<String>> {
        let file_id = parse_id("file_id", file_id)?;
        let mut connection = self.db.pool().acquire().await?;
        store::threads_referencing_file(&mut connection, &file_id).await
    }

    /// GetMessageInternal (internal): one message and its thread's
    /// organization id, or `not_found`.
    pub async fn get_message_internal(&self, id: &str) -> Result<(MessageRecord, String)> {
        let id = parse_id("id", id)?;
        let mut connection = self.db.pool().acquire().await?;
        store::message_by_id(&mut connection, &id)
            .await?
            .ok_or_else(|| Error::not_found("message", &id))
    }

    async fn message_or_not_found(&self, id: &str) -> Result<MessageRecord> {
        Ok(self.get_message_internal(id).await?.0)
    }

    /// Runs every post-send hook in order and logs their failures.
    async fn run_hooks(&self, sent: &SentMessage) {
        for hook in &self.hooks {
            if let Err(error) = hook.after_send(sent).await {
                tracing::warn!(
                    thread_id = %sent.message.thread_id,
                    message_id = %sent.message.id,
                    error = %error,
                    "Post-send hook failed"
                );
            }
        }
    }

    /// Publishes `message.created` once to each recipient's
    /// `thread_participant:<id>` room and, when a recipient is a
    /// non-passive agent, once to `agent_messages` with their ids.
    fn publish_created(&self, sent: &SentMessage, recipients: &[&ParticipantRecord]) {
        let message = &sent.message;
        let payload = json!({
            "thread_id": message.thread_id,
            "message_id": message.id,
            "sender_id": message.sender_id,
            "organization_id": sent.organization_id,
            "seq": message.seq,
        });
        for recipient in recipients {
            self.events.publish(
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
            self.events.publish(
                "threads",
                "message.created",
                "agent_messages".to_string(),
                payload,
            );
        }
    }
}

/// Checks a message's body and files and returns the canonical file ids.
impl Threads {
    /// Requires every attached file to exist and be readable by the
    /// sender. Both failures read `file_ids[i]: file not found`, so the
    /// error reveals nothing about files the sender cannot read.
    async fn check_attachments(&self, caller: &Caller, file_ids: &[String]) -> Result<()> {
        if file_ids.is_empty() {
            return Ok(());
        }
        let Some(files) = &self.files else {
            return Ok(());
        };
        for (index, file_id) in file_ids.iter().enumerate() {
            match files.check_readable(caller, file_id).await {
                Ok(()) => {}
                Err(error) if matches!(error.code(), Code::NotFound | Code::PermissionDenied) => {
                    return Err(Error::invalid_field(
                        &format!("file_ids[{index}]"),
                        "file not found",
                    ));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

fn validate_content(body: &str, file_ids: &[String]) -> Result<Vec<String>> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::invalid_field(
            "body",
            &format!("must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    if body.contains('\0') {
        return Err(Error::invalid_field(
            "body",
            "must not contain NUL characters",
        ));
    }
    if file_ids.len() > MAX_FILES {
        return Err(Error::invalid_field(
            "file_ids",
            &format!("must have at most {MAX_FILES} entries"),
        ));
    }
    let file_ids = file_ids
        .iter()
        .enumerate()
        .map(|(index, id)| parse_id(&format!("file_ids[{index}]"), id))
        .collect::<Result<Vec<_>>>()?;
    if body.trim().is_empty() && file_ids.is_empty() {
        return Err(Error::invalid_argument("body or file_ids required"));
    }
    Ok(file_ids)
}

/// Names the caller in page-token fingerprints.
fn caller_label(caller: &Caller) -> &str {
    match caller {
        Caller::Identity { identity_id, .. } => identity_id,
        Caller::Component(name) => name,
    }
}
