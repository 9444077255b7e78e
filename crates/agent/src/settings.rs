//! Settings of one agent run: the workload's environment and the agent's
//! `AGENT_CONFIG` keys.

use std::path::PathBuf;
use std::time::Duration;

use agyn_core::Secret;
pub use agyn_core::agent_config::AgentConfig;

use crate::hooks::HookEvent;

/// A missing or invalid environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    /// Name of the variable, such as `WORKLOAD_ID`.
    pub variable: String,
    /// The problem and the expected value.
    pub problem: String,
}

impl SettingsError {
    fn new(variable: &str, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.to_string(),
            problem: problem.into(),
        }
    }

    fn missing(variable: &str) -> Self {
        Self::new(variable, "missing; the workload must set it")
    }
}

/// Everything an agent run needs, read from the environment by
/// [`Settings::from_env`] or built by a caller that runs the agent in
/// process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent's id, which is also its identity id.
    pub agent_id: String,
    pub agent_name: String,
    /// A label shown to the model.
    pub agent_role: String,
    /// The platform id (a UUID) of the agent's LLM model.
    pub model: String,
    pub config: AgentConfig,
    /// The thread this workload serves.
    pub thread_id: String,
    /// The workload's id, a UUID. Its 16 bytes are the trace id.
    pub workload_id: String,
    pub organization_id: String,
    /// Base URL of the gateway, such as `https://gateway:8080`.
    pub gateway_url: String,
    /// Base URL of the LLM proxy, usually `<gateway>/v1`.
    pub llm_base_url: String,
    /// Base URL of the OTLP/HTTP ingest, usually the gateway.
    pub otlp_endpoint: String,
    pub credentials: Credentials,
    /// The MCP servers, in the order of `AGENT_MCP_SERVERS`.
    pub mcp_servers: Vec<McpServerAddress>,
    /// The hooks, in the order of `AGENT_HOOKS`.
    pub hooks: Vec<HookAddress>,
    /// Directory of the turn journal, which lets the next run of the same
    /// thread finish a turn that was stopped during a tool call.
    pub state_dir: PathBuf,
    pub timing: Timing,
}

/// The workload certificate, its key and the platform CA, all PEM.
#[derive(Clone)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: Secret<String>,
    pub ca_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// One entry of `AGENT_MCP_SERVERS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerAddress {
    /// The server's name, the prefix of its tools (`<name>__<tool>`).
    pub name: String,
    /// Its streamable HTTP endpoint.
    pub url: String,
}

/// One entry of `AGENT_HOOKS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAddress {
    pub event: HookEvent,
    /// The hook server's `/run` URL.
    pub url: String,
}

/// Intervals and limits of the run. The defaults are the platform's; tests
/// shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Interval of TouchWorkload while a turn runs.
    pub touch_interval: Duration,
    /// Interval of the unacked-message check when no event arrives.
    pub poll_interval: Duration,
    /// How long startup retries an MCP server that does not respond yet.
    pub mcp_connect_window: Duration,
    /// How long a turn waits for an MCP server that is still down to
    /// connect before the turn goes on without its tools.
    pub mcp_reconnect_limit: Duration,
    /// Waits before each retry of a failed LLM request.
    pub llm_retry_delays: Vec<Duration>,
    /// Interval of span exports.
    pub export_interval: Duration,
    /// Time all WORKLOAD_STOP hooks may take together.
    pub stop_hooks_limit: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            touch_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(15),
            mcp_connect_window: Duration::from_secs(60),
            mcp_reconnect_limit: Duration::from_secs(5),
            llm_retry_delays: [2, 4, 8].map(Duration::from_secs).to_vec(),
            export_interval: Duration::from_secs(2),
            stop_hooks_limit: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// Reads the settings from the process environment, and the
    /// certificate, key and CA from the files it names. Besides the
    /// workload's variables it reads the optional `AGENT_STATE_DIR`, the
    /// directory of the turn journal (default `$TMPDIR/agyn-agent`).
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings from `lookup`, which returns the value of an
    /// environment variable, and the files it names.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let value = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let required = |name: &str| value(name).ok_or_else(|| SettingsError::missing(name));
        let uuid = |name: &str| required(name).and_then(|text| parse_uuid(name, &text));

        let gateway_url = url_setting("AGYN_GATEWAY_URL", &required("AGYN_GATEWAY_URL")?)?;
        let llm_base_url = match value("AGYN_LLM_BASE_URL") {
            Some(url) => url_setting("AGYN_LLM_BASE_URL", &url)?,
            None => format!("{gateway_url}/v1"),
        };
        let otlp_endpoint = match value("AGYN_OTLP_ENDPOINT") {
            Some(url) => url_setting("AGYN_OTLP_ENDPOINT", &url)?,
            None => gateway_url.clone(),
        };
        let read_file = |name: &str| {
            let path = required(name)?;
            std::fs::read_to_string(&path).map_err(|error| {
                SettingsError::new(name, format!("failed to read {path:?}: {error}"))
            })
        };
        let credentials = Credentials {
            cert_pem: read_file("AGYN_TLS_CERT_FILE")?,
            key_pem: Secret::new(read_file("AGYN_TLS_KEY_FILE")?),
            ca_pem: read_file("AGYN_CA_FILE")?,
        };
        let config = match value("AGENT_CONFIG") {
            Some(text) => AgentConfig::parse(&text)
                .map_err(|problem| SettingsError::new("AGENT_CONFIG", problem))?,
            None => AgentConfig::default(),
        };
        let thread_id = uuid("THREAD_ID")?;
        let agent_id = uuid("AGENT_ID")?;
        // NOTE: workload assembly sets no AGENT_STATE_DIR yet, so the journal
        // lives in the temporary directory, which a new workload does not
        // share.
        let state_dir = value("AGENT_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("agyn-agent"));
        Ok(Self {
            agent_name: value("AGENT_NAME").unwrap_or_default(),
            agent_role: value("AGENT_ROLE").unwrap_or_default(),
            model: uuid("AGENT_MODEL")?,
            config,
            workload_id: uuid("WORKLOAD_ID")?,
            organization_id: uuid("ORGANIZATION_ID")?,
            gateway_url,
            llm_base_url,
            otlp_endpoint,
            credentials,
            mcp_servers: parse_mcp_servers(&value("AGENT_MCP_SERVERS").unwrap_or_default())?,
            hooks: parse_hooks(&value("AGENT_HOOKS").unwrap_or_default())?,
            state_dir,
            timing: Timing::default(),
            thread_id,
            agent_id,
        })
    }
}

