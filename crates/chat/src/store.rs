//! SQL for chat records. Besides its own table, chat reads
//! `thread_participants` to find the caller's conversations.

use agyn_core::Result;
use agyn_core::page::{Cursor, Page};
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

/// Chat records deleted per transaction during the organization purge.
pub const DELETE_BATCH: i64 = 1_000;

/// User-controlled status of a conversation, independent of the thread
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationStatus {
    Open,
    Closed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    fn parse(value: &str) -> Result<Self, sqlx::Error> {
        match value {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            other => Err(sqlx::Error::Decode(
                format!("unknown conversation status {other:?}").into(),
            )),
        }
    }
}

/// A stored chat record, whose id is the thread id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub thread_id: String,
    pub organization_id: String,
    pub status: ConversationStatus,
    /// `None` until a participant sets it or a user's first message does.
    pub summary: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "c.thread_id, c.organization_id, c.status, c.summary, c.created_at, c.updated_at";

fn record_from_row(row: &AnyRow) -> Result<ConversationRecord, sqlx::Error> {
    Ok(ConversationRecord {
        thread_id: row.try_get("thread_id")?,
        organization_id: row.try_get("organization_id")?,
        status: ConversationStatus::parse(row.try_get("status")?)?,
        summary: row.try_get("summary")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn insert_conversation(
    connection: &mut AnyConnection,
    record: &ConversationRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO conversations (thread_id, organization_id, status, summary, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&record.thread_id)
    .bind(&record.organization_id)
    .bind(record.status.as_str())
    .bind(record.summary.as_deref())
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn conversation_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<ConversationRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM conversations c WHERE c.thread_id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns whether `identity_id` is a participant of the thread `thread_id`.
pub async fn is_participant(
    connection: &mut AnyConnection,
    thread_id: &str,
    identity_id: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS found FROM thread_participants WHERE thread_id = $1 AND participant_id = $2",
    )
    .bind(thread_id)
    .bind(identity_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.is_some())
}

/// Returns one page of the conversations of `org_id` where
/// `participant_id` takes part, in `(created_at DESC, thread_id DESC)`
/// order, optionally with one status.
pub async fn list_for_participant(
    connection: &mut AnyConnection,
    participant_id: &str,
    org_id: &str,
    status: Option<ConversationStatus>,
    page: &Page,
) -> Result<(Vec<ConversationRecord>, String)> {
    let mut sql = format!(
        "SELECT {COLUMNS} FROM conversations c JOIN thread_participants p \
         ON p.thread_id = c.thread_id AND p.participant_id = $1 WHERE c.organization_id = $2"
    );
    let mut next = 3;
    if status.is_some() {
        sql.push_str(&format!(" AND c.status = ${next}"));
        next += 1;
    }
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND (c.created_at < ${next} OR (c.created_at = ${next} AND c.thread_id < ${}))",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(
        " ORDER BY c.created_at DESC, c.thread_id DESC LIMIT ${next}"
    ));
    let mut query = sqlx::query(&sql).bind(participant_id).bind(org_id);
    if let Some(status) = status {
        query = query.bind(status.as_str());
    }
    if let Some(cursor) = &page.after {
        query = query.bind(cursor.position).bind(&cursor.id);
    }
    let rows = query
        .bind(page.fetch_limit())
        .fetch_all(&mut *connection)
        .await?;
    let records = rows
        .iter()
        .map(record_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| Cursor {
        position: record.created_at,
        id: record.thread_id.clone(),
    }))
}

/// Writes a record's status, summary and `updated_at`.
pub async fn update_conversation(
    connection: &mut AnyConnection,
    record: &ConversationRecord,
) -> Result<()> {
    sqlx::query(
        "UPDATE conversations SET status = $2, summary = $3, updated_at = $4 WHERE thread_id = $1",
    )
    .bind(&record.thread_id)
    .bind(record.status.as_str())
    .bind(record.summary.as_deref())
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Sets the summary of the conversation `thread_id` unless one is set.
/// Returns whether it changed. A thread without a chat record is left
/// alone.
pub async fn set_summary_if_absent(
    connection: &mut AnyConnection,
    thread_id: &str,
    summary: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE conversations SET summary = $2, \
         updated_at = CASE WHEN updated_at > $3 THEN updated_at ELSE $3 END \
         WHERE thread_id = $1 AND summary IS NULL",
    )
    .bind(thread_id)
    .bind(summary)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Returns the ids among `thread_ids` that have a chat record, sorted.
pub async fn conversation_ids(
    connection: &mut AnyConnection,
    thread_ids: &[String],
) -> Result<Vec<String>> {
    if thread_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=thread_ids.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT thread_id FROM conversations WHERE thread_id IN ({}) ORDER BY thread_id",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for id in thread_ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(&mut *connection).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("thread_id"))
        .collect::<Result<_, _>>()?)
}

/// Deletes up to [`DELETE_BATCH`] chat records of the organization and
/// returns how many.
pub async fn delete_conversation_batch(
    connection: &mut AnyConnection,
    org_id: &str,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM conversations WHERE thread_id IN \
         (SELECT thread_id FROM conversations WHERE organization_id = $1 LIMIT $2)",
    )
    .bind(org_id)
    .bind(DELETE_BATCH)
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected())
}
