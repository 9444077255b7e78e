//! SQL of the SendMessage transaction, which stores a batch of messages
//! with a few statements whatever the batch size.

use std::collections::HashMap;

use agyn_core::Result;
use agyn_store::sqlx::{AnyConnection, Row};
use agyn_store::{Backend, execute_in_chunks};

use super::{
    IN_ACTIVE_ORG, MessageRecord, ParticipantRecord, Statement, THREAD_COLUMNS, ThreadRecord,
    parse_kind, thread_from_row,
};

/// Maximum rows in one multi-row statement. At up to six bind parameters
/// a row, it stays far below the limits of SQLite (32,766 in the SQLite
/// 3.46.0 that libsqlite3-sys 0.30.1 bundles) and PostgreSQL (65,535).
const MAX_ROWS_PER_INSERT: usize = 1_000;

/// Maximum bind parameters of the single statement that stores a batch on
/// PostgreSQL, below its limit of 65,535. A larger batch is stored with
/// one statement per table.
const MAX_POSTGRES_PARAMETERS: usize = 30_000;

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
    let mut statement = Statement::for_each_once(
        &format!(
            "SELECT {THREAD_COLUMNS}, p.participant_id, p.identity_type, p.passive, p.joined_at \
             FROM threads t LEFT JOIN thread_participants p ON p.thread_id = t.id"
        ),
        backend,
    );
    let placeholders = statement.texts(ids);
    statement.push(&format!(
        " WHERE t.id IN ({placeholders}) AND {IN_ACTIVE_ORG} \
         ORDER BY t.id, p.joined_at, p.participant_id"
    ));
    if backend == Backend::Postgres {
        // READ COMMITTED returns the newest version of a row it waited
        // for, so the counters read here are current.
        statement.push(" FOR UPDATE OF t");
    }
    let rows = statement.query().fetch_all(&mut *connection).await?;
    let mut threads: HashMap<String, ThreadRecord> = HashMap::with_capacity(ids.len());
    for row in &rows {
        let id: String = row.try_get("id")?;
        let thread = match threads.entry(id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(thread_from_row(row)?),
        };
        let Some(participant_id) = row.try_get::<Option<String>, _>("participant_id")? else {
            continue;
        };
        let passive: i64 = row.try_get("passive")?;
        thread.participants.push(ParticipantRecord {
            id: participant_id,
            kind: parse_kind(row.try_get("identity_type")?)?,
            joined_at: row.try_get("joined_at")?,
            passive: passive != 0,
        });
    }
    Ok(threads)
}

