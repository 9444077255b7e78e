//! Volume definition operations: `can_manage` on the organization for
//! writes and `can_read` for reads.

use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::CreateKey;
use crate::model::{NewVolume, VolumeAttachmentRecord, VolumeChanges, VolumeRecord};
use crate::store::{attachments, volumes};
use crate::{Agents, no_fields, on_unique_violation, validate};

const CREATE_SCOPE: &str = "agents.CreateVolume";

/// Maximum number of attachment ids named in a delete guard's message.
const MAX_LISTED_ATTACHMENTS: usize = 50;

fn name_taken(name: &str, org_id: &str) -> Error {
    Error::already_exists(format!(
        "volume name {name:?} is already used in organization {org_id}; choose another name"
    ))
}

/// Builds the `already_exists` error of two volumes with one mount path on
/// a target.
pub(crate) fn mount_path_used(mount_path: &str, volume_id: &str) -> Error {
    Error::already_exists(format!(
        "mount_path {mount_path:?} already used by volume {volume_id}"
    ))
}

/// Builds the `failed_precondition` error (reason `REFERENCED`) of a
/// volume delete blocked by the attachments `attachment_ids`, listing at
/// most 50 of them by id.
fn referenced(attachment_ids: &[String]) -> Error {
    let mut listed: Vec<String> = attachment_ids
        .iter()
        .take(MAX_LISTED_ATTACHMENTS)
        .map(|attachment_id| format!("attachment {attachment_id}"))
        .collect();
    if attachment_ids.len() > MAX_LISTED_ATTACHMENTS {
        listed.push(format!(
            "and {} more",
            attachment_ids.len() - MAX_LISTED_ATTACHMENTS
        ));
    }
    Error::failed_precondition(format!(
        "volume is referenced by {}; remove the attachments first",
        listed.join(", ")
    ))
    .with_reason("REFERENCED")
}

fn ttl(ttl_ms: i64) -> Result<i64> {
    if ttl_ms < validate::HOUR_MS {
        return Err(Error::invalid_field("ttl", "must be at least 1 h"));
    }
    Ok(ttl_ms)
}

/// Checks `size` and `ttl` against `persistent`: a persistent volume needs
/// a size quantity and may have a TTL of at least 1 h, and a scratch
/// volume has neither.
fn check_persistence(persistent: bool, size: &str, ttl_ms: Option<i64>) -> Result<()> {
    if persistent {
        if size.is_empty() {
            return Err(Error::invalid_field(
                "size",
                "is required for a persistent volume",
            ));
        }
        if validate::quantity("size", size)?.is_some_and(|bytes| bytes < 1.0) {
            return Err(Error::invalid_field(
                "size",
                &format!("{size} is below one byte; give a size such as 1Gi"),
            ));
        }
        if let Some(ttl_ms) = ttl_ms {
            ttl(ttl_ms)?;
        }
    } else {
        if !size.is_empty() {
            return Err(Error::invalid_field(
                "size",
                "must be empty for a volume that is not persistent",
            ));
        }
        if ttl_ms.is_some() {
            return Err(Error::invalid_field(
                "ttl",
                "is only allowed for a persistent volume",
            ));
        }
    }
    Ok(())
}

