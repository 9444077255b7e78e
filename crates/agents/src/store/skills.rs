//! The `agent_skills` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{bind_page, cursor, push_page};
use crate::model::SkillRecord;

const COLUMNS: &str = "id, agent_id, name, description, body, created_at, updated_at";

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
    let sql = format!("SELECT {COLUMNS} FROM agent_skills WHERE id = $1");
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
) -> Result<(Vec<SkillRecord>, String)> {
    let mut sql = format!("SELECT {COLUMNS} FROM agent_skills WHERE agent_id = $1");
    push_page(&mut sql, page, 2);
    let rows = bind_page(sqlx::query(&sql).bind(agent_id), page)
        .fetch_all(&mut *connection)
        .await?;
    let skills = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(skills, |skill| cursor(skill.created_at, &skill.id)))
}

pub(crate) async fn all_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<SkillRecord>> {
    let sql =
        format!("SELECT {COLUMNS} FROM agent_skills WHERE agent_id = $1 ORDER BY created_at, id");
    let rows = sqlx::query(&sql)
        .bind(agent_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}
