//! Agent roles: `identity:<i> owner|maintainer|participant agent:<a>`
//! tuples, at most one per identity and agent. There is no table.

use agyn_authz::{ObjectRef, Tuple, TupleFilter};
use agyn_core::id::parse_id;
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::{Caller, Error, Result};

use crate::model::{AgentRole, RoleAssignment};
use crate::store::agents;
use crate::{Agents, agent_object};

/// Maximum number of role assignments on one agent.
pub const MAX_ROLE_ASSIGNMENTS: usize = 1_000;

impl Agents {
    /// SetAgentRole: `can_manage_roles` on the agent; the organization
    /// must be active. The identity must be a member of the agent's
    /// organization. Replaces any role the identity holds on the agent in
    /// one atomic write.
    pub async fn set_agent_role(
        &self,
        caller: &Caller,
        agent_id: &str,
        identity_id: &str,
        role: Option<AgentRole>,
    ) -> Result<RoleAssignment> {
        let caller_id = caller.identity_id()?;
        let agent_id = parse_id("agent_id", agent_id)?;
        let identity_id = parse_id("identity_id", identity_id)?;
        let role = role.ok_or_else(|| {
            Error::invalid_field("role", "must be OWNER, MAINTAINER or PARTICIPANT")
        })?;
        let agent = self.agent_or_not_found(&agent_id).await?;
        let object = agent_object(&agent_id);
        self.require(caller_id, "can_manage_roles", &object).await?;
        self.require_active(&agent.organization_id).await?;
        let identity = ObjectRef::identity(&identity_id);
        let member = self
            .authorizer
            .check(
                &identity,
                "member",
                &agyn_orgs::org_object(&agent.organization_id),
            )
            .await?;
        if !member {
            return Err(Error::failed_precondition(
                "identity is not a member of the agent's organization",
            ));
        }
        let assignments = self.role_assignments(&agent_id).await?;
        let holds_role = assignments
            .iter()
            .any(|assignment| assignment.identity_id == identity_id);
        if !holds_role && assignments.len() >= MAX_ROLE_ASSIGNMENTS {
            return Err(Error::failed_precondition(format!(
                "agent {agent_id} already has {MAX_ROLE_ASSIGNMENTS} role assignments; remove one first"
            )));
        }

        let write = Tuple::new(identity.clone(), role.relation(), object.clone());
        let deletes: Vec<Tuple> = AgentRole::ALL
            .into_iter()
            .filter(|other| *other != role)
            .map(|other| Tuple::new(identity.clone(), other.relation(), object.clone()))
            .collect();
        let mut tx = self.db.begin_write().await?;
        self.authorizer
            .write_in(&mut tx, &[write], &deletes)
            .await?;
        tx.commit().await?;
        tracing::info!(
            agent_id = %agent_id,
            identity_id = %identity_id,
            role = role.relation(),
            "Agent role set"
        );
        Ok(RoleAssignment {
            identity_kind: agyn_users::identity::kind_of(&self.db, &identity_id).await?,
            agent_id,
            identity_id,
            role,
        })
    }

    /// RemoveAgentRole: `can_manage_roles` on the agent. Succeeds when the
    /// identity has no role.
    pub async fn remove_agent_role(
        &self,
        caller: &Caller,
        agent_id: &str,
        identity_id: &str,
    ) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let agent_id = parse_id("agent_id", agent_id)?;
        let identity_id = parse_id("identity_id", identity_id)?;
        let agent = self.agent_or_not_found(&agent_id).await?;
        let object = agent_object(&agent_id);
        self.require(caller_id, "can_manage_roles", &object).await?;
        self.require_active(&agent.organization_id).await?;
        let identity = ObjectRef::identity(&identity_id);
        let deletes: Vec<Tuple> = AgentRole::ALL
            .into_iter()
            .map(|role| Tuple::new(identity.clone(), role.relation(), object.clone()))
            .collect();
        self.authorizer.write(&[], &deletes).await?;
        tracing::info!(agent_id = %agent_id, identity_id = %identity_id, "Agent role removed");
        Ok(())
    }

    /// ListAgentRoles: `can_manage_roles` on the agent. Every direct role
    /// tuple, unpaginated; organization owners and cluster admins do not
    /// appear.
    pub async fn list_agent_roles(
        &self,
        caller: &Caller,
        agent_id: &str,
    ) -> Result<Vec<RoleAssignment>> {
        let caller_id = caller.identity_id()?;
        let agent_id = parse_id("agent_id", agent_id)?;
        self.agent_or_not_found(&agent_id).await?;
        self.require(caller_id, "can_manage_roles", &agent_object(&agent_id))
            .await?;
        self.role_assignments(&agent_id).await
    }

    /// ListMyAgentRoles: `can_read` on the organization. The caller's role
    /// tuples on agents of that organization, unpaginated.
    pub async fn list_my_agent_roles(
        &self,
        caller: &Caller,
        organization_id: &str,
    ) -> Result<Vec<RoleAssignment>> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        self.authorize_org_read(caller_id, &org_id).await?;
        let identity = ObjectRef::identity(caller_id);
        let identity_kind = agyn_users::identity::kind_of(&self.db, caller_id).await?;
        let mut assignments = Vec::new();
        for role in AgentRole::ALL {
            let ids = self
                .authorizer
                .list_objects("agent", role.relation(), &identity)
                .await?;
            let mut connection = self.db.pool().acquire().await?;
            for agent_id in agents::ids_in_org(&mut connection, &org_id, &ids).await? {
                assignments.push(RoleAssignment {
                    agent_id,
                    identity_id: caller_id.to_string(),
                    identity_kind,
                    role,
                });
            }
        }
        assignments.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(assignments)
    }

    /// Returns every role tuple on agent `agent_id`, ordered by role and
    /// identity.
    async fn role_assignments(&self, agent_id: &str) -> Result<Vec<RoleAssignment>> {
        let mut assignments = Vec::new();
        for role in AgentRole::ALL {
            let filter = TupleFilter {
                object_type: "agent".into(),
                object_id: Some(agent_id.to_string()),
                relation: Some(role.relation().to_string()),
                user: None,
            };
            let mut token = String::new();
            loop {
                let fingerprint = Fingerprint::new("agents.role_assignments");
                let page = Page::parse(0, &token, SortOrder::Ascending, fingerprint)?;
                let (tuples, next) = self.authorizer.read(&filter, &page).await?;
                for tuple in tuples {
                    assignments.push(RoleAssignment {
                        agent_id: agent_id.to_string(),
                        identity_kind: agyn_users::identity::kind_of(&self.db, &tuple.user.id)
                            .await?,
                        identity_id: tuple.user.id,
                        role,
                    });
                }
                if next.is_empty() {
                    break;
                }
                token = next;
            }
        }
        Ok(assignments)
    }
}
