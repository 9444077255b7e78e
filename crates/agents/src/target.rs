//! Loading the agent that owns a target or sub-resource, the permission
//! checks on it, and the parent bump that ends every configuration write.

use agyn_core::id::parse_id;
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Error, Result};
use agyn_store::sqlx::{self, AnyConnection};

use crate::model::{AgentRecord, Target};
use crate::store::{self, agents, hooks, mcps};
use crate::{Agents, agent_object};

/// Checks the ids of a target and returns it with ids normalized.
pub(crate) fn parse_target(target: Option<&Target>) -> Result<Target> {
    let target = target.ok_or_else(|| {
        Error::invalid_argument("exactly one of agent_id, mcp_id or hook_id is required")
    })?;
    let id = parse_id(target.field(), target.id())?;
    Ok(match target {
        Target::Agent(_) => Target::Agent(id),
        Target::Mcp(_) => Target::Mcp(id),
        Target::Hook(_) => Target::Hook(id),
    })
}

/// Returns the id of the agent that owns `target`, or `not_found`.
pub(crate) async fn owner_of(connection: &mut AnyConnection, target: &Target) -> Result<String> {
    let owner = match target {
        Target::Agent(id) => agents::by_id(connection, id).await?.map(|agent| agent.id),
        Target::Mcp(id) => mcps::by_id(connection, id).await?.map(|mcp| mcp.agent_id),
        Target::Hook(id) => hooks::by_id(connection, id)
            .await?
            .map(|hook| hook.agent_id),
    };
    owner.ok_or_else(|| Error::not_found(target.type_name(), target.id()))
}

impl Agents {
    /// Loads the agent that owns `target`: `not_found` when the target
    /// does not exist.
    pub(crate) async fn target_agent(&self, target: &Target) -> Result<AgentRecord> {
        let mut connection = self.db.pool().acquire().await?;
        let agent_id = owner_of(&mut connection, target).await?;
        agents::by_id(&mut connection, &agent_id)
            .await?
            .ok_or_else(|| Error::not_found(target.type_name(), target.id()))
    }

    /// Authorizes a configuration write on `agent`: `can_edit_config` on
    /// it, then an active organization.
    pub(crate) async fn authorize_config_write(
        &self,
        caller_id: &str,
        agent: &AgentRecord,
    ) -> Result<()> {
        self.require(caller_id, "can_edit_config", &agent_object(&agent.id))
            .await?;
        self.require_active(&agent.organization_id).await
    }

    /// Authorizes a configuration read on agent `agent_id`:
    /// `can_read_config`, which the agent's own identity also has.
    pub(crate) async fn authorize_config_read(
        &self,
        caller_id: &str,
        agent_id: &str,
    ) -> Result<()> {
        self.require(caller_id, "can_read_config", &agent_object(agent_id))
            .await
    }

    /// Checks and authorizes a list of agent `agent_id`'s sub-resources
    /// (`list` names the method): `not_found` for an unknown agent, then
    /// `can_read_config`. Returns the normalized agent id and the page.
    pub(crate) async fn agent_list_page(
        &self,
        caller_id: &str,
        list: &str,
        agent_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(String, Page)> {
        let agent_id = parse_id("agent_id", agent_id)?;
        let fingerprint = Fingerprint::new(list).with(caller_id).with(&agent_id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.agent_or_not_found(&agent_id).await?;
        self.authorize_config_read(caller_id, &agent_id).await?;
        Ok((agent_id, page))
    }

    /// Checks and authorizes a list of one target's envs or init scripts
    /// (`list` names the method): exactly one target, `not_found` for an
    /// unknown target, then `can_read_config` on its agent. Returns the
    /// normalized target and the page.
    pub(crate) async fn target_list_page(
        &self,
        caller_id: &str,
        list: &str,
        target: Option<&Target>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Target, Page)> {
        let target = parse_target(target)?;
        let fingerprint = Fingerprint::new(list)
            .with(caller_id)
            .with(target.type_name())
            .with(target.id());
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let agent = self.target_agent(&target).await?;
        self.authorize_config_read(caller_id, &agent.id).await?;
        Ok((target, page))
    }

    /// Deletes the MCP server or hook `container` (a row of `table`) of
    /// `agent` with its envs, init scripts and attachments, and bumps the
    /// agent.
    pub(crate) async fn delete_container(
        &self,
        agent: &AgentRecord,
        table: &str,
        container: &Target,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        if !store::delete_by_id(&mut tx, table, container.id()).await? {
            return Err(Error::not_found(container.type_name(), container.id()));
        }
        for items in store::TARGET_TABLES {
            store::delete_by_target(&mut tx, items, container).await?;
        }
        self.commit_with_bump(tx, &[(agent.id.clone(), agent.organization_id.clone())])
            .await
    }

    /// Sets `updated_at = now` on each agent of `agents` (id and
    /// organization), commits `tx`, and then publishes `agent.updated`
    /// for each.
    pub(crate) async fn commit_with_bump(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        agents: &[(String, String)],
    ) -> Result<()> {
        let now = now_micros();
        let mut bumped = Vec::with_capacity(agents.len());
        for (agent_id, org_id) in agents {
            let updated_at = store::bump_agent(&mut tx, agent_id, now).await?;
            bumped.push((agent_id, org_id, updated_at));
        }
        tx.commit().await?;
        for (agent_id, org_id, updated_at) in bumped {
            self.agent_updated(agent_id, org_id, updated_at, false);
        }
        Ok(())
    }
}
