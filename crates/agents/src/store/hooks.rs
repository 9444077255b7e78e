//! The `agent_hooks` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{bind_page, cursor, decode_error, push_page, resources_from_row, resources_json};
use crate::model::{HookEvent, HookRecord};

const COLUMNS: &str = "id, agent_id, event, function, image, resources, description, timeout_ms, \
     created_at, updated_at";

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
    let sql = format!("SELECT {COLUMNS} FROM agent_hooks WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    agent_id: &str,
    page: &Page,
) -> Result<(Vec<HookRecord>, String)> {
    let mut sql = format!("SELECT {COLUMNS} FROM agent_hooks WHERE agent_id = $1");
    push_page(&mut sql, page, 2);
    let rows = bind_page(sqlx::query(&sql).bind(agent_id), page)
        .fetch_all(&mut *connection)
        .await?;
    let hooks = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(hooks, |hook| cursor(hook.created_at, &hook.id)))
}

pub(crate) async fn all_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<HookRecord>> {
    let sql =
        format!("SELECT {COLUMNS} FROM agent_hooks WHERE agent_id = $1 ORDER BY created_at, id");
    let rows = sqlx::query(&sql)
        .bind(agent_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}
