//! `agyn agent`: the built-in agent program that runs as the main
//! container of a workload.
//!
//! It serves one thread for one agent. On each wake-up (a notification of
//! its thread, or a poll) it takes every message it has not acked as the
//! batch of a turn. It calls the agent's model through the platform's LLM
//! proxy and runs the tool calls the model makes against the workload's
//! MCP servers. Then it stores the reply, and only after that acks the
//! batch. While a turn runs it touches its workload, and it exports spans
//! of every turn.
//!
//! [`run`] takes its [`Settings`] explicitly, so a test can run the agent
//! in process; [`run_from_env`] is the program's entry point.

mod agent;
mod context;
mod gateway;
mod hooks;
mod http;
mod journal;
mod llm;
mod mcp;
mod settings;
mod sse;
mod tools;
mod trace;
mod turn;
mod watch;

use std::future::Future;

pub use agent::run;
pub use context::reply_request_id;
pub use hooks::HookEvent;
pub use journal::INTERRUPTED_OUTPUT;
pub use settings::{
    AgentConfig, Credentials, HookAddress, McpServerAddress, Settings, SettingsError, Timing,
};

/// The failure that stopped the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid settings: {0}")]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Http(String),
    #[error("failed to prepare the gateway connection: {0}")]
    Connect(Box<agyn_core::Error>),
    #[error("{method} failed at startup: {error}")]
    Startup {
        method: &'static str,
        error: Box<agyn_core::Error>,
    },
    /// Model calls kept failing and `reply_on_error` is false, so the
    /// batch stays unacked for the next workload.
    #[error("model calls failed and reply_on_error is false: {0}")]
    Model(String),
}

/// Flags of `agyn agent`. Everything else comes from the workload's
/// environment (see [`Settings::from_env`]).
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Log level or tracing filter.
    #[arg(long, env = "AGYN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "AGYN_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Runs the agent with settings from the environment until SIGTERM or
/// SIGINT. The signal handlers are installed first, so a signal during
/// startup also stops the agent cleanly.
pub async fn run_from_env() -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = termination_signal()?;
    let settings = Settings::from_env()?;
    run(settings, shutdown).await?;
    Ok(())
}

/// Installs SIGTERM and SIGINT handlers and returns a future that
/// completes at the first of them.
pub fn termination_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "Stopping the agent");
    })
}
