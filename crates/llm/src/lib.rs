//! LLM providers and models. A provider is an upstream endpoint with a
//! credential, or a script from which the platform generates replies
//! without a network call. A model names one upstream model behind a
//! provider, and agents reference models by id.
//!
//! Provider tokens and custom header values are sealed with the master key
//! (AES-256-GCM) before they are stored, and no read method returns them.
//! [`Llm::resolve_model`] opens them for the LLM proxy, which builds the
//! upstream request with [`upstream_url`] and [`Credential::headers`].
//!
//! [`Llm`] contains the logic and storage; [`service`] serves it as the
//! internal `LLMService` and the public `LLMGateway`. [`LlmCleaner`]
//! deletes an organization's models and providers during the organization
//! purge.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod models;
mod providers;
mod resolve;
mod sealing;
pub mod service;
mod store;
mod test_model;
mod upstream;
mod validate;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::id::parse_id;
use agyn_core::{Error, Result};
use agyn_orgs::{OrgState, Organizations, ResourceCleaner};
use agyn_pki::MasterKey;
use agyn_store::request_keys as keys;
use agyn_store::{Db, sqlx};

pub use models::{ModelUpdate, NewModel};
pub use providers::{NewProvider, ProviderUpdate};
pub use resolve::{Credential, ResolvedModel};
pub use store::{ModelRecord, ProviderRecord};
pub use test_model::{TEST_PROMPT, TestOutput};
pub use upstream::{Operation, upstream_url};
pub use validate::{
    ENDPOINT_MAX_CHARS, MAX_HEADERS, MODEL_NAME_MAX_CHARS, PROVIDER_NAME_MAX_CHARS,
    REMOTE_NAME_MAX_CHARS, SECRET_MAX_BYTES,
};

/// Timeout of the one upstream request that TestModel sends.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Providers and models over one database, with the master key that seals
/// their credentials.
#[derive(Clone)]
pub struct Llm {
    db: Db,
    key: MasterKey,
    orgs: Organizations,
    authorizer: Authorizer,
    http: reqwest::Client,
    test_timeout: Duration,
}

impl Llm {
    /// `orgs` provides organization states for the write checks.
    pub fn new(db: Db, key: MasterKey, orgs: Organizations) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            http: test_model::http_client(),
            test_timeout: TEST_TIMEOUT,
            db,
            key,
            orgs,
        }
    }

    /// Replaces the TestModel timeout of [`TEST_TIMEOUT`], so that tests
    /// of a hanging provider finish quickly.
    pub fn with_test_timeout(mut self, timeout: Duration) -> Self {
        self.test_timeout = timeout;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// DeleteOrganizationResources (internal): deletes every model of the
    /// organization with its tuples, then every provider and the usage
    /// records of LLM proxy calls. Idempotent.
    pub async fn delete_organization_resources(&self, organization_id: &str) -> Result<()> {
        let org_id = parse_id("organization_id", organization_id)?;
        delete_organization_llm(&self.db, &org_id).await
    }

    /// Succeeds when the organization exists and is not being deleted:
    /// `not_found` for an unknown one, and `failed_precondition` (reason
    /// `ORGANIZATION_DELETING`) while it is deleted.
    async fn ensure_organization_active(&self, organization_id: &str) -> Result<()> {
        match self.orgs.organization_state(organization_id).await? {
            OrgState::Active => Ok(()),
            OrgState::Deleting => Err(Error::failed_precondition(format!(
                "organization {organization_id} is being deleted"
            ))
            .with_reason("ORGANIZATION_DELETING")),
        }
    }

    /// Succeeds when the calling identity has `permission` on `object`.
    async fn require(&self, caller_id: &str, permission: &str, object: &ObjectRef) -> Result<()> {
        self.authorizer
            .require(&ObjectRef::identity(caller_id), permission, object)
            .await
    }
}

/// Deletes an organization's models and providers for the organization
/// purge. It needs only the database, so it can be built before
/// [`agyn_orgs::Organizations`].
pub struct LlmCleaner {
    db: Db,
}

impl LlmCleaner {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl ResourceCleaner for LlmCleaner {
    fn step(&self) -> &'static str {
        "llm"
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(delete_organization_llm(&self.db, organization_id))
    }
}

/// Deletes the organization's models with their tuples, a batch per
/// transaction, and then its providers.
async fn delete_organization_llm(db: &Db, org_id: &str) -> Result<()> {
    let authorizer = Authorizer::new(db.clone());
    let mut models = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let ids = store::model_ids_of_organization(&mut tx, org_id, store::DELETE_BATCH).await?;
        for id in &ids {
            authorizer
                .delete_object_in(&mut tx, &model_object(id), None)
                .await?;
            store::delete_model(&mut tx, id).await?;
        }
        tx.commit().await?;
        models += ids.len();
        if ids.len() < store::DELETE_BATCH as usize {
            break;
        }
    }
    let mut tx = db.begin_write().await?;
    let providers = store::delete_providers_of_organization(&mut tx, org_id).await?;
    // The LLM proxy records one usage row per call.
    sqlx::query("DELETE FROM llm_usage WHERE organization_id = $1")
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(
        organization_id = %org_id,
        models,
        providers,
        "Organization LLM providers and models deleted"
    );
    Ok(())
}

/// `organization:<id>`.
fn org_object(id: &str) -> ObjectRef {
    ObjectRef::new("organization", id)
}

/// `model:<id>`.
fn model_object(id: &str) -> ObjectRef {
    ObjectRef::new("model", id)
}

/// Builds the `unavailable` error of a write transaction that kept losing
/// races on a unique key.
fn write_conflict() -> Error {
    Error::unavailable("the write kept conflicting with concurrent writes; retry the call")
}

/// Attempts of a write transaction that lost a race on a unique key before
/// the call fails with `unavailable`.
const WRITE_ATTEMPTS: usize = 5;
