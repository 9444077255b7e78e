//! Image pull secret operations. Each states its authorization rule
//! first.

use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::{self, CreateKey};
use crate::model::{ImagePullSecretChanges, ImagePullSecretRecord, NewImagePullSecret};
use crate::references::{Referrer, check_failed, referenced};
use crate::secret::{CheckedSource, ensure_provider_in_org};
use crate::store::{self, IMAGE_PULL_SECRETS, SourceWrite, image_pull};
use crate::validate::PASSWORD_MAX_BYTES;
use crate::{
    Secrets, WRITE_ATTEMPTS, commit, is_write_race, no_fields, seal, validate, write_conflict,
};

const CREATE_SCOPE: &str = "secrets.CreateImagePullSecret";

enum Created {
    New(ImagePullSecretRecord),
    Replayed(String),
}

impl Secrets {
    /// CreateImagePullSecret: `can_manage` on the organization, which must
    /// be active. A remote password's provider must belong to the same
    /// organization and is not contacted. A repeat with the same
    /// `request_id` returns the first image pull secret.
    pub async fn create_image_pull_secret(
        &self,
        caller: &Caller,
        input: &NewImagePullSecret,
    ) -> Result<ImagePullSecretRecord> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let description = validate::description(&input.description)?;
        let registry = validate::registry(&input.registry)?;
        let username = validate::username(&input.username)?;
        let source = CheckedSource::check(input.source.as_ref(), PASSWORD_MAX_BYTES)?;
        keys::validate(&input.request_id)?;
        self.authorize_write(caller_id, &org_id).await?;

