//! The `volumes` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{bind_page, cursor, push_page};
use crate::model::VolumeRecord;

const COLUMNS: &str = "id, organization_id, name, description, persistent, mount_path, size, \
     ttl_ms, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<VolumeRecord, sqlx::Error> {
    let persistent: i64 = row.try_get("persistent")?;
    Ok(VolumeRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        persistent: persistent != 0,
        mount_path: row.try_get("mount_path")?,
        size: row.try_get("size")?,
        ttl_ms: row.try_get("ttl_ms")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert(connection: &mut AnyConnection, volume: &VolumeRecord) -> Result<()> {
    let sql =
        format!("INSERT INTO volumes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
    sqlx::query(&sql)
        .bind(&volume.id)
        .bind(&volume.organization_id)
        .bind(&volume.name)
        .bind(&volume.description)
        .bind(i64::from(volume.persistent))
        .bind(&volume.mount_path)
        .bind(&volume.size)
        .bind(volume.ttl_ms)
        .bind(volume.created_at)
        .bind(volume.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn update(connection: &mut AnyConnection, volume: &VolumeRecord) -> Result<()> {
    sqlx::query(
        "UPDATE volumes SET name = $2, description = $3, mount_path = $4, size = $5, \
         ttl_ms = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(&volume.id)
    .bind(&volume.name)
    .bind(&volume.description)
    .bind(&volume.mount_path)
    .bind(&volume.size)
    .bind(volume.ttl_ms)
    .bind(volume.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<VolumeRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM volumes WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub(crate) async fn list(
    connection: &mut AnyConnection,
    org_id: &str,
    page: &Page,
) -> Result<(Vec<VolumeRecord>, String)> {
    let mut sql = format!("SELECT {COLUMNS} FROM volumes WHERE organization_id = $1");
    push_page(&mut sql, page, 2);
    let rows = bind_page(sqlx::query(&sql).bind(org_id), page)
        .fetch_all(&mut *connection)
        .await?;
    let volumes = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(volumes, |volume| cursor(volume.created_at, &volume.id)))
}

/// Returns the volumes attached anywhere in agent `agent_id`, once each.
pub(crate) async fn attached_to_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<VolumeRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM volumes WHERE id IN \
         (SELECT volume_id FROM volume_attachments WHERE agent_id = $1) ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql)
        .bind(agent_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}
