//! The `agent_hooks` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{
    cursor, decode_error, resources_from_row, resources_json, select_all, select_by_id, select_page,
};
use crate::model::{HookEvent, HookRecord};

macro_rules! columns {
    () => {
        "id, agent_id, event, function, image, resources, description, timeout_ms, \
         created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();
const SELECT: &str = concat!("SELECT ", columns!(), " FROM agent_hooks");

fn from_row(row: &AnyRow) -> Result<HookRecord, sqlx::Error> {
    let event: String = row.try_get("event")?;
    Ok(HookRecord {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        event: HookEvent::parse(&event).ok_or_else(|| decode_error("hook event", &event))?,
        function: row.try_get("function")?,
        image: row.try_get("image")?,
        resources: resources_from_row(row)?,
        description: row.try_get("description")?,
        timeout_ms: row.try_get("timeout_ms")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(connection: &mut AnyConnection, hook: &HookRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO agent_hooks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    );
    sqlx::query(&sql)
        .bind(&hook.id)
        .bind(&hook.agent_id)
        .bind(hook.event.as_str())
        .bind(&hook.function)
        .bind(&hook.image)
        .bind(resources_json(&hook.resources))
        .bind(&hook.description)
        .bind(hook.timeout_ms)
        .bind(hook.created_at)
        .bind(hook.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn update(connection: &mut AnyConnection, hook: &HookRecord) -> Result<()> {
    sqlx::query(
        "UPDATE agent_hooks SET event = $2, function = $3, image = $4, resources = $5, \
         description = $6, timeout_ms = $7, updated_at = $8 WHERE id = $1",
    )
    .bind(&hook.id)
    .bind(hook.event.as_str())
    .bind(&hook.function)
    .bind(&hook.image)
    .bind(resources_json(&hook.resources))
    .bind(&hook.description)
    .bind(hook.timeout_ms)
    .bind(hook.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(connection: &mut AnyConnection, id: &str) -> Result<Option<HookRecord>> {
    select_by_id(connection, SELECT, id, from_row).await
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    agent_id: &str,
    page: &Page,
) -> Result<(Vec<HookRecord>, String)> {
    let key = |hook: &HookRecord| cursor(hook.created_at, &hook.id);
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

pub(crate) async fn all_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<HookRecord>> {
    select_all(connection, SELECT, "agent_id", agent_id, from_row).await
}
