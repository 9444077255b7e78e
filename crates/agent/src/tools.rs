//! The tools the model may call: every tool of the workload's MCP servers
//! as `<server>__<tool>`, and the built-in `agyn_read_file`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway::GatewaySession;
use crate::mcp::{McpError, McpServer};

/// Name of the built-in tool that reads an attached file.
pub const READ_FILE_TOOL: &str = "agyn_read_file";

/// Largest file whose text `agyn_read_file` returns.
const MAX_READ_FILE_BYTES: usize = 1024 * 1024;

/// Maximum length of a function name in the OpenAI API.
const MAX_FUNCTION_NAME_CHARS: usize = 64;

/// The result of one tool call: the text sent back as the call's
/// `function_call_output`, and the error class recorded on its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub output: String,
    /// `tool_error`, `timeout`, `unavailable` or `invalid_call`; `None` on
    /// success.
    pub error_type: Option<&'static str>,
}

impl ToolResult {
    fn ok(output: String) -> Self {
        Self {
            output,
            error_type: None,
        }
    }

    fn error(error_type: &'static str, output: String) -> Self {
        Self {
            output,
            error_type: Some(error_type),
        }
    }
}

/// The tools of one workload.
#[derive(Debug, Clone)]
pub struct Toolbox {
    servers: Vec<Arc<McpServer>>,
    gateway: GatewaySession,
}

impl Toolbox {
    pub fn new(servers: Vec<Arc<McpServer>>, gateway: GatewaySession) -> Self {
        Self { servers, gateway }
    }

    /// Connects the servers that are still down, one attempt each, side by
    /// side and each within `limit`.
    pub async fn reconnect_missing(&self, limit: Duration) {
        let attempts = self
            .servers
            .iter()
            .map(|server| server.ensure_connected(limit));
        futures::future::join_all(attempts).await;
    }

    /// Returns the function tool definitions of the request.
    pub async fn definitions(&self) -> Vec<Value> {
        let mut definitions = Vec::new();
        for server in &self.servers {
            let Some(tools) = server.tools().await else {
                continue;
            };
            for tool in tools {
                let name = format!("{}__{}", server.name, tool.name);
                if !valid_function_name(&name) {
                    tracing::warn!(
                        mcp = %server.name,
                        tool = %tool.name,
                        "Skipping a tool whose name the model API does not accept"
                    );
                    continue;
                }
                definitions.push(json!({
                    "type": "function",
                    "name": name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                    "strict": false,
                }));
            }
        }
        definitions.push(json!({
            "type": "function",
            "name": READ_FILE_TOOL,
            "description": "Read a file attached to a message of this thread, named by the id of its \
                            agyn://file/<id> line. Returns the text of text, JSON, XML and YAML files \
                            up to 1 MiB, and a short description of other files.",
            "parameters": {
                "type": "object",
                "properties": {"file_id": {"type": "string", "description": "The file id"}},
                "required": ["file_id"],
            },
            "strict": false,
        }));
        definitions
    }

    /// Runs one call. Every failure becomes an `ERROR: ...` output, so the
    /// model always gets a result.
    pub async fn call(&self, name: &str, arguments: &str) -> ToolResult {
        let arguments: Value = match arguments.trim() {
            "" => json!({}),
            text => match serde_json::from_str(text) {
                Ok(value @ Value::Object(_)) => value,
                Ok(_) => {
                    return ToolResult::error(
                        "invalid_call",
                        "ERROR: the arguments must be a JSON object".to_string(),
                    );
                }
                Err(error) => {
                    return ToolResult::error(
                        "invalid_call",
                        format!("ERROR: the arguments are not valid JSON: {error}"),
                    );
                }
            },
        };
        if name == READ_FILE_TOOL {
            return self.read_file(&arguments).await;
        }
        let Some((server_name, tool)) = name.split_once("__") else {
            return ToolResult::error("invalid_call", format!("ERROR: unknown tool {name}"));
        };
        let Some(server) = self
            .servers
            .iter()
            .find(|server| server.name == server_name)
        else {
            return ToolResult::error("invalid_call", format!("ERROR: unknown tool {name}"));
        };
        match server.call_tool(tool, arguments).await {
            Ok(outcome) if outcome.is_error => {
                ToolResult::error("tool_error", format!("ERROR: {}", outcome.text))
            }
            Ok(outcome) => ToolResult::ok(outcome.text),
            Err(McpError::Timeout) => ToolResult::error(
                "timeout",
                format!(
                    "ERROR: tool call timed out after {}s",
                    server.tool_timeout.as_secs()
                ),
            ),
            Err(McpError::Rpc { message, .. }) => {
                ToolResult::error("tool_error", format!("ERROR: {message}"))
            }
            Err(error @ (McpError::Transport(_) | McpError::SessionLost)) => {
                tracing::warn!(mcp = %server.name, tool, %error, "Tool call failed");
                ToolResult::error("unavailable", "ERROR: tool unavailable".to_string())
            }
        }
    }

    async fn read_file(&self, arguments: &Value) -> ToolResult {
        let Some(file_id) = arguments.get("file_id").and_then(Value::as_str) else {
            return ToolResult::error("invalid_call", "ERROR: file_id is required".to_string());
        };
        let file_id = file_id.trim().trim_start_matches("agyn://file/");
        let info = match self.gateway.file_metadata(file_id).await {
            Ok(info) => info,
            Err(error) => {
                return ToolResult::error("tool_error", format!("ERROR: {}", error.message()));
            }
        };
        let description = format!(
            "{} ({}, {} bytes)",
            info.filename, info.content_type, info.size_bytes
        );
        if !is_text_type(&info.content_type) {
            return ToolResult::ok(format!(
                "File {description} is not a text file, so its content is not shown."
            ));
        }
        if info.size_bytes > MAX_READ_FILE_BYTES as i64 {
            return ToolResult::ok(format!(
                "File {description} is larger than 1 MiB, so its content is not shown."
            ));
        }
        match self
            .gateway
            .file_content(file_id, MAX_READ_FILE_BYTES)
            .await
        {
            Ok(bytes) => ToolResult::ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(error) => ToolResult::error("tool_error", format!("ERROR: {}", error.message())),
        }
    }
}

/// Returns whether the model API accepts `name`: `^[A-Za-z0-9_-]{1,64}$`.
fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_FUNCTION_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `agyn_read_file` returns the content of a file of this media
/// type: `text/*`, JSON, XML and YAML (including `+json` and `+xml`
/// suffixes).
pub fn is_text_type(content_type: &str) -> bool {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media_type.starts_with("text/")
        || matches!(
            media_type.as_str(),
            "application/json"
                | "application/xml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/ndjson"
        )
        || media_type.ends_with("+json")
        || media_type.ends_with("+xml")
        || media_type.ends_with("+yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_types() {
        for media_type in [
            "text/plain",
            "text/csv; charset=utf-8",
            "application/json",
            "application/ld+json",
            "application/xml",
            "application/x-yaml",
        ] {
            assert!(is_text_type(media_type), "{media_type}");
        }
        for media_type in ["image/png", "application/pdf", "application/octet-stream"] {
            assert!(!is_text_type(media_type), "{media_type}");
        }
    }

    #[test]
    fn function_names() {
        assert!(valid_function_name("tools__add"));
        assert!(!valid_function_name("tools__a.b"));
        assert!(!valid_function_name(&"x".repeat(65)));
    }
}
