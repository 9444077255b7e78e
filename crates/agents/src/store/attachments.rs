//! The `volume_attachments` and `image_pull_secret_attachments` tables,
//! which share their layout except for the attached resource column and
//! `read_only`.

use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use super::{cursor, select_all, select_by_id, select_page, target_from_row};
use crate::model::{
    AttachmentFilter, ImagePullSecretAttachmentRecord, Target, VolumeAttachmentRecord,
};

/// One of the two attachment tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttachmentTable {
    pub table: &'static str,
    /// The column naming the attached resource.
    pub resource_column: &'static str,
}

pub(crate) const VOLUMES: AttachmentTable = AttachmentTable {
    table: "volume_attachments",
    resource_column: "volume_id",
};

pub(crate) const IMAGE_PULL_SECRETS: AttachmentTable = AttachmentTable {
    table: "image_pull_secret_attachments",
    resource_column: "image_pull_secret_id",
};

const SELECT_VOLUMES: &str = "SELECT * FROM volume_attachments";
const SELECT_IMAGE_PULLS: &str = "SELECT * FROM image_pull_secret_attachments";

fn volume_from_row(row: &AnyRow) -> Result<VolumeAttachmentRecord, sqlx::Error> {
    let read_only: i64 = row.try_get("read_only")?;
    Ok(VolumeAttachmentRecord {
        id: row.try_get("id")?,
        volume_id: row.try_get("volume_id")?,
        agent_id: row.try_get("agent_id")?,
        target: target_from_row(row)?,
        read_only: read_only != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn image_pull_from_row(row: &AnyRow) -> Result<ImagePullSecretAttachmentRecord, sqlx::Error> {
    Ok(ImagePullSecretAttachmentRecord {
        id: row.try_get("id")?,
        image_pull_secret_id: row.try_get("image_pull_secret_id")?,
        agent_id: row.try_get("agent_id")?,
        target: target_from_row(row)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts `attachment` of a volume whose mount path is `mount_path`.
pub(crate) async fn insert_volume(
    connection: &mut AnyConnection,
    attachment: &VolumeAttachmentRecord,
    mount_path: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO volume_attachments (id, volume_id, agent_id, target_type, target_id, \
         mount_path, read_only, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&attachment.id)
    .bind(&attachment.volume_id)
    .bind(&attachment.agent_id)
    .bind(attachment.target.type_name())
    .bind(attachment.target.id())
    .bind(mount_path)
    .bind(i64::from(attachment.read_only))
    .bind(attachment.created_at)
    .bind(attachment.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Copies a volume's new mount path to its attachments.
pub(crate) async fn set_mount_path(
    connection: &mut AnyConnection,
    volume_id: &str,
    mount_path: &str,
) -> Result<()> {
    sqlx::query("UPDATE volume_attachments SET mount_path = $2 WHERE volume_id = $1")
        .bind(volume_id)
        .bind(mount_path)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn insert_image_pull(
    connection: &mut AnyConnection,
    attachment: &ImagePullSecretAttachmentRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO image_pull_secret_attachments (id, image_pull_secret_id, agent_id, \
         target_type, target_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&attachment.id)
    .bind(&attachment.image_pull_secret_id)
    .bind(&attachment.agent_id)
    .bind(attachment.target.type_name())
    .bind(attachment.target.id())
    .bind(attachment.created_at)
    .bind(attachment.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn update_volume(
    connection: &mut AnyConnection,
    attachment: &VolumeAttachmentRecord,
) -> Result<()> {
    sqlx::query("UPDATE volume_attachments SET read_only = $2, updated_at = $3 WHERE id = $1")
        .bind(&attachment.id)
        .bind(i64::from(attachment.read_only))
        .bind(attachment.updated_at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(crate) async fn update_image_pull(
    connection: &mut AnyConnection,
    attachment: &ImagePullSecretAttachmentRecord,
) -> Result<()> {
    sqlx::query(
        "UPDATE image_pull_secret_attachments SET image_pull_secret_id = $2, updated_at = $3 \
         WHERE id = $1",
    )
    .bind(&attachment.id)
    .bind(&attachment.image_pull_secret_id)
    .bind(attachment.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn volume_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<VolumeAttachmentRecord>> {
    select_by_id(connection, SELECT_VOLUMES, id, volume_from_row).await
}

pub(crate) async fn image_pull_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<ImagePullSecretAttachmentRecord>> {
    select_by_id(connection, SELECT_IMAGE_PULLS, id, image_pull_from_row).await
}

impl AttachmentTable {
    /// Returns the `(column, value)` conditions of `filter`.
    fn conditions(self, filter: &AttachmentFilter) -> Vec<(&'static str, &str)> {
        let mut conditions = Vec::new();
        if let Some(resource_id) = &filter.resource_id {
            conditions.push((self.resource_column, resource_id.as_str()));
        }
        for (target_type, id) in [
            ("agent", &filter.agent_id),
            ("mcp", &filter.mcp_id),
            ("hook", &filter.hook_id),
        ] {
            if let Some(id) = id {
                conditions.push(("target_type", target_type));
                conditions.push(("target_id", id.as_str()));
            }
        }
        conditions
    }

    /// Returns the ids of rows that attach `resource_id`.
    pub(crate) async fn ids_by_resource(
        self,
        connection: &mut AnyConnection,
        resource_id: &str,
    ) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT id FROM {} WHERE {} = $1 ORDER BY id",
            self.table, self.resource_column
        );
        let rows = sqlx::query(&sql)
            .bind(resource_id)
            .fetch_all(&mut *connection)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// Returns whether `target` already has `resource_id` attached.
    pub(crate) async fn exists(
        self,
        connection: &mut AnyConnection,
        resource_id: &str,
        target: &Target,
    ) -> Result<bool> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE {} = $1 AND target_type = $2 AND target_id = $3",
            self.table, self.resource_column
        );
        let row = sqlx::query(&sql)
            .bind(resource_id)
            .bind(target.type_name())
            .bind(target.id())
            .fetch_optional(&mut *connection)
            .await?;
        Ok(row.is_some())
    }
}

pub(crate) async fn list_volumes(
    connection: &mut AnyConnection,
    filter: &AttachmentFilter,
    page: &Page,
) -> Result<(Vec<VolumeAttachmentRecord>, String)> {
    let select = SELECT_VOLUMES;
    let key = |record: &VolumeAttachmentRecord| cursor(record.created_at, &record.id);
    let conditions = VOLUMES.conditions(filter);
    select_page(connection, select, &conditions, page, volume_from_row, key).await
}

pub(crate) async fn list_image_pulls(
    connection: &mut AnyConnection,
    filter: &AttachmentFilter,
    page: &Page,
) -> Result<(Vec<ImagePullSecretAttachmentRecord>, String)> {
    let key = |record: &ImagePullSecretAttachmentRecord| cursor(record.created_at, &record.id);
    let conditions = IMAGE_PULL_SECRETS.conditions(filter);
    select_page(
        connection,
        SELECT_IMAGE_PULLS,
        &conditions,
        page,
        image_pull_from_row,
        key,
    )
    .await
}

pub(crate) async fn volumes_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<VolumeAttachmentRecord>> {
    select_all(
        connection,
        SELECT_VOLUMES,
        "agent_id",
        agent_id,
        volume_from_row,
    )
    .await
}

pub(crate) async fn image_pulls_of_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
) -> Result<Vec<ImagePullSecretAttachmentRecord>> {
    select_all(
        connection,
        SELECT_IMAGE_PULLS,
        "agent_id",
        agent_id,
        image_pull_from_row,
    )
    .await
}

/// Returns the volume attachments of `volume_id` with the agent of each.
pub(crate) async fn volume_attachments_of(
    connection: &mut AnyConnection,
    volume_id: &str,
) -> Result<Vec<VolumeAttachmentRecord>> {
    select_all(
        connection,
        SELECT_VOLUMES,
        "volume_id",
        volume_id,
        volume_from_row,
    )
    .await
}

/// Returns the id of a volume other than `volume_id`, attached to
/// `target`, whose mount path is `mount_path`.
pub(crate) async fn mount_path_user(
    connection: &mut AnyConnection,
    target: &Target,
    mount_path: &str,
    volume_id: &str,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT volume_id FROM volume_attachments \
         WHERE target_type = $1 AND target_id = $2 AND mount_path = $3 AND volume_id <> $4",
    )
    .bind(target.type_name())
    .bind(target.id())
    .bind(mount_path)
    .bind(volume_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.map(|row| row.try_get("volume_id")).transpose()?)
}
