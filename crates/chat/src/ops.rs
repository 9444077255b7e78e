//! The conversation operations, independent of the RPC layer. Each
//! operation states its authorization rule first.

use std::collections::{BTreeMap, HashMap, HashSet};

use agyn_authz::{ObjectRef, missing_permission};
use agyn_core::id::parse_id;
use agyn_core::page::{Fingerprint, MAX_PAGE_SIZE, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};
use agyn_threads::{ParticipantEntry, ThreadRecord, ThreadStatus, keys};

use crate::Chat;
use crate::store::{self, ConversationRecord, ConversationStatus};

/// Maximum summary length, in characters.
pub const SUMMARY_MAX_CHARS: usize = 200;
/// Maximum number of listed participants besides the caller.
pub const MAX_LISTED_PARTICIPANTS: usize = agyn_threads::MAX_PARTICIPANTS - 1;

const CREATE_SCOPE: &str = "chat.CreateConversation";
const WRITE_ATTEMPTS: usize = 5;
/// Ids per query when unread counts are narrowed to conversations.
const ID_CHUNK: usize = 500;

/// Activity of a conversation's non-passive agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityStatus {
    /// No non-passive agent takes part, or the thread is closed.
    Unspecified,
    /// An agent has unacked messages.
    Pending,
    /// Every agent has acked all of its messages.
    Finished,
}

/// A conversation as one caller sees it: the chat record, its thread and
/// the caller's unread count.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub record: ConversationRecord,
    pub thread: ThreadRecord,
    pub unread_count: i64,
    pub activity: ActivityStatus,
}

impl Conversation {
    /// Returns the later of the chat record's and the thread's `updated_at`.
    pub fn updated_at(&self) -> i64 {
        self.record.updated_at.max(self.thread.updated_at)
    }
}

/// Request of CreateConversation.
#[derive(Debug, Clone, Copy)]
pub struct CreateInput<'a> {
    pub organization_id: &'a str,
    pub participant_ids: &'a [String],
    pub summary: Option<&'a str>,
    pub request_id: &'a str,
}

impl Chat {
    /// ListConversations: only conversations where the caller is a
    /// participant are listed, so no relationship check applies. Newest
    /// first.
    pub async fn list_conversations(
        &self,
        caller: &Caller,
        organization_id: &str,
        status: Option<ConversationStatus>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Conversation>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let fingerprint = Fingerprint::new("agynio.api.chat.v1.ListConversations")
            .with(caller_id)
            .with(&org_id)
            .with(status.map(ConversationStatus::as_str).unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Descending, fingerprint)?;
        let mut connection = self.db.pool().acquire().await?;
        let (records, next_page_token) =
            store::list_for_participant(&mut connection, caller_id, &org_id, status, &page).await?;
        drop(connection);
        let conversations = self.enrich(caller_id, records).await?;
        Ok((conversations, next_page_token))
    }

