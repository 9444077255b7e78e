//! Conversions between the generated messages and the records. Env
//! records carry only a secret id, never a secret value, so no response
//! can contain one.

use agyn_api_agents::agynio::api::agents::v1 as pb;
use agyn_api_identity::agynio::api::identity::v1::IdentityType;
use agyn_core::time::timestamp;
use agyn_core::{Error, IdentityKind, Result};
use buffa::{EnumValue, MessageField};
use buffa_types::google::protobuf::Duration;

use crate::model::{
    AgentRecord, AgentRole, AgentView, Availability, EnvRecord, EnvSource, HookEvent, HookRecord,
    ImagePullSecretAttachmentRecord, InitScriptRecord, McpRecord, McpTransport, Resources,
    RoleAssignment, SkillRecord, VolumeAttachmentRecord, VolumeRecord,
};
use crate::validate;

/// Converts a oneof `target` of any generated message into a [`Target`].
macro_rules! target_from_proto {
    ($value:expr, $module:ident) => {
        $value.map(|target| {
            use agyn_api_agents::agynio::api::agents::v1::__buffa::oneof::$module::Target as T;
            match target {
                T::AgentId(id) => $crate::model::Target::Agent(id),
                T::McpId(id) => $crate::model::Target::Mcp(id),
                T::HookId(id) => $crate::model::Target::Hook(id),
            }
        })
    };
}

/// Converts a [`Target`] into the oneof `target` of a generated message.
macro_rules! target_to_proto {
    ($value:expr, $module:ident) => {{
        use agyn_api_agents::agynio::api::agents::v1::__buffa::oneof::$module::Target as T;
        match $value.clone() {
            $crate::model::Target::Agent(id) => T::AgentId(id),
            $crate::model::Target::Mcp(id) => T::McpId(id),
            $crate::model::Target::Hook(id) => T::HookId(id),
        }
    }};
}

pub(crate) use target_from_proto;

pub(crate) fn meta(
    id: &str,
    created_at: i64,
    updated_at: i64,
) -> MessageField<pb::EntityMeta, buffa::Inline<pb::EntityMeta>> {
    pb::EntityMeta {
        id: id.to_string(),
        created_at: timestamp(created_at).into(),
        updated_at: timestamp(updated_at).into(),
        ..Default::default()
    }
    .into()
}

pub(crate) fn duration_to_proto(ms: i64) -> Duration {
    Duration {
        seconds: ms / validate::SECOND_MS,
        nanos: ((ms % validate::SECOND_MS) * 1_000_000) as i32,
        ..Default::default()
    }
}

pub(crate) fn duration_from_proto(field: &str, duration: &Duration) -> Result<i64> {
    validate::duration_ms(field, duration.seconds, duration.nanos)
}

/// Converts an optional duration field.
pub(crate) fn optional_duration(
    field: &str,
    value: &MessageField<Duration, buffa::Inline<Duration>>,
) -> Result<Option<i64>> {
    value
        .as_option()
        .map(|duration| duration_from_proto(field, duration))
        .transpose()
}

pub(crate) fn resources_to_proto(
    resources: &Resources,
) -> MessageField<pb::ComputeResources, buffa::Inline<pb::ComputeResources>> {
    if resources == &Resources::default() {
        return MessageField::none();
    }
    pb::ComputeResources {
        requests_cpu: resources.requests_cpu.clone(),
        requests_memory: resources.requests_memory.clone(),
        limits_cpu: resources.limits_cpu.clone(),
        limits_memory: resources.limits_memory.clone(),
        ..Default::default()
    }
    .into()
}

pub(crate) fn resources_from_proto(resources: &pb::ComputeResources) -> Resources {
    Resources {
        requests_cpu: resources.requests_cpu.clone(),
        requests_memory: resources.requests_memory.clone(),
        limits_cpu: resources.limits_cpu.clone(),
        limits_memory: resources.limits_memory.clone(),
    }
}

pub(crate) fn optional_resources(
    value: &MessageField<pb::ComputeResources, buffa::Inline<pb::ComputeResources>>,
) -> Option<Resources> {
    value.as_option().map(resources_from_proto)
}

/// Converts an availability: `None` for UNSPECIFIED, and an error for
/// an unknown value.
pub(crate) fn availability_from_proto(
    value: &EnumValue<pb::AgentAvailability>,
) -> Result<Option<Availability>> {
    match value.as_known() {
        Some(pb::AgentAvailability::AGENT_AVAILABILITY_UNSPECIFIED) => Ok(None),
        Some(pb::AgentAvailability::AGENT_AVAILABILITY_INTERNAL) => {
            Ok(Some(Availability::Internal))
        }
        Some(pb::AgentAvailability::AGENT_AVAILABILITY_PRIVATE) => Ok(Some(Availability::Private)),
        None => Err(Error::invalid_field(
            "availability",
            "must be INTERNAL or PRIVATE",
        )),
    }
}

