//! `AgentsService` (internal) and `AgentsGateway` (public) over
//! [`Agents`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request.

mod convert;

use agyn_api_agents::agynio::api::agents::v1 as pb;
use agyn_core::caller::request_caller;
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult};

use crate::Agents;
use crate::model::{
    AgentChanges, AttachmentFilter, EnvChanges, EnvSource, HookChanges, InitScriptChanges,
    McpChanges, NewAgent, NewEnv, NewHook, NewInitScript, NewMcp, NewSkill, NewVolume,
    SkillChanges, VolumeChanges,
};
use convert::*;

/// The internal `AgentsService`.
#[derive(Clone)]
pub struct AgentsRpc {
    agents: Agents,
}

impl AgentsRpc {
    pub fn new(agents: Agents) -> Self {
        Self { agents }
    }
}

impl pb::AgentsService for AgentsRpc {
    async fn create_agent(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateAgentRequest>,
    ) -> ServiceResult<pb::CreateAgentResponse> {
        let request = request.to_owned_message();
        let input = NewAgent {
            availability: availability_from_proto(&request.availability)?,
            idle_timeout_ms: optional_duration("idle_timeout", &request.idle_timeout)?,
            resources: optional_resources(&request.resources).unwrap_or_default(),
            organization_id: request.organization_id,
            name: request.name,
            nickname: request.nickname,
            role: request.role,
            description: request.description,
            model: request.model,
            configuration: request.configuration,
            image: request.image,
            init_image: request.init_image,
            capabilities: request.capabilities,
            request_id: request.request_id,
        };
        let view = self
            .agents
            .create_agent(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateAgentResponse {
            agent: agent_to_proto(&view).into(),
            ..Default::default()
        })
    }

    async fn get_agent(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetAgentRequest>,
    ) -> ServiceResult<pb::GetAgentResponse> {
        let view = self
            .agents
            .get_agent(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetAgentResponse {
            agent: agent_to_proto(&view).into(),
            ..Default::default()
        })
    }

