//! The `agent_envs` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{cursor, select_all, select_by_id, select_page, target_from_row};
use crate::model::{EnvRecord, EnvSource, Target};

macro_rules! columns {
    () => {
        "id, agent_id, target_type, target_id, name, description, value, \
         secret_id, created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();
const SELECT: &str = concat!("SELECT ", columns!(), " FROM agent_envs");

fn from_row(row: &AnyRow) -> Result<EnvRecord, sqlx::Error> {
    let value: Option<String> = row.try_get("value")?;
    let secret_id: Option<String> = row.try_get("secret_id")?;
    let source = match (value, secret_id) {
        (Some(value), None) => EnvSource::Value(value),
        (None, Some(secret_id)) => EnvSource::Secret(secret_id),
        _ => {
            return Err(sqlx::Error::Decode(
                "an env has both or neither of value and secret_id".into(),
            ));
        }
    };
    Ok(EnvRecord {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        target: target_from_row(row)?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        source,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn source_columns(source: &EnvSource) -> (Option<&str>, Option<&str>) {
    match source {
        EnvSource::Value(value) => (Some(value), None),
        EnvSource::Secret(secret_id) => (None, Some(secret_id)),
    }
}

pub(crate) async fn insert(connection: &mut AnyConnection, env: &EnvRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO agent_envs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    );
    let (value, secret_id) = source_columns(&env.source);
    sqlx::query(&sql)
        .bind(&env.id)
        .bind(&env.agent_id)
        .bind(env.target.type_name())
        .bind(env.target.id())
        .bind(&env.name)
        .bind(&env.description)
        .bind(value)
        .bind(secret_id)
        .bind(env.created_at)
        .bind(env.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn update(connection: &mut AnyConnection, env: &EnvRecord) -> Result<()> {
    let (value, secret_id) = source_columns(&env.source);
    sqlx::query(
        "UPDATE agent_envs SET name = $2, description = $3, value = $4, secret_id = $5, \
         updated_at = $6 WHERE id = $1",
    )
    .bind(&env.id)
    .bind(&env.name)
    .bind(&env.description)
    .bind(value)
    .bind(secret_id)
    .bind(env.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(connection: &mut AnyConnection, id: &str) -> Result<Option<EnvRecord>> {
    select_by_id(connection, SELECT, id, from_row).await
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    target: &Target,
    page: &Page,
) -> Result<(Vec<EnvRecord>, String)> {
    let filters = [
        ("target_type", target.type_name()),
        ("target_id", target.id()),
    ];
    let key = |env: &EnvRecord| cursor(env.created_at, &env.id);
    select_page(connection, SELECT, &filters, page, from_row, key).await
}

/// Returns every env of the agent and of its MCP servers and hooks.
pub(crate) async fn all_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<EnvRecord>> {
    select_all(connection, SELECT, "agent_id", agent_id, from_row).await
}

/// Returns the ids of the envs that read secret `secret_id`.
pub(crate) async fn ids_by_secret(
    connection: &mut AnyConnection,
    secret_id: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM agent_envs WHERE secret_id = $1 ORDER BY id")
        .bind(secret_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}
