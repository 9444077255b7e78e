//! A client of MCP servers over the streamable HTTP transport with the
//! `initialize` handshake (protocol revisions 2025-03-26 to 2025-11-25).
//!
//! Each JSON-RPC message is one POST. The server responds with a JSON body
//! or with an event stream that carries the response among notifications,
//! and names its session in the `Mcp-Session-Id` header of the
//! `initialize` response. A 404 on a request that carries the session id
//! means the server forgot the session, for example because it restarted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::sse;

/// The revision the agent requests. Servers respond with the revision they
/// speak, which the agent then sends in `MCP-Protocol-Version`.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// Time limit of the handshake and tool listing requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between connection attempts at startup.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_secs(1);

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// A failed MCP exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// The server returned 404 to a request with the session id.
    #[error("the MCP session expired")]
    SessionLost,
    /// The request did not reach the server or its response was unusable.
    #[error("{0}")]
    Transport(String),
    /// The server returned a JSON-RPC error.
    #[error("{message}")]
    Rpc { code: i64, message: String },
    /// The request did not complete before its deadline.
    #[error("the MCP request timed out")]
    Timeout,
}

/// One tool a server offers.
#[derive(Debug, Clone)]
pub struct McpTool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
}

/// The text result of a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    pub text: String,
    /// Whether the tool reported an error (`isError`).
    pub is_error: bool,
}

/// An initialized session.
#[derive(Debug, Clone)]
struct Session {
    id: Option<String>,
    protocol_version: String,
    tools: Vec<McpTool>,
}

/// One MCP server of the workload.
#[derive(Debug)]
pub struct McpServer {
    pub name: String,
    url: String,
    /// Limit of one tool call.
    pub tool_timeout: Duration,
    http: reqwest::Client,
    session: Mutex<Option<Session>>,
    next_id: AtomicU64,
}

impl McpServer {
    pub fn new(name: &str, url: &str, tool_timeout: Duration, http: reqwest::Client) -> Self {
        Self {
            name: name.to_string(),
            url: url.to_string(),
            tool_timeout,
            http,
            session: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// Returns the server's tools, or `None` while it is not connected.
    pub async fn tools(&self) -> Option<Vec<McpTool>> {
        self.session
            .lock()
            .await
            .as_ref()
            .map(|session| session.tools.clone())
    }

    /// Connects unless already connected, giving up after `limit`, so that
    /// a server that accepts requests but never responds cannot hold up a
    /// turn. Returns whether it is connected.
    pub async fn ensure_connected(&self, limit: Duration) -> bool {
        if self.session.lock().await.is_some() {
            return true;
        }
        let connected = tokio::time::timeout(limit, self.connect())
            .await
            .unwrap_or(Err(McpError::Timeout));
        match connected {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(mcp = %self.name, url = %self.url, %error, "MCP server is unavailable");
                false
            }
        }
    }

    /// Tries to connect until `window` has passed, because sidecars may
    /// start after the agent. An attempt still waiting for a response at
    /// the end of the window is abandoned. Returns whether it connected.
    pub async fn connect_within(&self, window: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + window;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let connected = tokio::time::timeout_at(deadline, self.connect())
                .await
                .unwrap_or(Err(McpError::Timeout));
            match connected {
                Ok(()) => return true,
                Err(error) if tokio::time::Instant::now() + CONNECT_RETRY_PAUSE < deadline => {
                    tracing::debug!(mcp = %self.name, attempts, %error, "MCP server not ready; retrying");
                    tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
                }
                Err(error) => {
                    tracing::warn!(
                        mcp = %self.name,
                        url = %self.url,
                        attempts,
                        %error,
                        "MCP server is unavailable; it is retried at every turn"
                    );
                    return false;
                }
            }
        }
    }

