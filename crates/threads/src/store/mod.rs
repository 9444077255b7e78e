//! SQL for threads and their participants. Message and read-state SQL is
//! in [`messages`], the organization purge in [`cleanup`].

pub(crate) mod cleanup;
mod messages;
mod send;

use std::collections::HashMap;

use agyn_core::page::{Cursor, Page, SortOrder};
use agyn_core::{IdentityKind, Result};
use agyn_store::Backend;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

pub(crate) use agyn_store::Statement;
pub use messages::{MessageRecord, PendingWork};
pub(crate) use messages::{
    ack, list_messages, list_pending_work, list_unacked, message_by_id, threads_referencing_file,
    unacked_counts,
};
pub(crate) use send::{NewMessage, ThreadCounters, lock_threads, store_messages};

/// Lifecycle status of a thread. ARCHIVED and DEGRADED are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadStatus {
    Active,
    Archived,
    Degraded,
}

impl ThreadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
            Self::Degraded => "degraded",
        }
    }

    fn parse(value: &str) -> Result<Self, sqlx::Error> {
        match value {
            "active" => Ok(Self::Active),
            "archived" => Ok(Self::Archived),
            "degraded" => Ok(Self::Degraded),
            other => Err(sqlx::Error::Decode(
                format!("unknown thread status {other:?}").into(),
            )),
        }
    }
}

/// One member of a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRecord {
    /// Identity id, which for an agent is the agent id.
    pub id: String,
    pub kind: IdentityKind,
    pub joined_at: i64,
    /// A passive participant gets recipient rows but never starts agent
    /// work.
    pub passive: bool,
}

/// A stored thread with its participants, ordered by `joined_at` and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRecord {
    pub id: String,
    pub organization_id: String,
    pub status: ThreadStatus,
    /// Empty unless the status is DEGRADED.
    pub degrade_reason: String,
    /// Number of messages, which is also the newest message's `seq`.
    pub message_count: i64,
    pub last_message_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub participants: Vec<ParticipantRecord>,
}

impl ThreadRecord {
    pub fn participant(&self, id: &str) -> Option<&ParticipantRecord> {
        self.participants
            .iter()
            .find(|participant| participant.id == id)
    }
}

const THREAD_COLUMNS: &str = "t.id, t.organization_id, t.status, t.degrade_reason, \
    t.message_count, t.last_message_at, t.created_at, t.updated_at";

fn thread_from_row(row: &AnyRow) -> Result<ThreadRecord, sqlx::Error> {
    Ok(ThreadRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        status: ThreadStatus::parse(row.try_get("status")?)?,
        degrade_reason: row.try_get("degrade_reason")?,
        message_count: row.try_get("message_count")?,
        last_message_at: row.try_get("last_message_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        participants: Vec::new(),
    })
}

pub(crate) fn parse_kind(value: &str) -> Result<IdentityKind, sqlx::Error> {
    IdentityKind::parse(value)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown identity type {value:?}").into()))
}

/// SQL condition on a thread row `t` that leaves out threads of
/// organizations being deleted: access to them ends when the deletion
/// starts, before the purge removes them.
pub(crate) const IN_ACTIVE_ORG: &str =
    "t.organization_id IN (SELECT o.id FROM organizations o WHERE o.state = 'active')";

/// Loads one thread with its participants; a thread of an organization
/// being deleted counts as missing.
pub async fn thread_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<ThreadRecord>> {
    let sql = format!("SELECT {THREAD_COLUMNS} FROM threads t WHERE t.id = $1 AND {IN_ACTIVE_ORG}");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(mut thread) = row.as_ref().map(thread_from_row).transpose()? else {
        return Ok(None);
    };
    let mut participants = participants_of(connection, std::slice::from_ref(&thread.id)).await?;
    thread.participants = participants.remove(&thread.id).unwrap_or_default();
    Ok(Some(thread))
}

/// Loads the threads among `ids` that exist, with their participants, in
/// no particular order.
pub async fn threads_by_ids(
    connection: &mut AnyConnection,
    ids: &[String],
) -> Result<Vec<ThreadRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut statement = Statement::new(&format!("SELECT {THREAD_COLUMNS} FROM threads t"));
    let placeholders = statement.texts(ids);
    statement.push(&format!(
        " WHERE t.id IN ({placeholders}) AND {IN_ACTIVE_ORG}"
    ));
    let rows = statement.query().fetch_all(&mut *connection).await?;
    let threads = rows
        .iter()
        .map(thread_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    with_participants(connection, threads).await
}

async fn with_participants(
    connection: &mut AnyConnection,
    mut threads: Vec<ThreadRecord>,
) -> Result<Vec<ThreadRecord>> {
    let ids: Vec<String> = threads.iter().map(|thread| thread.id.clone()).collect();
    let mut participants = participants_of(connection, &ids).await?;
    for thread in &mut threads {
        thread.participants = participants.remove(&thread.id).unwrap_or_default();
    }
    Ok(threads)
}

