//! SQL for `runners`.

use std::collections::BTreeMap;

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::Backend;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{ListSort, RunnerRecord, RunnerStatus};
use crate::store::{Sql, cursor, enum_column, json_column, lock_clause};

const COLUMNS: &str = "id, organization_id, name, status, labels, capabilities, endpoint, \
    builtin, enrolled_at, last_seen_at, created_at, updated_at";

/// Set of runners that a list returns.
pub(crate) enum Scope<'a> {
    /// The organization's runners and every cluster runner.
    Organization(&'a str),
    /// Cluster runners only.
    Cluster,
    /// Every runner.
    All,
}

fn record_from_row(row: &AnyRow) -> Result<RunnerRecord, sqlx::Error> {
    let labels: String = row.try_get("labels")?;
    let capabilities: String = row.try_get("capabilities")?;
    Ok(RunnerRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        status: enum_column("status", row.try_get("status")?, RunnerStatus::from_number)?,
        labels: json_column::<BTreeMap<String, String>>("labels", &labels)?,
        capabilities: json_column::<Vec<String>>("capabilities", &capabilities)?,
        endpoint: row.try_get("endpoint")?,
        builtin: row.try_get::<i64, _>("builtin")? != 0,
        enrolled_at: row.try_get("enrolled_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn labels_json(record: &RunnerRecord) -> String {
    serde_json::to_string(&record.labels).expect("a string map serializes")
}

fn capabilities_json(record: &RunnerRecord) -> String {
    serde_json::to_string(&record.capabilities).expect("a string list serializes")
}

pub(crate) async fn insert(
    connection: &mut AnyConnection,
    record: &RunnerRecord,
    token_hash: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO runners (id, organization_id, name, status, labels, capabilities, endpoint, \
         builtin, token_hash, enrolled_at, last_seen_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&record.id)
    .bind(record.organization_id.clone())
    .bind(&record.name)
    .bind(i64::from(record.status.number()))
    .bind(labels_json(record))
    .bind(capabilities_json(record))
    .bind(&record.endpoint)
    .bind(i64::from(record.builtin))
    .bind(token_hash)
    .bind(record.enrolled_at)
    .bind(record.last_seen_at)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<RunnerRecord>> {
    select_one(connection, id, "").await
}

/// Reads runner `id` inside a write transaction, locking the row on
/// PostgreSQL so that concurrent writes of its columns apply in turn.
pub(crate) async fn lock(
    connection: &mut AnyConnection,
    backend: Backend,
    id: &str,
) -> Result<Option<RunnerRecord>> {
    select_one(connection, id, lock_clause(backend)).await
}

async fn select_one(
    connection: &mut AnyConnection,
    id: &str,
    lock: &str,
) -> Result<Option<RunnerRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM runners WHERE id = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns the runner whose service token hashes to `token_hash`, with
/// the stored hash for the constant-time comparison, and locks its row on
/// PostgreSQL.
pub(crate) async fn lock_by_token_hash(
    connection: &mut AnyConnection,
    backend: Backend,
    token_hash: &str,
) -> Result<Option<(RunnerRecord, String)>> {
    let lock = lock_clause(backend);
    let sql = format!("SELECT {COLUMNS}, token_hash FROM runners WHERE token_hash = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(token_hash)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((record_from_row(&row)?, row.try_get("token_hash")?)))
}

/// Returns the cluster runner named `name`.
pub(crate) async fn cluster_by_name(
    connection: &mut AnyConnection,
    name: &str,
) -> Result<Option<RunnerRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM runners WHERE organization_id IS NULL AND name = $1");
    let row = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns one page of runners in `(created_at, id)` order.
pub(crate) async fn list(
    connection: &mut AnyConnection,
    scope: Scope<'_>,
    page: &Page,
) -> Result<(Vec<RunnerRecord>, String)> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM runners WHERE 1 = 1"));
    match scope {
        Scope::Organization(org_id) => {
            let org = sql.text(org_id);
            sql.push(&format!(
                " AND (organization_id = {org} OR organization_id IS NULL)"
            ));
        }
        Scope::Cluster => {
            sql.push(" AND organization_id IS NULL");
        }
        Scope::All => {}
    }
    let sort = ListSort {
        ascending: true,
        ..ListSort::default()
    };
    sql.push_page(sort, page);
    let rows = sql.query().fetch_all(&mut *connection).await?;
    let records = rows
        .iter()
        .map(record_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| {
        cursor(sort.field, 0, record.created_at, &record.id)
    }))
}

/// Writes the mutable columns of a runner.
pub(crate) async fn update(connection: &mut AnyConnection, record: &RunnerRecord) -> Result<()> {
    sqlx::query(
        "UPDATE runners SET name = $2, status = $3, labels = $4, capabilities = $5, \
         endpoint = $6, enrolled_at = $7, last_seen_at = $8, updated_at = $9 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(&record.name)
    .bind(i64::from(record.status.number()))
    .bind(labels_json(record))
    .bind(capabilities_json(record))
    .bind(&record.endpoint)
    .bind(record.enrolled_at)
    .bind(record.last_seen_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Deletes the runner row and its identity.
pub(crate) async fn delete(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM runners WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("DELETE FROM identities WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Returns up to `limit` ids of non-terminal workloads and of provisioned
/// volumes neither DELETED nor FAILED on runner `id`, workloads first.
pub(crate) async fn active_references(
    connection: &mut AnyConnection,
    id: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for table in ["workloads", "provisioned_volumes"] {
        let sql = format!(
            "SELECT id FROM {table} WHERE runner_id = $1 AND status IN (1, 2, 3) \
             ORDER BY created_at, id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(id)
            .bind(limit - ids.len() as i64)
            .fetch_all(&mut *connection)
            .await?;
        for row in rows {
            ids.push(row.try_get("id")?);
        }
        if ids.len() as i64 >= limit {
            break;
        }
    }
    Ok(ids)
}

/// Returns the ids of up to [`super::DELETE_BATCH`] runners of `org_id`.
pub(crate) async fn organization_batch(
    connection: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM runners WHERE organization_id = $1 LIMIT $2")
        .bind(org_id)
        .bind(super::DELETE_BATCH)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}
