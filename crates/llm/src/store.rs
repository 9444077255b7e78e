//! SQL for the `llm_providers` and `llm_models` tables.

use agyn_api_llm::agynio::api::llm::v1::{AuthMethod, Protocol, Script};
use agyn_core::Result;
use agyn_core::page::{Cursor, Page};
use agyn_store::Backend;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

/// Models deleted per transaction during the organization purge.
pub const DELETE_BATCH: i64 = 500;

/// A provider as reads return it, without its credential.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    /// Empty for a scripted provider.
    pub endpoint: String,
    pub protocol: Protocol,
    /// `AUTH_METHOD_UNSPECIFIED` for a scripted provider.
    pub auth_method: AuthMethod,
    /// Lowercase custom header names in name order.
    pub header_names: Vec<String>,
    pub has_token: bool,
    pub script: Option<Script>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ProviderRecord {
    pub fn is_scripted(&self) -> bool {
        self.script.is_some()
    }
}

/// A provider row: the record and its sealed credential columns.
#[derive(Clone)]
pub(crate) struct StoredProvider {
    pub record: ProviderRecord,
    pub sealed_token: Option<String>,
    pub sealed_headers: Option<String>,
}

/// A model, with the protocol of its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub provider_id: String,
    pub remote_name: String,
    pub protocol: Protocol,
    pub created_at: i64,
    pub updated_at: i64,
}

fn protocol_to_column(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::PROTOCOL_UNSPECIFIED | Protocol::PROTOCOL_RESPONSES => "responses",
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES => "anthropic_messages",
        Protocol::PROTOCOL_CHAT_COMPLETIONS => "chat_completions",
    }
}

fn protocol_from_column(value: &str) -> Result<Protocol, sqlx::Error> {
    match value {
        "responses" => Ok(Protocol::PROTOCOL_RESPONSES),
        "anthropic_messages" => Ok(Protocol::PROTOCOL_ANTHROPIC_MESSAGES),
        "chat_completions" => Ok(Protocol::PROTOCOL_CHAT_COMPLETIONS),
        other => Err(decode_error(format!("unknown provider protocol {other:?}"))),
    }
}

fn auth_method_to_column(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::AUTH_METHOD_UNSPECIFIED => "unspecified",
        AuthMethod::AUTH_METHOD_BEARER => "bearer",
        AuthMethod::AUTH_METHOD_X_API_KEY => "x_api_key",
        AuthMethod::AUTH_METHOD_CUSTOM_HEADERS => "custom_headers",
    }
}