    /// GetConversation: the caller must be a participant. A thread
    /// without a chat record is `not_found`.
    pub async fn get_conversation(&self, caller: &Caller, id: &str) -> Result<Conversation> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let record = self.participant_record(caller_id, &id).await?;
        self.enrich_one(caller_id, record).await
    }

    /// CreateConversation: every CreateThread rule and check applies
    /// (`can_create_thread` on the organization, `can_initiate` on agent
    /// participants). The thread and the OPEN chat record are created in
    /// one transaction. A repeat with the same `request_id` returns the
    /// first conversation.
    pub async fn create_conversation(
        &self,
        caller: &Caller,
        input: &CreateInput<'_>,
    ) -> Result<Conversation> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", input.organization_id)?;
        let entries = participant_entries(caller_id, input.participant_ids)?;
        let summary = match input.summary {
            None | Some("") => None,
            Some(summary) => Some(validate_summary(summary)?),
        };
        keys::validate(input.request_id)?;

        let plan = self
            .threads
            .plan_thread(caller, Some(&org_id), &entries)
            .await?;
        let fingerprint =
            keys::fingerprint([plan.fingerprint().as_str(), summary.unwrap_or("\u{0}")]);
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            if let Some(id) = keys::replayed(
                &mut tx,
                CREATE_SCOPE,
                caller_id,
                input.request_id,
                &fingerprint,
            )
            .await?
            {
                tx.commit().await?;
                return self.get_conversation(caller, &id).await;
            }
            let created = async {
                let thread = self.threads.create_thread_in(&mut tx, &plan).await?;
                let record = ConversationRecord {
                    thread_id: thread.id.clone(),
                    organization_id: thread.organization_id.clone(),
                    status: ConversationStatus::Open,
                    summary: summary.map(str::to_string),
                    created_at: thread.created_at,
                    updated_at: thread.created_at,
                };
                store::insert_conversation(&mut tx, &record).await?;
                keys::record(
                    &mut tx,
                    CREATE_SCOPE,
                    caller_id,
                    input.request_id,
                    &fingerprint,
                    &record.thread_id,
                )
                .await?;
                Ok::<_, Error>((record, thread))
            }
            .await;

            let (record, thread) = match created {
                Ok(created) => created,
                // A concurrent call recorded the same key first: start
                // over and return what it created.
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            };
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            tracing::info!(
                conversation_id = %record.thread_id,
                organization_id = %record.organization_id,
                "Conversation created"
            );
            let activity = initial_activity(&thread);
            return Ok(Conversation {
                record,
                thread,
                unread_count: 0,
                activity,
            });
        }
        Err(Error::unavailable(
            "the write kept conflicting with concurrent writes; retry the call",
        ))
    }

    /// UpdateConversation: the caller must be a participant. `status`
    /// is `Some(None)` when the request set it to UNSPECIFIED, which is
    /// rejected. An empty `summary` clears it. Allowed whatever the
    /// thread status.
    pub async fn update_conversation(
        &self,
        caller: &Caller,
        id: &str,
        status: Option<Option<ConversationStatus>>,
        summary: Option<&str>,
    ) -> Result<Conversation> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if status.is_none() && summary.is_none() {
            return Err(Error::invalid_argument("no fields to update"));
        }
        let status = status
            .map(|status| {
                status.ok_or_else(|| {
                    Error::invalid_field("status", "must not be CONVERSATION_STATUS_UNSPECIFIED")
                })
            })
            .transpose()?;
        let summary = summary
            .map(|summary| match summary {
                "" => Ok(None),
                summary => validate_summary(summary).map(Some),
            })
            .transpose()?;
        let record = self.participant_record(caller_id, &id).await?;
        self.threads
            .ensure_organization_active(&record.organization_id)
            .await?;

        let mut tx = self.db.begin_write().await?;
        let mut record = store::conversation_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("conversation", &id))?;
        if let Some(status) = status {
            record.status = status;
        }
        if let Some(summary) = summary {
            record.summary = summary.map(str::to_string);
        }
        record.updated_at = now_micros().max(record.updated_at);
        store::update_conversation(&mut tx, &record).await?;
        tx.commit().await?;
        self.enrich_one(caller_id, record).await
    }

    /// MarkRead: the caller must be a participant. Acks the caller's own
    /// rows in the conversation: the listed messages, or every message
    /// when none are listed. Returns how many were newly acked.
    pub async fn mark_read(
        &self,
        caller: &Caller,
        conversation_id: &str,
        message_ids: &[String],
    ) -> Result<u64> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("conversation_id", conversation_id)?;
        self.participant_record(caller_id, &id).await?;
        self.threads
            .ack_messages(caller, message_ids, Some(&id))
            .await
    }

    /// GetUnackedMessageCounts: the caller's own unread counts by
    /// conversation, so no relationship check applies. Conversations
    /// without unread messages are omitted.
    pub async fn unread_counts(
        &self,
        caller: &Caller,
        organization_id: Option<&str>,
    ) -> Result<BTreeMap<String, i64>> {
        let caller_id = caller.identity_id()?;
        let org_id = organization_id
            .map(|id| parse_id("organization_id", id))
            .transpose()?;
        let counts: HashMap<String, i64> = self
            .threads
            .unacked_message_counts(caller_id, org_id.as_deref())
            .await?
            .into_iter()
            .collect();
        let thread_ids: Vec<String> = counts.keys().cloned().collect();
        let mut connection = self.db.pool().acquire().await?;
        let mut by_conversation = BTreeMap::new();
        for chunk in thread_ids.chunks(ID_CHUNK) {
            for id in store::conversation_ids(&mut connection, chunk).await? {
                let count = counts[&id];
                by_conversation.insert(id, count);
            }
        }
        Ok(by_conversation)
    }

    /// Loads the chat record `id` for a participant. Fails with
    /// `not_found` without one and with `permission_denied` when the caller
    /// does not take part.
    async fn participant_record(&self, caller_id: &str, id: &str) -> Result<ConversationRecord> {
        let mut connection = self.db.pool().acquire().await?;
        let record = store::conversation_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("conversation", id))?;
        if !store::is_participant(&mut connection, id, caller_id).await? {
            return Err(missing_permission(
                "participant",
                &ObjectRef::new("thread", id),
            ));
        }
        Ok(record)
    }

    async fn enrich_one(
        &self,
        caller_id: &str,
        record: ConversationRecord,
    ) -> Result<Conversation> {
        let id = record.thread_id.clone();
        self.enrich(caller_id, vec![record])
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("conversation", &id))
    }

    /// Adds threads, unread counts and activity to one page of records:
    /// one thread batch, one count lookup per organization and the agent
    /// backlog of the page. A record whose thread is gone is left out.
    async fn enrich(
        &self,
        caller_id: &str,
        records: Vec<ConversationRecord>,
    ) -> Result<Vec<Conversation>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = records
            .iter()
            .map(|record| record.thread_id.clone())
            .collect();
        let mut threads: HashMap<String, ThreadRecord> = self
            .threads
            .batch_get_threads(&ids)
            .await?
            .into_iter()
            .map(|thread| (thread.id.clone(), thread))
            .collect();
        let mut counts: HashMap<String, i64> = HashMap::new();
        let orgs: HashSet<&str> = records
            .iter()
            .map(|record| record.organization_id.as_str())
            .collect();
        for org in orgs {
            counts.extend(
                self.threads
                    .unacked_message_counts(caller_id, Some(org))
                    .await?,
            );
        }
        let pending = self.pending_agents(&ids).await?;
        // NOTE: runners and workloads are not built yet, so activity
        // comes from the agents' unacked backlog alone (never RUNNING)
        // and active_workload_ids stays empty.
        Ok(records
            .into_iter()
            .filter_map(|record| {
                let thread = threads.remove(&record.thread_id)?;
                let activity = activity(&thread, &pending);
                Some(Conversation {
                    unread_count: counts.get(&record.thread_id).copied().unwrap_or(0),
                    record,
                    thread,
                    activity,
                })
            })
            .collect())
    }

    /// Returns `(thread_id, agent_id)` of every non-passive agent with unacked
    /// messages in the ACTIVE threads among `thread_ids`.
    async fn pending_agents(&self, thread_ids: &[String]) -> Result<HashSet<(String, String)>> {
        let chat = Caller::Component("chat");
        let mut pending = HashSet::new();
        let mut token = String::new();
        loop {
            let (items, next) = self
                .threads
                .list_pending_agent_work(&chat, Some(thread_ids), MAX_PAGE_SIZE as i32, &token)
                .await?;
            pending.extend(
                items
                    .into_iter()
                    .map(|item| (item.thread_id, item.agent_id)),
            );
            if next.is_empty() {
                return Ok(pending);
            }
            token = next;
        }
    }
}

