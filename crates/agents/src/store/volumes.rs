//! The `volumes` table.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::Backend;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{cursor, select_by_id, select_page};
use crate::model::VolumeRecord;

macro_rules! columns {
    () => {
        "id, organization_id, name, description, persistent, mount_path, size, \
         ttl_ms, created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();
const SELECT: &str = concat!("SELECT ", columns!(), " FROM volumes");

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
    select_by_id(connection, SELECT, id, from_row).await
}

/// Reads volume `id` for a write that depends on its mount path. On
/// PostgreSQL the row stays locked until the transaction ends, so that
/// UpdateVolume and new attachments of the volume run one at a time.
/// SQLite write transactions are serialized already.
pub(crate) async fn lock_by_id(
    connection: &mut AnyConnection,
    backend: Backend,
    id: &str,
) -> Result<Option<VolumeRecord>> {
    let select = match backend {
        Backend::Postgres => concat!(
            "SELECT ",
            columns!(),
            " FROM volumes WHERE id = $1 FOR UPDATE"
        ),
        Backend::Sqlite => concat!("SELECT ", columns!(), " FROM volumes WHERE id = $1"),
    };
    let row = sqlx::query(select)
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
    let key = |volume: &VolumeRecord| cursor(volume.created_at, &volume.id);
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
