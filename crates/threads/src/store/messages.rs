//! SQL for messages, their file links and the per-recipient read state.

use std::collections::HashMap;

use agyn_core::page::{Cursor, Page, SortOrder};
use agyn_core::{Error, Result};
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{IN_ACTIVE_ORG, Statement};

/// One immutable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    pub thread_id: String,
    /// Position in the thread, counting from 1 without gaps.
    pub seq: i64,
    pub sender_id: String,
    pub body: String,
    /// Attached file ids in the order sent.
    pub file_ids: Vec<String>,
    pub created_at: i64,
}

/// Backlog of one non-passive agent participant in one ACTIVE thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWork {
    pub thread_id: String,
    pub agent_id: String,
    pub organization_id: String,
    pub unacked_count: i64,
    pub oldest_unacked_at: i64,
}

const MESSAGE_COLUMNS: &str = "m.id, m.thread_id, m.seq, m.sender_id, m.body, m.created_at";

fn message_from_row(row: &AnyRow) -> Result<MessageRecord, sqlx::Error> {
    Ok(MessageRecord {
        id: row.try_get("id")?,
        thread_id: row.try_get("thread_id")?,
        seq: row.try_get("seq")?,
        sender_id: row.try_get("sender_id")?,
        body: row.try_get("body")?,
        file_ids: Vec::new(),
        created_at: row.try_get("created_at")?,
    })
}

/// Decodes message rows and fills in their file ids.
async fn messages_from_rows(
    connection: &mut AnyConnection,
    rows: &[AnyRow],
) -> Result<Vec<MessageRecord>> {
    let mut messages = rows
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    if messages.is_empty() {
        return Ok(messages);
    }
    let ids: Vec<String> = messages.iter().map(|message| message.id.clone()).collect();
    let mut statement = Statement::new("SELECT message_id, file_id FROM message_files");
    let placeholders = statement.texts(&ids);
    statement.push(&format!(
        " WHERE message_id IN ({placeholders}) ORDER BY message_id, ord"
    ));
    let mut files: HashMap<String, Vec<String>> = HashMap::new();
    for row in statement.query().fetch_all(&mut *connection).await? {
        files
            .entry(row.try_get("message_id")?)
            .or_default()
            .push(row.try_get("file_id")?);
    }
    for message in &mut messages {
        message.file_ids = files.remove(&message.id).unwrap_or_default();
    }
    Ok(messages)
}

/// Loads one message with its thread's organization id.
pub async fn message_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<(MessageRecord, String)>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS}, t.organization_id FROM messages m \
         JOIN threads t ON t.id = m.thread_id WHERE m.id = $1"
    );
    let Some(row) = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    let organization_id: String = row.try_get("organization_id")?;
    let message = messages_from_rows(connection, std::slice::from_ref(&row))
        .await?
        .pop()
        .expect("one row decodes to one message");
    Ok(Some((message, organization_id)))
}

/// Returns one page of a thread's messages in `seq` order. The cursor
/// position is the last returned `seq`.
pub async fn list_messages(
    connection: &mut AnyConnection,
    thread_id: &str,
    page: &Page,
) -> Result<(Vec<MessageRecord>, String)> {
    let mut statement = Statement::new(&format!("SELECT {MESSAGE_COLUMNS} FROM messages m"));
    let thread = statement.text(thread_id);
    statement.push(&format!(" WHERE m.thread_id = {thread}"));
    let (compare, direction) = match page.order {
        SortOrder::Ascending => (">", "ASC"),
        SortOrder::Descending => ("<", "DESC"),
    };
    if let Some(cursor) = &page.after {
        let seq = statement.integer(cursor.position);
        statement.push(&format!(" AND m.seq {compare} {seq}"));
    }
    let limit = statement.integer(page.fetch_limit());
    statement.push(&format!(" ORDER BY m.seq {direction} LIMIT {limit}"));
    let rows = statement.query().fetch_all(&mut *connection).await?;
    let messages = messages_from_rows(connection, &rows).await?;
    Ok(page.finish(messages, |message| Cursor {
        position: message.seq,
        id: message.id.clone(),
    }))
}