fn availability_to_proto(value: Availability) -> pb::AgentAvailability {
    match value {
        Availability::Internal => pb::AgentAvailability::AGENT_AVAILABILITY_INTERNAL,
        Availability::Private => pb::AgentAvailability::AGENT_AVAILABILITY_PRIVATE,
    }
}

pub(crate) fn agent_to_proto(view: &AgentView) -> pb::Agent {
    let agent: &AgentRecord = &view.agent;
    pb::Agent {
        meta: meta(&agent.id, agent.created_at, agent.updated_at),
        organization_id: agent.organization_id.clone(),
        name: agent.name.clone(),
        nickname: agent.nickname.clone().unwrap_or_default(),
        role: agent.role.clone(),
        description: agent.description.clone(),
        availability: availability_to_proto(agent.availability).into(),
        model: agent.model.clone(),
        configuration: agent.configuration.clone(),
        image: agent.image.clone(),
        init_image: agent.init_image.clone(),
        resources: resources_to_proto(&agent.resources),
        idle_timeout: if view.config_redacted {
            MessageField::none()
        } else {
            duration_to_proto(agent.idle_timeout_ms).into()
        },
        capabilities: agent.capabilities.clone(),
        config_redacted: view.config_redacted,
        ..Default::default()
    }
}

pub(crate) fn role_from_proto(value: &EnumValue<pb::AgentRole>) -> Result<Option<AgentRole>> {
    match value.as_known() {
        Some(pb::AgentRole::AGENT_ROLE_UNSPECIFIED) => Ok(None),
        Some(pb::AgentRole::AGENT_ROLE_OWNER) => Ok(Some(AgentRole::Owner)),
        Some(pb::AgentRole::AGENT_ROLE_MAINTAINER) => Ok(Some(AgentRole::Maintainer)),
        Some(pb::AgentRole::AGENT_ROLE_PARTICIPANT) => Ok(Some(AgentRole::Participant)),
        None => Err(Error::invalid_field(
            "role",
            "must be OWNER, MAINTAINER or PARTICIPANT",
        )),
    }
}

fn role_to_proto(role: AgentRole) -> pb::AgentRole {
    match role {
        AgentRole::Owner => pb::AgentRole::AGENT_ROLE_OWNER,
        AgentRole::Maintainer => pb::AgentRole::AGENT_ROLE_MAINTAINER,
        AgentRole::Participant => pb::AgentRole::AGENT_ROLE_PARTICIPANT,
    }
}

fn identity_type(kind: Option<IdentityKind>) -> IdentityType {
    match kind {
        Some(IdentityKind::Agent) => IdentityType::IDENTITY_TYPE_AGENT,
        Some(IdentityKind::Runner) => IdentityType::IDENTITY_TYPE_RUNNER,
        Some(IdentityKind::User) => IdentityType::IDENTITY_TYPE_USER,
        Some(IdentityKind::App) => IdentityType::IDENTITY_TYPE_APP,
        Some(IdentityKind::Platform) => IdentityType::IDENTITY_TYPE_PLATFORM,
        None => IdentityType::IDENTITY_TYPE_UNSPECIFIED,
    }
}

pub(crate) fn assignment_to_proto(assignment: &RoleAssignment) -> pb::AgentRoleAssignment {
    pb::AgentRoleAssignment {
        agent_id: assignment.agent_id.clone(),
        identity_id: assignment.identity_id.clone(),
        identity_type: identity_type(assignment.identity_kind).into(),
        role: role_to_proto(assignment.role).into(),
        ..Default::default()
    }
}

/// Converts a transport; UNSPECIFIED means HTTP.
pub(crate) fn transport_from_proto(value: &EnumValue<pb::McpTransport>) -> Result<McpTransport> {
    match value.as_known() {
        Some(
            pb::McpTransport::MCP_TRANSPORT_UNSPECIFIED | pb::McpTransport::MCP_TRANSPORT_HTTP,
        ) => Ok(McpTransport::Http),
        Some(pb::McpTransport::MCP_TRANSPORT_STDIO) => Ok(McpTransport::Stdio),
        None => Err(Error::invalid_field("transport", "must be HTTP or STDIO")),
    }
}

pub(crate) fn mcp_to_proto(mcp: &McpRecord) -> pb::Mcp {
    pb::Mcp {
        meta: meta(&mcp.id, mcp.created_at, mcp.updated_at),
        agent_id: mcp.agent_id.clone(),
        name: mcp.name.clone(),
        description: mcp.description.clone(),
        image: mcp.image.clone(),
        command: mcp.command.clone(),
        transport: match mcp.transport {
            McpTransport::Http => pb::McpTransport::MCP_TRANSPORT_HTTP,
            McpTransport::Stdio => pb::McpTransport::MCP_TRANSPORT_STDIO,
        }
        .into(),
        http_path: mcp.http_path.clone(),
        resources: resources_to_proto(&mcp.resources),
        tool_timeout: duration_to_proto(mcp.tool_timeout_ms).into(),
        ..Default::default()
    }
}

