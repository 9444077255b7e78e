//! The `agent_init_scripts` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{bind_page, cursor, push_page, target_from_row};
use crate::model::{InitScriptRecord, Target};

const COLUMNS: &str =
    "id, agent_id, target_type, target_id, script, description, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<InitScriptRecord, sqlx::Error> {
    Ok(InitScriptRecord {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        target: target_from_row(row)?,
        script: row.try_get("script")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(
    connection: &mut AnyConnection,
    script: &InitScriptRecord,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO agent_init_scripts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    );
    sqlx::query(&sql)
        .bind(&script.id)
        .bind(&script.agent_id)
        .bind(script.target.type_name())
        .bind(script.target.id())
        .bind(&script.script)
        .bind(&script.description)
        .bind(script.created_at)
        .bind(script.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn update(
    connection: &mut AnyConnection,
    script: &InitScriptRecord,
) -> Result<()> {
    sqlx::query(
        "UPDATE agent_init_scripts SET script = $2, description = $3, updated_at = $4 \
         WHERE id = $1",
    )
    .bind(&script.id)
    .bind(&script.script)
    .bind(&script.description)
    .bind(script.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<InitScriptRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM agent_init_scripts WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    target: &Target,
    page: &Page,
) -> Result<(Vec<InitScriptRecord>, String)> {
    let mut sql = format!(
        "SELECT {COLUMNS} FROM agent_init_scripts WHERE target_type = $1 AND target_id = $2"
    );
    push_page(&mut sql, page, 3);
    let query = sqlx::query(&sql).bind(target.type_name()).bind(target.id());
    let rows = bind_page(query, page).fetch_all(&mut *connection).await?;
    let scripts = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(scripts, |script| cursor(script.created_at, &script.id)))
}

pub(crate) async fn all_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<InitScriptRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM agent_init_scripts WHERE agent_id = $1 ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql)
        .bind(agent_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}
