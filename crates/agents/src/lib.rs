//! Agents: the desired configuration the orchestrator assembles workloads
//! from. An agent has MCP servers, skills, hooks, environment variables,
//! init scripts, volume and image pull secret attachments, and per-agent
//! roles, which are stored only as authorization tuples. Volume
//! definitions belong to the organization.
//!
//! Every write of a sub-resource moves the owning agent's `updated_at`
//! in the same transaction and publishes `agent.updated` after commit, so
//! the orchestrator picks up each configuration change.
//!
//! [`Agents`] contains the logic and storage, and [`service`] serves it as
//! the internal `AgentsService` and the public `AgentsGateway`.
//! [`AgentsCleaner`] deletes an organization's agents and volumes during
//! the organization purge, and [`AgentSecretReferences`] returns to the
//! secrets service the envs and attachments that use a secret.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod agent;
mod attachments;
mod cleanup;
mod env;
mod hook;
mod init_script;
mod internal;
mod keys;
mod mcp;
mod model;
mod references;
mod roles;
pub mod service;
mod skill;
mod store;
mod target;
mod validate;
mod volume;

use std::sync::Arc;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::events::EventSink;
use agyn_core::time::rfc3339;
use agyn_core::{Caller, Error, Result};
use agyn_orgs::{OrgState, Organizations};
use agyn_secrets::Secrets;
use agyn_store::Db;

pub use cleanup::AgentsCleaner;
pub use model::{
    AgentBundle, AgentChanges, AgentRecord, AgentRole, AgentView, AttachmentFilter, Availability,
    EnvChanges, EnvRecord, EnvSource, HookChanges, HookEvent, HookRecord,
    ImagePullSecretAttachmentRecord, InitScriptChanges, InitScriptRecord, McpChanges, McpRecord,
    McpTransport, NewAgent, NewEnv, NewHook, NewInitScript, NewMcp, NewSkill, NewVolume, Resources,
    RoleAssignment, SkillChanges, SkillRecord, Target, VolumeAttachmentRecord, VolumeChanges,
    VolumeRecord,
};
pub use references::AgentSecretReferences;

/// Name of this service as an event source and as a component caller.
const COMPONENT: &str = "agents";

/// Agents and their configuration over one database.
#[derive(Clone)]
pub struct Agents {
    db: Db,
    orgs: Organizations,
    authorizer: Authorizer,
    secrets: Secrets,
    events: Arc<dyn EventSink>,
}

impl Agents {
    /// Builds the service. `orgs` provides the organization states that
    /// writes check, and `secrets` checks that envs and attachments name
    /// secrets of the agent's organization.
    pub fn new(db: Db, orgs: Organizations, secrets: Secrets) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            events: Arc::new(agyn_core::events::NoEvents),
            db,
            orgs,
            secrets,
        }
    }

    /// Publishes `agent.updated` through `events`.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Publishes `agent.updated` to the `agent:<id>` room.
    fn agent_updated(&self, agent_id: &str, organization_id: &str, updated_at: i64, deleted: bool) {
        publish_agent_updated(
            self.events.as_ref(),
            agent_id,
            organization_id,
            updated_at,
            deleted,
        );
    }

    fn deleter(&self) -> cleanup::AgentDeleter {
        cleanup::AgentDeleter {
            db: self.db.clone(),
            authorizer: self.authorizer.clone(),
            events: self.events.clone(),
        }
    }

    /// Requires `permission` on `object` for the identity `caller_id`.
    async fn require(&self, caller_id: &str, permission: &str, object: &ObjectRef) -> Result<()> {
        self.authorizer
            .require(&ObjectRef::identity(caller_id), permission, object)
            .await
    }

    /// Returns whether the identity `caller_id` has `permission` on
    /// `object`.
    async fn allowed(&self, caller_id: &str, permission: &str, object: &ObjectRef) -> Result<bool> {
        self.authorizer
            .check(&ObjectRef::identity(caller_id), permission, object)
            .await
    }

    /// Fails with `failed_precondition` (reason `ORGANIZATION_DELETING`)
    /// unless the organization is active, and with `not_found` when it
    /// does not exist.
    async fn require_active(&self, org_id: &str) -> Result<()> {
        match self.orgs.organization_state(org_id).await? {
            OrgState::Active => Ok(()),
            OrgState::Deleting => Err(Error::failed_precondition(format!(
                "organization {org_id} is being deleted"
            ))
            .with_reason("ORGANIZATION_DELETING")),
        }
    }

    /// Authorizes a write to the organization `org_id` itself: `not_found`
    /// for an unknown organization, then `permission_denied` without
    /// `can_manage`, then `failed_precondition` while it is deleted.
    async fn authorize_org_write(&self, caller_id: &str, org_id: &str) -> Result<()> {
        self.orgs.organization_state(org_id).await?;
        self.require(caller_id, "can_manage", &agyn_orgs::org_object(org_id))
            .await?;
        self.require_active(org_id).await
    }

    /// Authorizes a read of the organization `org_id`: `not_found` for an
    /// unknown organization, then `permission_denied` without `can_read`.
    async fn authorize_org_read(&self, caller_id: &str, org_id: &str) -> Result<()> {
        self.orgs.organization_state(org_id).await?;
        self.require(caller_id, "can_read", &agyn_orgs::org_object(org_id))
            .await
    }
}

/// Publishes `agent.updated` (payload `agent_id`, `organization_id`,
/// `updated_at` in RFC 3339, `deleted`) to the `agent:<id>` room.
fn publish_agent_updated(
    events: &dyn EventSink,
    agent_id: &str,
    organization_id: &str,
    updated_at: i64,
    deleted: bool,
) {
    events.publish(
        COMPONENT,
        "agent.updated",
        format!("agent:{agent_id}"),
        serde_json::json!({
            "agent_id": agent_id,
            "organization_id": organization_id,
            "updated_at": rfc3339(updated_at),
            "deleted": deleted,
        }),
    );
}

/// `agent:<id>`.
pub fn agent_object(id: &str) -> ObjectRef {
    ObjectRef::new("agent", id)
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

/// Rejects an update request without any field set.
fn no_fields() -> Error {
    Error::invalid_argument("no fields to update")
}

/// Maps a unique violation of `result` to `error`, leaving other results
/// unchanged.
fn on_unique_violation<T>(result: Result<T>, error: impl FnOnce() -> Error) -> Result<T> {
    match result {
        Err(failure) if failure.is_unique_violation() => Err(error()),
        other => other,
    }
}