    async fn list_agents(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListAgentsRequest>,
    ) -> ServiceResult<pb::ListAgentsResponse> {
        let (views, next_page_token) = self
            .agents
            .list_agents(
                request_caller(&ctx)?,
                request.organization_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListAgentsResponse {
            agents: views.iter().map(agent_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_agent(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateAgentRequest>,
    ) -> ServiceResult<pb::UpdateAgentResponse> {
        let request = request.to_owned_message();
        let availability = match &request.availability {
            None => None,
            Some(value) => Some(availability_from_proto(value)?.ok_or_else(|| {
                agyn_core::Error::invalid_field("availability", "must be INTERNAL or PRIVATE")
            })?),
        };
        let changes = AgentChanges {
            availability,
            idle_timeout_ms: optional_duration("idle_timeout", &request.idle_timeout)?,
            resources: optional_resources(&request.resources),
            capabilities: request
                .capabilities
                .as_option()
                .map(|list| list.values.clone()),
            name: request.name,
            nickname: request.nickname,
            role: request.role,
            description: request.description,
            model: request.model,
            configuration: request.configuration,
            image: request.image,
            init_image: request.init_image,
        };
        let view = self
            .agents
            .update_agent(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateAgentResponse {
            agent: agent_to_proto(&view).into(),
            ..Default::default()
        })
    }

    async fn delete_agent(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteAgentRequest>,
    ) -> ServiceResult<pb::DeleteAgentResponse> {
        self.agents
            .delete_agent(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteAgentResponse::default())
    }

    async fn set_agent_role(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SetAgentRoleRequest>,
    ) -> ServiceResult<pb::SetAgentRoleResponse> {
        let request = request.to_owned_message();
        let role = role_from_proto(&request.role)?;
        let assignment = self
            .agents
            .set_agent_role(
                request_caller(&ctx)?,
                &request.agent_id,
                &request.identity_id,
                role,
            )
            .await?;
        Response::ok(pb::SetAgentRoleResponse {
            assignment: assignment_to_proto(&assignment).into(),
            ..Default::default()
        })
    }

    async fn remove_agent_role(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::RemoveAgentRoleRequest>,
    ) -> ServiceResult<pb::RemoveAgentRoleResponse> {
        self.agents
            .remove_agent_role(request_caller(&ctx)?, request.agent_id, request.identity_id)
            .await?;
        Response::ok(pb::RemoveAgentRoleResponse::default())
    }

    async fn list_agent_roles(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListAgentRolesRequest>,
    ) -> ServiceResult<pb::ListAgentRolesResponse> {
        let assignments = self
            .agents
            .list_agent_roles(request_caller(&ctx)?, request.agent_id)
            .await?;
        Response::ok(pb::ListAgentRolesResponse {
            assignments: assignments.iter().map(assignment_to_proto).collect(),
            ..Default::default()
        })
    }

    async fn list_my_agent_roles(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListMyAgentRolesRequest>,
    ) -> ServiceResult<pb::ListMyAgentRolesResponse> {
        let assignments = self
            .agents
            .list_my_agent_roles(request_caller(&ctx)?, request.organization_id)
            .await?;
        Response::ok(pb::ListMyAgentRolesResponse {
            assignments: assignments.iter().map(assignment_to_proto).collect(),
            ..Default::default()
        })
    }

    async fn create_volume(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateVolumeRequest>,
    ) -> ServiceResult<pb::CreateVolumeResponse> {
        let request = request.to_owned_message();
        let input = NewVolume {
            ttl_ms: optional_duration("ttl", &request.ttl)?,
            organization_id: request.organization_id,
            name: request.name,
            description: request.description,
            persistent: request.persistent,
            mount_path: request.mount_path,
            size: request.size,
            request_id: request.request_id,
        };
        let volume = self
            .agents
            .create_volume(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateVolumeResponse {
            volume: volume_to_proto(&volume).into(),
            ..Default::default()
        })
    }

    async fn get_volume(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetVolumeRequest>,
    ) -> ServiceResult<pb::GetVolumeResponse> {
        let volume = self
            .agents
            .get_volume(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetVolumeResponse {
            volume: volume_to_proto(&volume).into(),
            ..Default::default()
        })
    }

    async fn list_volumes(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListVolumesRequest>,
    ) -> ServiceResult<pb::ListVolumesResponse> {
        let (volumes, next_page_token) = self
            .agents
            .list_volumes(
                request_caller(&ctx)?,
                request.organization_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListVolumesResponse {
            volumes: volumes.iter().map(volume_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_volume(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateVolumeRequest>,
    ) -> ServiceResult<pb::UpdateVolumeResponse> {
        let request = request.to_owned_message();
        let changes = VolumeChanges {
            ttl_ms: optional_duration("ttl", &request.ttl)?,
            name: request.name,
            description: request.description,
            mount_path: request.mount_path,
            size: request.size,
        };
        let volume = self
            .agents
            .update_volume(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateVolumeResponse {
            volume: volume_to_proto(&volume).into(),
            ..Default::default()
        })
    }

    async fn delete_volume(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteVolumeRequest>,
    ) -> ServiceResult<pb::DeleteVolumeResponse> {
        self.agents
            .delete_volume(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteVolumeResponse::default())
    }

    async fn create_volume_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateVolumeAttachmentRequest>,
    ) -> ServiceResult<pb::CreateVolumeAttachmentResponse> {
        let request = request.to_owned_message();
        let target = target_from_proto!(request.target, create_volume_attachment_request);
        let attachment = self
            .agents
            .create_volume_attachment(
                request_caller(&ctx)?,
                &request.volume_id,
                target.as_ref(),
                request.read_only,
                &request.request_id,
            )
            .await?;
        Response::ok(pb::CreateVolumeAttachmentResponse {
            volume_attachment: volume_attachment_to_proto(&attachment).into(),
            ..Default::default()
        })
    }

    async fn get_volume_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetVolumeAttachmentRequest>,
    ) -> ServiceResult<pb::GetVolumeAttachmentResponse> {
        let attachment = self
            .agents
            .get_volume_attachment(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetVolumeAttachmentResponse {
            volume_attachment: volume_attachment_to_proto(&attachment).into(),
            ..Default::default()
        })
    }

    async fn list_volume_attachments(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListVolumeAttachmentsRequest>,
    ) -> ServiceResult<pb::ListVolumeAttachmentsResponse> {
        let request = request.to_owned_message();
        let filter = AttachmentFilter {
            resource_id: request.volume_id,
            agent_id: request.agent_id,
            mcp_id: request.mcp_id,
            hook_id: request.hook_id,
        };
        let (attachments, next_page_token) = self
            .agents
            .list_volume_attachments(
                request_caller(&ctx)?,
                &filter,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListVolumeAttachmentsResponse {
            volume_attachments: attachments.iter().map(volume_attachment_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_volume_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateVolumeAttachmentRequest>,
    ) -> ServiceResult<pb::UpdateVolumeAttachmentResponse> {
        let attachment = self
            .agents
            .update_volume_attachment(request_caller(&ctx)?, request.id, request.read_only)
            .await?;
        Response::ok(pb::UpdateVolumeAttachmentResponse {
            volume_attachment: volume_attachment_to_proto(&attachment).into(),
            ..Default::default()
        })
    }

    async fn delete_volume_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteVolumeAttachmentRequest>,
    ) -> ServiceResult<pb::DeleteVolumeAttachmentResponse> {
        self.agents
            .delete_volume_attachment(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteVolumeAttachmentResponse::default())
    }

    async fn create_mcp(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateMcpRequest>,
    ) -> ServiceResult<pb::CreateMcpResponse> {
        let request = request.to_owned_message();
        let input = NewMcp {
            transport: Some(transport_from_proto(&request.transport)?),
            tool_timeout_ms: optional_duration("tool_timeout", &request.tool_timeout)?,
            resources: optional_resources(&request.resources).unwrap_or_default(),
            agent_id: request.agent_id,
            name: request.name,
            description: request.description,
            image: request.image,
            command: request.command,
            http_path: request.http_path,
            request_id: request.request_id,
        };
        let mcp = self
            .agents
            .create_mcp(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateMcpResponse {
            mcp: mcp_to_proto(&mcp).into(),
            ..Default::default()
        })
    }

    async fn get_mcp(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetMcpRequest>,
    ) -> ServiceResult<pb::GetMcpResponse> {
        let mcp = self
            .agents
            .get_mcp(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetMcpResponse {
            mcp: mcp_to_proto(&mcp).into(),
            ..Default::default()
        })
    }

    async fn list_mcps(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListMcpsRequest>,
    ) -> ServiceResult<pb::ListMcpsResponse> {
        let (mcps, next_page_token) = self
            .agents
            .list_mcps(
                request_caller(&ctx)?,
                request.agent_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListMcpsResponse {
            mcps: mcps.iter().map(mcp_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_mcp(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateMcpRequest>,
    ) -> ServiceResult<pb::UpdateMcpResponse> {
        let request = request.to_owned_message();
        let changes = McpChanges {
            transport: request
                .transport
                .as_ref()
                .map(transport_from_proto)
                .transpose()?,
            tool_timeout_ms: optional_duration("tool_timeout", &request.tool_timeout)?,
            resources: optional_resources(&request.resources),
            description: request.description,
            image: request.image,
            command: request.command,
            http_path: request.http_path,
        };
        let mcp = self
            .agents
            .update_mcp(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateMcpResponse {
            mcp: mcp_to_proto(&mcp).into(),
            ..Default::default()
        })
    }

    async fn delete_mcp(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteMcpRequest>,
    ) -> ServiceResult<pb::DeleteMcpResponse> {
        self.agents
            .delete_mcp(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteMcpResponse::default())
    }

    async fn create_skill(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateSkillRequest>,
    ) -> ServiceResult<pb::CreateSkillResponse> {
        let request = request.to_owned_message();
        let input = NewSkill {
            agent_id: request.agent_id,
            name: request.name,
            description: request.description,
            body: request.body,
            request_id: request.request_id,
        };
        let skill = self
            .agents
            .create_skill(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateSkillResponse {
            skill: skill_to_proto(&skill).into(),
            ..Default::default()
        })
    }

    async fn get_skill(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetSkillRequest>,
    ) -> ServiceResult<pb::GetSkillResponse> {
        let skill = self
            .agents
            .get_skill(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetSkillResponse {
            skill: skill_to_proto(&skill).into(),
            ..Default::default()
        })
    }

    async fn list_skills(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListSkillsRequest>,
    ) -> ServiceResult<pb::ListSkillsResponse> {
        let (skills, next_page_token) = self
            .agents
            .list_skills(
                request_caller(&ctx)?,
                request.agent_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListSkillsResponse {
            skills: skills.iter().map(skill_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_skill(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateSkillRequest>,
    ) -> ServiceResult<pb::UpdateSkillResponse> {
        let request = request.to_owned_message();
        let changes = SkillChanges {
            name: request.name,
            description: request.description,
            body: request.body,
        };
        let skill = self
            .agents
            .update_skill(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateSkillResponse {
            skill: skill_to_proto(&skill).into(),
            ..Default::default()
        })
    }

    async fn delete_skill(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteSkillRequest>,
    ) -> ServiceResult<pb::DeleteSkillResponse> {
        self.agents
            .delete_skill(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteSkillResponse::default())
    }

    async fn create_hook(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateHookRequest>,
    ) -> ServiceResult<pb::CreateHookResponse> {
        let request = request.to_owned_message();
        let input = NewHook {
            event: event_from_proto(&request.event)?,
            timeout_ms: optional_duration("timeout", &request.timeout)?,
            resources: optional_resources(&request.resources).unwrap_or_default(),
            agent_id: request.agent_id,
            function: request.function,
            image: request.image,
            description: request.description,
            request_id: request.request_id,
        };
        let hook = self
            .agents
            .create_hook(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateHookResponse {
            hook: hook_to_proto(&hook).into(),
            ..Default::default()
        })
    }

    async fn get_hook(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetHookRequest>,
    ) -> ServiceResult<pb::GetHookResponse> {
        let hook = self
            .agents
            .get_hook(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetHookResponse {
            hook: hook_to_proto(&hook).into(),
            ..Default::default()
        })
    }

    async fn list_hooks(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListHooksRequest>,
    ) -> ServiceResult<pb::ListHooksResponse> {
        let (hooks, next_page_token) = self
            .agents
            .list_hooks(
                request_caller(&ctx)?,
                request.agent_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListHooksResponse {
            hooks: hooks.iter().map(hook_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_hook(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateHookRequest>,
    ) -> ServiceResult<pb::UpdateHookResponse> {
        let request = request.to_owned_message();
        let event = match &request.event {
            None => None,
            Some(value) => Some(event_from_proto(value)?.ok_or_else(|| {
                agyn_core::Error::invalid_field(
                    "event",
                    "must be WORKLOAD_START, TURN_START, TURN_END or WORKLOAD_STOP",
                )
            })?),
        };
        let changes = HookChanges {
            event,
            timeout_ms: optional_duration("timeout", &request.timeout)?,
            resources: optional_resources(&request.resources),
            function: request.function,
            image: request.image,
            description: request.description,
        };
        let hook = self
            .agents
            .update_hook(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateHookResponse {
            hook: hook_to_proto(&hook).into(),
            ..Default::default()
        })
    }

    async fn delete_hook(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteHookRequest>,
    ) -> ServiceResult<pb::DeleteHookResponse> {
        self.agents
            .delete_hook(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteHookResponse::default())
    }

    async fn create_env(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateEnvRequest>,
    ) -> ServiceResult<pb::CreateEnvResponse> {
        use pb::__buffa::oneof::create_env_request::Source;
        let request = request.to_owned_message();
        let input = NewEnv {
            target: target_from_proto!(request.target, create_env_request),
            source: request.source.map(|source| match source {
                Source::Value(value) => EnvSource::Value(value),
                Source::SecretId(secret_id) => EnvSource::Secret(secret_id),
            }),
            name: request.name,
            description: request.description,
            request_id: request.request_id,
        };
        let env = self
            .agents
            .create_env(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateEnvResponse {
            env: env_to_proto(&env).into(),
            ..Default::default()
        })
    }

    async fn get_env(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetEnvRequest>,
    ) -> ServiceResult<pb::GetEnvResponse> {
        let env = self
            .agents
            .get_env(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetEnvResponse {
            env: env_to_proto(&env).into(),
            ..Default::default()
        })
    }

    async fn list_envs(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListEnvsRequest>,
    ) -> ServiceResult<pb::ListEnvsResponse> {
        let request = request.to_owned_message();
        let target = target_from_proto!(request.target, list_envs_request);
        let (envs, next_page_token) = self
            .agents
            .list_envs(
                request_caller(&ctx)?,
                target.as_ref(),
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListEnvsResponse {
            envs: envs.iter().map(env_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_env(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateEnvRequest>,
    ) -> ServiceResult<pb::UpdateEnvResponse> {
        let request = request.to_owned_message();
        let changes = EnvChanges {
            name: request.name,
            description: request.description,
            value: request.value,
            secret_id: request.secret_id,
        };
        let env = self
            .agents
            .update_env(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateEnvResponse {
            env: env_to_proto(&env).into(),
            ..Default::default()
        })
    }

    async fn delete_env(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteEnvRequest>,
    ) -> ServiceResult<pb::DeleteEnvResponse> {
        self.agents
            .delete_env(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteEnvResponse::default())
    }

    async fn create_init_script(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateInitScriptRequest>,
    ) -> ServiceResult<pb::CreateInitScriptResponse> {
        let request = request.to_owned_message();
        let input = NewInitScript {
            target: target_from_proto!(request.target, create_init_script_request),
            script: request.script,
            description: request.description,
            request_id: request.request_id,
        };
        let script = self
            .agents
            .create_init_script(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateInitScriptResponse {
            init_script: init_script_to_proto(&script).into(),
            ..Default::default()
        })
    }

    async fn get_init_script(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetInitScriptRequest>,
    ) -> ServiceResult<pb::GetInitScriptResponse> {
        let script = self
            .agents
            .get_init_script(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetInitScriptResponse {
            init_script: init_script_to_proto(&script).into(),
            ..Default::default()
        })
    }

    async fn list_init_scripts(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListInitScriptsRequest>,
    ) -> ServiceResult<pb::ListInitScriptsResponse> {
        let request = request.to_owned_message();
        let target = target_from_proto!(request.target, list_init_scripts_request);
        let (scripts, next_page_token) = self
            .agents
            .list_init_scripts(
                request_caller(&ctx)?,
                target.as_ref(),
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListInitScriptsResponse {
            init_scripts: scripts.iter().map(init_script_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_init_script(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateInitScriptRequest>,
    ) -> ServiceResult<pb::UpdateInitScriptResponse> {
        let request = request.to_owned_message();
        let changes = InitScriptChanges {
            script: request.script,
            description: request.description,
        };
        let script = self
            .agents
            .update_init_script(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateInitScriptResponse {
            init_script: init_script_to_proto(&script).into(),
            ..Default::default()
        })
    }

    async fn delete_init_script(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteInitScriptRequest>,
    ) -> ServiceResult<pb::DeleteInitScriptResponse> {
        self.agents
            .delete_init_script(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteInitScriptResponse::default())
    }

    async fn create_image_pull_secret_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateImagePullSecretAttachmentRequest>,
    ) -> ServiceResult<pb::CreateImagePullSecretAttachmentResponse> {
        let request = request.to_owned_message();
        let target =
            target_from_proto!(request.target, create_image_pull_secret_attachment_request);
        let attachment = self
            .agents
            .create_image_pull_secret_attachment(
                request_caller(&ctx)?,
                &request.image_pull_secret_id,
                target.as_ref(),
                &request.request_id,
            )
            .await?;
        Response::ok(pb::CreateImagePullSecretAttachmentResponse {
            image_pull_secret_attachment: image_pull_attachment_to_proto(&attachment).into(),
            ..Default::default()
        })
    }

    async fn get_image_pull_secret_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetImagePullSecretAttachmentRequest>,
    ) -> ServiceResult<pb::GetImagePullSecretAttachmentResponse> {
        let attachment = self
            .agents
            .get_image_pull_secret_attachment(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetImagePullSecretAttachmentResponse {
            image_pull_secret_attachment: image_pull_attachment_to_proto(&attachment).into(),
            ..Default::default()
        })
    }

    async fn list_image_pull_secret_attachments(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListImagePullSecretAttachmentsRequest>,
    ) -> ServiceResult<pb::ListImagePullSecretAttachmentsResponse> {
        let request = request.to_owned_message();
        let filter = AttachmentFilter {
            resource_id: request.image_pull_secret_id,
            agent_id: request.agent_id,
            mcp_id: request.mcp_id,
            hook_id: request.hook_id,
        };
        let (attachments, next_page_token) = self
            .agents
            .list_image_pull_secret_attachments(
                request_caller(&ctx)?,
                &filter,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListImagePullSecretAttachmentsResponse {
            image_pull_secret_attachments: attachments
                .iter()
                .map(image_pull_attachment_to_proto)
                .collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_image_pull_secret_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateImagePullSecretAttachmentRequest>,
    ) -> ServiceResult<pb::UpdateImagePullSecretAttachmentResponse> {
        let attachment = self
            .agents
            .update_image_pull_secret_attachment(
                request_caller(&ctx)?,
                request.id,
                request.image_pull_secret_id,
            )
            .await?;
        Response::ok(pb::UpdateImagePullSecretAttachmentResponse {
            image_pull_secret_attachment: image_pull_attachment_to_proto(&attachment).into(),
            ..Default::default()
        })
    }

    async fn delete_image_pull_secret_attachment(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteImagePullSecretAttachmentRequest>,
    ) -> ServiceResult<pb::DeleteImagePullSecretAttachmentResponse> {
        self.agents
            .delete_image_pull_secret_attachment(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteImagePullSecretAttachmentResponse::default())
    }

    async fn resolve_agent_identity(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ResolveAgentIdentityRequest>,
    ) -> ServiceResult<pb::ResolveAgentIdentityResponse> {
        let (agent_id, organization_id) = self
            .agents
            .resolve_agent_identity(request_caller(&ctx)?, request.identity_id)
            .await?;
        Response::ok(pb::ResolveAgentIdentityResponse {
            agent_id,
            organization_id,
            ..Default::default()
        })
    }

    async fn get_agent_bundle(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetAgentBundleRequest>,
    ) -> ServiceResult<pb::GetAgentBundleResponse> {
        let bundle = self
            .agents
            .get_agent_bundle(request_caller(&ctx)?, request.agent_id)
            .await?;
        let agent = crate::model::AgentView {
            agent: bundle.agent,
            config_redacted: false,
        };
        Response::ok(pb::GetAgentBundleResponse {
            agent: agent_to_proto(&agent).into(),
            mcps: bundle.mcps.iter().map(mcp_to_proto).collect(),
            skills: bundle.skills.iter().map(skill_to_proto).collect(),
            hooks: bundle.hooks.iter().map(hook_to_proto).collect(),
            envs: bundle.envs.iter().map(env_to_proto).collect(),
            init_scripts: bundle
                .init_scripts
                .iter()
                .map(init_script_to_proto)
                .collect(),
            volume_attachments: bundle
                .volume_attachments
                .iter()
                .map(volume_attachment_to_proto)
                .collect(),
            volumes: bundle.volumes.iter().map(volume_to_proto).collect(),
            image_pull_secret_attachments: bundle
                .image_pull_secret_attachments
                .iter()
                .map(image_pull_attachment_to_proto)
                .collect(),
            ..Default::default()
        })
    }

    async fn count_secret_references(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CountSecretReferencesRequest>,
    ) -> ServiceResult<pb::CountSecretReferencesResponse> {
        let env_ids = self
            .agents
            .count_secret_references(request_caller(&ctx)?, request.secret_id)
            .await?;
        Response::ok(pb::CountSecretReferencesResponse {
            env_ids,
            ..Default::default()
        })
    }

    async fn count_image_pull_secret_references(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CountImagePullSecretReferencesRequest>,
    ) -> ServiceResult<pb::CountImagePullSecretReferencesResponse> {
        let attachment_ids = self
            .agents
            .count_image_pull_secret_references(request_caller(&ctx)?, request.image_pull_secret_id)
            .await?;
        Response::ok(pb::CountImagePullSecretReferencesResponse {
            attachment_ids,
            ..Default::default()
        })
    }

    async fn delete_organization_resources(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        self.agents
            .delete_organization_resources(request_caller(&ctx)?, request.organization_id)
            .await?;
        Response::ok(pb::DeleteOrganizationResourcesResponse::default())
    }
}

/// The public `AgentsGateway`: every method dispatches to [`AgentsRpc`].
#[derive(Clone)]
pub struct AgentsGatewayRpc {
    inner: AgentsRpc,
}

impl AgentsGatewayRpc {
    pub fn new(agents: Agents) -> Self {
        Self {
            inner: AgentsRpc::new(agents),
        }
    }
}

macro_rules! dispatch {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            async fn $method(
                &self,
                ctx: RequestContext,
                request: ServiceRequest<'_, $request>,
            ) -> ServiceResult<$response> {
                pb::AgentsService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::AgentsGateway for AgentsGatewayRpc {
    dispatch! {
        create_agent(pb::CreateAgentRequest) -> pb::CreateAgentResponse;
        get_agent(pb::GetAgentRequest) -> pb::GetAgentResponse;
        list_agents(pb::ListAgentsRequest) -> pb::ListAgentsResponse;
        update_agent(pb::UpdateAgentRequest) -> pb::UpdateAgentResponse;
        delete_agent(pb::DeleteAgentRequest) -> pb::DeleteAgentResponse;
        set_agent_role(pb::SetAgentRoleRequest) -> pb::SetAgentRoleResponse;
        remove_agent_role(pb::RemoveAgentRoleRequest) -> pb::RemoveAgentRoleResponse;
        list_agent_roles(pb::ListAgentRolesRequest) -> pb::ListAgentRolesResponse;
        list_my_agent_roles(pb::ListMyAgentRolesRequest) -> pb::ListMyAgentRolesResponse;
        create_volume(pb::CreateVolumeRequest) -> pb::CreateVolumeResponse;
        get_volume(pb::GetVolumeRequest) -> pb::GetVolumeResponse;
        list_volumes(pb::ListVolumesRequest) -> pb::ListVolumesResponse;
        update_volume(pb::UpdateVolumeRequest) -> pb::UpdateVolumeResponse;
        delete_volume(pb::DeleteVolumeRequest) -> pb::DeleteVolumeResponse;
        create_volume_attachment(pb::CreateVolumeAttachmentRequest) -> pb::CreateVolumeAttachmentResponse;
        get_volume_attachment(pb::GetVolumeAttachmentRequest) -> pb::GetVolumeAttachmentResponse;
        list_volume_attachments(pb::ListVolumeAttachmentsRequest) -> pb::ListVolumeAttachmentsResponse;
        update_volume_attachment(pb::UpdateVolumeAttachmentRequest) -> pb::UpdateVolumeAttachmentResponse;
        delete_volume_attachment(pb::DeleteVolumeAttachmentRequest) -> pb::DeleteVolumeAttachmentResponse;
        create_mcp(pb::CreateMcpRequest) -> pb::CreateMcpResponse;
        get_mcp(pb::GetMcpRequest) -> pb::GetMcpResponse;
        list_mcps(pb::ListMcpsRequest) -> pb::ListMcpsResponse;
        update_mcp(pb::UpdateMcpRequest) -> pb::UpdateMcpResponse;
        delete_mcp(pb::DeleteMcpRequest) -> pb::DeleteMcpResponse;
        create_skill(pb::CreateSkillRequest) -> pb::CreateSkillResponse;
        get_skill(pb::GetSkillRequest) -> pb::GetSkillResponse;
        list_skills(pb::ListSkillsRequest) -> pb::ListSkillsResponse;
        update_skill(pb::UpdateSkillRequest) -> pb::UpdateSkillResponse;
        delete_skill(pb::DeleteSkillRequest) -> pb::DeleteSkillResponse;
        create_hook(pb::CreateHookRequest) -> pb::CreateHookResponse;
        get_hook(pb::GetHookRequest) -> pb::GetHookResponse;
        list_hooks(pb::ListHooksRequest) -> pb::ListHooksResponse;
        update_hook(pb::UpdateHookRequest) -> pb::UpdateHookResponse;
        delete_hook(pb::DeleteHookRequest) -> pb::DeleteHookResponse;
        create_env(pb::CreateEnvRequest) -> pb::CreateEnvResponse;
        get_env(pb::GetEnvRequest) -> pb::GetEnvResponse;
        list_envs(pb::ListEnvsRequest) -> pb::ListEnvsResponse;
        update_env(pb::UpdateEnvRequest) -> pb::UpdateEnvResponse;
        delete_env(pb::DeleteEnvRequest) -> pb::DeleteEnvResponse;
        create_init_script(pb::CreateInitScriptRequest) -> pb::CreateInitScriptResponse;
        get_init_script(pb::GetInitScriptRequest) -> pb::GetInitScriptResponse;
        list_init_scripts(pb::ListInitScriptsRequest) -> pb::ListInitScriptsResponse;
        update_init_script(pb::UpdateInitScriptRequest) -> pb::UpdateInitScriptResponse;
        delete_init_script(pb::DeleteInitScriptRequest) -> pb::DeleteInitScriptResponse;
        create_image_pull_secret_attachment(pb::CreateImagePullSecretAttachmentRequest) -> pb::CreateImagePullSecretAttachmentResponse;
        get_image_pull_secret_attachment(pb::GetImagePullSecretAttachmentRequest) -> pb::GetImagePullSecretAttachmentResponse;
        list_image_pull_secret_attachments(pb::ListImagePullSecretAttachmentsRequest) -> pb::ListImagePullSecretAttachmentsResponse;
        update_image_pull_secret_attachment(pb::UpdateImagePullSecretAttachmentRequest) -> pb::UpdateImagePullSecretAttachmentResponse;
        delete_image_pull_secret_attachment(pb::DeleteImagePullSecretAttachmentRequest) -> pb::DeleteImagePullSecretAttachmentResponse;
    }
}
