//! SQL that deletes an organization's threads in bounded batches, children
//! first, so that each transaction stays small and a crash between
//! batches leaves nothing inconsistent.

use agyn_core::Result;
use agyn_store::sqlx::{self, AnyConnection, Row};

/// Rows deleted per transaction from recipients, file links and messages.
pub const ROW_BATCH: i64 = 1_000;

/// Threads deleted per transaction. Each brings up to 50 participant rows
/// and 51 tuples, so a batch deletes at most 1,020 rows.
pub const THREAD_BATCH: i64 = 10;

/// Deletes up to [`ROW_BATCH`] recipient rows of the organization's
/// threads and returns how many.
pub async fn delete_recipients(connection: &mut AnyConnection, org_id: &str) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM message_recipients WHERE (message_id, participant_id) IN \
         (SELECT r.message_id, r.participant_id FROM message_recipients r \
         JOIN threads t ON t.id = r.thread_id WHERE t.organization_id = $1 LIMIT $2)",
    )
    .bind(org_id)
    .bind(ROW_BATCH)
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to [`ROW_BATCH`] file links of the organization's messages.
pub async fn delete_message_files(connection: &mut AnyConnection, org_id: &str) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM message_files WHERE (message_id, ord) IN \
         (SELECT f.message_id, f.ord FROM message_files f \
         JOIN messages m ON m.id = f.message_id JOIN threads t ON t.id = m.thread_id \
         WHERE t.organization_id = $1 LIMIT $2)",
    )
    .bind(org_id)
    .bind(ROW_BATCH)
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to [`ROW_BATCH`] messages of the organization's threads.
pub async fn delete_messages(connection: &mut AnyConnection, org_id: &str) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m \
         JOIN threads t ON t.id = m.thread_id WHERE t.organization_id = $1 LIMIT $2)",
    )
    .bind(org_id)
    .bind(ROW_BATCH)
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected())
}

/// Returns the ids of up to [`THREAD_BATCH`] threads of the organization.
pub async fn thread_batch(connection: &mut AnyConnection, org_id: &str) -> Result<Vec<String>> {
    let rows =
        sqlx::query("SELECT id FROM threads WHERE organization_id = $1 ORDER BY id LIMIT $2")
            .bind(org_id)
            .bind(THREAD_BATCH)
            .fetch_all(&mut *connection)
            .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}

/// Deletes one thread row and its participants. Its messages must already
/// be deleted.
pub async fn delete_thread(connection: &mut AnyConnection, thread_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM thread_participants WHERE thread_id = $1")
        .bind(thread_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("DELETE FROM threads WHERE id = $1")
        .bind(thread_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}