fn auth_method_from_column(value: &str) -> Result<AuthMethod, sqlx::Error> {
    match value {
        "unspecified" => Ok(AuthMethod::AUTH_METHOD_UNSPECIFIED),
        "bearer" => Ok(AuthMethod::AUTH_METHOD_BEARER),
        "x_api_key" => Ok(AuthMethod::AUTH_METHOD_X_API_KEY),
        "custom_headers" => Ok(AuthMethod::AUTH_METHOD_CUSTOM_HEADERS),
        other => Err(decode_error(format!(
            "unknown provider auth method {other:?}"
        ))),
    }
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

const PROVIDER_COLUMNS: &str = "id, organization_id, name, endpoint, protocol, auth_method, \
     sealed_token, header_names, sealed_headers, script, created_at, updated_at";

fn provider_from_row(row: &AnyRow) -> Result<StoredProvider, sqlx::Error> {
    let header_names: String = row.try_get("header_names")?;
    let header_names: Vec<String> = serde_json::from_str(&header_names)
        .map_err(|error| decode_error(format!("invalid header_names: {error}")))?;
    let script = row
        .try_get::<Option<String>, _>("script")?
        .map(|json| serde_json::from_str::<Script>(&json))
        .transpose()
        .map_err(|error| decode_error(format!("invalid script: {error}")))?;
    let sealed_token: Option<String> = row.try_get("sealed_token")?;
    Ok(StoredProvider {
        record: ProviderRecord {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            name: row.try_get("name")?,
            endpoint: row.try_get("endpoint")?,
            protocol: protocol_from_column(row.try_get("protocol")?)?,
            auth_method: auth_method_from_column(row.try_get("auth_method")?)?,
            header_names,
            has_token: sealed_token.is_some(),
            script,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        },
        sealed_token,
        sealed_headers: row.try_get("sealed_headers")?,
    })
}

fn header_names_column(provider: &StoredProvider) -> String {
    serde_json::to_string(&provider.record.header_names).expect("a string list encodes as JSON")
}

fn script_column(provider: &StoredProvider) -> Option<String> {
    provider
        .record
        .script
        .as_ref()
        .map(|script| serde_json::to_string(script).expect("a script encodes as JSON"))
}

pub(crate) async fn insert_provider(
    connection: &mut AnyConnection,
    provider: &StoredProvider,
) -> Result<()> {
    let record = &provider.record;
    sqlx::query(
        "INSERT INTO llm_providers (id, organization_id, name, endpoint, protocol, auth_method, \
         sealed_token, header_names, sealed_headers, script, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&record.id)
    .bind(&record.organization_id)
    .bind(&record.name)
    .bind(&record.endpoint)
    .bind(protocol_to_column(record.protocol))
    .bind(auth_method_to_column(record.auth_method))
    .bind(provider.sealed_token.as_deref())
    .bind(header_names_column(provider))
    .bind(provider.sealed_headers.as_deref())
    .bind(script_column(provider))
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Writes every mutable column of a provider.
pub(crate) async fn update_provider(
    connection: &mut AnyConnection,
    provider: &StoredProvider,
) -> Result<()> {
    let record = &provider.record;
    sqlx::query(
        "UPDATE llm_providers SET name = $2, endpoint = $3, protocol = $4, auth_method = $5, \
         sealed_token = $6, header_names = $7, sealed_headers = $8, script = $9, \
         updated_at = $10 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(&record.name)
    .bind(&record.endpoint)
    .bind(protocol_to_column(record.protocol))
    .bind(auth_method_to_column(record.auth_method))
    .bind(provider.sealed_token.as_deref())
    .bind(header_names_column(provider))
    .bind(provider.sealed_headers.as_deref())
    .bind(script_column(provider))
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn provider_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<StoredProvider>> {
    let sql = format!("SELECT {PROVIDER_COLUMNS} FROM llm_providers WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(provider_from_row).transpose()?)
}

/// Locks a provider row until the transaction ends, on PostgreSQL. SQLite
/// write transactions already exclude each other.
pub(crate) async fn lock_provider(
    connection: &mut AnyConnection,
    backend: Backend,
    id: &str,
) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM llm_providers WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Returns whether another provider of the organization is named `name`.
pub(crate) async fn provider_name_taken(
    connection: &mut AnyConnection,
    org_id: &str,
    name: &str,
    except_id: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS found FROM llm_providers WHERE organization_id = $1 AND name = $2 \
         AND id <> $3",
    )
    .bind(org_id)
    .bind(name)
    .bind(except_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.is_some())
}

/// Returns one page of an organization's providers in `(created_at, id)`
/// order.
pub(crate) async fn list_providers(
    connection: &mut AnyConnection,
    org_id: &str,
    page: &Page,
) -> Result<(Vec<ProviderRecord>, String)> {
    let mut sql =
        format!("SELECT {PROVIDER_COLUMNS} FROM llm_providers WHERE organization_id = $1");
    let mut next = 2;
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND (created_at > ${next} OR (created_at = ${next} AND id > ${}))",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(" ORDER BY created_at, id LIMIT ${next}"));
    let mut query = sqlx::query(&sql).bind(org_id);
    if let Some(cursor) = &page.after {
        query = query.bind(cursor.position).bind(&cursor.id);
    }
    let rows = query
        .bind(page.fetch_limit())
        .fetch_all(&mut *connection)
        .await?;
    let records = rows
        .iter()
        .map(|row| provider_from_row(row).map(|provider| provider.record))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| Cursor {
        position: record.created_at,
        id: record.id.clone(),
    }))
}

pub(crate) async fn delete_provider(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM llm_providers WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Returns the ids of up to `limit` models served by the provider, oldest
/// first.
pub(crate) async fn model_ids_of_provider(
    connection: &mut AnyConnection,
    provider_id: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT id FROM llm_models WHERE provider_id = $1 ORDER BY created_at, id LIMIT $2",
    )
    .bind(provider_id)
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}

/// Returns the number of models served by the provider.
pub(crate) async fn count_models_of_provider(
    connection: &mut AnyConnection,
    provider_id: &str,
) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS models FROM llm_models WHERE provider_id = $1")
        .bind(provider_id)
        .fetch_one(&mut *connection)
        .await?;
    Ok(row.try_get("models")?)
}

/// Deletes every provider of the organization and returns how many.
pub(crate) async fn delete_providers_of_organization(
    connection: &mut AnyConnection,
    org_id: &str,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM llm_providers WHERE organization_id = $1")
        .bind(org_id)
        .execute(&mut *connection)
        .await?;
    Ok(done.rows_affected())
}

const MODEL_COLUMNS: &str = "m.id, m.organization_id, m.name, m.provider_id, m.remote_name, \
     p.protocol, m.created_at, m.updated_at";

fn model_from_row(row: &AnyRow) -> Result<ModelRecord, sqlx::Error> {
    Ok(ModelRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        provider_id: row.try_get("provider_id")?,
        remote_name: row.try_get("remote_name")?,
        protocol: protocol_from_column(row.try_get("protocol")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts a model; its `protocol` is not stored.
pub(crate) async fn insert_model(
    connection: &mut AnyConnection,
    model: &ModelRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO llm_models (id, organization_id, provider_id, name, remote_name, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&model.id)
    .bind(&model.organization_id)
    .bind(&model.provider_id)
    .bind(&model.name)
    .bind(&model.remote_name)
    .bind(model.created_at)
    .bind(model.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Writes a model's name, provider, remote name and `updated_at`.
pub(crate) async fn update_model(
    connection: &mut AnyConnection,
    model: &ModelRecord,
) -> Result<()> {
    sqlx::query(
        "UPDATE llm_models SET provider_id = $2, name = $3, remote_name = $4, updated_at = $5 \
         WHERE id = $1",
    )
    .bind(&model.id)
    .bind(&model.provider_id)
    .bind(&model.name)
    .bind(&model.remote_name)
    .bind(model.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn model_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<ModelRecord>> {
    let sql = format!(
        "SELECT {MODEL_COLUMNS} FROM llm_models m JOIN llm_providers p ON p.id = m.provider_id \
         WHERE m.id = $1"
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(model_from_row).transpose()?)
}

/// Returns one page of an organization's models in `(created_at, id)`
/// order, optionally only those of one provider.
pub(crate) async fn list_models(
    connection: &mut AnyConnection,
    org_id: &str,
    provider_id: Option<&str>,
    page: &Page,
) -> Result<(Vec<ModelRecord>, String)> {
    let mut sql = format!(
        "SELECT {MODEL_COLUMNS} FROM llm_models m JOIN llm_providers p ON p.id = m.provider_id \
         WHERE m.organization_id = $1"
    );
    let mut next = 2;
    if provider_id.is_some() {
        sql.push_str(&format!(" AND m.provider_id = ${next}"));
        next += 1;
    }
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND (m.created_at > ${next} OR (m.created_at = ${next} AND m.id > ${}))",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(" ORDER BY m.created_at, m.id LIMIT ${next}"));
    let mut query = sqlx::query(&sql).bind(org_id);
    if let Some(provider_id) = provider_id {
        query = query.bind(provider_id);
    }
    if let Some(cursor) = &page.after {
        query = query.bind(cursor.position).bind(&cursor.id);
    }
    let rows = query
        .bind(page.fetch_limit())
        .fetch_all(&mut *connection)
        .await?;
    let records = rows
        .iter()
        .map(model_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| Cursor {
        position: record.created_at,
        id: record.id.clone(),
    }))
}

pub(crate) async fn delete_model(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM llm_models WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Returns the ids of up to `limit` models of the organization.
pub(crate) async fn model_ids_of_organization(
    connection: &mut AnyConnection,
    org_id: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM llm_models WHERE organization_id = $1 LIMIT $2")
        .bind(org_id)
        .bind(limit)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}