    /// Runs the handshake and lists the tools, replacing any session.
    pub async fn connect(&self) -> Result<(), McpError> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "agyn-agent", "version": env!("CARGO_PKG_VERSION")},
        });
        let (result, session_id) = self
            .request(None, "initialize", params, request_deadline())
            .await?;
        let protocol_version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(PROTOCOL_VERSION)
            .to_string();
        let mut session = Session {
            id: session_id,
            protocol_version,
            tools: Vec::new(),
        };
        self.notify(&session, "notifications/initialized", json!({}))
            .await?;
        session.tools = self.list_tools(&session).await?;
        tracing::info!(
            mcp = %self.name,
            tools = session.tools.len(),
            protocol_version = %session.protocol_version,
            "MCP server connected"
        );
        *self.session.lock().await = Some(session);
        Ok(())
    }

    async fn list_tools(&self, session: &Session) -> Result<Vec<McpTool>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let (result, _) = self
                .request(Some(session), "tools/list", params, request_deadline())
                .await?;
            for tool in result
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                tools.push(McpTool {
                    name: name.to_string(),
                    description: tool
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    input_schema: tool
                        .get("inputSchema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                });
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .filter(|cursor| !cursor.is_empty())
                .map(str::to_string);
            if cursor.is_none() {
                return Ok(tools);
            }
        }
    }

    /// Calls `tool` with `arguments` within the tool timeout. A lost
    /// session is initialized again once and the call repeated.
    pub async fn call_tool(&self, tool: &str, arguments: Value) -> Result<ToolOutcome, McpError> {
        let deadline = tokio::time::Instant::now() + self.tool_timeout;
        let mut reconnected = false;
        loop {
            let current = self.session.lock().await.clone();
            let Some(session) = current else {
                match tokio::time::timeout_at(deadline, self.connect()).await {
                    Ok(connected) => connected?,
                    Err(_) => return Err(McpError::Timeout),
                }
                reconnected = true;
                continue;
            };
            let params = json!({"name": tool, "arguments": arguments});
            match self
                .request(Some(&session), "tools/call", params, deadline)
                .await
            {
                Ok((result, _)) => return Ok(tool_outcome(&result)),
                Err(McpError::SessionLost) if !reconnected => {
                    tracing::info!(mcp = %self.name, "MCP session lost; initializing again");
                    reconnected = true;
                    *self.session.lock().await = None;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Sends a notification, which has no response.
    async fn notify(&self, session: &Session, method: &str, params: Value) -> Result<(), McpError> {
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let response = self
            .post(Some(session), &message)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(transport)?;
        check_status(&response, true)?;
        Ok(())
    }

    fn post(&self, session: Option<&Session>, message: &Value) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .post(&self.url)
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .json(message);
        if let Some(session) = session {
            builder = builder.header(VERSION_HEADER, &session.protocol_version);
            if let Some(id) = &session.id {
                builder = builder.header(SESSION_HEADER, id);
            }
        }
        builder
    }

    /// Sends a request and waits until `deadline` for its response.
    /// Returns the `result` and the `Mcp-Session-Id` response header.
    async fn request(
        &self,
        session: Option<&Session>,
        method: &str,
        params: Value,
        deadline: tokio::time::Instant,
    ) -> Result<(Value, Option<String>), McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let exchange = async {
            let response = self
                .post(session, &message)
                .send()
                .await
                .map_err(transport)?;
            check_status(&response, session.and_then(|s| s.id.as_ref()).is_some())?;
            let session_id = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            let reply = self.read_response(session, response, id).await?;
            Ok((reply, session_id))
        };
        let (reply, session_id) = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(outcome) => outcome?,
            Err(_) => {
                if let Some(session) = session {
                    self.cancel(session, id);
                }
                return Err(McpError::Timeout);
            }
        };
        if let Some(error) = reply.get("error") {
            return Err(McpError::Rpc {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the MCP server returned an error")
                    .to_string(),
            });
        }
        Ok((
            reply.get("result").cloned().unwrap_or(Value::Null),
            session_id,
        ))
    }

    /// Reads the JSON-RPC response with `id` from a JSON body or an event
    /// stream, and responds to the requests the server sends before it.
    async fn read_response(
        &self,
        session: Option<&Session>,
        response: reqwest::Response,
        id: u64,
    ) -> Result<Value, McpError> {
        let event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if !event_stream {
            let body: Value = response
                .json()
                .await
                .map_err(|error| McpError::Transport(format!("invalid MCP response: {error}")))?;
            let messages = match body {
                Value::Array(messages) => messages,
                message => vec![message],
            };
            return messages
                .into_iter()
                .find(|message| is_response_to(message, id))
                .ok_or_else(|| McpError::Transport("the MCP response has no result".to_string()));
        }
        let mut parser = sse::Parser::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(transport)?;
            for event in parser.feed(&chunk) {
                let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                if is_response_to(&message, id) {
                    return Ok(message);
                }
                if let (Some(session), Some(_)) = (session, message.get("method")) {
                    self.answer_server_request(session, &message).await;
                }
            }
        }
        Err(McpError::Transport(
            "the MCP event stream ended before the response".to_string(),
        ))
    }

    /// Responds to a request the server sent to the client: `ping`
    /// succeeds, and any other method is not supported. Notifications need
    /// no response.
    async fn answer_server_request(&self, session: &Session, message: &Value) {
        let Some(id) = message.get("id") else {
            return;
        };
        let answer = match message.get("method").and_then(Value::as_str) {
            Some("ping") => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
            _ => json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": -32601, "message": "method not supported by the agent"}}),
        };
        if let Err(error) = self
            .post(Some(session), &answer)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
        {
            tracing::debug!(mcp = %self.name, %error, "Failed to respond to an MCP server request");
        }
    }

    /// Tells the server, in the background, that request `id` is abandoned.
    fn cancel(&self, session: &Session, id: u64) {
        let message = json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "timed out"},
        });
        let request = self.post(Some(session), &message).timeout(REQUEST_TIMEOUT);
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(error) = request.send().await {
                tracing::debug!(mcp = %name, %error, "Failed to cancel an MCP request");
            }
        });
    }
}

