//! The MCP stdio bridge of `agyn launch --mcp-stdio-bridge`: it starts an
//! MCP server that speaks the stdio transport and serves it as MCP
//! streamable HTTP (protocol revisions 2025-03-26 to 2025-11-25) at one
//! path on `127.0.0.1`.
//!
//! - `POST` carries one JSON-RPC message, or a batch as 2025-03-26
//!   allows. Each message goes to the server's stdin as one line. The
//!   HTTP response to a request is the server's response
//!   (`application/json`), and to anything else 202 Accepted.
//! - `initialize` opens a session: its response names it in
//!   `Mcp-Session-Id`, which every later request must send (400 when
//!   missing, 404 when unknown). `DELETE` ends a session.
//! - `GET` returns 405, because the bridge has no stream for messages
//!   from the server (see [`stdio`]).
//! - A request with an `Origin` other than a loopback one gets 403, which
//!   keeps web pages from reaching the server through DNS rebinding.
//!
//! Every HTTP session shares the one stdio session of the child. The
//! bridge forwards SIGTERM and SIGINT to the child and exits with the
//! child's exit code when it ends.

mod jsonrpc;
mod sessions;
mod stdio;

use std::net::Ipv4Addr;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rustix::process::Signal;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use jsonrpc::Message;
use sessions::Sessions;

/// Header that carries the session id.
const SESSION_HEADER: &str = "mcp-session-id";

/// Header that carries the negotiated protocol revision (2025-06-18 and
/// later).
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Largest accepted POST body. MCP messages from an agent are tool calls
/// and listings, far below this.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Maximum wait, after the server exited, for the end of its stdout and
/// then for the HTTP responses to requests in progress.
const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// Checks the `--path` of the bridge.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with '/'");
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URL path without '?', '#', spaces or control characters");
    }
    Ok(())
}

/// Runs the bridge for `agyn launch`: listens on `127.0.0.1:port`, starts
/// `command` and returns the exit code of `command`, or 1 when the bridge
/// could not start.
pub async fn run(port: u16, path: String, command: Vec<String>) -> ExitCode {
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(port, %error, "Failed to listen for the MCP stdio bridge");
            return ExitCode::FAILURE;
        }
    };
    let (signals, received) = mpsc::unbounded_channel();
    if let Err(error) = watch_signals(signals) {
        tracing::error!(%error, "Failed to install the signal handlers");
        return ExitCode::FAILURE;
    }
    match serve(listener, path, command, received).await {
        Ok(status) => ExitCode::from(crate::shell_exit_code(status)),
        Err(error) => {
            tracing::error!(%error, "MCP stdio bridge failed");
            ExitCode::FAILURE
        }
    }
}

/// Sends every SIGTERM and SIGINT this process receives to `signals`.
fn watch_signals(signals: mpsc::UnboundedSender<Signal>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                Some(()) = terminate.recv() => Signal::TERM,
                Some(()) = interrupt.recv() => Signal::INT,
                else => return,
            };
            if signals.send(received).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Starts `command` with piped stdin and stdout and serves it on
/// `listener` at `path` until it exits. Each signal from `signals` is
/// sent to the child. Returns the child's exit status.
pub async fn serve(
    listener: TcpListener,
    path: String,
    command: Vec<String>,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> std::io::Result<ExitStatus> {
    let Some((program, arguments)) = command.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no program to run; pass it after --",
        ));
    };
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            std::io::Error::new(error.kind(), format!("failed to start {program}: {error}"))
        })?;
    let pid = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other(
            "the MCP server has no piped stdin or stdout",
        ));
    };
    let server = Arc::new(stdio::Server::new(stdin));
    let mut reader = tokio::spawn({
        let server = server.clone();
        async move { server.read_stdout(stdout).await }
    });

    let address = listener.local_addr()?;
    tracing::info!(%address, %path, %program, "MCP stdio bridge listening");
    let bridge = Arc::new(Bridge {
        path,
        server: server.clone(),
        sessions: Mutex::new(Sessions::default()),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(bridge);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut http = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "The MCP stdio bridge stopped serving HTTP");
        }
    });

    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signals.recv() => {
                tracing::info!(?signal, "Forwarding a signal to the MCP server");
                if let Some(pid) = pid
                    && let Err(error) = rustix::process::kill_process(pid, signal)
                {
                    tracing::warn!(%error, ?signal, "Failed to signal the MCP server");
                }
            }
        }
    };
    // The reader ends at the end of stdout, failing the requests that
    // still wait, and the HTTP server then sends those error responses
    // before it stops. A process that inherited stdout can keep it open, so both
    // waits are bounded.
    if tokio::time::timeout(EXIT_DRAIN, &mut reader).await.is_err() {
        reader.abort();
        server.fail_pending();
    }
    let _ = stop_http.send(());
    if tokio::time::timeout(EXIT_DRAIN, &mut http).await.is_err() {
        http.abort();
    }
    let status = status?;
    tracing::info!(
        exit_code = crate::shell_exit_code(status),
        "The MCP server exited"
    );
    Ok(status)
}

