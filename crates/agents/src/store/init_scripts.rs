//! The `agent_init_scripts` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{cursor, select_all, select_by_id, select_page, target_from_row};
use crate::model::{InitScriptRecord, Target};

macro_rules! columns {
    () => {
        "id, agent_id, target_type, target_id, script, description, created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();
const SELECT: &str = concat!("SELECT ", columns!(), " FROM agent_init_scripts");

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
    select_by_id(connection, SELECT, id, from_row).await
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    target: &Target,
    page: &Page,
) -> Result<(Vec<InitScriptRecord>, String)> {
    let filters = [
        ("target_type", target.type_name()),
        ("target_id", target.id()),
    ];
    let key = |script: &InitScriptRecord| cursor(script.created_at, &script.id);
    select_page(connection, SELECT, &filters, page, from_row, key).await
}

pub(crate) async fn all_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<InitScriptRecord>> {
    select_all(connection, SELECT, "agent_id", agent_id, from_row).await
}
