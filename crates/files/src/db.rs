//! SQL for `files` and the thread lookups of the read rule.

use agyn_core::Result;
use agyn_store::Db;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::FileRecord;

const COLUMNS: &str =
    "id, filename, content_type, size_bytes, sha256, organization_id, uploader_id, created_at";

/// Most threads whose `can_read` the read rule checks for one file.
pub(crate) const MAX_REFERENCING_THREADS: i64 = 100;

fn record_from_row(row: &AnyRow) -> Result<FileRecord, sqlx::Error> {
    Ok(FileRecord {
        id: row.try_get("id")?,
        filename: row.try_get("filename")?,
        content_type: row.try_get("content_type")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        organization_id: row.try_get("organization_id")?,
        uploader_id: row.try_get("uploader_id")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn insert(connection: &mut AnyConnection, record: &FileRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO files (id, filename, content_type, size_bytes, sha256, organization_id, \
         uploader_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&record.id)
    .bind(&record.filename)
    .bind(&record.content_type)
    .bind(record.size_bytes)
    .bind(&record.sha256)
    .bind(record.organization_id.as_deref())
    .bind(&record.uploader_id)
    .bind(record.created_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn file_by_id(db: &Db, id: &str) -> Result<Option<FileRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM files WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(db.pool()).await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

pub(crate) async fn file_exists(db: &Db, id: &str) -> Result<bool> {
    let row = sqlx::query("SELECT 1 AS found FROM files WHERE id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// Returns the threads that have a message referencing `file_id`, oldest
/// first, at most [`MAX_REFERENCING_THREADS`].
pub(crate) async fn threads_referencing(db: &Db, file_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT m.thread_id AS thread_id FROM message_files f \
         JOIN messages m ON m.id = f.message_id \
         WHERE f.file_id = $1 \
         GROUP BY m.thread_id ORDER BY MIN(m.created_at), m.thread_id LIMIT $2",
    )
    .bind(file_id)
    .bind(MAX_REFERENCING_THREADS)
    .fetch_all(db.pool())
    .await?;
    let threads = rows
        .iter()
        .map(|row| row.try_get("thread_id"))
        .collect::<Result<Vec<String>, sqlx::Error>>()?;
    Ok(threads)
}