/// State shared by the HTTP handlers.
struct Bridge {
    path: String,
    server: Arc<stdio::Server>,
    sessions: Mutex<Sessions>,
}

impl Bridge {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Stops waiting for responses when the HTTP request ends, including when
/// the client disconnects first.
struct PendingGuard<'a> {
    server: &'a stdio::Server,
    ids: Vec<u64>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.server.forget(&self.ids);
    }
}

async fn handle(
    State(bridge): State<Arc<Bridge>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() != bridge.path {
        return (
            StatusCode::NOT_FOUND,
            "not found; the MCP endpoint is elsewhere\n",
        )
            .into_response();
    }
    if !origin_allowed(&headers) {
        return http_error(StatusCode::FORBIDDEN, "Origin is not a loopback origin");
    }
    match method {
        Method::POST => post(&bridge, &headers, &body).await,
        Method::DELETE => delete(&bridge, &headers),
        _ => {
            let mut response = http_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "the MCP stdio bridge offers no GET stream; use POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            response
        }
    }
}

/// Returns whether the request has no `Origin` (clients other than
/// browsers send none) or a loopback one.
fn origin_allowed(headers: &HeaderMap) -> bool {
    headers.get_all(header::ORIGIN).iter().all(|origin| {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Some(authority) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        let host = match authority.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        matches!(host, "127.0.0.1" | "localhost" | "::1")
    })
}

async fn post(bridge: &Bridge, headers: &HeaderMap, body: &[u8]) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| media_type(value) == "application/json");
    if !is_json {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    if !accepts_json(headers) {
        return http_error(
            StatusCode::NOT_ACCEPTABLE,
            "Accept must allow application/json, the only response type of the MCP stdio bridge",
        );
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::PARSE_ERROR,
                &format!("the body is not JSON: {error}"),
            );
        }
    };
    let (values, batch) = match value {
        Value::Array(values) if values.is_empty() => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "the batch is empty",
            );
        }
        Value::Array(values) => (values, true),
        value => (vec![value], false),
    };
    let mut messages = Vec::with_capacity(values.len());
    for value in values {
        match Message::parse(value) {
            Ok(message) => messages.push(message),
            Err(reason) => {
                return jsonrpc_error(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, &reason);
            }
        }
    }

    let initialize = messages.iter().any(
        |message| matches!(message, Message::Request { method, .. } if method == "initialize"),
    );
    if initialize {
        if batch {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "initialize must not be part of a batch",
            );
        }
        return forward(bridge, None, messages, false).await;
    }
    let session = match check_session(bridge, headers) {
        Ok(session) => session,
        Err((status, message)) => return http_error(status, &message),
    };
    forward(bridge, Some(session), messages, batch).await
}

/// Returns the session id of a request other than `initialize`, or the
/// HTTP status and message for a missing or unknown id or a protocol
/// revision other than the negotiated one.
fn check_session(bridge: &Bridge, headers: &HeaderMap) -> Result<String, (StatusCode, String)> {
    let Some(session) = headers
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
    else {
        return Err((
            StatusCode::BAD_REQUEST,
            "the Mcp-Session-Id header is missing; send initialize first".to_string(),
        ));
    };
    let sessions = bridge.sessions();
    let Some(negotiated) = sessions.protocol_version(session) else {
        return Err((
            StatusCode::NOT_FOUND,
            "the session is unknown or ended; send initialize again".to_string(),
        ));
    };
    let requested = headers
        .get(VERSION_HEADER)
        .and_then(|value| value.to_str().ok());
    if let (Some(requested), Some(negotiated)) = (requested, negotiated)
        && requested != negotiated
    {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "MCP-Protocol-Version {requested:?} differs from the version {negotiated:?} negotiated by initialize"
            ),
        ));
    }
    Ok(session.to_string())
}

