//! SQL of the SendMessage transaction, which stores a batch of messages
//! with a few statements whatever the batch size.

use std::collections::HashMap;

use agyn_core::Result;
use agyn_store::Backend;
use agyn_store::sqlx::AnyConnection;

use super::{
    IN_ACTIVE_ORG, MessageRecord, ParticipantRecord, Statement, THREAD_COLUMNS, ThreadRecord,
    thread_from_row, with_participants,
};

/// Maximum rows in one multi-row statement. At up to six bind parameters
/// a row, it stays far below the limits of SQLite (32,766 in the SQLite
/// 3.46.0 that libsqlite3-sys 0.30.1 bundles) and PostgreSQL (65,535).
const MAX_ROWS_PER_INSERT: usize = 1_000;

/// A message about to be stored with the participants that get an unacked
/// row for it.
pub struct NewMessage<'a> {
    pub message: &'a MessageRecord,
    pub recipients: &'a [ParticipantRecord],
}

/// Loads the threads among `ids` with their participants, keyed by id,
/// and on PostgreSQL locks their rows until the transaction ends. A thread
/// of an organization being deleted counts as missing.
///
/// `ids` must be sorted, so that concurrent batches lock rows in the same
/// order and do not deadlock on each other. On SQLite the write
/// transaction is already exclusive.
pub async fn lock_threads(
    connection: &mut AnyConnection,
    backend: Backend,
    ids: &[String],
) -> Result<HashMap<String, ThreadRecord>> {
    debug_assert!(ids.is_sorted(), "thread ids must be sorted");
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut statement =
        Statement::for_each_once(&format!("SELECT {THREAD_COLUMNS} FROM threads t"), backend);
    let placeholders = statement.texts(ids);
    statement.push(&format!(
        " WHERE t.id IN ({placeholders}) AND {IN_ACTIVE_ORG} ORDER BY t.id"
    ));
    if backend == Backend::Postgres {
        // READ COMMITTED returns the newest version of a row it waited
        // for, so the counters read here are current.
        statement.push(" FOR UPDATE OF t");
    }
    let rows = statement.query().fetch_all(&mut *connection).await?;
    let threads = rows
        .iter()
        .map(thread_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let threads = with_participants(connection, threads).await?;
    Ok(threads
        .into_iter()
        .map(|thread| (thread.id.clone(), thread))
        .collect())
}

/// Inserts messages with their file links and one unacked row per
/// recipient. The caller has locked the threads' rows and numbered the
/// messages.
pub async fn insert_messages(
    connection: &mut AnyConnection,
    backend: Backend,
    messages: &[NewMessage<'_>],
) -> Result<()> {
    for chunk in messages.chunks(MAX_ROWS_PER_INSERT) {
        let mut statement = Statement::for_each_once(
            "INSERT INTO messages (id, thread_id, seq, sender_id, body, created_at) VALUES ",
            backend,
        );
        let mut rows = Vec::with_capacity(chunk.len());
        for new in chunk {
            let message = new.message;
            let id = statement.text(&message.id);
            let thread = statement.text(&message.thread_id);
            let seq = statement.integer(message.seq);
            let sender = statement.text(&message.sender_id);
            let body = statement.text(&message.body);
            let created_at = statement.integer(message.created_at);
            rows.push(format!(
                "({id}, {thread}, {seq}, {sender}, {body}, {created_at})"
            ));
        }
        statement.push(&rows.join(", "));
        statement.query().execute(&mut *connection).await?;
    }

    let files: Vec<(&MessageRecord, usize, &String)> = messages
        .iter()
        .flat_map(|new| {
            new.message
                .file_ids
                .iter()
                .enumerate()
                .map(|(ord, file_id)| (new.message, ord, file_id))
        })
        .collect();
    for chunk in files.chunks(MAX_ROWS_PER_INSERT) {
        let mut statement = Statement::for_each_once(
            "INSERT INTO message_files (message_id, ord, file_id) VALUES ",
            backend,
        );
        let mut rows = Vec::with_capacity(chunk.len());
        for (message, ord, file_id) in chunk {
            let id = statement.text(&message.id);
            let ord = statement.integer(*ord as i64);
            let file = statement.text(file_id);
            rows.push(format!("({id}, {ord}, {file})"));
        }
        statement.push(&rows.join(", "));
        statement.query().execute(&mut *connection).await?;
    }

    let recipients: Vec<(&MessageRecord, &ParticipantRecord)> = messages
        .iter()
        .flat_map(|new| {
            new.recipients
                .iter()
                .map(|recipient| (new.message, recipient))
        })
        .collect();
    for chunk in recipients.chunks(MAX_ROWS_PER_INSERT) {
        let mut statement = Statement::for_each_once(
            "INSERT INTO message_recipients (message_id, thread_id, participant_id, \
             participant_type, created_at, seq) VALUES ",
            backend,
        );
        let mut rows = Vec::with_capacity(chunk.len());
        for (message, recipient) in chunk {
            let id = statement.text(&message.id);
            let thread = statement.text(&message.thread_id);
            let participant = statement.text(&recipient.id);
            let kind = statement.text(recipient.kind.as_str());
            let created_at = statement.integer(message.created_at);
            let seq = statement.integer(message.seq);
            rows.push(format!(
                "({id}, {thread}, {participant}, {kind}, {created_at}, {seq})"
            ));
        }
        statement.push(&rows.join(", "));
        statement.query().execute(&mut *connection).await?;
    }
    Ok(())
}

/// New counters of a thread that received messages.
pub struct ThreadCounters<'a> {
    pub id: &'a str,
    pub message_count: i64,
    pub last_message_at: i64,
    pub updated_at: i64,
}

/// Writes the counters of each thread, with one statement for up to
/// [`MAX_ROWS_PER_INSERT`] threads.
pub async fn advance_threads(
    connection: &mut AnyConnection,
    backend: Backend,
    threads: &[ThreadCounters<'_>],
) -> Result<()> {
    for chunk in threads.chunks(MAX_ROWS_PER_INSERT) {
        // Each placeholder appears once, so the arguments are added in the
        // order of the SQL: one CASE per column, then the id list.
        let mut statement = Statement::for_each_once("UPDATE threads SET ", backend);
        let columns = ["message_count", "last_message_at", "updated_at"];
        let mut assignments = Vec::with_capacity(columns.len());
        for (index, column) in columns.into_iter().enumerate() {
            let mut case = format!("{column} = CASE id");
            for thread in chunk {
                let values = [
                    thread.message_count,
                    thread.last_message_at,
                    thread.updated_at,
                ];
                let id = statement.text(thread.id);
                let value = statement.integer(values[index]);
                case.push_str(&format!(" WHEN {id} THEN {value}"));
            }
            case.push_str(" END");
            assignments.push(case);
        }
        let ids: Vec<String> = chunk
            .iter()
            .map(|thread| statement.text(thread.id))
            .collect();
        statement.push(&format!(
            "{} WHERE id IN ({})",
            assignments.join(", "),
            ids.join(", ")
        ));
        statement.query().execute(&mut *connection).await?;
    }
    Ok(())
}
