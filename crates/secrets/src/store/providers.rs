//! SQL for `secret_providers`.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{ProviderType, SecretProviderRecord};
use crate::references::Referrer;
use crate::store::{cursor, push_page};

const COLUMNS: &str =
    "id, organization_id, name, description, provider_type, vault_address, created_at, updated_at";

fn record_from_row(row: &AnyRow) -> Result<SecretProviderRecord, sqlx::Error> {
    let provider_type: String = row.try_get("provider_type")?;
    Ok(SecretProviderRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        provider_type: ProviderType::parse(&provider_type).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown provider type {provider_type:?}").into())
        })?,
        vault_address: row.try_get("vault_address")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(
    connection: &mut AnyConnection,
    record: &SecretProviderRecord,
    sealed_token: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO secret_providers (id, organization_id, name, description, provider_type, \
         vault_address, sealed_vault_token, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&record.id)
    .bind(&record.organization_id)
    .bind(&record.name)
    .bind(&record.description)
    .bind(record.provider_type.as_str())
    .bind(&record.vault_address)
    .bind(sealed_token)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<SecretProviderRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM secret_providers WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns the provider `id` with its sealed Vault token.
pub(crate) async fn with_token(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<(SecretProviderRecord, String)>> {
    let sql = format!("SELECT {COLUMNS}, sealed_vault_token FROM secret_providers WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((
        record_from_row(&row)?,
        row.try_get("sealed_vault_token")?,
    )))
}

/// Returns whether another provider of `org_id` than `except_id` is
/// named `name`.
pub(crate) async fn name_taken(
    connection: &mut AnyConnection,
    org_id: &str,
    name: &str,
    except_id: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS taken FROM secret_providers \
         WHERE organization_id = $1 AND name = $2 AND id <> $3",
    )
    .bind(org_id)
    .bind(name)
    .bind(except_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.is_some())
}

/// Returns one page of the providers of `org_id` in `(created_at, id)`
/// order.
pub(crate) async fn list(
    connection: &mut AnyConnection,
    org_id: &str,
    page: &Page,
) -> Result<(Vec<SecretProviderRecord>, String)> {
    let mut sql = format!("SELECT {COLUMNS} FROM secret_providers WHERE organization_id = $1");
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

/// Writes the name, description, address and `updated_at` of a provider,
/// and its sealed token when `sealed_token` is set.
pub(crate) async fn update(
    connection: &mut AnyConnection,
    record: &SecretProviderRecord,
    sealed_token: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE secret_providers SET name = $2, description = $3, vault_address = $4, \
         updated_at = $5 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(&record.name)
    .bind(&record.description)
    .bind(&record.vault_address)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    if let Some(sealed_token) = sealed_token {
        sqlx::query("UPDATE secret_providers SET sealed_vault_token = $2 WHERE id = $1")
            .bind(&record.id)
            .bind(sealed_token)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

pub(crate) async fn delete(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM secret_providers WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Returns the organization of provider `id`.
pub(crate) async fn organization_of(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<String>> {
    let row = sqlx::query("SELECT organization_id FROM secret_providers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.map(|row| row.try_get("organization_id")).transpose()?)
}

/// Returns the secrets and image pull secrets that read from provider
/// `id`, each kind in `(created_at, id)` order.
pub(crate) async fn referrers(connection: &mut AnyConnection, id: &str) -> Result<Vec<Referrer>> {
    let mut referrers = Vec::new();
    for (table, kind) in [
        ("secrets", "secret"),
        ("image_pull_secrets", "image pull secret"),
    ] {
        let sql =
            format!("SELECT id FROM {table} WHERE secret_provider_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(id)
            .fetch_all(&mut *connection)
            .await?;
        for row in rows {
            referrers.push(Referrer {
                kind,
                id: row.try_get("id")?,
            });
        }
    }
    Ok(referrers)
}
