//! `agyn hook serve --port N`: the server of a hook sidecar.
//!
//! For every `POST /run` it runs the hook's function (`AGYN_HOOK_FUNCTION`)
//! with `/bin/sh -c`, with the request body on stdin and the payload's
//! `event` in `HOOK_EVENT`, and kills it after `AGYN_HOOK_TIMEOUT`
//! seconds. The response is
//! `{"exit_code", "timed_out", "stdout_tail", "stderr_tail"}`, each tail
//! the last 4 KiB of that output at most.

use std::net::Ipv4Addr;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::{Args, Subcommand};
use rustix::process::{Pid, Signal};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Maximum bytes of each output tail in a response.
pub const TAIL_BYTES: usize = 4096;

/// Largest accepted payload. The agent's payloads hold a few ids.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Time the output pipes may stay open after the function's shell ended,
/// for processes that left the process group and still hold them.
const PIPE_DRAIN: Duration = Duration::from_secs(1);

/// Arguments of `agyn hook`.
#[derive(Args, Debug)]
pub struct HookArgs {
    #[command(subcommand)]
    pub command: HookCommand,
}

/// Subcommands of `agyn hook`.
#[derive(Subcommand, Debug)]
pub enum HookCommand {
    /// Serve POST /run on 127.0.0.1, running the hook function for each call.
    Serve(HookServeArgs),
}

/// Arguments of `agyn hook serve`.
#[derive(Args, Debug)]
pub struct HookServeArgs {
    /// TCP port on 127.0.0.1; 0 picks a free port.
    #[arg(long, env = "HOOK_PORT")]
    pub port: u16,
    /// Shell command run for each call with `/bin/sh -c`.
    #[arg(
        long,
        env = "AGYN_HOOK_FUNCTION",
        hide_env_values = true,
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub function: String,
    /// Seconds after which the function is killed, 1 to 600.
    #[arg(
        long,
        env = "AGYN_HOOK_TIMEOUT",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub timeout: u64,
}

/// The result of one call of the function, sent as the JSON body of a
/// `POST /run` response.
#[derive(Debug, Serialize)]
pub struct HookOutcome {
    /// Exit code of the shell, or 128 plus the signal that killed it.
    pub exit_code: i32,
    pub timed_out: bool,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// Settings of a hook server.
#[derive(Clone, Debug)]
pub struct HookSettings {
    pub function: String,
    pub timeout: Duration,
}

/// Runs `agyn hook`.
pub fn run(args: HookArgs) -> ExitCode {
    let HookCommand::Serve(args) = args.command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "Failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, args.port)).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(port = args.port, %error, "Failed to listen for hook calls");
                return ExitCode::FAILURE;
            }
        };
        let settings = HookSettings {
            function: args.function,
            timeout: Duration::from_secs(args.timeout),
        };
        match serve(listener, settings, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "Hook server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Completes at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "Failed to install the signal handlers; stop the hook server with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// Serves `POST /run` on `listener` until `shutdown` completes, then
/// finishes the calls in progress.
pub async fn serve(
    listener: TcpListener,
    settings: HookSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, timeout = ?settings.timeout, "Hook server listening");
    let app = axum::Router::new()
        .route("/run", axum::routing::post(handle_run))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(settings));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("Hook server stopped");
    Ok(())
}

async fn handle_run(State(settings): State<Arc<HookSettings>>, body: Bytes) -> Response {
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(error) => {
            return bad_request(&format!("the body is not JSON: {error}"));
        }
    };
    let Some(event) = payload.get("event").and_then(Value::as_str) else {
        return bad_request("field event is required and must be a string");
    };
    let started = Instant::now();
    match run_function(&settings, event, body.clone()).await {
        Ok(outcome) => {
            let elapsed_ms = started.elapsed().as_millis() as u64;
            if outcome.timed_out || outcome.exit_code != 0 {
                tracing::warn!(
                    event,
                    exit_code = outcome.exit_code,
                    timed_out = outcome.timed_out,
                    elapsed_ms,
                    "Hook function failed"
                );
            } else {
                tracing::info!(event, elapsed_ms, "Ran the hook function");
            }
            axum::Json(outcome).into_response()
        }
        Err(error) => {
            tracing::error!(event, %error, "Failed to start the hook function");
            let body = json!({ "error": format!("failed to start /bin/sh: {error}") });
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// Runs the function once with `input` on stdin. The shell leads its own
/// process group, which is killed when the shell ends or times out, so no
/// process of the call outlives it.
pub async fn run_function(
    settings: &HookSettings,
    event: &str,
    input: Bytes,
) -> std::io::Result<HookOutcome> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&settings.function)
        .env("HOOK_EVENT", event)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let group = child.id().and_then(|pid| Pid::from_raw(pid as i32));
    if let Some(mut stdin) = child.stdin.take() {
        // A function that does not read its stdin closes the pipe early,
        // which is not an error of the call.
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let stdout = Tail::collect(child.stdout.take());
    let stderr = Tail::collect(child.stderr.take());

    let (status, timed_out) = match tokio::time::timeout(settings.timeout, child.wait()).await {
        Ok(status) => (status?, false),
        Err(_) => {
            kill_group(group);
            (child.wait().await?, true)
        }
    };
    kill_group(group);
    let stdout_tail = stdout.finish().await;
    let stderr_tail = stderr.finish().await;
    Ok(HookOutcome {
        exit_code: i32::from(crate::shell_exit_code(status)),
        timed_out,
        stdout_tail,
        stderr_tail,
    })
}

/// Sends SIGKILL to the process group led by the function's shell. A
/// group with no process left is not an error.
fn kill_group(group: Option<Pid>) {
    if let Some(group) = group
        && let Err(error) = rustix::process::kill_process_group(group, Signal::KILL)
        && error != rustix::io::Errno::SRCH
    {
        tracing::warn!(%error, "Failed to kill the hook function's process group");
    }
}

/// The last bytes of one output pipe, read by a background task.
struct Tail {
    bytes: Arc<Mutex<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Tail {
    fn collect(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let task = pipe.map(|mut pipe| {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(read) = pipe.read(&mut chunk).await {
                    if read == 0 {
                        break;
                    }
                    let mut bytes = bytes
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    bytes.extend_from_slice(&chunk[..read]);
                    if bytes.len() > 2 * TAIL_BYTES {
                        let excess = bytes.len() - TAIL_BYTES;
                        bytes.drain(..excess);
                    }
                }
            })
        });
        Self { bytes, task }
    }

    /// Waits for the end of the pipe, at most [`PIPE_DRAIN`], and returns
    /// the tail as text of at most [`TAIL_BYTES`] bytes.
    async fn finish(mut self) -> String {
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(PIPE_DRAIN, task).await.is_err() {
                abort.abort();
            }
        }
        let bytes = self
            .bytes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tail_text(&bytes)
    }
}

/// Returns the end of `bytes` as UTF-8 text of at most [`TAIL_BYTES`]
/// bytes, with invalid sequences replaced and no partial character at the
/// start.
pub fn tail_text(bytes: &[u8]) -> String {
    let mut start = bytes.len().saturating_sub(TAIL_BYTES);
    // Continuation bytes at the cut belong to a character that started
    // before it; a UTF-8 character has at most three of them.
    let mut skipped = 0;
    while start > 0 && skipped < 3 && bytes.get(start).is_some_and(|byte| byte & 0xC0 == 0x80) {
        start += 1;
        skipped += 1;
    }
    let text = String::from_utf8_lossy(&bytes[start..]);
    // Replacement characters are longer than the bytes they replace.
    let mut cut = text.len().saturating_sub(TAIL_BYTES);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_string()
}
