//! MCP server operations. Reads need `can_read_config` and writes
//! `can_edit_config` on the owning agent.

use agyn_core::id::{new_id, parse_id};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::CreateKey;
use crate::model::{McpChanges, McpRecord, McpTransport, NewMcp, Target};
use crate::store::{self, mcps};
use crate::{Agents, no_fields, on_unique_violation, validate};

const CREATE_SCOPE: &str = "agents.CreateMcp";

fn name_taken(name: &str, agent_id: &str) -> Error {
    Error::already_exists(format!(
        "MCP server name {name:?} is already used by agent {agent_id}; choose another name"
    ))
}

impl Agents {
    /// CreateMcp. The name is unique per agent and immutable.
    pub async fn create_mcp(&self, caller: &Caller, input: &NewMcp) -> Result<McpRecord> {
        let caller_id = caller.identity_id()?;
        let agent_id = parse_id("agent_id", &input.agent_id)?;
        let name = validate::mcp_name(&input.name)?;
        let description = validate::description(&input.description)?;
        let command =
            validate::required_text("command", &input.command, validate::COMMAND_MAX_CHARS)?;
        let http_path = validate::http_path(
            input
                .http_path
                .as_deref()
                .unwrap_or(validate::HTTP_PATH_DEFAULT),
        )?;
        validate::resources("resources", &input.resources)?;
        let tool_timeout_ms = validate::tool_timeout(
            input
                .tool_timeout_ms
                .unwrap_or(validate::TOOL_TIMEOUT_DEFAULT_MS),
        )?;
        let transport = input.transport.unwrap_or(McpTransport::Http);
        let resources_text = store::resources_json(&input.resources);
        let timeout_text = tool_timeout_ms.to_string();
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[
                &agent_id,
                name,
                description,
                &input.image,
                command,
                transport.as_str(),
                http_path,
                &resources_text,
                &timeout_text,
            ],
        )?;
        let agent = self.target_agent(&Target::Agent(agent_id.clone())).await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return mcps::by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("mcp", &id));
        }
        let now = now_micros();
        let mcp = McpRecord {
            id: new_id(),
            agent_id: agent_id.clone(),
            name: name.to_string(),
            description: description.to_string(),
            image: input.image.clone(),
            command: command.to_string(),
            transport,
            http_path: http_path.to_string(),
            resources: input.resources.clone(),
            tool_timeout_ms,
            created_at: now,
            updated_at: now,
        };
        on_unique_violation(mcps::insert(&mut tx, &mcp).await, || {
            name_taken(name, &agent_id)
        })?;
        key.record(&mut tx, &mcp.id).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(mcp_id = %mcp.id, agent_id = %mcp.agent_id, "MCP server created");
        Ok(mcp)
    }

    pub async fn get_mcp(&self, caller: &Caller, id: &str) -> Result<McpRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let mcp = self.mcp_or_not_found(&id).await?;
        self.authorize_config_read(caller_id, &mcp.agent_id).await?;
        Ok(mcp)
    }

    pub async fn list_mcps(
        &self,
        caller: &Caller,
        agent_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<McpRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let (agent_id, page) = self
            .agent_list_page(
                caller_id,
                "agynio.api.agents.v1.ListMcps",
                agent_id,
                page_size,
                page_token,
            )
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        mcps::list(&mut connection, &agent_id, &page).await
    }

    pub async fn update_mcp(
        &self,
        caller: &Caller,
        id: &str,
        changes: &McpChanges,
    ) -> Result<McpRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.description.is_none()
            && changes.image.is_none()
            && changes.command.is_none()
            && changes.transport.is_none()
            && changes.http_path.is_none()
            && changes.resources.is_none()
            && changes.tool_timeout_ms.is_none()
        {
            return Err(no_fields());
        }
        if let Some(description) = &changes.description {
            validate::description(description)?;
        }
        if let Some(command) = &changes.command {
            validate::required_text("command", command, validate::COMMAND_MAX_CHARS)?;
        }
        if let Some(http_path) = &changes.http_path {
            validate::http_path(http_path)?;
        }
        if let Some(resources) = &changes.resources {
            validate::resources("resources", resources)?;
        }
        if let Some(timeout) = changes.tool_timeout_ms {
            validate::tool_timeout(timeout)?;
        }
        let current = self.mcp_or_not_found(&id).await?;
        let agent = self
            .target_agent(&Target::Agent(current.agent_id.clone()))
            .await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        let mut mcp = mcps::by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("mcp", &id))?;
        if let Some(description) = &changes.description {
            mcp.description = description.clone();
        }
        if let Some(image) = &changes.image {
            mcp.image = image.clone();
        }
        if let Some(command) = &changes.command {
            mcp.command = command.clone();
        }
        if let Some(transport) = changes.transport {
            mcp.transport = transport;
        }
        if let Some(http_path) = &changes.http_path {
            mcp.http_path = http_path.clone();
        }
        if let Some(resources) = &changes.resources {
            mcp.resources = resources.clone();
        }
        if let Some(timeout) = changes.tool_timeout_ms {
            mcp.tool_timeout_ms = timeout;
        }
        mcp.updated_at = now_micros().max(mcp.updated_at);
        mcps::update(&mut tx, &mcp).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(mcp_id = %mcp.id, agent_id = %mcp.agent_id, "MCP server updated");
        Ok(mcp)
    }

    /// DeleteMcp, with the envs, init scripts and attachments of the MCP
    /// server.
    pub async fn delete_mcp(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let mcp = self.mcp_or_not_found(&id).await?;
        let agent = self
            .target_agent(&Target::Agent(mcp.agent_id.clone()))
            .await?;
        self.authorize_config_write(caller_id, &agent).await?;
        self.delete_container(&agent, "agent_mcps", &Target::Mcp(id.clone()))
            .await?;
        tracing::info!(mcp_id = %id, agent_id = %mcp.agent_id, "MCP server deleted");
        Ok(())
    }

    async fn mcp_or_not_found(&self, id: &str) -> Result<McpRecord> {
        let mut connection = self.db.pool().acquire().await?;
        mcps::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("mcp", id))
    }
}
