//! Secrets: secret providers (external stores, so far HashiCorp Vault),
//! secrets that agent environment variables read, and image pull secrets
//! (registry credentials).
//!
//! Local values, image pull passwords and Vault tokens are sealed with the
//! master key (AES-256-GCM) before they are stored. Only the internal
//! ResolveSecret and ResolveImagePullSecret return values and passwords,
//! and no method returns a Vault token. Remote values are read from Vault
//! at each resolution and never cached.
//!
//! [`Secrets`] contains the logic and storage, and [`service`] serves it as
//! the internal `SecretsService` and the public `SecretsGateway`.
//! [`SecretsCleaner`] deletes an organization's resources during the
//! organization purge.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod cleanup;
mod image_pull;
mod keys;
mod model;
mod provider;
mod references;
mod resolve;
mod seal;
mod secret;
pub mod service;
mod store;
mod validate;
mod vault;

use std::sync::Arc;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::{Caller, Error, Result};
use agyn_orgs::{OrgState, Organizations};
use agyn_pki::MasterKey;
use agyn_store::Db;

pub use cleanup::SecretsCleaner;
pub use model::{
    ImagePullCredentials, ImagePullSecretChanges, ImagePullSecretRecord, NewImagePullSecret,
    NewSecret, NewSecretProvider, ProviderType, RemoteRef, SecretChanges, SecretProviderChanges,
    SecretProviderRecord, SecretRecord, Source, Storage, VaultSettings,
};
pub use references::SecretReferences;
pub use vault::VAULT_TIMEOUT;

/// Attempts of a write transaction that lost a race on a unique or
/// foreign key before the call fails with `unavailable`.
const WRITE_ATTEMPTS: usize = 5;

/// Secret providers, secrets and image pull secrets over one database.
#[derive(Clone)]
pub struct Secrets {
    db: Db,
    key: MasterKey,
    orgs: Organizations,
    authorizer: Authorizer,
    vault: vault::VaultClient,
    /// The lookup of references to secrets and image pull secrets (the
    /// agents service). Deletes skip the check when it is unset.
    references: Option<Arc<dyn SecretReferences>>,
}

impl Secrets {
    /// Builds the service. `key` seals stored values, and `orgs` provides
    /// the organization states that writes check.
    pub fn new(db: Db, key: MasterKey, orgs: Organizations) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            vault: vault::VaultClient::new(),
            references: None,
            db,
            key,
            orgs,
        }
    }

    /// Makes DeleteSecret and DeleteImagePullSecret check `references`
    /// first.
    pub fn with_references(mut self, references: Arc<dyn SecretReferences>) -> Self {
        self.references = Some(references);
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Authorizes a write to the organization `org_id`, in the order of
    /// every method: `not_found` for an unknown organization, then
    /// `permission_denied` without `can_manage`, then
    /// `failed_precondition` (reason `ORGANIZATION_DELETING`) while it is
    /// deleted.
    async fn authorize_write(&self, caller_id: &str, org_id: &str) -> Result<()> {
        let state = self.orgs.organization_state(org_id).await?;
        self.authorizer
            .require(
                &ObjectRef::identity(caller_id),
                "can_manage",
                &agyn_orgs::org_object(org_id),
            )
            .await?;
        match state {
            OrgState::Active => Ok(()),
            OrgState::Deleting => Err(Error::failed_precondition(format!(
                "organization {org_id} is being deleted"
            ))
            .with_reason("ORGANIZATION_DELETING")),
        }
    }

    /// Authorizes a list of the organization `org_id`: `not_found` for an
    /// unknown organization, then `permission_denied` without `can_read`.
    async fn authorize_list(&self, caller_id: &str, org_id: &str) -> Result<()> {
        self.orgs.organization_state(org_id).await?;
        self.authorize_read(caller_id, org_id).await
    }

    /// Requires `can_read` on the organization of a loaded resource.
    async fn authorize_read(&self, caller_id: &str, org_id: &str) -> Result<()> {
        self.authorizer
            .require(
                &ObjectRef::identity(caller_id),
                "can_read",
                &agyn_orgs::org_object(org_id),
            )
            .await
    }
}

/// Returns the name of a component caller. The internal-only methods
/// reject identities with `permission_denied`, whatever the listener let
/// through.
fn require_component(caller: &Caller, method: &str) -> Result<&'static str> {
    match caller {
        Caller::Component(name) => Ok(name),
        Caller::Identity { .. } => Err(Error::permission_denied(format!(
            "permission denied: {method} is only for platform components"
        ))),
    }
}

/// Returns whether `error` is a unique or foreign key violation, which
/// means that a concurrent writer committed first and the transaction
/// should run again to see its result.
fn is_write_race(error: &Error) -> bool {
    error.is_unique_violation()
        || std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<agyn_store::sqlx::Error>())
            .is_some_and(is_foreign_key_violation)
}

fn is_foreign_key_violation(error: &agyn_store::sqlx::Error) -> bool {
    match error {
        agyn_store::sqlx::Error::Database(database) => database.is_foreign_key_violation(),
        _ => false,
    }
}

/// Commits `tx`. Returns `false` when the commit lost a race on a unique
/// or foreign key, so that the caller runs the transaction again.
async fn commit(tx: agyn_store::sqlx::Transaction<'static, agyn_store::sqlx::Any>) -> Result<bool> {
    match tx.commit().await {
        Ok(()) => Ok(true),
        Err(error)
            if agyn_store::is_unique_violation(&error) || is_foreign_key_violation(&error) =>
        {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

fn write_conflict() -> Error {
    Error::unavailable("the write kept conflicting with concurrent writes; retry the call")
}

/// Builds the `already_exists` error of a name used twice in one
/// organization.
fn name_taken(resource: &str, name: &str, org_id: &str) -> Error {
    Error::already_exists(format!(
        "{resource} name {name:?} is already used in organization {org_id}; choose another name"
    ))
}

/// Rejects an update request without any field set.
fn no_fields() -> Error {
    Error::invalid_argument("no fields to update")
}
