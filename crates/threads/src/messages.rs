//! Message and read-state operations: AckMessages, the unacked lists and
//! counts, GetMessages and the internal message lookups. Each operation
//! states its authorization rule first. SendMessage is in the `send` and
//! `writer` modules.

use agyn_authz::ObjectRef;
use agyn_core::id::parse_id;
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::store::{self, MessageRecord, PendingWork};
use crate::{Threads, identity_of, thread_object};

/// Maximum number of message ids in one AckMessages call.
pub const MAX_ACK_IDS: usize = 500;
/// Maximum number of thread ids in one ListPendingAgentWork filter.
pub const MAX_PENDING_THREADS: usize = 200;

impl Threads {
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
}

/// Names the caller in page-token fingerprints.
fn caller_label(caller: &Caller) -> &str {
    match caller {
        Caller::Identity { identity_id, .. } => identity_id,
        Caller::Component(name) => name,
    }
}