/// Loads the participants of each thread in `thread_ids`, ordered by
/// `joined_at` and id.
async fn participants_of(
    connection: &mut AnyConnection,
    thread_ids: &[String],
) -> Result<HashMap<String, Vec<ParticipantRecord>>> {
    let mut by_thread: HashMap<String, Vec<ParticipantRecord>> = HashMap::new();
    if thread_ids.is_empty() {
        return Ok(by_thread);
    }
    let mut statement = Statement::new(
        "SELECT thread_id, participant_id, identity_type, passive, joined_at \
         FROM thread_participants",
    );
    let placeholders = statement.texts(thread_ids);
    statement.push(&format!(
        " WHERE thread_id IN ({placeholders}) ORDER BY thread_id, joined_at, participant_id"
    ));
    let rows = statement.query().fetch_all(&mut *connection).await?;
    for row in &rows {
        let passive: i64 = row.try_get("passive")?;
        let participant = ParticipantRecord {
            id: row.try_get("participant_id")?,
            kind: parse_kind(row.try_get("identity_type")?)?,
            joined_at: row.try_get("joined_at")?,
            passive: passive != 0,
        };
        by_thread
            .entry(row.try_get("thread_id")?)
            .or_default()
            .push(participant);
    }
    Ok(by_thread)
}

/// Locks the thread row until the transaction ends, so that sequence
/// numbers and participant counts cannot race on PostgreSQL. SQLite write
/// transactions are already exclusive.
pub async fn lock_thread(connection: &mut AnyConnection, backend: Backend, id: &str) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM threads WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Inserts a thread and its participants.
pub async fn insert_thread(connection: &mut AnyConnection, thread: &ThreadRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO threads (id, organization_id, status, degrade_reason, message_count, \
         last_message_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&thread.id)
    .bind(&thread.organization_id)
    .bind(thread.status.as_str())
    .bind(&thread.degrade_reason)
    .bind(thread.message_count)
    .bind(thread.last_message_at)
    .bind(thread.created_at)
    .bind(thread.updated_at)
    .execute(&mut *connection)
    .await?;
    for participant in &thread.participants {
        insert_participant(connection, &thread.id, participant).await?;
    }
    Ok(())
}

pub async fn insert_participant(
    connection: &mut AnyConnection,
    thread_id: &str,
    participant: &ParticipantRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO thread_participants (thread_id, participant_id, identity_type, passive, \
         joined_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(thread_id)
    .bind(&participant.id)
    .bind(participant.kind.as_str())
    .bind(i64::from(participant.passive))
    .bind(participant.joined_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Sets the status, the degrade reason and `updated_at`.
pub async fn set_status(
    connection: &mut AnyConnection,
    id: &str,
    status: ThreadStatus,
    degrade_reason: &str,
    updated_at: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE threads SET status = $2, degrade_reason = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(degrade_reason)
    .bind(updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn touch_thread(connection: &mut AnyConnection, id: &str, updated_at: i64) -> Result<()> {
    sqlx::query("UPDATE threads SET updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Scope of a thread list.
pub enum ThreadScope<'a> {
    /// Threads where the identity is a participant.
    Participant(&'a str),
    /// Every thread of the organization.
    Organization(&'a str),
}

/// Returns one page of threads in `(created_at DESC, id DESC)` order,
/// optionally narrowed to one organization and a set of statuses (empty
/// means all).
pub async fn list_threads(
    connection: &mut AnyConnection,
    scope: ThreadScope<'_>,
    organization_id: Option<&str>,
    statuses: &[ThreadStatus],
    page: &Page,
) -> Result<(Vec<ThreadRecord>, String)> {
    let mut statement = match scope {
        ThreadScope::Participant(identity_id) => {
            let mut statement = Statement::new(&format!(
                "SELECT {THREAD_COLUMNS} FROM threads t \
                 JOIN thread_participants p ON p.thread_id = t.id"
            ));
            let identity = statement.text(identity_id);
            statement.push(&format!(
                " WHERE p.participant_id = {identity} AND {IN_ACTIVE_ORG}"
            ));
            statement
        }
        ThreadScope::Organization(org_id) => {
            let mut statement = Statement::new(&format!("SELECT {THREAD_COLUMNS} FROM threads t"));
            let org = statement.text(org_id);
            statement.push(&format!(
                " WHERE t.organization_id = {org} AND {IN_ACTIVE_ORG}"
            ));
            statement
        }
    };
    if let Some(org_id) = organization_id {
        let org = statement.text(org_id);
        statement.push(&format!(" AND t.organization_id = {org}"));
    }
    if !statuses.is_empty() {
        let names: Vec<String> = statuses
            .iter()
            .map(|status| status.as_str().to_string())
            .collect();
        let placeholders = statement.texts(&names);
        statement.push(&format!(" AND t.status IN ({placeholders})"));
    }
    let (compare, direction) = match page.order {
        SortOrder::Ascending => (">", "ASC"),
        SortOrder::Descending => ("<", "DESC"),
    };
    if let Some(cursor) = &page.after {
        let position = statement.integer(cursor.position);
        let id = statement.text(&cursor.id);
        statement.push(&format!(
            " AND (t.created_at {compare} {position} \
             OR (t.created_at = {position} AND t.id {compare} {id}))"
        ));
    }
    let limit = statement.integer(page.fetch_limit());
    statement.push(&format!(
        " ORDER BY t.created_at {direction}, t.id {direction} LIMIT {limit}"
    ));
    let rows = statement.query().fetch_all(&mut *connection).await?;
    let threads = rows
        .iter()
        .map(thread_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let (threads, token) = page.finish(threads, |thread| Cursor {
        position: thread.created_at,
        id: thread.id.clone(),
    });
    Ok((with_participants(connection, threads).await?, token))
}
