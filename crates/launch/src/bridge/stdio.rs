//! The MCP server's side of the bridge: lines written to the child's stdin
//! and messages read from its stdout.
//!
//! Every request forwarded to the server gets a bridge-wide numeric id,
//! so that requests of different HTTP sessions with the same id cannot
//! be confused. The response is sent back under the client's own id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use super::jsonrpc::{self, Message};

/// Maximum length of a line from the server's stdout. Longer lines are
/// dropped, so a broken server cannot exhaust memory.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// The server's stdout closed, so no response can arrive.
#[derive(Debug)]
pub struct Closed;

/// A forwarded request waiting for the server's response.
struct Pending {
    session: String,
    client_id: Value,
    reply: oneshot::Sender<Value>,
}

/// The child's stdin and the requests waiting for its stdout.
pub struct Server {
    stdin: tokio::sync::Mutex<ChildStdin>,
    /// `None` once stdout closed.
    pending: Mutex<Option<HashMap<u64, Pending>>>,
    next_id: AtomicU64,
}

impl Server {
    pub fn new(stdin: ChildStdin) -> Self {
        Self {
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<HashMap<u64, Pending>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a request of `session` with the client's id and returns
    /// the id to send to the server and the receiver of the response,
    /// which carries the client's id again.
    pub fn register(
        &self,
        session: &str,
        client_id: Value,
    ) -> Result<(u64, oneshot::Receiver<Value>), Closed> {
        let mut pending = self.pending();
        let pending = pending.as_mut().ok_or(Closed)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        pending.insert(
            id,
            Pending {
                session: session.to_string(),
                client_id,
                reply,
            },
        );
        Ok((id, receiver))
    }

    /// Stops waiting for the responses to `ids`.
    pub fn forget(&self, ids: &[u64]) {
        if let Some(pending) = self.pending().as_mut() {
            for id in ids {
                pending.remove(id);
            }
        }
    }

    /// Returns the server-side id of the waiting request that `session`
    /// sent with `client_id`.
    pub fn server_id(&self, session: &str, client_id: &Value) -> Option<u64> {
        self.pending().as_ref()?.iter().find_map(|(id, pending)| {
            (pending.session == session && &pending.client_id == client_id).then_some(*id)
        })
    }

    /// Writes each message as one line to the server's stdin.
    pub async fn write(&self, messages: &[Value]) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        for message in messages {
            // serde_json escapes newlines inside strings, so the line
            // contains exactly one message.
            let mut line = serde_json::to_vec(message)?;
            line.push(b'\n');
            stdin.write_all(&line).await?;
        }
        stdin.flush().await
    }

    /// Reads the server's stdout until it closes, delivering responses to
    /// their waiting requests. At the end every waiting request fails.
    pub async fn read_stdout(&self, stdout: ChildStdout) {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut reader, &mut line).await {
                Ok(true) => self.handle_line(&line).await,
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(%error, "Failed to read the MCP server's stdout");
                    break;
                }
            }
        }
        tracing::info!("The MCP server closed its stdout");
        self.fail_pending();
    }

    /// Fails every waiting request and every later one, because no
    /// response can arrive any more.
    pub fn fail_pending(&self) {
        self.pending().take();
    }

    async fn handle_line(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let value = match serde_json::from_slice::<Value>(line) {
            Ok(value) => value,
            Err(error) => {
                // The line itself is not logged, because it may contain
                // anything the server handles.
                tracing::warn!(bytes = line.len(), %error, "Dropped a line of the MCP server's stdout that is not JSON");
                return;
            }
        };
        let values = match value {
            Value::Array(values) => values,
            value => vec![value],
        };
        for value in values {
            self.handle_message(value).await;
        }
    }

    async fn handle_message(&self, value: Value) {
        match Message::parse(value) {
            Ok(Message::Response { id, body }) => self.deliver(id, body),
            Ok(Message::Request { id, method, .. }) => {
                self.answer_server_request(id, &method).await
            }
            Ok(Message::Notification { method, .. }) => {
                // NOTE: the bridge offers no GET stream, so notifications
                // from the server (progress, logging, list changes) are
                // dropped.
                tracing::debug!(%method, "Dropped a notification from the MCP server");
            }
            Err(reason) => {
                tracing::warn!(%reason, "Dropped an invalid JSON-RPC message from the MCP server");
            }
        }
    }

    fn deliver(&self, id: Value, body: serde_json::Map<String, Value>) {
        let waiting = id
            .as_u64()
            .and_then(|id| self.pending().as_mut()?.remove(&id));
        match waiting {
            Some(pending) => {
                let _ = pending
                    .reply
                    .send(jsonrpc::with_id(body, pending.client_id));
            }
            None => {
                tracing::debug!(%id, "Dropped a response to a request that no client waits for");
            }
        }
    }

    /// Responds to a request from the server to the client, which the
    /// bridge cannot forward: `ping` gets an empty result, anything else
    /// "method not found", so the server does not wait forever.
    async fn answer_server_request(&self, id: Value, method: &str) {
        let answer = if method == "ping" {
            json!({ "jsonrpc": "2.0", "id": id, "result": {} })
        } else {
            tracing::info!(%method, "Rejected a request from the MCP server to the client, which the bridge does not forward");
            jsonrpc::error_response(
                id,
                jsonrpc::METHOD_NOT_FOUND,
                "the MCP stdio bridge does not forward requests from the server to the client",
            )
        };
        if let Err(error) = self.write(&[answer]).await {
            tracing::warn!(%error, "Failed to respond to a request of the MCP server");
        }
    }
}

/// Reads one line without its newline into `line`, dropping lines longer
/// than [`MAX_LINE_BYTES`]. Returns `false` at the end of the stream.
async fn read_line(
    reader: &mut BufReader<ChildStdout>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut overlong = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(!line.is_empty());
        }
        let (chunk, consumed, complete) = match buffer.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&buffer[..end], end + 1, true),
            None => (buffer, buffer.len(), false),
        };
        if !overlong {
            line.extend_from_slice(chunk);
            if line.len() > MAX_LINE_BYTES {
                tracing::warn!(
                    max_bytes = MAX_LINE_BYTES,
                    "Dropped an overlong line of the MCP server's stdout"
                );
                overlong = true;
                line.clear();
            }
        }
        reader.consume(consumed);
        if complete {
            if overlong {
                overlong = false;
                continue;
            }
            return Ok(true);
        }
    }
}