/// Forwards `messages` to the server and answers with the responses to
/// the requests among them, in their order, or 202 when there are none.
/// A missing `session` means `messages` is one `initialize` request, whose
/// successful response opens a session.
async fn forward(
    bridge: &Bridge,
    session: Option<String>,
    messages: Vec<Message>,
    batch: bool,
) -> Response {
    let session_key = session.clone().unwrap_or_default();
    let mut guard = PendingGuard {
        server: &bridge.server,
        ids: Vec::new(),
    };
    let mut waiting = Vec::new();
    let mut lines = Vec::with_capacity(messages.len());
    for message in messages {
        match message {
            Message::Request { id, body, .. } => {
                let Ok((server_id, receiver)) = bridge.server.register(&session_key, id.clone())
                else {
                    return server_gone(id);
                };
                guard.ids.push(server_id);
                waiting.push((id, receiver));
                lines.push(jsonrpc::with_id(body, Value::from(server_id)));
            }
            Message::Notification { method, body } if method == "notifications/cancelled" => {
                if let Some(line) = map_cancellation(&bridge.server, &session_key, body) {
                    lines.push(line);
                }
            }
            Message::Notification { body, .. } | Message::Response { body, .. } => {
                lines.push(Value::Object(body));
            }
        }
    }
    if let Err(error) = bridge.server.write(&lines).await {
        tracing::warn!(%error, "Failed to write to the MCP server's stdin");
        return jsonrpc_error(
            StatusCode::BAD_GATEWAY,
            jsonrpc::INTERNAL_ERROR,
            "the MCP server no longer reads its stdin",
        );
    }
    if waiting.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }

    let mut responses = Vec::with_capacity(waiting.len());
    let mut status = StatusCode::OK;
    for (id, receiver) in waiting {
        match receiver.await {
            Ok(response) => responses.push(response),
            Err(_) => {
                status = StatusCode::BAD_GATEWAY;
                responses.push(server_gone_body(id));
            }
        }
    }
    drop(guard);

    let mut response_headers = HeaderMap::new();
    if session.is_none()
        && let Some(result) = responses[0].get("result")
    {
        let version = result.get("protocolVersion").and_then(Value::as_str);
        let session = bridge.sessions().open(version.map(str::to_string));
        tracing::info!(protocol_version = version, "Opened an MCP session");
        if let Ok(value) = HeaderValue::from_str(&session) {
            response_headers.insert(SESSION_HEADER, value);
        }
    }
    let body = if batch {
        Value::Array(responses)
    } else {
        responses.swap_remove(0)
    };
    (status, response_headers, axum::Json(body)).into_response()
}

/// Rewrites the `requestId` of a cancellation to the server-side id of
/// the request, or returns `None` when that request no longer waits.
fn map_cancellation(
    server: &stdio::Server,
    session: &str,
    mut body: serde_json::Map<String, Value>,
) -> Option<Value> {
    let request_id = body.get_mut("params")?.get_mut("requestId")?;
    let server_id = server.server_id(session, request_id)?;
    *request_id = Value::from(server_id);
    Some(Value::Object(body))
}

fn delete(bridge: &Bridge, headers: &HeaderMap) -> Response {
    let Some(session) = headers
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
    else {
        return http_error(
            StatusCode::BAD_REQUEST,
            "the Mcp-Session-Id header is missing",
        );
    };
    if bridge.sessions().close(session) {
        tracing::info!("Closed an MCP session");
        StatusCode::OK.into_response()
    } else {
        http_error(StatusCode::NOT_FOUND, "the session is unknown or ended")
    }
}

/// Returns the media type of a Content-Type value, lowercase and without
/// parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Returns whether the request's `Accept` allows `application/json`. A
/// missing `Accept` allows anything.
fn accepts_json(headers: &HeaderMap) -> bool {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    values.is_empty()
        || values
            .iter()
            .flat_map(|value| value.split(','))
            .map(media_type)
            .any(|media| matches!(media.as_str(), "application/json" | "application/*" | "*/*"))
}

fn server_gone_body(id: Value) -> Value {
    jsonrpc::error_response(
        id,
        jsonrpc::INTERNAL_ERROR,
        "the MCP server closed its stdout before it answered",
    )
}

fn server_gone(id: Value) -> Response {
    (StatusCode::BAD_GATEWAY, axum::Json(server_gone_body(id))).into_response()
}

/// Builds an HTTP error whose body is a JSON-RPC error without an id.
fn http_error(status: StatusCode, message: &str) -> Response {
    jsonrpc_error(status, jsonrpc::INVALID_REQUEST, message)
}

fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = jsonrpc::error_response(Value::Null, code, message);
    (status, axum::Json(body)).into_response()
}
