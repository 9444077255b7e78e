//! The `agent_skills` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{cursor, select_all, select_by_id, select_page};
use crate::model::SkillRecord;

macro_rules! columns {
    () => {
        "id, agent_id, name, description, body, created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();
const SELECT: &str = concat!("SELECT ", columns!(), " FROM agent_skills");

fn from_row(row: &AnyRow) -> Result<SkillRecord, sqlx::Error> {
    Ok(SkillRecord {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(connection: &mut AnyConnection, skill: &SkillRecord) -> Result<()> {
    let sql = format!("INSERT INTO agent_skills ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
    sqlx::query(&sql)
        .bind(&skill.id)
        .bind(&skill.agent_id)
        .bind(&skill.name)
        .bind(&skill.description)
        .bind(&skill.body)
        .bind(skill.created_at)
        .bind(skill.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn update(connection: &mut AnyConnection, skill: &SkillRecord) -> Result<()> {
    sqlx::query(
        "UPDATE agent_skills SET name = $2, description = $3, body = $4, updated_at = $5 \
         WHERE id = $1",
    )
    .bind(&skill.id)
    .bind(&skill.name)
    .bind(&skill.description)
    .bind(&skill.body)
    .bind(skill.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(connection: &mut AnyConnection, id: &str) -> Result<Option<SkillRecord>> {
    select_by_id(connection, SELECT, id, from_row).await
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    agent_id: &str,
    page: &Page,
) -> Result<(Vec<SkillRecord>, String)> {
    let key = |skill: &SkillRecord| cursor(skill.created_at, &skill.id);
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
) -> Result<Vec<SkillRecord>> {
    select_all(connection, SELECT, "agent_id", agent_id, from_row).await
}