/// Returns the activity of a conversation, given the agents with a
/// backlog.
fn activity(thread: &ThreadRecord, pending: &HashSet<(String, String)>) -> ActivityStatus {
    if thread.status != ThreadStatus::Active {
        return ActivityStatus::Unspecified;
    }
    let mut agents = thread
        .participants
        .iter()
        .filter(|participant| participant.kind == IdentityKind::Agent && !participant.passive)
        .peekable();
    if agents.peek().is_none() {
        return ActivityStatus::Unspecified;
    }
    if agents.any(|agent| pending.contains(&(thread.id.clone(), agent.id.clone()))) {
        ActivityStatus::Pending
    } else {
        ActivityStatus::Finished
    }
}

/// Returns the activity of a conversation that has no messages yet.
fn initial_activity(thread: &ThreadRecord) -> ActivityStatus {
    activity(thread, &HashSet::new())
}

/// Checks CreateConversation's participant ids (UUIDs, at most 49, at
/// least one besides the caller) and turns them into thread entries.
fn participant_entries(
    caller_id: &str,
    participant_ids: &[String],
) -> Result<Vec<ParticipantEntry>> {
    if participant_ids.len() > MAX_LISTED_PARTICIPANTS {
        return Err(Error::invalid_field(
            "participant_ids",
            &format!("must have at most {MAX_LISTED_PARTICIPANTS} entries"),
        ));
    }
    let mut others = 0;
    for (index, raw) in participant_ids.iter().enumerate() {
        if parse_id(&format!("participant_ids[{index}]"), raw)? != caller_id {
            others += 1;
        }
    }
    if others == 0 {
        return Err(Error::invalid_field(
            "participant_ids",
            "must name at least one identity other than the caller",
        ));
    }
    Ok(participant_ids
        .iter()
        .enumerate()
        .map(|(index, id)| ParticipantEntry::plain_id("participant_ids", index, id))
        .collect())
}

fn validate_summary(summary: &str) -> Result<&str> {
    if summary.contains('\0') {
        return Err(Error::invalid_field(
            "summary",
            "must not contain NUL characters",
        ));
    }
    if summary.chars().count() > SUMMARY_MAX_CHARS {
        return Err(Error::invalid_field(
            "summary",
            &format!("must be at most {SUMMARY_MAX_CHARS} characters"),
        ));
    }
    Ok(summary)
}
