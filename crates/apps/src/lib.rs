//! Apps: app identities, their installations in organizations and the app
//! proxy.
//!
//! An app is an external service with its own identity (type `app`),
//! owned by one organization. Installing it into an organization makes the
//! app a member there and grants the permissions it declared, as relations
//! on the organization written in the same transaction as the
//! installation. The app authenticates with a client certificate that
//! EnrollApp issues in exchange for its service token.
//!
//! [`Apps`] contains the logic and storage, [`service`] serves it as the
//! internal `AppsService` and the public `AppsGateway`, [`AppProxy`] builds
//! the `POST /apps/{installation_slug}/{method}` route, and [`AppsCleaner`]
//! removes an organization's apps and installations during the
//! organization purge.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod app;
mod cache;
mod cleanup;
mod enroll;
mod installation;
pub mod model;
mod proxy;
pub mod service;
mod store;
mod validate;

use std::sync::Arc;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::id::parse_id;
use agyn_core::{Caller, Error, Result};
use agyn_orgs::{OrgState, Organizations};
use agyn_pki::Pki;
use agyn_store::Db;
use agyn_users::rate_limit::RateLimiter;

pub use cleanup::AppsCleaner;
pub use model::*;
pub use proxy::AppProxy;

use crate::cache::InstallationCache;

/// EnrollApp calls allowed per minute from one client address.
const ENROLL_CALLS_PER_MINUTE: u32 = 10;

/// Apps and installations over one database.
#[derive(Clone)]
pub struct Apps {
    db: Db,
    orgs: Organizations,
    authorizer: Authorizer,
    pki: Pki,
    enroll_limiter: Arc<RateLimiter>,
    installations: Arc<InstallationCache>,
}

impl Apps {
    /// Builds the service. `orgs` provides the organization states that
    /// writes check, and `pki` issues and revokes app certificates.
    pub fn new(db: Db, orgs: Organizations, pki: Pki) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            enroll_limiter: Arc::new(RateLimiter::per_minute(ENROLL_CALLS_PER_MINUTE)),
            installations: Arc::new(InstallationCache::default()),
            db,
            orgs,
            pki,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Requires `permission` on organization `org_id` for an identity
    /// caller: `not_found` for an unknown organization, then
    /// `permission_denied`. Component callers only need the organization
    /// to exist. Returns the organization's state.
    async fn authorize_org(
        &self,
        caller: &Caller,
        org_id: &str,
        permission: &str,
    ) -> Result<OrgState> {
        let state = self.orgs.organization_state(org_id).await?;
        if let Caller::Identity { identity_id, .. } = caller {
            self.authorizer
                .require(
                    &ObjectRef::identity(identity_id),
                    permission,
                    &agyn_orgs::org_object(org_id),
                )
                .await?;
        }
        Ok(state)
    }
}

/// Returns whether the caller is the identity of app `app_id`.
fn is_app(caller: &Caller, app_id: &str) -> bool {
    matches!(caller, Caller::Identity { identity_id, .. } if identity_id == app_id)
}

/// Fails with `failed_precondition` while the organization is being
/// deleted.
fn require_active(org_id: &str, state: OrgState) -> Result<()> {
    match state {
        OrgState::Active => Ok(()),
        OrgState::Deleting => Err(Error::failed_precondition(format!(
            "organization {org_id} is being deleted"
        ))
        .with_reason("ORGANIZATION_DELETING")),
    }
}

/// Lets only the platform components in `allowed` call an internal-only
/// method. Identities get `permission_denied` even where the listener let
/// them through.
fn require_component(caller: &Caller, method: &str, allowed: &[&str]) -> Result<()> {
    let permitted = matches!(caller, Caller::Component(name) if allowed.contains(name));
    if permitted {
        return Ok(());
    }
    Err(Error::permission_denied(format!(
        "permission denied: only the {} component may call {method}",
        allowed.join(" or ")
    )))
}

/// Parses an optional id, treating "" as absent.
fn optional_id(field: &str, value: Option<&str>) -> Result<Option<String>> {
    match value {
        None | Some("") => Ok(None),
        Some(id) => parse_id(field, id).map(Some),
    }
}

/// Returns the key that scopes a caller's request keys and page tokens.
fn caller_key(caller: &Caller) -> String {
    match caller {
        Caller::Identity { identity_id, .. } => identity_id.clone(),
        Caller::Component(name) => format!("component:{name}"),
    }
}

fn no_fields() -> Error {
    Error::invalid_argument("no fields to update")
}
