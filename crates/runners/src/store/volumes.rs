//! SQL for `provisioned_volumes`.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::Backend;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{ListSort, VolumeFilter, VolumeRecord, VolumeStatus};
use crate::store::{Sql, cursor, enum_column, lock_clause};

const COLUMNS: &str = "id, volume_id, thread_id, agent_id, runner_id, organization_id, size, \
    persistent_name, instance_id, status, removed_at, created_at, updated_at";

fn record_from_row(row: &AnyRow) -> Result<VolumeRecord, sqlx::Error> {
    Ok(VolumeRecord {
        id: row.try_get("id")?,
        volume_id: row.try_get("volume_id")?,
        volume_name: String::new(),
        thread_id: row.try_get("thread_id")?,
        agent_id: row.try_get("agent_id")?,
        runner_id: row.try_get("runner_id")?,
        organization_id: row.try_get("organization_id")?,
        size: row.try_get("size")?,
        persistent_name: row.try_get("persistent_name")?,
        instance_id: row.try_get("instance_id")?,
        status: enum_column("status", row.try_get("status")?, VolumeStatus::from_number)?,
        removed_at: row.try_get("removed_at")?,
        attachments: Vec::new(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(connection: &mut AnyConnection, record: &VolumeRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO provisioned_volumes (id, volume_id, thread_id, agent_id, runner_id, \
         organization_id, size, persistent_name, instance_id, status, removed_at, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&record.id)
    .bind(&record.volume_id)
    .bind(&record.thread_id)
    .bind(&record.agent_id)
    .bind(&record.runner_id)
    .bind(&record.organization_id)
    .bind(&record.size)
    .bind(&record.persistent_name)
    .bind(&record.instance_id)
    .bind(i64::from(record.status.number()))
    .bind(record.removed_at)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<VolumeRecord>> {
    select_one(connection, id, "").await
}

/// Reads row `id` inside a write transaction, locking it on PostgreSQL so
/// that concurrent updates apply one after the other. On SQLite the write
/// transaction already holds the database lock.
pub(crate) async fn lock(
    connection: &mut AnyConnection,
    backend: Backend,
    id: &str,
) -> Result<Option<VolumeRecord>> {
    select_one(connection, id, lock_clause(backend)).await
}

async fn select_one(
    connection: &mut AnyConnection,
    id: &str,
    lock: &str,
) -> Result<Option<VolumeRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM provisioned_volumes WHERE id = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns the id of the non-terminal record of a (volume, thread) pair.
pub(crate) async fn active_for_pair(
    connection: &mut AnyConnection,
    volume_id: &str,
    thread_id: &str,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT id FROM provisioned_volumes WHERE volume_id = $1 AND thread_id = $2 \
         AND status IN (1, 2, 3)",
    )
    .bind(volume_id)
    .bind(thread_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.map(|row| row.try_get("id")).transpose()?)
}

pub(crate) async fn update(connection: &mut AnyConnection, record: &VolumeRecord) -> Result<()> {
    sqlx::query(
        "UPDATE provisioned_volumes SET status = $2, instance_id = $3, removed_at = $4, \
         updated_at = $5 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(i64::from(record.status.number()))
    .bind(&record.instance_id)
    .bind(record.removed_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Rows a volume list reads.
pub(crate) enum Scope<'a> {
    /// One organization, or every organization for `None`.
    Organization(Option<&'a str>),
    /// One thread.
    Thread(&'a str),
}

/// Returns one page of provisioned volumes.
pub(crate) async fn list(
    connection: &mut AnyConnection,
    scope: Scope<'_>,
    filter: &VolumeFilter,
    sort: ListSort,
    page: &Page,
) -> Result<(Vec<VolumeRecord>, String)> {
    let mut sql = Sql::new(&format!(
        "SELECT {COLUMNS} FROM provisioned_volumes WHERE 1 = 1"
    ));
    match scope {
        Scope::Organization(Some(org_id)) => {
            let org = sql.text(org_id);
            sql.push(&format!(" AND organization_id = {org}"));
        }
        Scope::Organization(None) => {}
        Scope::Thread(thread_id) => {
            let thread = sql.text(thread_id);
            sql.push(&format!(" AND thread_id = {thread}"));
        }
    }
    let statuses: Vec<i64> = filter
        .statuses
        .iter()
        .map(|status| i64::from(status.number()))
        .collect();
    sql.and_in_int("status", &statuses);
    sql.and_in_text("runner_id", &filter.runner_ids);
    sql.and_in_text("thread_id", &filter.thread_ids);
    sql.and_in_text("volume_id", &filter.volume_ids);
    sql.push_page(sort, page);
    let rows = sql.query().fetch_all(&mut *connection).await?;
    let records = rows
        .iter()
        .map(record_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| {
        cursor(
            sort.field,
            record.status.number(),
            record.created_at,
            &record.id,
        )
    }))
}

/// Returns whether the organization has a volume neither DELETED nor
/// FAILED.
pub(crate) async fn organization_has_active(
    connection: &mut AnyConnection,
    org_id: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS active FROM provisioned_volumes WHERE organization_id = $1 \
         AND status IN (1, 2, 3) LIMIT 1",
    )
    .bind(org_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.is_some())
}
