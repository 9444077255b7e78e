//! SQL for `secrets`. The storage columns are written through
//! [`crate::store::SECRETS`].

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{SecretRecord, Storage};
use crate::store::{
    SECRETS, SourceWrite, StoredSource, cursor, push_page, storage_from_row, storage_name,
    stored_source_from_row,
};

const COLUMNS: &str = "id, organization_id, name, description, storage, secret_provider_id, \
                       remote_name, created_at, updated_at";

fn record_from_row(row: &AnyRow) -> Result<SecretRecord, sqlx::Error> {
    Ok(SecretRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        storage: storage_from_row(row)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts a secret. `sealed_value` is the sealed text of a local secret
/// and `None` for a remote one.
pub(crate) async fn insert(
    connection: &mut AnyConnection,
    record: &SecretRecord,
    sealed_value: Option<&str>,
) -> Result<()> {
    let (provider_id, remote_name) = match &record.storage {
        Storage::Local => (None, None),
        Storage::Remote(remote) => (
            Some(remote.secret_provider_id.as_str()),
            Some(remote.remote_name.as_str()),
        ),
    };
    sqlx::query(
        "INSERT INTO secrets (id, organization_id, name, description, storage, sealed_value, \
         secret_provider_id, remote_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&record.id)
    .bind(&record.organization_id)
    .bind(&record.name)
    .bind(&record.description)
    .bind(storage_name(&record.storage))
    .bind(sealed_value)
    .bind(provider_id)
    .bind(remote_name)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<SecretRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM secrets WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns the storage columns of secret `id`, read in one statement.
pub(crate) async fn source(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<StoredSource>> {
    let row = sqlx::query(
        "SELECT storage, sealed_value AS sealed, secret_provider_id, remote_name \
         FROM secrets WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.as_ref().map(stored_source_from_row).transpose()?)
}

/// Returns whether another secret of `org_id` than `except_id` is named
/// `name`.
pub(crate) async fn name_taken(
    connection: &mut AnyConnection,
    org_id: &str,
    name: &str,
    except_id: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS taken FROM secrets WHERE organization_id = $1 AND name = $2 AND id <> $3",
    )
    .bind(org_id)
    .bind(name)
    .bind(except_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.is_some())
}

/// Returns one page of the secrets of `org_id` in `(created_at, id)`
/// order, only the remote secrets of `provider_id` when it is set.
pub(crate) async fn list(
    connection: &mut AnyConnection,
    org_id: &str,
    provider_id: Option<&str>,
    page: &Page,
) -> Result<(Vec<SecretRecord>, String)> {
    let mut sql = format!("SELECT {COLUMNS} FROM secrets WHERE organization_id = $1");
    let mut next = 2;
    if provider_id.is_some() {
        sql.push_str(" AND secret_provider_id = $2");
        next = 3;
    }
    push_page(&mut sql, page, next);
    let mut query = sqlx::query(&sql).bind(org_id);
    if let Some(provider_id) = provider_id {
        query = query.bind(provider_id);
    }
    if let Some(after) = &page.after {
        query = query.bind(after.position).bind(&after.id);
    }
    let rows = query
        .bind(page.fetch_limit())
        .fetch_all(&mut *connection)
        .await?;
    let records = rows
        .iter()
        .map(record_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| cursor(record.created_at, &record.id)))
}

/// Writes the name, description and `updated_at` of a secret, then its
/// storage columns.
pub(crate) async fn update(
    connection: &mut AnyConnection,
    record: &SecretRecord,
    source: SourceWrite<'_>,
) -> Result<()> {
    sqlx::query("UPDATE secrets SET name = $2, description = $3, updated_at = $4 WHERE id = $1")
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.description)
        .bind(record.updated_at)
        .execute(&mut *connection)
        .await?;
    SECRETS.write_source(connection, &record.id, source).await
}
