//! Init script operations. Reads need `can_read_config` and writes
//! `can_edit_config` on the agent that owns the target. A target's
//! scripts run in list order.

use agyn_core::id::{new_id, parse_id};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::CreateKey;
use crate::model::{InitScriptChanges, InitScriptRecord, NewInitScript, Target};
use crate::store::{self, init_scripts};
use crate::target::parse_target;
use crate::{Agents, no_fields, validate};

const CREATE_SCOPE: &str = "agents.CreateInitScript";

fn script(value: &str) -> Result<&str> {
    validate::sized("script", value, validate::INIT_SCRIPT_MAX_BYTES, true)
}

impl Agents {
    pub async fn create_init_script(
        &self,
        caller: &Caller,
        input: &NewInitScript,
    ) -> Result<InitScriptRecord> {
        let caller_id = caller.identity_id()?;
        let target = parse_target(input.target.as_ref())?;
        let body = script(&input.script)?;
        let description = validate::description(&input.description)?;
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[target.type_name(), target.id(), body, description],
        )?;
        let agent = self.target_agent(&target).await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return init_scripts::by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("init script", &id));
        }
        let now = now_micros();
        let record = InitScriptRecord {
            id: new_id(),
            agent_id: agent.id.clone(),
            target,
            script: body.to_string(),
            description: description.to_string(),
            created_at: now,
            updated_at: now,
        };
        init_scripts::insert(&mut tx, &record).await?;
        key.record(&mut tx, &record.id).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(
            init_script_id = %record.id,
            agent_id = %record.agent_id,
            "Init script created"
        );
        Ok(record)
    }

    pub async fn get_init_script(&self, caller: &Caller, id: &str) -> Result<InitScriptRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let record = self.init_script_or_not_found(&id).await?;
        self.authorize_config_read(caller_id, &record.agent_id)
            .await?;
        Ok(record)
    }

    /// ListInitScripts: the scripts of exactly one target, in execution
    /// order.
    pub async fn list_init_scripts(
        &self,
        caller: &Caller,
        target: Option<&Target>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<InitScriptRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let (target, page) = self
            .target_list_page(
                caller_id,
                "agynio.api.agents.v1.ListInitScripts",
                target,
                page_size,
                page_token,
            )
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        init_scripts::list(&mut connection, &target, &page).await
    }

    pub async fn update_init_script(
        &self,
        caller: &Caller,
        id: &str,
        changes: &InitScriptChanges,
    ) -> Result<InitScriptRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.script.is_none() && changes.description.is_none() {
            return Err(no_fields());
        }
        if let Some(value) = &changes.script {
            script(value)?;
        }
        if let Some(description) = &changes.description {
            validate::description(description)?;
        }
        let current = self.init_script_or_not_found(&id).await?;
        let agent = self.target_agent(&current.target).await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        let mut record = init_scripts::by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("init script", &id))?;
        if let Some(value) = &changes.script {
            record.script = value.clone();
        }
        if let Some(description) = &changes.description {
            record.description = description.clone();
        }
        record.updated_at = now_micros().max(record.updated_at);
        init_scripts::update(&mut tx, &record).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(
            init_script_id = %record.id,
            agent_id = %record.agent_id,
            "Init script updated"
        );
        Ok(record)
    }

    pub async fn delete_init_script(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let record = self.init_script_or_not_found(&id).await?;
        let agent = self.target_agent(&record.target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        let mut tx = self.db.begin_write().await?;
        if !store::delete_by_id(&mut tx, "agent_init_scripts", &id).await? {
            return Err(Error::not_found("init script", &id));
        }
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(init_script_id = %id, agent_id = %record.agent_id, "Init script deleted");
        Ok(())
    }

    async fn init_script_or_not_found(&self, id: &str) -> Result<InitScriptRecord> {
        let mut connection = self.db.pool().acquire().await?;
        init_scripts::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("init script", id))
    }
}
