//! Volume attachments and image pull secret attachments. Writes need
//! `can_edit_config` and reads `can_read_config` on the agent that owns
//! the target. A list filtered only by the volume or the image pull secret
//! needs `can_manage` on its organization.

use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::CreateKey;
use crate::model::{
    AgentRecord, AttachmentFilter, ImagePullSecretAttachmentRecord, Target, VolumeAttachmentRecord,
};
use crate::store::{self, attachments, volumes};
use crate::target::parse_target;
use crate::volume::mount_path_used;
use crate::{Agents, COMPONENT};

const CREATE_VOLUME_SCOPE: &str = "agents.CreateVolumeAttachment";
const CREATE_IMAGE_PULL_SCOPE: &str = "agents.CreateImagePullSecretAttachment";

fn other_organization(field: &str) -> Error {
    Error::invalid_field(field, "belongs to another organization")
}

fn volume_attached(volume_id: &str, target: &Target) -> Error {
    Error::already_exists(format!(
        "volume {volume_id} is already attached to {} {}",
        target.type_name(),
        target.id()
    ))
}

/// Builds the `already_exists` error of a concurrent write that used the
/// mount path on the target first.
pub(crate) fn mount_path_taken(mount_path: &str, target: &Target) -> Error {
    Error::already_exists(format!(
        "mount_path {mount_path:?} is already used on {} {}",
        target.type_name(),
        target.id()
    ))
}

fn image_pull_secret_attached(secret_id: &str, target: &Target) -> Error {
    Error::already_exists(format!(
        "image pull secret {secret_id} is already attached to {} {}",
        target.type_name(),
        target.id()
    ))
}

/// Checks the ids of a list filter and requires at least one.
fn checked_filter(filter: &AttachmentFilter, resource_field: &str) -> Result<AttachmentFilter> {
    let parse = |field: &str, value: &Option<String>| {
        value.as_deref().map(|id| parse_id(field, id)).transpose()
    };
    let checked = AttachmentFilter {
        resource_id: parse(resource_field, &filter.resource_id)?,
        agent_id: parse("agent_id", &filter.agent_id)?,
        mcp_id: parse("mcp_id", &filter.mcp_id)?,
        hook_id: parse("hook_id", &filter.hook_id)?,
    };
    if checked.resource_id.is_none()
        && checked.agent_id.is_none()
        && checked.mcp_id.is_none()
        && checked.hook_id.is_none()
    {
        return Err(Error::invalid_argument(format!(
            "at least one of {resource_field}, agent_id, mcp_id or hook_id is required"
        )));
    }
    Ok(checked)
}

fn filter_fingerprint(list: &str, caller_id: &str, filter: &AttachmentFilter) -> Fingerprint {
    [
        &filter.resource_id,
        &filter.agent_id,
        &filter.mcp_id,
        &filter.hook_id,
    ]
    .into_iter()
    .fold(
        Fingerprint::new(list).with(caller_id),
        |fingerprint, value| fingerprint.with(value.as_deref().unwrap_or("-")),
    )
}

fn filter_targets(filter: &AttachmentFilter) -> Vec<Target> {
    let mut targets = Vec::new();
    if let Some(id) = &filter.agent_id {
        targets.push(Target::Agent(id.clone()));
    }
    if let Some(id) = &filter.mcp_id {
        targets.push(Target::Mcp(id.clone()));
    }
    if let Some(id) = &filter.hook_id {
        targets.push(Target::Hook(id.clone()));
    }
    targets
}

impl Agents {
    /// Authorizes a list of attachments: `can_read_config` on the agent of
    /// every target filter, or `can_manage` on `resource_org` when the
    /// filter names no target.
    async fn authorize_attachment_list(
        &self,
        caller_id: &str,
        filter: &AttachmentFilter,
        resource_org: Option<&str>,
    ) -> Result<()> {
        let targets = filter_targets(filter);
        for target in &targets {
            let agent = self.target_agent(target).await?;
            self.authorize_config_read(caller_id, &agent.id).await?;
        }
        if targets.is_empty()
            && let Some(org_id) = resource_org
        {
            self.require(caller_id, "can_manage", &agyn_orgs::org_object(org_id))
                .await?;
        }
        Ok(())
    }

    /// Fails unless image pull secret `secret_id` exists in organization
    /// `org_id`.
    async fn require_image_pull_secret_in_org(&self, secret_id: &str, org_id: &str) -> Result<()> {
        let owner = self
            .secrets
            .image_pull_secret_exists(&Caller::Component(COMPONENT), secret_id)
            .await?;
        match owner {
            None => Err(Error::invalid_field(
                "image_pull_secret_id",
                &format!("image pull secret {secret_id} not found"),
            )),
            Some(owner) if owner != org_id => Err(other_organization("image_pull_secret_id")),
            Some(_) => Ok(()),
        }
    }

