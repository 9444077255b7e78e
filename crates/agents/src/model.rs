//! Stored records and the inputs of create and update calls.

use serde::{Deserialize, Serialize};

/// Who may start threads with an agent beyond its role holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Every member of the organization may initiate.
    Internal,
    /// Only the agent's owners, maintainers and participants may initiate.
    Private,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Private => "private",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "internal" => Some(Self::Internal),
            "private" => Some(Self::Private),
            _ => None,
        }
    }
}

/// CPU and memory quantities of one container; an empty string means no
/// quantity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub requests_cpu: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub requests_memory: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub limits_cpu: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub limits_memory: String,
}

/// A stored agent with its full configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub nickname: Option<String>,
    pub role: String,
    pub description: String,
    pub availability: Availability,
    pub model: String,
    pub configuration: String,
    pub image: String,
    pub init_image: String,
    pub resources: Resources,
    pub idle_timeout_ms: i64,
    pub capabilities: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An agent as one caller may see it: with `config_redacted`, the
/// configuration fields of `agent` are cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    pub agent: AgentRecord,
    pub config_redacted: bool,
}

/// Input of CreateAgent. `None` and empty strings take the defaults.
#[derive(Debug, Clone, Default)]
pub struct NewAgent {
    pub organization_id: String,
    pub name: String,
    pub nickname: Option<String>,
    pub role: String,
    pub description: String,
    pub availability: Option<Availability>,
    pub model: String,
    pub configuration: String,
    pub image: String,
    pub init_image: String,
    pub resources: Resources,
    pub idle_timeout_ms: Option<i64>,
    pub capabilities: Vec<String>,
    pub request_id: String,
}

/// Fields of UpdateAgent; `None` leaves a field unchanged. A nickname of
/// "" removes the handle, and an empty capability list clears them.
#[derive(Debug, Clone, Default)]
pub struct AgentChanges {
    pub name: Option<String>,
    pub nickname: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub availability: Option<Availability>,
    pub model: Option<String>,
    pub configuration: Option<String>,
    pub image: Option<String>,
    pub init_image: Option<String>,
    pub resources: Option<Resources>,
    pub idle_timeout_ms: Option<i64>,
    pub capabilities: Option<Vec<String>>,
}

/// Per-agent role of an identity, stored only as a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRole {
    Owner,
    Maintainer,
    Participant,
}

impl AgentRole {
    pub const ALL: [AgentRole; 3] = [Self::Owner, Self::Maintainer, Self::Participant];

    /// Returns the relation of the role on `agent:<id>`.
    pub fn relation(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Maintainer => "maintainer",
            Self::Participant => "participant",
        }
    }

    pub fn from_relation(relation: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|role| role.relation() == relation)
    }
}

/// One role tuple on an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    pub agent_id: String,
    pub identity_id: String,
    /// `None` when the identity is not in the identity registry.
    pub identity_kind: Option<agyn_core::IdentityKind>,
    pub role: AgentRole,
}

/// The container that an env, init script or attachment belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Agent(String),
    Mcp(String),
    Hook(String),
}

impl Target {
    /// Returns the stored `target_type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Mcp(_) => "mcp",
            Self::Hook(_) => "hook",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Agent(id) | Self::Mcp(id) | Self::Hook(id) => id,
        }
    }

    /// Returns the request field that names this target.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent_id",
            Self::Mcp(_) => "mcp_id",
            Self::Hook(_) => "hook_id",
        }
    }

    pub fn from_stored(target_type: &str, id: String) -> Option<Self> {
        match target_type {
            "agent" => Some(Self::Agent(id)),
            "mcp" => Some(Self::Mcp(id)),
            "hook" => Some(Self::Hook(id)),
            _ => None,
        }
    }
}

/// How an MCP server speaks to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpTransport {
    /// The server listens on `$MCP_PORT` with streamable HTTP.
    Http,
    /// The launcher bridges the server's stdio to streamable HTTP.
    Stdio,
}

