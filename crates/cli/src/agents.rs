//! `agyn agents`: agents and their MCP servers.

use std::path::PathBuf;

use agyn_client::agents::{
    Agent, AgentAvailability, CreateAgentRequest, CreateMcpRequest, ListAgentsResponse,
    ListMcpsRequest, ListMcpsResponse, Mcp, McpTransport,
};
use buffa_types::google::protobuf::Duration;
use clap::{Args, Subcommand};

use crate::error::{CliError, Result};
use crate::output::{self, Table};
use crate::resolve;
use crate::session::{GlobalArgs, OrgArgs, Session};

#[derive(Args, Debug)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(flatten)]
    pub org: OrgArgs,

    #[command(subcommand)]
    pub command: AgentsCommand,
}

#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// Create an agent that every organization member may talk to
    Create(CreateAgentArgs),
    /// List the organization's agents
    List,
    /// Manage an agent's MCP servers
    Mcp {
        #[command(subcommand)]
        command: McpCommand,
    },
}

#[derive(Args, Debug)]
pub struct CreateAgentArgs {
    /// Display name, 1 to 64 characters
    #[arg(long)]
    pub name: String,

    /// Model id or name
    #[arg(long)]
    pub model: String,

    /// System prompt of the agent
    #[arg(long, conflicts_with = "instructions_file")]
    pub instructions: Option<String>,

    /// File that contains the system prompt
    #[arg(long, value_name = "PATH")]
    pub instructions_file: Option<PathBuf>,

    /// Idle time after which the agent's workload stops, 30s to 24h, such
    /// as `5m` or `1h 30m`. The platform default is 5m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<std::time::Duration>,

    /// Handle in the organization (lowercase letters, digits, `_`, `-`),
    /// so the agent can be named as `@handle`
    #[arg(long)]
    pub nickname: Option<String>,

    /// Free text, at most 1,024 characters
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum McpCommand {
    /// Add an MCP server that runs next to every workload of the agent
    Add(AddMcpArgs),
    /// List an agent's MCP servers
    List {
        /// Agent id, nickname or name
        agent: String,
    },
}

#[derive(Args, Debug)]
pub struct AddMcpArgs {
    /// Agent id, nickname or name
    pub agent: String,

    /// Name (lowercase letters, digits and `_`, starting with a letter).
    /// The model calls the server's tools as `<name>__<tool>`
    #[arg(long)]
    pub name: String,

    /// Shell command line that starts the server
    #[arg(long)]
    pub command: String,

    /// The server speaks MCP on standard input and output instead of
    /// streamable HTTP on $MCP_PORT
    #[arg(long)]
    pub stdio: bool,

    /// Path of the streamable HTTP endpoint; the platform default is
    /// `/mcp`
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Container image of the server; defaults to the runner's image
    #[arg(long)]
    pub image: Option<String>,
}

/// Parses a duration such as `90s`, `5m` or `1h 30m`.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error}; write a duration such as 90s, 5m or 1h 30m"))
}

/// Converts a duration to its proto message.
pub fn proto_duration(duration: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: duration.subsec_nanos() as i32,
        ..Default::default()
    }
}

pub async fn run(args: AgentsArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    let organization_id = resolve::organization(&session.gateway, &args.org).await?;
    match args.command {
        AgentsCommand::Create(create) => create_agent(&session, organization_id, create).await,
        AgentsCommand::List => {
            let agents = resolve::list_agents(&session.gateway, &organization_id).await?;
            if session.json {
                return output::print_json(&ListAgentsResponse {
                    agents,
                    ..Default::default()
                });
            }
            print_agents(agents.iter())
        }
        AgentsCommand::Mcp {
            command: McpCommand::Add(add),
        } => add_mcp(&session, &organization_id, add).await,
        AgentsCommand::Mcp {
            command: McpCommand::List { agent },
        } => {
            let agent_id = resolve::agent(&session.gateway, &organization_id, &agent).await?;
            let mcps = list_mcps(&session, &agent_id).await?;
            if session.json {
                return output::print_json(&ListMcpsResponse {
                    mcps,
                    ..Default::default()
                });
            }
            print_mcps(mcps.iter())
        }
    }
}

