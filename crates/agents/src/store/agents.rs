//! The `agents` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{cursor, decode_error, resources_from_row, resources_json, select_by_id, select_page};
use crate::model::{AgentRecord, Availability};

macro_rules! columns {
    () => {
        "id, organization_id, name, nickname, role, description, availability, \
         model, configuration, image, init_image, resources, idle_timeout_ms, capabilities, \
         created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();
const SELECT: &str = concat!("SELECT ", columns!(), " FROM agents");

fn from_row(row: &AnyRow) -> Result<AgentRecord, sqlx::Error> {
    let availability: String = row.try_get("availability")?;
    let capabilities: String = row.try_get("capabilities")?;
    Ok(AgentRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        nickname: row.try_get("nickname")?,
        role: row.try_get("role")?,
        description: row.try_get("description")?,
        availability: Availability::parse(&availability)
            .ok_or_else(|| decode_error("availability", &availability))?,
        model: row.try_get("model")?,
        configuration: row.try_get("configuration")?,
        image: row.try_get("image")?,
        init_image: row.try_get("init_image")?,
        resources: resources_from_row(row)?,
        idle_timeout_ms: row.try_get("idle_timeout_ms")?,
        capabilities: serde_json::from_str(&capabilities)
            .map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(connection: &mut AnyConnection, agent: &AgentRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO agents ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    sqlx::query(&sql)
        .bind(&agent.id)
        .bind(&agent.organization_id)
        .bind(&agent.name)
        .bind(agent.nickname.as_deref())
        .bind(&agent.role)
        .bind(&agent.description)
        .bind(agent.availability.as_str())
        .bind(&agent.model)
        .bind(&agent.configuration)
        .bind(&agent.image)
        .bind(&agent.init_image)
        .bind(resources_json(&agent.resources))
        .bind(agent.idle_timeout_ms)
        .bind(serde_json::to_string(&agent.capabilities).expect("strings serialize"))
        .bind(agent.created_at)
        .bind(agent.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Writes every mutable column of `agent`.
pub(crate) async fn update(connection: &mut AnyConnection, agent: &AgentRecord) -> Result<()> {
    sqlx::query(
        "UPDATE agents SET name = $2, nickname = $3, role = $4, description = $5, \
         availability = $6, model = $7, configuration = $8, image = $9, init_image = $10, \
         resources = $11, idle_timeout_ms = $12, capabilities = $13, updated_at = $14 \
         WHERE id = $1",
    )
    .bind(&agent.id)
    .bind(&agent.name)
    .bind(agent.nickname.as_deref())
    .bind(&agent.role)
    .bind(&agent.description)
    .bind(agent.availability.as_str())
    .bind(&agent.model)
    .bind(&agent.configuration)
    .bind(&agent.image)
    .bind(&agent.init_image)
    .bind(resources_json(&agent.resources))
    .bind(agent.idle_timeout_ms)
    .bind(serde_json::to_string(&agent.capabilities).expect("strings serialize"))
    .bind(agent.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(connection: &mut AnyConnection, id: &str) -> Result<Option<AgentRecord>> {
    select_by_id(connection, SELECT, id, from_row).await
}

/// Returns the agents among `ids` that belong to `org_id`.
pub(crate) async fn ids_in_org(
    connection: &mut AnyConnection,
    org_id: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for id in ids {
        let row = sqlx::query("SELECT id FROM agents WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut *connection)
            .await?;
        if let Some(row) = row {
            found.push(row.try_get("id")?);
        }
    }
    Ok(found)
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    org_id: &str,
    page: &Page,
) -> Result<(Vec<AgentRecord>, String)> {
    let key = |agent: &AgentRecord| cursor(agent.created_at, &agent.id);
    select_page(
        connection,
        SELECT,
        &[("organization_id", org_id)],
        page,
        from_row,
        key,
    )
    .await
}

/// Returns up to `limit` agent ids of `org_id`.
pub(crate) async fn ids_of_org(
    connection: &mut AnyConnection,
    org_id: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM agents WHERE organization_id = $1 ORDER BY id LIMIT $2")
        .bind(org_id)
        .bind(limit)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}

/// Returns whether model `model_id` exists in organization `org_id`.
pub(crate) async fn model_in_org(
    connection: &mut AnyConnection,
    model_id: &str,
    org_id: &str,
) -> Result<bool> {
    let row = sqlx::query("SELECT 1 FROM llm_models WHERE id = $1 AND organization_id = $2")
        .bind(model_id)
        .bind(org_id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.is_some())
}

/// Deletes the agent row; its sub-resources follow by `ON DELETE
/// CASCADE`. Returns whether it existed.
pub(crate) async fn delete(connection: &mut AnyConnection, id: &str) -> Result<bool> {
    super::delete_by_id(connection, "agents", id).await
}

/// Deletes the identity registry row of a deleted agent.
pub(crate) async fn delete_identity(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM identities WHERE id = $1 AND identity_type = 'agent'")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}