    /// CreateVolumeAttachment: mounts a volume of the agent's organization
    /// on the target. A volume is attached at most once per target, and two
    /// volumes on one target never share a mount path.
    pub async fn create_volume_attachment(
        &self,
        caller: &Caller,
        volume_id: &str,
        target: Option<&Target>,
        read_only: bool,
        request_id: &str,
    ) -> Result<VolumeAttachmentRecord> {
        let caller_id = caller.identity_id()?;
        let volume_id = parse_id("volume_id", volume_id)?;
        let target = parse_target(target)?;
        let key = CreateKey::new(
            CREATE_VOLUME_SCOPE,
            caller_id,
            request_id,
            &[
                &volume_id,
                target.type_name(),
                target.id(),
                if read_only { "1" } else { "0" },
            ],
        )?;
        let volume = self.volume_or_not_found(&volume_id).await?;
        let agent = self.target_agent(&target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        if volume.organization_id != agent.organization_id {
            return Err(other_organization("volume_id"));
        }

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return attachments::volume_by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("volume attachment", &id));
        }
        let volume = volumes::lock_by_id(&mut tx, self.db.backend(), &volume_id)
            .await?
            .ok_or_else(|| Error::not_found("volume", &volume_id))?;
        if attachments::VOLUMES
            .exists(&mut tx, &volume_id, &target)
            .await?
        {
            return Err(volume_attached(&volume_id, &target));
        }
        let user =
            attachments::mount_path_user(&mut tx, &target, &volume.mount_path, &volume_id).await?;
        if let Some(other) = user {
            return Err(mount_path_used(&volume.mount_path, &other));
        }
        let now = now_micros();
        let attachment = VolumeAttachmentRecord {
            id: new_id(),
            volume_id: volume_id.clone(),
            agent_id: agent.id.clone(),
            target: target.clone(),
            read_only,
            created_at: now,
            updated_at: now,
        };
        crate::on_unique_violation(
            attachments::insert_volume(&mut tx, &attachment, &volume.mount_path).await,
            || mount_path_taken(&volume.mount_path, &target),
        )?;
        key.record(&mut tx, &attachment.id).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(
            volume_attachment_id = %attachment.id,
            volume_id = %volume_id,
            agent_id = %attachment.agent_id,
            "Volume attached"
        );
        Ok(attachment)
    }

    pub async fn get_volume_attachment(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<VolumeAttachmentRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let attachment = self.volume_attachment_or_not_found(&id).await?;
        self.authorize_config_read(caller_id, &attachment.agent_id)
            .await?;
        Ok(attachment)
    }

    /// ListVolumeAttachments: the filters are ANDed and at least one is
    /// required; `agent_id` matches only attachments of the agent itself.
    pub async fn list_volume_attachments(
        &self,
        caller: &Caller,
        filter: &AttachmentFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<VolumeAttachmentRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let filter = checked_filter(filter, "volume_id")?;
        let fingerprint = filter_fingerprint(
            "agynio.api.agents.v1.ListVolumeAttachments",
            caller_id,
            &filter,
        );
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let volume_org = match &filter.resource_id {
            Some(volume_id) => Some(self.volume_or_not_found(volume_id).await?.organization_id),
            None => None,
        };
        self.authorize_attachment_list(caller_id, &filter, volume_org.as_deref())
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        attachments::list_volumes(&mut connection, &filter, &page).await
    }

    /// UpdateVolumeAttachment: changes only `read_only`.
    pub async fn update_volume_attachment(
        &self,
        caller: &Caller,
        id: &str,
        read_only: Option<bool>,
    ) -> Result<VolumeAttachmentRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let read_only = read_only.ok_or_else(crate::no_fields)?;
        let current = self.volume_attachment_or_not_found(&id).await?;
        let agent = self.target_agent(&current.target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        let mut tx = self.db.begin_write().await?;
        let mut attachment = attachments::volume_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("volume attachment", &id))?;
        attachment.read_only = read_only;
        attachment.updated_at = now_micros().max(attachment.updated_at);
        attachments::update_volume(&mut tx, &attachment).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(volume_attachment_id = %id, read_only, "Volume attachment updated");
        Ok(attachment)
    }

    pub async fn delete_volume_attachment(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let attachment = self.volume_attachment_or_not_found(&id).await?;
        let agent = self.target_agent(&attachment.target).await?;
        self.delete_attachment(caller_id, &agent, attachments::VOLUMES.table, &id)
            .await?;
        tracing::info!(volume_attachment_id = %id, agent_id = %agent.id, "Volume detached");
        Ok(())
    }

    /// CreateImagePullSecretAttachment: the image pull secret must be in
    /// the agent's organization and is attached at most once per target.
    pub async fn create_image_pull_secret_attachment(
        &self,
        caller: &Caller,
        image_pull_secret_id: &str,
        target: Option<&Target>,
        request_id: &str,
    ) -> Result<ImagePullSecretAttachmentRecord> {
        let caller_id = caller.identity_id()?;
        let secret_id = parse_id("image_pull_secret_id", image_pull_secret_id)?;
        let target = parse_target(target)?;
        let key = CreateKey::new(
            CREATE_IMAGE_PULL_SCOPE,
            caller_id,
            request_id,
            &[&secret_id, target.type_name(), target.id()],
        )?;
        let agent = self.target_agent(&target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        self.require_image_pull_secret_in_org(&secret_id, &agent.organization_id)
            .await?;

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return attachments::image_pull_by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("image pull secret attachment", &id));
        }
        let now = now_micros();
        let attachment = ImagePullSecretAttachmentRecord {
            id: new_id(),
            image_pull_secret_id: secret_id.clone(),
            agent_id: agent.id.clone(),
            target: target.clone(),
            created_at: now,
            updated_at: now,
        };
        crate::on_unique_violation(
            attachments::insert_image_pull(&mut tx, &attachment).await,
            || image_pull_secret_attached(&secret_id, &target),
        )?;
        key.record(&mut tx, &attachment.id).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(
            image_pull_secret_attachment_id = %attachment.id,
            image_pull_secret_id = %secret_id,
            agent_id = %attachment.agent_id,
            "Image pull secret attached"
        );
        Ok(attachment)
    }

    pub async fn get_image_pull_secret_attachment(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ImagePullSecretAttachmentRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let attachment = self.image_pull_attachment_or_not_found(&id).await?;
        self.authorize_config_read(caller_id, &attachment.agent_id)
            .await?;
        Ok(attachment)
    }

    pub async fn list_image_pull_secret_attachments(
        &self,
        caller: &Caller,
        filter: &AttachmentFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ImagePullSecretAttachmentRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let filter = checked_filter(filter, "image_pull_secret_id")?;
        let fingerprint = filter_fingerprint(
            "agynio.api.agents.v1.ListImagePullSecretAttachments",
            caller_id,
            &filter,
        );
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let secret_org = match &filter.resource_id {
            Some(secret_id) => Some(
                self.secrets
                    .image_pull_secret_exists(&Caller::Component(COMPONENT), secret_id)
                    .await?
                    .ok_or_else(|| Error::not_found("image pull secret", secret_id))?,
            ),
            None => None,
        };
        self.authorize_attachment_list(caller_id, &filter, secret_org.as_deref())
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        attachments::list_image_pulls(&mut connection, &filter, &page).await
    }

    /// UpdateImagePullSecretAttachment: swaps the image pull secret, with
    /// the checks of a create.
    pub async fn update_image_pull_secret_attachment(
        &self,
        caller: &Caller,
        id: &str,
        image_pull_secret_id: Option<&str>,
    ) -> Result<ImagePullSecretAttachmentRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let secret_id = image_pull_secret_id.ok_or_else(crate::no_fields)?;
        let secret_id = parse_id("image_pull_secret_id", secret_id)?;
        let current = self.image_pull_attachment_or_not_found(&id).await?;
        let agent = self.target_agent(&current.target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        self.require_image_pull_secret_in_org(&secret_id, &agent.organization_id)
            .await?;
        let mut tx = self.db.begin_write().await?;
        let mut attachment = attachments::image_pull_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("image pull secret attachment", &id))?;
        attachment.image_pull_secret_id = secret_id.clone();
        attachment.updated_at = now_micros().max(attachment.updated_at);
        crate::on_unique_violation(
            attachments::update_image_pull(&mut tx, &attachment).await,
            || image_pull_secret_attached(&secret_id, &attachment.target),
        )?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(
            image_pull_secret_attachment_id = %id,
            image_pull_secret_id = %secret_id,
            "Image pull secret attachment updated"
        );
        Ok(attachment)
    }

    pub async fn delete_image_pull_secret_attachment(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let attachment = self.image_pull_attachment_or_not_found(&id).await?;
        let agent = self.target_agent(&attachment.target).await?;
        self.delete_attachment(
            caller_id,
            &agent,
            attachments::IMAGE_PULL_SECRETS.table,
            &id,
        )
        .await?;
        tracing::info!(
            image_pull_secret_attachment_id = %id,
            agent_id = %agent.id,
            "Image pull secret detached"
        );
        Ok(())
    }

    /// Authorizes and deletes row `id` of an attachment `table`, bumping
    /// `agent`.
    async fn delete_attachment(
        &self,
        caller_id: &str,
        agent: &AgentRecord,
        table: &str,
        id: &str,
    ) -> Result<()> {
        self.authorize_config_write(caller_id, agent).await?;
        let mut tx = self.db.begin_write().await?;
        if !store::delete_by_id(&mut tx, table, id).await? {
            return Err(Error::not_found("attachment", id));
        }
        self.commit_with_bump(tx, &[(agent.id.clone(), agent.organization_id.clone())])
            .await
    }

    async fn volume_attachment_or_not_found(&self, id: &str) -> Result<VolumeAttachmentRecord> {
        let mut connection = self.db.pool().acquire().await?;
        attachments::volume_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("volume attachment", id))
    }

    async fn image_pull_attachment_or_not_found(
        &self,
        id: &str,
    ) -> Result<ImagePullSecretAttachmentRecord> {
        let mut connection = self.db.pool().acquire().await?;
        attachments::image_pull_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("image pull secret attachment", id))
    }
}