        let mut parts = vec![org_id.as_str(), description, registry, username];
        parts.extend(source.fingerprint_parts());
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &parts,
            source.value(),
        );
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            let created = async {
                if let Some(id) = key.replayed(&mut tx, &self.key).await? {
                    return Ok(Created::Replayed(id));
                }
                ensure_provider_in_org(&mut tx, &source, &org_id).await?;
                let now = now_micros();
                let record = ImagePullSecretRecord {
                    id: new_id(),
                    organization_id: org_id.clone(),
                    description: description.to_string(),
                    registry: registry.to_string(),
                    username: username.to_string(),
                    storage: source.storage(),
                    created_at: now,
                    updated_at: now,
                };
                let sealed_password = source
                    .value()
                    .map(|value| seal::PASSWORD.seal(&self.key, &record.id, value));
                image_pull::insert(&mut tx, &record, sealed_password.as_deref()).await?;
                key.record(&mut tx, &self.key, &record.id).await?;
                Ok(Created::New(record))
            }
            .await;
            let created = match created {
                Ok(created) => created,
                Err(error) if is_write_race(&error) => continue,
                Err(error) => return Err(error),
            };
            if !commit(tx).await? {
                continue;
            }
            return match created {
                Created::Replayed(id) => self.image_pull_secret_or_not_found(&id).await,
                Created::New(record) => {
                    tracing::info!(
                        image_pull_secret_id = %record.id,
                        organization_id = %record.organization_id,
                        registry = %record.registry,
                        storage = store::storage_name(&record.storage),
                        "Image pull secret created"
                    );
                    Ok(record)
                }
            };
        }
        Err(write_conflict())
    }

    /// GetImagePullSecret: `can_read` on its organization.
    pub async fn get_image_pull_secret(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ImagePullSecretRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let record = self.image_pull_secret_or_not_found(&id).await?;
        self.authorize_read(caller_id, &record.organization_id)
            .await?;
        Ok(record)
    }

    /// ListImagePullSecrets: `can_read` on the organization. Ordered by
    /// `(created_at, id)`.
    pub async fn list_image_pull_secrets(
        &self,
        caller: &Caller,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ImagePullSecretRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let fingerprint = Fingerprint::new("agynio.api.secrets.v1.ListImagePullSecrets")
            .with(caller_id)
            .with(&org_id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.authorize_list(caller_id, &org_id).await?;
        let mut connection = self.db.pool().acquire().await?;
        image_pull::list(&mut connection, &org_id, &page).await
    }

    /// UpdateImagePullSecret: `can_manage` on its organization, which must
    /// be active. `value` makes the password LOCAL and clears its
    /// reference, and `remote` makes it REMOTE and deletes the stored
    /// password.
    pub async fn update_image_pull_secret(
        &self,
        caller: &Caller,
        id: &str,
        changes: &ImagePullSecretChanges,
    ) -> Result<ImagePullSecretRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.description.is_none()
            && changes.registry.is_none()
            && changes.username.is_none()
            && changes.value.is_none()
            && changes.remote.is_none()
        {
            return Err(no_fields());
        }
        let description = changes
            .description
            .as_deref()
            .map(validate::description)
            .transpose()?;
        let registry = changes
            .registry
            .as_deref()
            .map(validate::registry)
            .transpose()?;
        let username = changes
            .username
            .as_deref()
            .map(validate::username)
            .transpose()?;
        let source = CheckedSource::check_update(
            changes.value.as_ref(),
            changes.remote.as_ref(),
            PASSWORD_MAX_BYTES,
        )?;
        let current = self.image_pull_secret_or_not_found(&id).await?;
        self.authorize_write(caller_id, &current.organization_id)
            .await?;

        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            let updated = async {
                let mut record = image_pull::by_id(&mut tx, &id)
                    .await?
                    .ok_or_else(|| Error::not_found("image pull secret", &id))?;
                if let Some(description) = description {
                    record.description = description.to_string();
                }
                if let Some(registry) = registry {
                    record.registry = registry.to_string();
                }
                if let Some(username) = username {
                    record.username = username.to_string();
                }
                let sealed_password;
                let write = match &source {
                    None => SourceWrite::Keep,
                    Some(source) => {
                        ensure_provider_in_org(&mut tx, source, &record.organization_id).await?;
                        record.storage = source.storage();
                        match source {
                            CheckedSource::Value(value) => {
                                sealed_password = seal::PASSWORD.seal(&self.key, &id, value);
                                SourceWrite::Local(&sealed_password)
                            }
                            CheckedSource::Remote(remote) => SourceWrite::Remote(remote),
                        }
                    }
                };
                record.updated_at = now_micros().max(record.updated_at);
                image_pull::update(&mut tx, &record, write).await?;
                Ok(record)
            }
            .await;
            let record = match updated {
                Ok(record) => record,
                Err(error) if is_write_race(&error) => continue,
                Err(error) => return Err(error),
            };
            if !commit(tx).await? {
                continue;
            }
            tracing::info!(
                image_pull_secret_id = %record.id,
                organization_id = %record.organization_id,
                storage = store::storage_name(&record.storage),
                "Image pull secret updated"
            );
            return Ok(record);
        }
        Err(write_conflict())
    }

    /// DeleteImagePullSecret: `can_manage` on its organization, which must
    /// be active. Fails with `failed_precondition` (reason `REFERENCED`)
    /// while agents attach it, and with `unavailable` when the attachments
    /// cannot be checked.
    pub async fn delete_image_pull_secret(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let current = self.image_pull_secret_or_not_found(&id).await?;
        self.authorize_write(caller_id, &current.organization_id)
            .await?;
        if let Some(references) = &self.references {
            let attachments = references
                .image_pull_secret_references(&id)
                .await
                .map_err(|error| check_failed("image pull secret", &id, &error))?;
            if !attachments.is_empty() {
                let referrers: Vec<Referrer> = attachments
                    .into_iter()
                    .map(|attachment_id| Referrer {
                        kind: "attachment",
                        id: attachment_id,
                    })
                    .collect();
                return Err(referenced("image pull secret", &referrers));
            }
        }
        let mut tx = self.db.begin_write().await?;
        let existed = IMAGE_PULL_SECRETS.delete(&mut tx, &id).await?;
        tx.commit().await?;
        if !existed {
            return Err(Error::not_found("image pull secret", &id));
        }
        tracing::info!(
            image_pull_secret_id = %id,
            organization_id = %current.organization_id,
            "Image pull secret deleted"
        );
        Ok(())
    }

    pub(crate) async fn image_pull_secret_or_not_found(
        &self,
        id: &str,
    ) -> Result<ImagePullSecretRecord> {
        let mut connection = self.db.pool().acquire().await?;
        image_pull::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("image pull secret", id))
    }
}