pub(crate) fn skill_to_proto(skill: &SkillRecord) -> pb::Skill {
    pb::Skill {
        meta: meta(&skill.id, skill.created_at, skill.updated_at),
        agent_id: skill.agent_id.clone(),
        name: skill.name.clone(),
        description: skill.description.clone(),
        body: skill.body.clone(),
        ..Default::default()
    }
}

/// Converts a hook event: `None` for UNSPECIFIED, and an error for an
/// unknown value.
pub(crate) fn event_from_proto(value: &EnumValue<pb::HookEvent>) -> Result<Option<HookEvent>> {
    match value.as_known() {
        Some(pb::HookEvent::HOOK_EVENT_UNSPECIFIED) => Ok(None),
        Some(pb::HookEvent::HOOK_EVENT_WORKLOAD_START) => Ok(Some(HookEvent::WorkloadStart)),
        Some(pb::HookEvent::HOOK_EVENT_TURN_START) => Ok(Some(HookEvent::TurnStart)),
        Some(pb::HookEvent::HOOK_EVENT_TURN_END) => Ok(Some(HookEvent::TurnEnd)),
        Some(pb::HookEvent::HOOK_EVENT_WORKLOAD_STOP) => Ok(Some(HookEvent::WorkloadStop)),
        None => Err(Error::invalid_field(
            "event",
            "must be WORKLOAD_START, TURN_START, TURN_END or WORKLOAD_STOP",
        )),
    }
}

pub(crate) fn hook_to_proto(hook: &HookRecord) -> pb::Hook {
    pb::Hook {
        meta: meta(&hook.id, hook.created_at, hook.updated_at),
        agent_id: hook.agent_id.clone(),
        event: match hook.event {
            HookEvent::WorkloadStart => pb::HookEvent::HOOK_EVENT_WORKLOAD_START,
            HookEvent::TurnStart => pb::HookEvent::HOOK_EVENT_TURN_START,
            HookEvent::TurnEnd => pb::HookEvent::HOOK_EVENT_TURN_END,
            HookEvent::WorkloadStop => pb::HookEvent::HOOK_EVENT_WORKLOAD_STOP,
        }
        .into(),
        function: hook.function.clone(),
        image: hook.image.clone(),
        resources: resources_to_proto(&hook.resources),
        description: hook.description.clone(),
        timeout: duration_to_proto(hook.timeout_ms).into(),
        ..Default::default()
    }
}

pub(crate) fn env_to_proto(env: &EnvRecord) -> pb::Env {
    use pb::__buffa::oneof::env::Source;
    pb::Env {
        meta: meta(&env.id, env.created_at, env.updated_at),
        name: env.name.clone(),
        description: env.description.clone(),
        target: Some(target_to_proto!(env.target, env)),
        source: Some(match &env.source {
            EnvSource::Value(value) => Source::Value(value.clone()),
            EnvSource::Secret(secret_id) => Source::SecretId(secret_id.clone()),
        }),
        ..Default::default()
    }
}

pub(crate) fn init_script_to_proto(script: &InitScriptRecord) -> pb::InitScript {
    pb::InitScript {
        meta: meta(&script.id, script.created_at, script.updated_at),
        target: Some(target_to_proto!(script.target, init_script)),
        script: script.script.clone(),
        description: script.description.clone(),
        ..Default::default()
    }
}

pub(crate) fn volume_to_proto(volume: &VolumeRecord) -> pb::Volume {
    pb::Volume {
        meta: meta(&volume.id, volume.created_at, volume.updated_at),
        organization_id: volume.organization_id.clone(),
        name: volume.name.clone(),
        description: volume.description.clone(),
        persistent: volume.persistent,
        mount_path: volume.mount_path.clone(),
        size: volume.size.clone(),
        ttl: volume
            .ttl_ms
            .map(|ttl| duration_to_proto(ttl).into())
            .unwrap_or_default(),
        ..Default::default()
    }
}

pub(crate) fn volume_attachment_to_proto(
    attachment: &VolumeAttachmentRecord,
) -> pb::VolumeAttachment {
    pb::VolumeAttachment {
        meta: meta(&attachment.id, attachment.created_at, attachment.updated_at),
        volume_id: attachment.volume_id.clone(),
        target: Some(target_to_proto!(attachment.target, volume_attachment)),
        read_only: attachment.read_only,
        ..Default::default()
    }
}

pub(crate) fn image_pull_attachment_to_proto(
    attachment: &ImagePullSecretAttachmentRecord,
) -> pb::ImagePullSecretAttachment {
    pb::ImagePullSecretAttachment {
        meta: meta(&attachment.id, attachment.created_at, attachment.updated_at),
        image_pull_secret_id: attachment.image_pull_secret_id.clone(),
        target: Some(target_to_proto!(
            attachment.target,
            image_pull_secret_attachment
        )),
        ..Default::default()
    }
}
