//! Hook operations. Reads need `can_read_config` and writes
//! `can_edit_config` on the owning agent.

use agyn_core::id::{new_id, parse_id};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::CreateKey;
use crate::model::{HookChanges, HookRecord, NewHook, Target};
use crate::store::{self, hooks};
use crate::{Agents, no_fields, validate};

const CREATE_SCOPE: &str = "agents.CreateHook";

fn function(value: &str) -> Result<&str> {
    validate::required_text("function", value, validate::COMMAND_MAX_CHARS)
}

impl Agents {
    /// CreateHook. The event is required.
    pub async fn create_hook(&self, caller: &Caller, input: &NewHook) -> Result<HookRecord> {
        let caller_id = caller.identity_id()?;
        let agent_id = parse_id("agent_id", &input.agent_id)?;
        let event = input.event.ok_or_else(|| {
            Error::invalid_field(
                "event",
                "must be WORKLOAD_START, TURN_START, TURN_END or WORKLOAD_STOP",
            )
        })?;
        let function = function(&input.function)?;
        let description = validate::description(&input.description)?;
        validate::resources("resources", &input.resources)?;
        let timeout_ms = validate::hook_timeout(
            input
                .timeout_ms
                .unwrap_or(validate::HOOK_TIMEOUT_DEFAULT_MS),
        )?;
        let resources_text = store::resources_json(&input.resources);
        let timeout_text = timeout_ms.to_string();
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[
                &agent_id,
                event.as_str(),
                function,
                &input.image,
                &resources_text,
                description,
                &timeout_text,
            ],
        )?;
        let agent = self.target_agent(&Target::Agent(agent_id.clone())).await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return hooks::by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("hook", &id));
        }
        let now = now_micros();
        let hook = HookRecord {
            id: new_id(),
            agent_id,
            event,
            function: function.to_string(),
            image: input.image.clone(),
            resources: input.resources.clone(),
            description: description.to_string(),
            timeout_ms,
            created_at: now,
            updated_at: now,
        };
        hooks::insert(&mut tx, &hook).await?;
        key.record(&mut tx, &hook.id).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(hook_id = %hook.id, agent_id = %hook.agent_id, "Hook created");
        Ok(hook)
    }

    pub async fn get_hook(&self, caller: &Caller, id: &str) -> Result<HookRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let hook = self.hook_or_not_found(&id).await?;
        self.authorize_config_read(caller_id, &hook.agent_id)
            .await?;
        Ok(hook)
    }

    pub async fn list_hooks(
        &self,
        caller: &Caller,
        agent_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<HookRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let (agent_id, page) = self
            .agent_list_page(
                caller_id,
                "agynio.api.agents.v1.ListHooks",
                agent_id,
                page_size,
                page_token,
            )
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        hooks::list(&mut connection, &agent_id, &page).await
    }

    pub async fn update_hook(
        &self,
        caller: &Caller,
        id: &str,
        changes: &HookChanges,
    ) -> Result<HookRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.event.is_none()
            && changes.function.is_none()
            && changes.image.is_none()
            && changes.resources.is_none()
            && changes.description.is_none()
            && changes.timeout_ms.is_none()
        {
            return Err(no_fields());
        }
        if let Some(value) = &changes.function {
            function(value)?;
        }
        if let Some(description) = &changes.description {
            validate::description(description)?;
        }
        if let Some(resources) = &changes.resources {
            validate::resources("resources", resources)?;
        }
        if let Some(timeout) = changes.timeout_ms {
            validate::hook_timeout(timeout)?;
        }
        let current = self.hook_or_not_found(&id).await?;
        let agent = self
            .target_agent(&Target::Agent(current.agent_id.clone()))
            .await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        let mut hook = hooks::by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("hook", &id))?;
        if let Some(event) = changes.event {
            hook.event = event;
        }
        if let Some(value) = &changes.function {
            hook.function = value.clone();
        }
        if let Some(image) = &changes.image {
            hook.image = image.clone();
        }
        if let Some(resources) = &changes.resources {
            hook.resources = resources.clone();
        }
        if let Some(description) = &changes.description {
            hook.description = description.clone();
        }
        if let Some(timeout) = changes.timeout_ms {
            hook.timeout_ms = timeout;
        }
        hook.updated_at = now_micros().max(hook.updated_at);
        hooks::update(&mut tx, &hook).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(hook_id = %hook.id, agent_id = %hook.agent_id, "Hook updated");
        Ok(hook)
    }

    /// DeleteHook, with the envs, init scripts and attachments of the
    /// hook.
    pub async fn delete_hook(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let hook = self.hook_or_not_found(&id).await?;
        let agent = self
            .target_agent(&Target::Agent(hook.agent_id.clone()))
            .await?;
        self.authorize_config_write(caller_id, &agent).await?;
        self.delete_container(&agent, "agent_hooks", &Target::Hook(id.clone()))
            .await?;
        tracing::info!(hook_id = %id, agent_id = %hook.agent_id, "Hook deleted");
        Ok(())
    }

    async fn hook_or_not_found(&self, id: &str) -> Result<HookRecord> {
        let mut connection = self.db.pool().acquire().await?;
        hooks::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("hook", id))
    }
}