fn request_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + REQUEST_TIMEOUT
}

fn is_response_to(message: &Value, id: u64) -> bool {
    message.get("id").and_then(Value::as_u64) == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

fn transport(error: reqwest::Error) -> McpError {
    McpError::Transport(format!("MCP request failed: {error}"))
}

/// Maps a 404 on a request with a session to [`McpError::SessionLost`]
/// and other failure statuses to [`McpError::Transport`].
fn check_status(response: &reqwest::Response, with_session: bool) -> Result<(), McpError> {
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND && with_session {
        return Err(McpError::SessionLost);
    }
    if !status.is_success() {
        return Err(McpError::Transport(format!(
            "the MCP server returned HTTP {status}"
        )));
    }
    Ok(())
}

/// Turns a `tools/call` result into text: text parts as they are, other
/// parts as a short description, and the structured content when there is
/// no content list.
pub fn tool_outcome(result: &Value) -> ToolOutcome {
    let is_error = result.get("isError").and_then(Value::as_bool) == Some(true);
    let parts: Vec<String> = result
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(describe_part)
        .collect();
    let text = if parts.is_empty() {
        result
            .get("structuredContent")
            .map(Value::to_string)
            .unwrap_or_default()
    } else {
        parts.join("\n")
    };
    ToolOutcome { text, is_error }
}

fn describe_part(part: &Value) -> String {
    let field = |name: &str| part.get(name).and_then(Value::as_str).unwrap_or_default();
    let encoded_bytes = |name: &str| field(name).len() / 4 * 3;
    match field("type") {
        "text" => field("text").to_string(),
        "image" | "audio" => format!(
            "[{} {}, about {} bytes]",
            field("type"),
            field("mimeType"),
            encoded_bytes("data")
        ),
        "resource" => {
            let resource = part.get("resource").cloned().unwrap_or_default();
            match resource.get("text").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => format!(
                    "[resource {}]",
                    resource
                        .get("uri")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            }
        }
        "resource_link" => format!("[resource link {}]", field("uri")),
        other => format!("[{other} content]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parts_join_and_others_are_described() {
        let outcome = tool_outcome(&json!({"content": [
            {"type": "text", "text": "one"},
            {"type": "image", "mimeType": "image/png", "data": "AAAA"},
            {"type": "resource", "resource": {"uri": "file:///a", "text": "inline"}},
            {"type": "resource_link", "uri": "file:///b"},
        ]}));
        assert_eq!(
            outcome.text,
            "one\n[image image/png, about 3 bytes]\ninline\n[resource link file:///b]"
        );
        assert!(!outcome.is_error);
    }

    #[test]
    fn error_flag_and_structured_content() {
        let outcome = tool_outcome(&json!({"isError": true, "structuredContent": {"a": 1}}));
        assert_eq!(outcome.text, r#"{"a":1}"#);
        assert!(outcome.is_error);
    }
}
