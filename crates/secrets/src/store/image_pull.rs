//! SQL for `image_pull_secrets`. The storage columns are written through
//! [`crate::store::IMAGE_PULL_SECRETS`].

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{ImagePullSecretRecord, Storage};
use crate::store::{
    IMAGE_PULL_SECRETS, SourceWrite, StoredSource, cursor, push_page, storage_from_row,
    storage_name, stored_source_from_row,
};

const COLUMNS: &str = "id, organization_id, description, registry, username, storage, \
                       secret_provider_id, remote_name, created_at, updated_at";

fn record_from_row(row: &AnyRow) -> Result<ImagePullSecretRecord, sqlx::Error> {
    Ok(ImagePullSecretRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        description: row.try_get("description")?,
        registry: row.try_get("registry")?,
        username: row.try_get("username")?,
        storage: storage_from_row(row)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts an image pull secret. `sealed_password` is the sealed text of
/// a local password and `None` for a remote one.
pub(crate) async fn insert(
    connection: &mut AnyConnection,
    record: &ImagePullSecretRecord,
    sealed_password: Option<&str>,
) -> Result<()> {
    let (provider_id, remote_name) = match &record.storage {
        Storage::Local => (None, None),
        Storage::Remote(remote) => (
            Some(remote.secret_provider_id.as_str()),
            Some(remote.remote_name.as_str()),
        ),
    };
    sqlx::query(
        "INSERT INTO image_pull_secrets (id, organization_id, description, registry, username, \
         storage, sealed_password, secret_provider_id, remote_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&record.id)
    .bind(&record.organization_id)
    .bind(&record.description)
    .bind(&record.registry)
    .bind(&record.username)
    .bind(storage_name(&record.storage))
    .bind(sealed_password)
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
) -> Result<Option<ImagePullSecretRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM image_pull_secrets WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns the registry, user name and storage columns of image pull
/// secret `id`, read in one statement.
pub(crate) async fn credentials(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<(String, String, StoredSource)>> {
    let row = sqlx::query(
        "SELECT registry, username, storage, sealed_password AS sealed, secret_provider_id, \
         remote_name FROM image_pull_secrets WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((
        row.try_get("registry")?,
        row.try_get("username")?,
        stored_source_from_row(&row)?,
    )))
}

/// Returns one page of the image pull secrets of `org_id` in
/// `(created_at, id)` order.
pub(crate) async fn list(
    connection: &mut AnyConnection,
    org_id: &str,
    page: &Page,
) -> Result<(Vec<ImagePullSecretRecord>, String)> {
    let mut sql = format!("SELECT {COLUMNS} FROM image_pull_secrets WHERE organization_id = $1");
    push_page(&mut sql, page, 2);
    let mut query = sqlx::query(&sql).bind(org_id);
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

/// Writes the description, registry, user name and `updated_at` of an
/// image pull secret, then its storage columns.
pub(crate) async fn update(
    connection: &mut AnyConnection,
    record: &ImagePullSecretRecord,
    source: SourceWrite<'_>,
) -> Result<()> {
    sqlx::query(
        "UPDATE image_pull_secrets SET description = $2, registry = $3, username = $4, \
         updated_at = $5 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(&record.description)
    .bind(&record.registry)
    .bind(&record.username)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    IMAGE_PULL_SECRETS
        .write_source(connection, &record.id, source)
        .await
}
