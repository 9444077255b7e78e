//! Runners: the registry of runners, the workload records of agent start
//! attempts and the volumes provisioned for threads.
//!
//! The service is a passive registry. The orchestrator writes workload and
//! volume records from what runners report, and the service never commands
//! a runner, except to relay a container's log stream to a client
//! ([`RunnerConnector`]).
//!
//! [`Runners`] contains the logic and storage, and [`service`] serves it as
//! the internal `RunnersService` and the public `RunnersGateway`.
//! [`RunnersCleaner`] deletes an organization's records during the
//! organization purge.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod activity;
mod cleanup;
mod enroll;
mod events;
mod liveness;
mod logs;
pub mod model;
mod names;
mod runner;
pub mod service;
mod store;
mod token;
mod validate;
mod volume;
mod workload;

use std::sync::Arc;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::events::{EventSink, NoEvents};
use agyn_core::id::parse_id;
use agyn_core::{Caller, Error, Result};
use agyn_orgs::{OrgState, Organizations};
use agyn_pki::Pki;
use agyn_store::Db;
use agyn_users::rate_limit::RateLimiter;

pub use cleanup::RunnersCleaner;
pub use liveness::{LIVENESS_INTERVAL, Liveness};
pub use logs::{LOG_KEEPALIVE, LogChunkStream, RunnerConnector};
pub use model::*;

/// EnrollRunner calls allowed per minute from one client address.
const ENROLL_CALLS_PER_MINUTE: u32 = 10;

/// Runners, workloads and provisioned volumes over one database.
#[derive(Clone)]
pub struct Runners {
    db: Db,
    orgs: Organizations,
    authorizer: Authorizer,
    pki: Pki,
    events: Arc<dyn EventSink>,
    connector: Option<Arc<dyn RunnerConnector>>,
    enroll_limiter: Arc<RateLimiter>,
}

