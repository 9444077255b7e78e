//! Organizations: the tenants that own every other resource, the
//! memberships that give users access to them, and the cascade that
//! deletes an organization with everything it owns.
//!
//! [`Organizations`] contains the logic and storage; [`service`] serves it as
//! the internal `OrganizationsService` and the public
//! `OrganizationsGateway`.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

pub mod ops;
pub mod purge;
pub mod service;
pub mod slug;
mod store;

use std::sync::Arc;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::{Caller, Error, Result};
use agyn_store::Db;

pub use purge::{DELETION_STEPS, ResourceCleaner};
pub use store::{MembershipRecord, OrgRecord, OrgState, Role, Status};

/// Organizations and memberships over one database.
#[derive(Clone)]
pub struct Organizations {
    db: Db,
    authorizer: Authorizer,
    purge: Arc<purge::Purger>,
    events: Arc<dyn agyn_core::events::EventSink>,
}

impl Organizations {
    /// `cleaners` delete what each service owns when an organization is
    /// deleted; a step without a cleaner has nothing to delete.
    pub fn new(db: Db, cleaners: Vec<Arc<dyn ResourceCleaner>>) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            purge: Arc::new(purge::Purger::new(cleaners)),
            events: Arc::new(agyn_core::events::NoEvents),
            db,
        }
    }

    /// Publishes `membership.updated` through `events`.
    pub fn with_events(mut self, events: Arc<dyn agyn_core::events::EventSink>) -> Self {
        self.events = events;
        self
    }

    /// Publishes `membership.updated` to the member's `identity:` room.
    fn membership_updated(&self, membership: &MembershipRecord, deleted: bool) {
        self.events.publish(
            "organizations",
            "membership.updated",
            format!("identity:{}", membership.identity_id),
            serde_json::json!({
                "membership_id": membership.id,
                "organization_id": membership.organization_id,
                "status": membership.status.as_str(),
                "role": membership.role.relation(),
                "deleted": deleted,
            }),
        );
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Returns whether `identity` is a cluster admin.
    async fn is_cluster_admin(&self, identity: &ObjectRef) -> Result<bool> {
        self.authorizer.check(identity, "admin", &cluster()).await
    }
}

/// `organization:<id>`.
pub fn org_object(id: &str) -> ObjectRef {
    ObjectRef::new("organization", id)
}

fn cluster() -> ObjectRef {
    ObjectRef::new("cluster", "global")
}

/// Returns the caller as an `identity:<id>` reference. Components act for no
/// identity and cannot call identity-scoped methods.
fn identity_of(caller: &Caller) -> Result<ObjectRef> {
    Ok(ObjectRef::identity(caller.identity_id()?))
}

fn deleting(org_id: &str) -> Error {
    Error::failed_precondition(format!("organization {org_id} is being deleted"))
        .with_reason("ORGANIZATION_DELETING")
}