impl Agents {
    /// CreateVolume. The name is unique per organization.
    pub async fn create_volume(&self, caller: &Caller, input: &NewVolume) -> Result<VolumeRecord> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let name = validate::volume_name(&input.name)?;
        let description = validate::description(&input.description)?;
        let mount_path = validate::mount_path(&input.mount_path)?;
        let size = input.size.as_deref().unwrap_or_default();
        check_persistence(input.persistent, size, input.ttl_ms)?;
        let ttl_text = input.ttl_ms.map(|ttl| ttl.to_string()).unwrap_or_default();
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[
                &org_id,
                name,
                description,
                if input.persistent { "1" } else { "0" },
                mount_path,
                size,
                &ttl_text,
            ],
        )?;
        self.authorize_org_write(caller_id, &org_id).await?;

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return volumes::by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("volume", &id));
        }
        let now = now_micros();
        let volume = VolumeRecord {
            id: new_id(),
            organization_id: org_id.clone(),
            name: name.to_string(),
            description: description.to_string(),
            persistent: input.persistent,
            mount_path: mount_path.to_string(),
            size: size.to_string(),
            ttl_ms: input.ttl_ms,
            created_at: now,
            updated_at: now,
        };
        on_unique_violation(volumes::insert(&mut tx, &volume).await, || {
            name_taken(name, &org_id)
        })?;
        key.record(&mut tx, &volume.id).await?;
        tx.commit().await?;
        tracing::info!(volume_id = %volume.id, organization_id = %org_id, "Volume created");
        Ok(volume)
    }

    pub async fn get_volume(&self, caller: &Caller, id: &str) -> Result<VolumeRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let volume = self.volume_or_not_found(&id).await?;
        self.require(
            caller_id,
            "can_read",
            &agyn_orgs::org_object(&volume.organization_id),
        )
        .await?;
        Ok(volume)
    }

    pub async fn list_volumes(
        &self,
        caller: &Caller,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<VolumeRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let fingerprint = Fingerprint::new("agynio.api.agents.v1.ListVolumes")
            .with(caller_id)
            .with(&org_id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.authorize_org_read(caller_id, &org_id).await?;
        let mut connection = self.db.pool().acquire().await?;
        volumes::list(&mut connection, &org_id, &page).await
    }

    /// UpdateVolume. `persistent` is immutable. A new mount path must not
    /// collide with another volume attached to the same target. Every agent
    /// that uses the volume is bumped.
    pub async fn update_volume(
        &self,
        caller: &Caller,
        id: &str,
        changes: &VolumeChanges,
    ) -> Result<VolumeRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.name.is_none()
            && changes.description.is_none()
            && changes.mount_path.is_none()
            && changes.size.is_none()
            && changes.ttl_ms.is_none()
        {
            return Err(no_fields());
        }
        let name = changes
            .name
            .as_deref()
            .map(validate::volume_name)
            .transpose()?;
        if let Some(description) = &changes.description {
            validate::description(description)?;
        }
        let mount_path = changes
            .mount_path
            .as_deref()
            .map(validate::mount_path)
            .transpose()?;
        let current = self.volume_or_not_found(&id).await?;
        self.authorize_org_write(caller_id, &current.organization_id)
            .await?;

        let mut tx = self.db.begin_write().await?;
        let mut volume = volumes::lock_by_id(&mut tx, self.db.backend(), &id)
            .await?
            .ok_or_else(|| Error::not_found("volume", &id))?;
        if let Some(size) = &changes.size {
            volume.size = size.clone();
        }
        if let Some(ttl_ms) = changes.ttl_ms {
            volume.ttl_ms = Some(ttl_ms);
        }
        check_persistence(volume.persistent, &volume.size, volume.ttl_ms)?;
        if let Some(name) = name {
            volume.name = name.to_string();
        }
        if let Some(description) = &changes.description {
            volume.description = description.clone();
        }
        let attached = attachments::volume_attachments_of(&mut tx, &id).await?;
        if let Some(mount_path) = mount_path {
            for attachment in &attached {
                let user =
                    attachments::mount_path_user(&mut tx, &attachment.target, mount_path, &id)
                        .await?;
                if let Some(other) = user {
                    return Err(mount_path_used(mount_path, &other));
                }
            }
            volume.mount_path = mount_path.to_string();
        }
        volume.updated_at = now_micros().max(volume.updated_at);
        on_unique_violation(volumes::update(&mut tx, &volume).await, || {
            name_taken(&volume.name, &volume.organization_id)
        })?;
        on_unique_violation(
            attachments::set_mount_path(&mut tx, &id, &volume.mount_path).await,
            || {
                Error::already_exists(format!(
                    "mount_path {:?} is already used by another volume on a target of volume {id}",
                    volume.mount_path
                ))
            },
        )?;
        let bumped = agents_of(&attached, &volume.organization_id);
        self.commit_with_bump(tx, &bumped).await?;
        tracing::info!(volume_id = %volume.id, organization_id = %volume.organization_id, "Volume updated");
        Ok(volume)
    }

    /// DeleteVolume. Fails with `failed_precondition` (reason
    /// `REFERENCED`) while any attachment uses the volume.
    pub async fn delete_volume(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let volume = self.volume_or_not_found(&id).await?;
        self.authorize_org_write(caller_id, &volume.organization_id)
            .await?;
        let mut tx = self.db.begin_write().await?;
        if volumes::lock_by_id(&mut tx, self.db.backend(), &id)
            .await?
            .is_none()
        {
            return Err(Error::not_found("volume", &id));
        }
        let attachment_ids = attachments::VOLUMES.ids_by_resource(&mut tx, &id).await?;
        if !attachment_ids.is_empty() {
            return Err(referenced(&attachment_ids));
        }

        crate::store::delete_by_id(&mut tx, "volumes", &id).await?;
        tx.commit().await?;
        tracing::info!(volume_id = %id, organization_id = %volume.organization_id, "Volume deleted");
        Ok(())
    }

    pub(crate) async fn volume_or_not_found(&self, id: &str) -> Result<VolumeRecord> {
        let mut connection = self.db.pool().acquire().await?;
        volumes::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("volume", id))
    }
}

/// Returns each distinct agent (id and organization) that owns one of
/// the `attached` targets.
fn agents_of(attached: &[VolumeAttachmentRecord], org_id: &str) -> Vec<(String, String)> {
    let mut ids: Vec<String> = attached
        .iter()
        .map(|attachment| attachment.agent_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids.into_iter().map(|id| (id, org_id.to_string())).collect()
}
