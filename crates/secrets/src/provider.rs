//! Secret provider operations. Each states its authorization rule first.

use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::{self, CreateKey};
use crate::model::{NewSecretProvider, ProviderType, SecretProviderChanges, SecretProviderRecord};
use crate::references::referenced;
use crate::store::providers;
use crate::{
    Secrets, WRITE_ATTEMPTS, commit, is_write_race, name_taken, no_fields, seal, validate,
    write_conflict,
};

const CREATE_SCOPE: &str = "secrets.CreateSecretProvider";

/// Outcome of one create transaction.
enum Created {
    New(SecretProviderRecord),
    Replayed(String),
}

impl Secrets {
    /// CreateSecretProvider: `can_manage` on the organization, which must
    /// be active. The Vault server is not contacted. A repeat with the
    /// same `request_id` returns the first provider.
    pub async fn create_secret_provider(
        &self,
        caller: &Caller,
        input: &NewSecretProvider,
    ) -> Result<SecretProviderRecord> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let name = validate::provider_name(&input.name)?;
        let description = validate::description(&input.description)?;
        let provider_type = input.provider_type.ok_or_else(|| {
            Error::invalid_field(
                "provider_type",
                "must not be SECRET_PROVIDER_TYPE_UNSPECIFIED",
            )
        })?;
        let vault = match provider_type {
            ProviderType::Vault => input.vault.as_ref().ok_or_else(missing_vault_config)?,
        };
        let address = validate::vault_address(&vault.address)?;
        validate::vault_token(&vault.token)?;
        keys::validate(&input.request_id)?;
        self.authorize_write(caller_id, &org_id).await?;

        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[&org_id, name, description, provider_type.as_str(), address],
            Some(&vault.token),
        );
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            let created = async {
                if let Some(id) = key.replayed(&mut tx, &self.key).await? {
                    return Ok(Created::Replayed(id));
                }
                if providers::name_taken(&mut tx, &org_id, name, "").await? {
                    return Err(name_taken("secret provider", name, &org_id));
                }
                let now = now_micros();
                let record = SecretProviderRecord {
                    id: new_id(),
                    organization_id: org_id.clone(),
                    name: name.to_string(),
                    description: description.to_string(),
                    provider_type,
                    vault_address: address.to_string(),
                    created_at: now,
                    updated_at: now,
                };
                let sealed_token = seal::VAULT_TOKEN.seal(&self.key, &record.id, &vault.token);
                providers::insert(&mut tx, &record, &sealed_token).await?;
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
                Created::Replayed(id) => self.provider_or_not_found(&id).await,
                Created::New(record) => {
                    tracing::info!(
                        secret_provider_id = %record.id,
                        organization_id = %record.organization_id,
                        "Secret provider created"
                    );
                    Ok(record)
                }
            };
        }
        Err(write_conflict())
    }

    /// GetSecretProvider: `can_read` on the provider's organization.
    pub async fn get_secret_provider(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<SecretProviderRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let record = self.provider_or_not_found(&id).await?;
        self.authorize_read(caller_id, &record.organization_id)
            .await?;
        Ok(record)
    }

    /// ListSecretProviders: `can_read` on the organization. Ordered by
    /// `(created_at, id)`.
    pub async fn list_secret_providers(
        &self,
        caller: &Caller,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<SecretProviderRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let fingerprint = Fingerprint::new("agynio.api.secrets.v1.ListSecretProviders")
            .with(caller_id)
            .with(&org_id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.authorize_list(caller_id, &org_id).await?;
        let mut connection = self.db.pool().acquire().await?;
        providers::list(&mut connection, &org_id, &page).await
    }

    /// UpdateSecretProvider: `can_manage` on the provider's organization,
    /// which must be active. `config` replaces the address and, unless its
    /// token is empty, the token. The type cannot change.
    pub async fn update_secret_provider(
        &self,
        caller: &Caller,
        id: &str,
        changes: &SecretProviderChanges,
    ) -> Result<SecretProviderRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.name.is_none() && changes.description.is_none() && changes.vault.is_none() {
            return Err(no_fields());
        }
        let name = changes
            .name
            .as_deref()
            .map(validate::provider_name)
            .transpose()?;
        let description = changes
            .description
            .as_deref()
            .map(validate::description)
            .transpose()?;
        let current = self.provider_or_not_found(&id).await?;
        let vault = match &changes.vault {
            None => None,
            Some(vault) => match current.provider_type {
                ProviderType::Vault => Some(vault.as_ref().ok_or_else(missing_vault_config)?),
            },
        };
        let address = vault
            .map(|vault| validate::vault_address(&vault.address))
            .transpose()?;
        // An empty token keeps the stored one.
        let token = vault
            .map(|vault| &vault.token)
            .filter(|token| !token.expose().is_empty());
        if let Some(token) = token {
            validate::vault_token(token)?;
        }
        self.authorize_write(caller_id, &current.organization_id)
            .await?;

        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            let updated = async {
                let mut record = providers::by_id(&mut tx, &id)
                    .await?
                    .ok_or_else(|| Error::not_found("secret provider", &id))?;
                if let Some(name) = name {
                    if providers::name_taken(&mut tx, &record.organization_id, name, &id).await? {
                        return Err(name_taken("secret provider", name, &record.organization_id));
                    }
                    record.name = name.to_string();
                }
                if let Some(description) = description {
                    record.description = description.to_string();
                }
                if let Some(address) = address {
                    record.vault_address = address.to_string();
                }
                record.updated_at = now_micros().max(record.updated_at);
                let sealed_token = token.map(|token| seal::VAULT_TOKEN.seal(&self.key, &id, token));
                providers::update(&mut tx, &record, sealed_token.as_deref()).await?;
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
                secret_provider_id = %record.id,
                organization_id = %record.organization_id,
                token_replaced = token.is_some(),
                "Secret provider updated"
            );
            return Ok(record);
        }
        Err(write_conflict())
    }

    /// DeleteSecretProvider: `can_manage` on the provider's organization,
    /// which must be active. Fails with `failed_precondition` (reason
    /// `REFERENCED`) while secrets or image pull secrets read from it.
    pub async fn delete_secret_provider(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let current = self.provider_or_not_found(&id).await?;
        self.authorize_write(caller_id, &current.organization_id)
            .await?;
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            let deleted = async {
                if providers::by_id(&mut tx, &id).await?.is_none() {
                    return Err(Error::not_found("secret provider", &id));
                }
                let referrers = providers::referrers(&mut tx, &id).await?;
                if !referrers.is_empty() {
                    return Err(referenced("secret provider", &referrers));
                }
                providers::delete(&mut tx, &id).await
            }
            .await;
            match deleted {
                Ok(()) => {}
                // A secret created meanwhile references the provider, so
                // check again.
                Err(error) if is_write_race(&error) => continue,
                Err(error) => return Err(error),
            }
            if !commit(tx).await? {
                continue;
            }
            tracing::info!(
                secret_provider_id = %id,
                organization_id = %current.organization_id,
                "Secret provider deleted"
            );
            return Ok(());
        }
        Err(write_conflict())
    }

    pub(crate) async fn provider_or_not_found(&self, id: &str) -> Result<SecretProviderRecord> {
        let mut connection = self.db.pool().acquire().await?;
        providers::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("secret provider", id))
    }
}

fn missing_vault_config() -> Error {
    Error::invalid_field("config.vault", "is required for SECRET_PROVIDER_TYPE_VAULT")
}