/// Returns one page of the messages `participant_id` has not acked. In one
/// thread they are in `seq` order. Across threads they are in
/// `(created_at, thread_id, seq)` order, with the cursor id
/// `<thread_id>/<seq>`.
pub async fn list_unacked(
    connection: &mut AnyConnection,
    participant_id: &str,
    thread_id: Option<&str>,
    page: &Page,
) -> Result<(Vec<MessageRecord>, String)> {
    let mut statement = Statement::new(&format!(
        "SELECT {MESSAGE_COLUMNS}, r.created_at AS row_created_at \
         FROM message_recipients r JOIN messages m ON m.id = r.message_id \
         JOIN threads t ON t.id = r.thread_id AND {IN_ACTIVE_ORG}"
    ));
    let participant = statement.text(participant_id);
    statement.push(&format!(
        " WHERE r.participant_id = {participant} AND r.acked_at IS NULL"
    ));

    if let Some(thread_id) = thread_id {
        let thread = statement.text(thread_id);
        statement.push(&format!(" AND r.thread_id = {thread}"));
        if let Some(cursor) = &page.after {
            let seq = statement.integer(cursor.position);
            statement.push(&format!(" AND r.seq > {seq}"));
        }
        let limit = statement.integer(page.fetch_limit());
        statement.push(&format!(" ORDER BY r.seq LIMIT {limit}"));
    } else {
        if let Some(cursor) = &page.after {
            let (after_thread, after_seq) = split_cursor_id(&cursor.id)?;
            let created_at = statement.integer(cursor.position);
            let thread = statement.text(after_thread);
            let seq = statement.integer(after_seq);
            statement.push(&format!(
                " AND (r.created_at > {created_at} OR (r.created_at = {created_at} \
                 AND (r.thread_id > {thread} OR (r.thread_id = {thread} AND r.seq > {seq}))))"
            ));
        }
        let limit = statement.integer(page.fetch_limit());
        statement.push(&format!(
            " ORDER BY r.created_at, r.thread_id, r.seq LIMIT {limit}"
        ));
    }

    let rows = statement.query().fetch_all(&mut *connection).await?;
    // The cursor takes the sort key from the recipient row, which orders
    // the list, rather than from the message.
    let row_times = rows
        .iter()
        .map(|row| row.try_get("row_created_at"))
        .collect::<Result<Vec<i64>, _>>()?;
    let messages = messages_from_rows(connection, &rows).await?;
    let in_thread = thread_id.is_some();
    let (page_rows, token) = page.finish(
        row_times.into_iter().zip(messages).collect(),
        |(row_created_at, message)| {
            if in_thread {
                Cursor {
                    position: message.seq,
                    id: message.id.clone(),
                }
            } else {
                Cursor {
                    position: *row_created_at,
                    id: format!("{}/{}", message.thread_id, message.seq),
                }
            }
        },
    );
    Ok((
        page_rows.into_iter().map(|(_, message)| message).collect(),
        token,
    ))
}

/// Splits a cursor id `<thread_id>/<seq>`.
fn split_cursor_id(id: &str) -> Result<(&str, i64)> {
    id.rsplit_once('/')
        .and_then(|(thread, seq)| Some((thread, seq.parse().ok()?)))
        .ok_or_else(invalid_token)
}

fn invalid_token() -> Error {
    Error::invalid_field("page_token", "invalid page token").with_reason("PAGE_TOKEN_INVALID")
}

/// Sets `acked_at` on `participant_id`'s unacked rows: the rows of
/// `message_ids` when given, else every row in `thread_id`. With both,
/// only the listed rows inside that thread change. Returns how many rows
/// changed.
pub async fn ack(
    connection: &mut AnyConnection,
    participant_id: &str,
    message_ids: Option<&[String]>,
    thread_id: Option<&str>,
    now: i64,
) -> Result<u64> {
    let mut statement = Statement::new("UPDATE message_recipients SET acked_at = ");
    let acked_at = statement.integer(now);
    let participant = statement.text(participant_id);
    statement.push(&format!(
        "{acked_at} WHERE participant_id = {participant} AND acked_at IS NULL"
    ));
    if let Some(ids) = message_ids {
        let placeholders = statement.texts(ids);
        statement.push(&format!(" AND message_id IN ({placeholders})"));
    }
    if let Some(thread_id) = thread_id {
        let thread = statement.text(thread_id);
        statement.push(&format!(" AND thread_id = {thread}"));
    }
    Ok(statement
        .query()
        .execute(&mut *connection)
        .await?
        .rows_affected())
}

