//! Skill operations. Reads need `can_read_config` and writes
//! `can_edit_config` on the owning agent.

use agyn_core::id::{new_id, parse_id};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::CreateKey;
use crate::model::{NewSkill, SkillChanges, SkillRecord, Target};
use crate::store::{self, skills};
use crate::{Agents, no_fields, on_unique_violation, validate};

const CREATE_SCOPE: &str = "agents.CreateSkill";

fn name_taken(name: &str, agent_id: &str) -> Error {
    Error::already_exists(format!(
        "skill name {name:?} is already used by agent {agent_id}; choose another name"
    ))
}

fn skill_name(name: &str) -> Result<&str> {
    validate::required_text("name", name, validate::SKILL_NAME_MAX_CHARS)
}

fn skill_body(body: &str) -> Result<&str> {
    validate::sized("body", body, validate::SKILL_BODY_MAX_BYTES, false)
}

impl Agents {
    /// CreateSkill. The name is unique per agent.
    pub async fn create_skill(&self, caller: &Caller, input: &NewSkill) -> Result<SkillRecord> {
        let caller_id = caller.identity_id()?;
        let agent_id = parse_id("agent_id", &input.agent_id)?;
        let name = skill_name(&input.name)?;
        let description = validate::description(&input.description)?;
        let body = skill_body(&input.body)?;
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[&agent_id, name, description, body],
        )?;
        let agent = self.target_agent(&Target::Agent(agent_id.clone())).await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return skills::by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("skill", &id));
        }
        let now = now_micros();
        let skill = SkillRecord {
            id: new_id(),
            agent_id: agent_id.clone(),
            name: name.to_string(),
            description: description.to_string(),
            body: body.to_string(),
            created_at: now,
            updated_at: now,
        };
        on_unique_violation(skills::insert(&mut tx, &skill).await, || {
            name_taken(name, &agent_id)
        })?;
        key.record(&mut tx, &skill.id).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(skill_id = %skill.id, agent_id = %skill.agent_id, "Skill created");
        Ok(skill)
    }

    pub async fn get_skill(&self, caller: &Caller, id: &str) -> Result<SkillRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let skill = self.skill_or_not_found(&id).await?;
        self.authorize_config_read(caller_id, &skill.agent_id)
            .await?;
        Ok(skill)
    }

    pub async fn list_skills(
        &self,
        caller: &Caller,
        agent_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<SkillRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let (agent_id, page) = self
            .agent_list_page(
                caller_id,
                "agynio.api.agents.v1.ListSkills",
                agent_id,
                page_size,
                page_token,
            )
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        skills::list(&mut connection, &agent_id, &page).await
    }

    pub async fn update_skill(
        &self,
        caller: &Caller,
        id: &str,
        changes: &SkillChanges,
    ) -> Result<SkillRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.name.is_none() && changes.description.is_none() && changes.body.is_none() {
            return Err(no_fields());
        }
        let name = changes.name.as_deref().map(skill_name).transpose()?;
        if let Some(description) = &changes.description {
            validate::description(description)?;
        }
        if let Some(body) = &changes.body {
            skill_body(body)?;
        }
        let current = self.skill_or_not_found(&id).await?;
        let agent = self
            .target_agent(&Target::Agent(current.agent_id.clone()))
            .await?;
        self.authorize_config_write(caller_id, &agent).await?;

        let mut tx = self.db.begin_write().await?;
        let mut skill = skills::by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("skill", &id))?;
        if let Some(name) = name {
            skill.name = name.to_string();
        }
        if let Some(description) = &changes.description {
            skill.description = description.clone();
        }
        if let Some(body) = &changes.body {
            skill.body = body.clone();
        }
        skill.updated_at = now_micros().max(skill.updated_at);
        on_unique_violation(skills::update(&mut tx, &skill).await, || {
            name_taken(&skill.name, &skill.agent_id)
        })?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(skill_id = %skill.id, agent_id = %skill.agent_id, "Skill updated");
        Ok(skill)
    }

    pub async fn delete_skill(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let skill = self.skill_or_not_found(&id).await?;
        let agent = self
            .target_agent(&Target::Agent(skill.agent_id.clone()))
            .await?;
        self.authorize_config_write(caller_id, &agent).await?;
        let mut tx = self.db.begin_write().await?;
        if !store::delete_by_id(&mut tx, "agent_skills", &id).await? {
            return Err(Error::not_found("skill", &id));
        }
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(skill_id = %id, agent_id = %skill.agent_id, "Skill deleted");
        Ok(())
    }

    async fn skill_or_not_found(&self, id: &str) -> Result<SkillRecord> {
        let mut connection = self.db.pool().acquire().await?;
        skills::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("skill", id))
    }
}