/// Stores messages with their file links and one unacked row per
/// recipient, and writes the counters of their threads. The caller has
/// locked the threads' rows and numbered the messages.
///
/// On PostgreSQL that is one statement, whose inserts are data-modifying
/// `WITH` queries. Foreign keys are checked at the end of the statement,
/// so the recipient rows may refer to messages inserted beside them.
pub async fn store_messages(
    connection: &mut AnyConnection,
    backend: Backend,
    messages: &[NewMessage<'_>],
    threads: &[ThreadCounters<'_>],
) -> Result<()> {
    let files = file_rows(messages);
    let recipients = recipient_rows(messages);
    let parameters =
        messages.len() * 6 + files.len() * 3 + recipients.len() * 6 + threads.len() * 4;
    if backend == Backend::Postgres && parameters <= MAX_POSTGRES_PARAMETERS {
        let mut statement = Statement::new("WITH new_messages AS (");
        let values = message_values(&mut statement, messages);
        statement.push(&format!("{INSERT_MESSAGES}{values})"));
        if !files.is_empty() {
            let values = file_values(&mut statement, &files);
            statement.push(&format!(", new_files AS ({INSERT_FILES}{values})"));
        }
        if !recipients.is_empty() {
            let values = recipient_values(&mut statement, &recipients);
            statement.push(&format!(
                ", new_recipients AS ({INSERT_RECIPIENTS}{values})"
            ));
        }
        let assignments = counter_assignments(&mut statement, threads);
        statement.push(&format!(" UPDATE threads SET {assignments}"));
        statement.query().execute(&mut *connection).await?;
        return Ok(());
    }

    execute_in_chunks(
        connection,
        backend,
        INSERT_MESSAGES,
        messages,
        MAX_ROWS_PER_INSERT,
        message_values,
    )
    .await?;
    execute_in_chunks(
        connection,
        backend,
        INSERT_FILES,
        &files,
        MAX_ROWS_PER_INSERT,
        file_values,
    )
    .await?;
    execute_in_chunks(
        connection,
        backend,
        INSERT_RECIPIENTS,
        &recipients,
        MAX_ROWS_PER_INSERT,
        recipient_values,
    )
    .await?;
    execute_in_chunks(
        connection,
        backend,
        "UPDATE threads SET ",
        threads,
        MAX_ROWS_PER_INSERT,
        counter_assignments,
    )
    .await?;
    Ok(())
}

const INSERT_MESSAGES: &str =
    "INSERT INTO messages (id, thread_id, seq, sender_id, body, created_at) VALUES ";
const INSERT_FILES: &str = "INSERT INTO message_files (message_id, ord, file_id) VALUES ";
const INSERT_RECIPIENTS: &str = "INSERT INTO message_recipients (message_id, thread_id, \
     participant_id, participant_type, created_at, seq) VALUES ";

/// Adds the arguments of `messages` and returns their `VALUES` rows.
fn message_values(statement: &mut Statement, messages: &[NewMessage<'_>]) -> String {
    let mut rows = Vec::with_capacity(messages.len());
    for new in messages {
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
    rows.join(", ")
}

/// A file link: the message, the position of the file and its id.
type FileRow<'a> = (&'a MessageRecord, usize, &'a String);

fn file_rows<'a>(messages: &[NewMessage<'a>]) -> Vec<FileRow<'a>> {
    messages
        .iter()
        .flat_map(|new| {
            new.message
                .file_ids
                .iter()
                .enumerate()
                .map(|(ord, file_id)| (new.message, ord, file_id))
        })
        .collect()
}

fn file_values(statement: &mut Statement, files: &[FileRow<'_>]) -> String {
    let mut rows = Vec::with_capacity(files.len());
    for (message, ord, file_id) in files {
        let id = statement.text(&message.id);
        let ord = statement.integer(*ord as i64);
        let file = statement.text(file_id);
        rows.push(format!("({id}, {ord}, {file})"));
    }
    rows.join(", ")
}

/// An unacked row: the message and its recipient.
type RecipientRow<'a> = (&'a MessageRecord, &'a ParticipantRecord);

fn recipient_rows<'a>(messages: &[NewMessage<'a>]) -> Vec<RecipientRow<'a>> {
    messages
        .iter()
        .flat_map(|new| {
            new.recipients
                .iter()
                .map(|recipient| (new.message, recipient))
        })
        .collect()
}

fn recipient_values(statement: &mut Statement, recipients: &[RecipientRow<'_>]) -> String {
    let mut rows = Vec::with_capacity(recipients.len());
    for (message, recipient) in recipients {
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
    rows.join(", ")
}

/// New counters of a thread that received messages.
pub struct ThreadCounters<'a> {
    pub id: &'a str,
    pub message_count: i64,
    pub last_message_at: i64,
    pub updated_at: i64,
}

/// Adds the arguments of `threads` and returns the assignments and the
/// `WHERE` clause of an `UPDATE threads`. Each placeholder appears once,
/// so the arguments are added in the order of the SQL: one `CASE` per
/// column, then the id list.
fn counter_assignments(statement: &mut Statement, threads: &[ThreadCounters<'_>]) -> String {
    let columns = ["message_count", "last_message_at", "updated_at"];
    let mut assignments = Vec::with_capacity(columns.len());
    for (index, column) in columns.into_iter().enumerate() {
        let mut case = format!("{column} = CASE id");
        for thread in threads {
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
    let ids: Vec<String> = threads
        .iter()
        .map(|thread| statement.text(thread.id))
        .collect();
    format!(
        "{} WHERE id IN ({})",
        assignments.join(", "),
        ids.join(", ")
    )
}