/// Counts `participant_id`'s unacked rows by thread, optionally in one
/// organization. Threads without unacked rows are left out.
pub async fn unacked_counts(
    connection: &mut AnyConnection,
    participant_id: &str,
    organization_id: Option<&str>,
) -> Result<Vec<(String, i64)>> {
    let mut statement = Statement::new(&format!(
        "SELECT r.thread_id, COUNT(*) AS unacked FROM message_recipients r \
         JOIN threads t ON t.id = r.thread_id AND {IN_ACTIVE_ORG}"
    ));
    if let Some(org_id) = organization_id {
        let org = statement.text(org_id);
        statement.push(&format!(" AND t.organization_id = {org}"));
    }
    let participant = statement.text(participant_id);
    statement.push(&format!(
        " WHERE r.participant_id = {participant} AND r.acked_at IS NULL \
         GROUP BY r.thread_id ORDER BY r.thread_id"
    ));
    let rows = statement.query().fetch_all(&mut *connection).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get("thread_id")?, row.try_get("unacked")?)))
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Returns one page of agent backlogs in `(oldest_unacked_at, thread_id,
/// agent_id)` order, optionally only in `thread_ids`. The cursor id is
/// `<thread_id>/<agent_id>`.
pub async fn list_pending_work(
    connection: &mut AnyConnection,
    thread_ids: Option<&[String]>,
    page: &Page,
) -> Result<(Vec<PendingWork>, String)> {
    let mut statement = Statement::new(
        "SELECT r.thread_id, r.participant_id, t.organization_id, COUNT(*) AS unacked, \
         MIN(r.created_at) AS oldest FROM message_recipients r \
         JOIN threads t ON t.id = r.thread_id \
         JOIN thread_participants p ON p.thread_id = r.thread_id \
         AND p.participant_id = r.participant_id \
         WHERE r.acked_at IS NULL AND r.participant_type = 'agent' AND p.passive = 0 \
         AND t.status = 'active'",
    );
    if let Some(ids) = thread_ids {
        if ids.is_empty() {
            return Ok((Vec::new(), String::new()));
        }
        let placeholders = statement.texts(ids);
        statement.push(&format!(" AND r.thread_id IN ({placeholders})"));
    }
    statement.push(" GROUP BY r.thread_id, r.participant_id, t.organization_id");
    if let Some(cursor) = &page.after {
        let (after_thread, after_agent) = cursor.id.split_once('/').ok_or_else(invalid_token)?;
        let oldest = statement.integer(cursor.position);
        let thread = statement.text(after_thread);
        let agent = statement.text(after_agent);
        statement.push(&format!(
            " HAVING MIN(r.created_at) > {oldest} OR (MIN(r.created_at) = {oldest} \
             AND (r.thread_id > {thread} OR (r.thread_id = {thread} \
             AND r.participant_id > {agent})))"
        ));
    }
    let limit = statement.integer(page.fetch_limit());
    statement.push(&format!(
        " ORDER BY MIN(r.created_at), r.thread_id, r.participant_id LIMIT {limit}"
    ));
    let rows = statement.query().fetch_all(&mut *connection).await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(PendingWork {
                thread_id: row.try_get("thread_id")?,
                agent_id: row.try_get("participant_id")?,
                organization_id: row.try_get("organization_id")?,
                unacked_count: row.try_get("unacked")?,
                oldest_unacked_at: row.try_get("oldest")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(page.finish(items, |item| Cursor {
        position: item.oldest_unacked_at,
        id: format!("{}/{}", item.thread_id, item.agent_id),
    }))
}

/// Returns the ids of the threads with a message that attaches `file_id`,
/// sorted.
pub async fn threads_referencing_file(
    connection: &mut AnyConnection,
    file_id: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT m.thread_id FROM message_files f JOIN messages m ON m.id = f.message_id \
         WHERE f.file_id = $1 ORDER BY m.thread_id",
    )
    .bind(file_id)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("thread_id"))
        .collect::<Result<_, _>>()?)
}