async fn create_agent(
    session: &Session,
    organization_id: String,
    args: CreateAgentArgs,
) -> Result<()> {
    let instructions = match (args.instructions, args.instructions_file) {
        (Some(text), _) => Some(text),
        (None, Some(path)) => Some(std::fs::read_to_string(&path).map_err(|error| {
            CliError::failed(format!(
                "failed to read the instructions file {}: {error}",
                path.display()
            ))
        })?),
        (None, None) => None,
    };
    // The built-in agent program reads its system prompt from the
    // `system_prompt` key of the configuration object.
    let configuration = instructions
        .map(|text| serde_json::json!({ "system_prompt": text }).to_string())
        .unwrap_or_default();
    let model = resolve::model(&session.gateway, &organization_id, &args.model).await?;
    let created = session
        .gateway
        .agents()
        .create_agent(CreateAgentRequest {
            organization_id,
            name: args.name,
            nickname: args.nickname,
            description: args.description.unwrap_or_default(),
            model,
            configuration,
            idle_timeout: args.idle_timeout.map(proto_duration).into(),
            availability: AgentAvailability::AGENT_AVAILABILITY_INTERNAL.into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await?
        .into_owned();
    if session.json {
        return output::print_json(&created);
    }
    print_agents(created.agent.as_option().into_iter())
}

fn print_agents<'a>(agents: impl Iterator<Item = &'a Agent>) -> Result<()> {
    let mut table = Table::new(&["ID", "NAME", "NICKNAME", "MODEL ID", "IDLE TIMEOUT"]);
    for agent in agents {
        let idle_timeout = agent
            .idle_timeout
            .as_option()
            .map(|duration| {
                let duration = std::time::Duration::new(
                    duration.seconds.max(0) as u64,
                    duration.nanos.max(0) as u32,
                );
                humantime::format_duration(duration).to_string()
            })
            .unwrap_or_else(|| "-".to_string());
        table.row(vec![
            resolve::id_of(&agent.meta),
            agent.name.clone(),
            output::or_dash(&agent.nickname),
            output::or_dash(&agent.model),
            idle_timeout,
        ]);
    }
    table.print_or("No agents.")
}

async fn add_mcp(session: &Session, organization_id: &str, args: AddMcpArgs) -> Result<()> {
    let agent_id = resolve::agent(&session.gateway, organization_id, &args.agent).await?;
    let transport = if args.stdio {
        McpTransport::MCP_TRANSPORT_STDIO
    } else {
        McpTransport::MCP_TRANSPORT_HTTP
    };
    let created = session
        .gateway
        .agents()
        .create_mcp(CreateMcpRequest {
            agent_id,
            name: args.name,
            command: args.command,
            transport: transport.into(),
            http_path: args.path,
            image: args.image.unwrap_or_default(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await?
        .into_owned();
    if session.json {
        return output::print_json(&created);
    }
    print_mcps(created.mcp.as_option().into_iter())
}

async fn list_mcps(session: &Session, agent_id: &str) -> Result<Vec<Mcp>> {
    let client = session.gateway.agents();
    let mut mcps = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_mcps(ListMcpsRequest {
                agent_id: agent_id.to_string(),
                page_size: resolve::PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        mcps.extend(page.mcps);
        if page.next_page_token.is_empty() {
            return Ok(mcps);
        }
        page_token = page.next_page_token;
    }
}

fn print_mcps<'a>(mcps: impl Iterator<Item = &'a Mcp>) -> Result<()> {
    let mut table = Table::new(&["ID", "AGENT ID", "NAME", "TRANSPORT", "PATH", "COMMAND"]);
    for mcp in mcps {
        table.row(vec![
            resolve::id_of(&mcp.meta),
            mcp.agent_id.clone(),
            mcp.name.clone(),
            output::label(&mcp.transport, "MCP_TRANSPORT_"),
            output::or_dash(&mcp.http_path),
            mcp.command.clone(),
        ]);
    }
    table.print_or("No MCP servers.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_parses_units() {
        assert_eq!(
            parse_duration("5m").unwrap(),
            std::time::Duration::from_secs(300)
        );
        assert_eq!(
            parse_duration("1h 30m").unwrap(),
            std::time::Duration::from_secs(5400)
        );
    }

    #[test]
    fn duration_rejects_bare_number() {
        let error = parse_duration("300").unwrap_err();
        assert!(error.contains("such as 90s"), "{error}");
    }

    #[test]
    fn proto_duration_keeps_nanos() {
        let duration = proto_duration(std::time::Duration::from_millis(1500));
        assert_eq!(duration.seconds, 1);
        assert_eq!(duration.nanos, 500_000_000);
    }
}