impl McpTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Stdio => "stdio",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "http" => Some(Self::Http),
            "stdio" => Some(Self::Stdio),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct McpRecord {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    pub description: String,
    pub image: String,
    pub command: String,
    pub transport: McpTransport,
    pub http_path: String,
    pub resources: Resources,
    pub tool_timeout_ms: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct NewMcp {
    pub agent_id: String,
    pub name: String,
    pub description: String,
    pub image: String,
    pub command: String,
    pub transport: Option<McpTransport>,
    pub http_path: Option<String>,
    pub resources: Resources,
    pub tool_timeout_ms: Option<i64>,
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct McpChanges {
    pub description: Option<String>,
    pub image: Option<String>,
    pub command: Option<String>,
    pub transport: Option<McpTransport>,
    pub http_path: Option<String>,
    pub resources: Option<Resources>,
    pub tool_timeout_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SkillRecord {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    pub description: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct NewSkill {
    pub agent_id: String,
    pub name: String,
    pub description: String,
    pub body: String,
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct SkillChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
}

/// The agent program event at which a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    WorkloadStart,
    TurnStart,
    TurnEnd,
    WorkloadStop,
}

impl HookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkloadStart => "workload_start",
            Self::TurnStart => "turn_start",
            Self::TurnEnd => "turn_end",
            Self::WorkloadStop => "workload_stop",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::WorkloadStart,
            Self::TurnStart,
            Self::TurnEnd,
            Self::WorkloadStop,
        ]
        .into_iter()
        .find(|event| event.as_str() == value)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HookRecord {
    pub id: String,
    pub agent_id: String,
    pub event: HookEvent,
    pub function: String,
    pub image: String,
    pub resources: Resources,
    pub description: String,
    pub timeout_ms: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct NewHook {
    pub agent_id: String,
    pub event: Option<HookEvent>,
    pub function: String,
    pub image: String,
    pub resources: Resources,
    pub description: String,
    pub timeout_ms: Option<i64>,
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct HookChanges {
    pub event: Option<HookEvent>,
    pub function: Option<String>,
    pub image: Option<String>,
    pub resources: Option<Resources>,
    pub description: Option<String>,
    pub timeout_ms: Option<i64>,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// A plain value, returned on reads.
    Value(String),
    /// A secret of the same organization; reads return only its id.
    Secret(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnvRecord {
    pub id: String,
    pub agent_id: String,
    pub target: Target,
    pub name: String,
    pub description: String,
    pub source: EnvSource,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewEnv {
    pub target: Option<Target>,
    pub name: String,
    pub description: String,
    pub source: Option<EnvSource>,
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct EnvChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub value: Option<String>,
    pub secret_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InitScriptRecord {
    pub id: String,
    pub agent_id: String,
    pub target: Target,
    pub script: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewInitScript {
    pub target: Option<Target>,
    pub script: String,
    pub description: String,
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct InitScriptChanges {
    pub script: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub mount_path: String,
    pub size: String,
    pub ttl_ms: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub mount_path: String,
    pub size: Option<String>,
    pub ttl_ms: Option<i64>,
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct VolumeChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub mount_path: Option<String>,
    pub size: Option<String>,
    pub ttl_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeAttachmentRecord {
    pub id: String,
    pub volume_id: String,
    pub agent_id: String,
    pub target: Target,
    pub read_only: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImagePullSecretAttachmentRecord {
    pub id: String,
    pub image_pull_secret_id: String,
    pub agent_id: String,
    pub target: Target,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Filters of ListVolumeAttachments and ListImagePullSecretAttachments,
/// ANDed. `resource_id` is the volume or image pull secret.
#[derive(Debug, Clone, Default)]
pub struct AttachmentFilter {
    pub resource_id: Option<String>,
    pub agent_id: Option<String>,
    pub mcp_id: Option<String>,
    pub hook_id: Option<String>,
}

/// Everything the orchestrator needs to assemble an agent's workloads,
/// read in one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentBundle {
    pub agent: AgentRecord,
    pub mcps: Vec<McpRecord>,
    pub skills: Vec<SkillRecord>,
    pub hooks: Vec<HookRecord>,
    pub envs: Vec<EnvRecord>,
    pub init_scripts: Vec<InitScriptRecord>,
    pub volume_attachments: Vec<VolumeAttachmentRecord>,
    pub volumes: Vec<VolumeRecord>,
    pub image_pull_secret_attachments: Vec<ImagePullSecretAttachmentRecord>,
}
