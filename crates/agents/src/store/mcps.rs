//! The `agent_mcps` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{
    cursor, decode_error, resources_from_row, resources_json, select_all, select_by_id, select_page,
};
use crate::model::{McpRecord, McpTransport};

macro_rules! columns {
    () => {
        "id, agent_id, name, description, image, command, transport, http_path, \
         resources, tool_timeout_ms, created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();
const SELECT: &str = concat!("SELECT ", columns!(), " FROM agent_mcps");

fn from_row(row: &AnyRow) -> Result<McpRecord, sqlx::Error> {
    let transport: String = row.try_get("transport")?;
    Ok(McpRecord {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        image: row.try_get("image")?,
        command: row.try_get("command")?,
        transport: McpTransport::parse(&transport)
            .ok_or_else(|| decode_error("transport", &transport))?,
        http_path: row.try_get("http_path")?,
        resources: resources_from_row(row)?,
        tool_timeout_ms: row.try_get("tool_timeout_ms")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(connection: &mut AnyConnection, mcp: &McpRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO agent_mcps ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    sqlx::query(&sql)
        .bind(&mcp.id)
        .bind(&mcp.agent_id)
        .bind(&mcp.name)
        .bind(&mcp.description)
        .bind(&mcp.image)
        .bind(&mcp.command)
        .bind(mcp.transport.as_str())
        .bind(&mcp.http_path)
        .bind(resources_json(&mcp.resources))
        .bind(mcp.tool_timeout_ms)
        .bind(mcp.created_at)
        .bind(mcp.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn update(connection: &mut AnyConnection, mcp: &McpRecord) -> Result<()> {
    sqlx::query(
        "UPDATE agent_mcps SET description = $2, image = $3, command = $4, transport = $5, \
         http_path = $6, resources = $7, tool_timeout_ms = $8, updated_at = $9 WHERE id = $1",
    )
    .bind(&mcp.id)
    .bind(&mcp.description)
    .bind(&mcp.image)
    .bind(&mcp.command)
    .bind(mcp.transport.as_str())
    .bind(&mcp.http_path)
    .bind(resources_json(&mcp.resources))
    .bind(mcp.tool_timeout_ms)
    .bind(mcp.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(connection: &mut AnyConnection, id: &str) -> Result<Option<McpRecord>> {
    select_by_id(connection, SELECT, id, from_row).await
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    agent_id: &str,
    page: &Page,
) -> Result<(Vec<McpRecord>, String)> {
    let key = |mcp: &McpRecord| cursor(mcp.created_at, &mcp.id);
    select_page(
        connection,
        SELECT,
        &[("agent_id", agent_id)],
        page,
        from_row,
        key,
    )
    .await
}

/// Returns every MCP server of the agent, for the bundle.
pub(crate) async fn all_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<McpRecord>> {
    select_all(connection, SELECT, "agent_id", agent_id, from_row).await
}
