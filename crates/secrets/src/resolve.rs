//! The internal-only methods: value resolution for the orchestrator,
//! existence checks for the agents service and the organization cascade.
//! Each rejects identity callers, and the internal listener decides which
//! components may call it.

use agyn_core::id::parse_id;
use agyn_core::{Caller, Error, Result, Secret};
use agyn_store::sqlx::AnyConnection;

use crate::model::{ImagePullCredentials, RemoteRef, Storage};
use crate::seal::{self, Column};
use crate::store::{IMAGE_PULL_SECRETS, SECRETS, StoredSource, image_pull, providers, secrets};
use crate::{Secrets, cleanup, require_component};

impl Secrets {
    /// ResolveSecret (internal): the plaintext value of secret `id`. A
    /// remote value is read from its provider now, never from a cache.
    pub async fn resolve_secret(&self, caller: &Caller, id: &str) -> Result<Secret<String>> {
        let component = require_component(caller, "ResolveSecret")?;
        let id = parse_id("id", id)?;
        let mut connection = self.db.pool().acquire().await?;
        let source = secrets::source(&mut connection, &id)
            .await?
            .ok_or_else(|| Error::not_found("secret", &id))?;
        let value = self
            .resolve_source(connection, seal::SECRET_VALUE, &id, source)
            .await?;
        tracing::debug!(secret_id = %id, component, "Secret resolved");
        Ok(value)
    }

    /// ResolveImagePullSecret (internal): the registry credentials of
    /// image pull secret `id`, its password resolved like a secret value.
    pub async fn resolve_image_pull_secret(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ImagePullCredentials> {
        let component = require_component(caller, "ResolveImagePullSecret")?;
        let id = parse_id("id", id)?;
        let mut connection = self.db.pool().acquire().await?;
        let (registry, username, source) = image_pull::credentials(&mut connection, &id)
            .await?
            .ok_or_else(|| Error::not_found("image pull secret", &id))?;
        let password = self
            .resolve_source(connection, seal::PASSWORD, &id, source)
            .await?;
        tracing::debug!(image_pull_secret_id = %id, component, "Image pull secret resolved");
        Ok(ImagePullCredentials {
            registry,
            username,
            password,
        })
    }

    /// SecretExists (internal): the organization of secret `id`, or `None`
    /// when it does not exist.
    pub async fn secret_exists(&self, caller: &Caller, id: &str) -> Result<Option<String>> {
        require_component(caller, "SecretExists")?;
        let id = parse_id("id", id)?;
        let mut connection = self.db.pool().acquire().await?;
        SECRETS.organization_of(&mut connection, &id).await
    }

    /// ImagePullSecretExists (internal): the organization of image pull
    /// secret `id`, or `None` when it does not exist.
    pub async fn image_pull_secret_exists(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<String>> {
        require_component(caller, "ImagePullSecretExists")?;
        let id = parse_id("id", id)?;
        let mut connection = self.db.pool().acquire().await?;
        IMAGE_PULL_SECRETS
            .organization_of(&mut connection, &id)
            .await
    }

    /// DeleteOrganizationResources (internal): deletes the organization's
    /// image pull secrets, secrets and secret providers, without reference
    /// checks because the agents step of the cascade has already run.
    /// Idempotent.
    pub async fn delete_organization_resources(
        &self,
        caller: &Caller,
        organization_id: &str,
    ) -> Result<()> {
        require_component(caller, "DeleteOrganizationResources")?;
        let org_id = parse_id("organization_id", organization_id)?;
        cleanup::delete_organization(&self.db, &org_id).await
    }

    /// Opens a local value, or reads a remote one from its provider. The
    /// connection is released before any request to a provider.
    async fn resolve_source(
        &self,
        mut connection: agyn_store::sqlx::pool::PoolConnection<agyn_store::sqlx::Any>,
        column: Column,
        id: &str,
        source: StoredSource,
    ) -> Result<Secret<String>> {
        match source.storage {
            Storage::Local => {
                let sealed = source.sealed.ok_or_else(|| {
                    Error::internal(
                        format!("{}.{} of row {id} is missing", column.table, column.column),
                        "a local row without its sealed value",
                    )
                })?;
                column.open(&self.key, id, &sealed)
            }
            Storage::Remote(remote) => {
                let (address, token) = self.provider_access(&mut connection, &remote).await?;
                drop(connection);
                self.vault
                    .read(
                        &remote.secret_provider_id,
                        &address,
                        &token,
                        &remote.remote_name,
                    )
                    .await
            }
        }
    }

    /// Returns the Vault address and the opened token of a reference's
    /// provider.
    async fn provider_access(
        &self,
        connection: &mut AnyConnection,
        remote: &RemoteRef,
    ) -> Result<(String, Secret<String>)> {
        let provider_id = &remote.secret_provider_id;
        let (provider, sealed_token) = providers::with_token(connection, provider_id)
            .await?
            .ok_or_else(|| Error::not_found("secret provider", provider_id))?;
        let token = seal::VAULT_TOKEN.open(&self.key, provider_id, &sealed_token)?;
        Ok((provider.vault_address, token))
    }
}