fn parse_uuid(variable: &str, text: &str) -> Result<String, SettingsError> {
    uuid::Uuid::parse_str(text.trim())
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| SettingsError::new(variable, format!("must be a UUID, got {text:?}")))
}

/// Checks a base URL and returns it without a trailing `/`.
fn url_setting(variable: &str, text: &str) -> Result<String, SettingsError> {
    check_url(variable, text.trim().trim_end_matches('/'))
}

/// Checks that `text` is an http:// or https:// URL with a host part.
fn check_url(variable: &str, text: &str) -> Result<String, SettingsError> {
    let url = text.trim();
    let valid = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty());
    if valid {
        Ok(url.to_string())
    } else {
        Err(SettingsError::new(
            variable,
            format!("must be an http:// or https:// URL, got {text:?}"),
        ))
    }
}

/// Splits `name=value;name=value`, skipping empty entries.
fn entries<'a>(variable: &str, text: &'a str) -> Result<Vec<(&'a str, &'a str)>, SettingsError> {
    text.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .split_once('=')
                .map(|(name, value)| (name.trim(), value.trim()))
                .ok_or_else(|| {
                    SettingsError::new(variable, format!("entry {entry:?} is not name=URL"))
                })
        })
        .collect()
}

/// Parses `AGENT_MCP_SERVERS`: `name=http://127.0.0.1:<port><path>` entries
/// joined by `;`. Names follow the MCP name rule `^[a-z][a-z0-9_]{0,62}$`.
fn parse_mcp_servers(text: &str) -> Result<Vec<McpServerAddress>, SettingsError> {
    const VARIABLE: &str = "AGENT_MCP_SERVERS";
    let mut servers: Vec<McpServerAddress> = Vec::new();
    for (name, url) in entries(VARIABLE, text)? {
        let valid_name = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            return Err(SettingsError::new(
                VARIABLE,
                format!("server name {name:?} must match ^[a-z][a-z0-9_]{{0,62}}$"),
            ));
        }
        if servers.iter().any(|server| server.name == name) {
            return Err(SettingsError::new(
                VARIABLE,
                format!("server {name:?} is listed twice"),
            ));
        }
        servers.push(McpServerAddress {
            name: name.to_string(),
            url: check_url(VARIABLE, url)?,
        });
    }
    Ok(servers)
}

/// Parses `AGENT_HOOKS`: `<event>=<url>` entries joined by `;`, with
/// lowercase event names such as `turn_end`.
fn parse_hooks(text: &str) -> Result<Vec<HookAddress>, SettingsError> {
    const VARIABLE: &str = "AGENT_HOOKS";
    entries(VARIABLE, text)?
        .into_iter()
        .map(|(event, url)| {
            let event = HookEvent::parse(event).ok_or_else(|| {
                SettingsError::new(
                    VARIABLE,
                    format!(
                        "unknown hook event {event:?}; expected workload_start, turn_start, \
                         turn_end or workload_stop"
                    ),
                )
            })?;
            Ok(HookAddress {
                event,
                url: check_url(VARIABLE, url)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