impl Runners {
    /// Builds the service. `orgs` provides the organization states that
    /// writes check, and `pki` issues and revokes runner certificates and
    /// revokes workload certificates.
    pub fn new(db: Db, orgs: Organizations, pki: Pki) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            events: Arc::new(NoEvents),
            connector: None,
            enroll_limiter: Arc::new(RateLimiter::per_minute(ENROLL_CALLS_PER_MINUTE)),
            db,
            orgs,
            pki,
        }
    }

    /// Publishes `workload.updated` and `volume.updated` to `events`.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// Dials runners through `connector` for StreamWorkloadLogs. Without
    /// one, log streams fail with `unavailable`.
    pub fn with_connector(mut self, connector: Arc<dyn RunnerConnector>) -> Self {
        self.connector = Some(connector);
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Returns a client of `runner` through the connector; `unavailable`
    /// when none is configured or the runner cannot be reached.
    pub(crate) fn connect(&self, runner: &RunnerRecord) -> Result<Arc<dyn agyn_runner::Runner>> {
        self.connector
            .as_ref()
            .ok_or_else(|| Error::unavailable("no runner connector is configured on this server"))?
            .connect(runner)
    }

    /// Returns whether identity `caller_id` is a cluster admin.
    async fn is_cluster_admin(&self, caller_id: &str) -> Result<bool> {
        self.authorizer
            .check(&ObjectRef::identity(caller_id), "admin", &cluster_object())
            .await
    }

    /// Checks that organization `org_id` exists and is not being deleted.
    async fn require_active_org(&self, org_id: &str) -> Result<()> {
        match self.orgs.organization_state(org_id).await? {
            OrgState::Active => Ok(()),
            OrgState::Deleting => Err(org_deleting(org_id)),
        }
    }

    /// Authorizes a runner write (register, update, delete). An
    /// organization runner gives `not_found` for an unknown organization,
    /// then `permission_denied` without `can_manage`, then
    /// `failed_precondition` while the organization is being deleted. A
    /// cluster runner needs cluster admin. Component callers skip the
    /// relationship checks.
    async fn authorize_runner_write(&self, caller: &Caller, org_id: Option<&str>) -> Result<()> {
        let Caller::Identity { identity_id, .. } = caller else {
            return match org_id {
                Some(org_id) => self.require_active_org(org_id).await,
                None => Ok(()),
            };
        };
        match org_id {
            Some(org_id) => {
                let state = self.orgs.organization_state(org_id).await?;
                self.require(identity_id, "can_manage", &agyn_orgs::org_object(org_id))
                    .await?;
                match state {
                    OrgState::Active => Ok(()),
                    OrgState::Deleting => Err(org_deleting(org_id)),
                }
            }
            None => {
                if self.is_cluster_admin(identity_id).await? {
                    Ok(())
                } else {
                    Err(agyn_authz::missing_permission("admin", &cluster_object()))
                }
            }
        }
    }

    /// Authorizes a runner read: `can_read` on the organization of an
    /// organization runner. Any caller may read a cluster runner.
    async fn authorize_runner_read(&self, caller: &Caller, runner: &RunnerRecord) -> Result<()> {
        match (caller, &runner.organization_id) {
            (Caller::Identity { identity_id, .. }, Some(org_id)) => {
                self.require(identity_id, "can_read", &agyn_orgs::org_object(org_id))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Requires `permission` on organization `org_id` for a list of it:
    /// `not_found` for an unknown organization, then `permission_denied`.
    /// Component callers only need the organization to exist.
    async fn authorize_org_list(
        &self,
        caller: &Caller,
        org_id: &str,
        permission: &str,
    ) -> Result<()> {
        self.orgs.organization_state(org_id).await?;
        match caller {
            Caller::Identity { identity_id, .. } => {
                self.require(identity_id, permission, &agyn_orgs::org_object(org_id))
                    .await
            }
            Caller::Component(_) => Ok(()),
        }
    }

    /// Requires `can_read` on `thread:<thread_id>`.
    async fn authorize_thread_read(&self, caller: &Caller, thread_id: &str) -> Result<()> {
        match caller {
            Caller::Identity { identity_id, .. } => {
                self.require(identity_id, "can_read", &thread_object(thread_id))
                    .await
            }
            Caller::Component(_) => Ok(()),
        }
    }

    /// Authorizes a read of a workload or volume: `permission` on its
    /// organization, or `can_read` on its thread, or, when `agent_id` is
    /// set, the caller is that agent. Component callers may read any.
    async fn authorize_record_read(
        &self,
        caller: &Caller,
        permission: &str,
        org_id: &str,
        thread_id: &str,
        agent_id: Option<&str>,
    ) -> Result<()> {
        let Caller::Identity { identity_id, .. } = caller else {
            return Ok(());
        };
        if agent_id == Some(identity_id.as_str()) {
            return Ok(());
        }
        let user = ObjectRef::identity(identity_id);
        let org = agyn_orgs::org_object(org_id);
        if self.authorizer.check(&user, permission, &org).await? {
            return Ok(());
        }
        if self
            .authorizer
            .check(&user, "can_read", &thread_object(thread_id))
            .await?
        {
            return Ok(());
        }
        Err(agyn_authz::missing_permission(permission, &org))
    }

    async fn require(&self, caller_id: &str, permission: &str, object: &ObjectRef) -> Result<()> {
        self.authorizer
            .require(&ObjectRef::identity(caller_id), permission, object)
            .await
    }
}

fn cluster_object() -> ObjectRef {
    ObjectRef::new("cluster", "global")
}

fn thread_object(thread_id: &str) -> ObjectRef {
    ObjectRef::new("thread", thread_id)
}

fn org_deleting(org_id: &str) -> Error {
    Error::failed_precondition(format!("organization {org_id} is being deleted"))
        .with_reason("ORGANIZATION_DELETING")
}

/// Returns the name of a component caller in `allowed`. Identities and
/// other components get `permission_denied`, whatever the listener let
/// through.
fn require_component(caller: &Caller, method: &str, allowed: &[&str]) -> Result<&'static str> {
    match caller {
        Caller::Component(name) if allowed.contains(name) => Ok(name),
        Caller::Component(name) => Err(Error::permission_denied(format!(
            "permission denied: component {name} may not call {method}"
        ))),
        Caller::Identity { .. } => Err(Error::permission_denied(format!(
            "permission denied: {method} is only for platform components"
        ))),
    }
}

/// Parses an optional organization id, treating "" as absent.
pub(crate) fn optional_org(organization_id: Option<&str>) -> Result<Option<String>> {
    match organization_id {
        None | Some("") => Ok(None),
        Some(id) => parse_id("organization_id", id).map(Some),
    }
}

/// Rejects an update request without any field set.
fn no_fields() -> Error {
    Error::invalid_argument("no fields to update")
}
