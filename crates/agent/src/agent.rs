//! The agent's life: startup, the wait for messages, turns, and the stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agyn_client::agents;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::context::AgentProfile;
use crate::gateway::GatewaySession;
use crate::hooks::{HookContext, HookEvent, Hooks};
use crate::journal::Journal;
use crate::llm::LlmClient;
use crate::mcp::McpServer;
use crate::settings::Settings;
use crate::tools::Toolbox;
use crate::trace::{ExportTarget, SpanData, Tracer};
use crate::turn::TurnError;
use crate::{AgentError, http};

/// Tool call limit of an MCP server that ListMcps does not return.
const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Attempts of each startup call while the gateway is unavailable, one
/// second apart.
const STARTUP_ATTEMPTS: u32 = 30;

/// Time the final span export may take at shutdown.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Everything a turn uses.
pub(crate) struct Agent {
    pub settings: Settings,
    pub gateway: GatewaySession,
    pub llm: LlmClient,
    pub toolbox: Toolbox,
    pub hooks: Hooks,
    pub tracer: Tracer,
    pub journal: Journal,
    pub profile: AgentProfile,
    pub skills: Vec<agents::Skill>,
    /// Cancelled when TouchWorkload reports that the workload is stopping.
    pub stopping: CancellationToken,
    /// Spans of the running turn that have not ended, so an aborted turn
    /// can end them.
    pub open_spans: Vec<SpanData>,
    /// Turns started by this process, part of the span keys so that a
    /// repeated turn does not overwrite the spans of an earlier attempt.
    pub turns_started: u64,
}

/// Runs the agent until `shutdown` completes or the workload is being
/// stopped, both of which end the run with `Ok`. The run fails at startup
/// when the gateway rejects the agent, and later only when the model keeps
/// failing and the configuration sets `reply_on_error` to false.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.cancel();
    });

    tracing::info!(
        agent_id = %settings.agent_id,
        thread_id = %settings.thread_id,
        workload_id = %settings.workload_id,
        "Agent starting"
    );
    let platform_http = http::platform_client(&settings.credentials)?;
    let local_http = http::local_client()?;
    let gateway =
        GatewaySession::connect(&settings).map_err(|error| AgentError::Connect(Box::new(error)))?;
    let (tracer, exporter) = Tracer::start(ExportTarget {
        http: platform_http.clone(),
        endpoint: settings.otlp_endpoint.clone(),
        interval: settings.timing.export_interval,
        workload_id: settings.workload_id.clone(),
        thread_id: settings.thread_id.clone(),
    });

    let startup = tokio::select! {
        () = cancel.cancelled() => None,
        agent = Agent::start(settings, gateway, platform_http, local_http, tracer.clone()) => Some(agent),
    };
    let mut agent = match startup {
        Some(Ok(agent)) => agent,
        Some(Err(error)) => {
            tracer.flush(FLUSH_LIMIT).await;
            return Err(error);
        }
        None => {
            tracing::info!("Agent stopped during startup");
            tracer.flush(FLUSH_LIMIT).await;
            return Ok(());
        }
    };

    let wake = Arc::new(Notify::new());
    let watcher = tokio::spawn(crate::watch::watch_thread(
        agent.gateway.clone(),
        agent.settings.thread_id.clone(),
        Arc::clone(&wake),
        cancel.clone(),
    ));
    let result = agent.serve(&cancel, &wake).await;
    cancel.cancel();
    let _ = watcher.await;
    agent.stop().await;
    drop(agent);
    drop(tracer);
    // The flush in `stop` sent the spans, so the exporter only has to
    // notice that every handle is gone.
    if tokio::time::timeout(FLUSH_LIMIT, exporter).await.is_err() {
        tracing::warn!("The span exporter did not stop in time");
    }
    tracing::info!("Agent stopped");
    result
}

impl Agent {
    /// Loads the agent's configuration, connects its MCP servers and runs
    /// the WORKLOAD_START hooks.
    async fn start(
        settings: Settings,
        gateway: GatewaySession,
        platform_http: reqwest::Client,
        local_http: reqwest::Client,
        tracer: Tracer,
    ) -> Result<Self, AgentError> {
        let agent = startup_call("GetAgent", || gateway.get_agent()).await?;
        let skills = startup_call("ListSkills", || gateway.list_skills()).await?;
        let mcps = startup_call("ListMcps", || gateway.list_mcps()).await?;

        let servers: Vec<Arc<McpServer>> = settings
            .mcp_servers
            .iter()
            .map(|address| {
                let timeout = mcps
                    .iter()
                    .find(|mcp| mcp.name == address.name)
                    .and_then(|mcp| mcp.tool_timeout.as_option())
                    .map(|duration| {
                        Duration::new(duration.seconds.max(0) as u64, duration.nanos.max(0) as u32)
                    })
                    .filter(|duration| !duration.is_zero())
                    .unwrap_or(DEFAULT_TOOL_TIMEOUT);
                Arc::new(McpServer::new(
                    &address.name,
                    &address.url,
                    timeout,
                    local_http.clone(),
                ))
            })
            .collect();
        let window = settings.timing.mcp_connect_window;
        futures::future::join_all(servers.iter().map(|server| server.connect_within(window))).await;

        let hooks = Hooks::new(
            local_http,
            settings.hooks.clone(),
            &settings.agent_id,
            &settings.thread_id,
            &settings.workload_id,
        );
        hooks
            .run(HookEvent::WorkloadStart, HookContext::default())
            .await;

        let profile = AgentProfile {
            name: if agent.name.is_empty() {
                settings.agent_name.clone()
            } else {
                agent.name.clone()
            },
            nickname: agent.nickname.clone(),
            role: if agent.role.is_empty() {
                settings.agent_role.clone()
            } else {
                agent.role.clone()
            },
        };
        tracing::info!(
            skills = skills.len(),
            mcp_servers = servers.len(),
            "Agent started"
        );
        Ok(Self {
            llm: LlmClient::new(
                platform_http,
                &settings.llm_base_url,
                &settings.model,
                &settings.thread_id,
            ),
            toolbox: Toolbox::new(servers, gateway.clone()),
            journal: Journal::new(
                settings.state_dir.clone(),
                &settings.thread_id,
                &settings.agent_id,
            ),
            gateway,
            hooks,
            tracer,
            profile,
            skills,
            settings,
            stopping: CancellationToken::new(),
            open_spans: Vec::new(),
            turns_started: 0,
        })
    }

    /// Runs turns until `cancel` or the workload stops. The backlog is
    /// handled at once, because messages waiting are why the workload
    /// was started.
    async fn serve(&mut self, cancel: &CancellationToken, wake: &Notify) -> Result<(), AgentError> {
        let stopping = self.stopping.clone();
        loop {
            let outcome = tokio::select! {
                () = cancel.cancelled() => {
                    self.abort_open_spans("the agent was stopped during the turn");
                    return Ok(());
                }
                () = stopping.cancelled() => {
                    self.abort_open_spans("the workload is stopping");
                    return Ok(());
                }
                outcome = self.turn() => outcome,
            };
            let wait = match outcome {
                // A turn that handled messages is followed by another check,
                // for messages that arrived meanwhile.
                Ok(true) => continue,
                Ok(false) => true,
                Err(TurnError::Fatal(error)) => return Err(error),
                Err(TurnError::Stopping) => return Ok(()),
                Err(TurnError::Retry(error)) => {
                    tracing::warn!(%error, "Turn failed; the batch stays unacked and is retried");
                    self.abort_open_spans(&error);
                    false
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = stopping.cancelled() => return Ok(()),
                () = wake.notified(), if wait => {}
                () = tokio::time::sleep(self.settings.timing.poll_interval) => {}
            }
        }
    }

    /// Ends the spans of an unfinished turn as failed.
    pub fn abort_open_spans(&mut self, reason: &str) {
        for mut span in self.open_spans.drain(..) {
            span.end(Some(reason));
            self.tracer.record(&span);
        }
    }

    /// Runs the WORKLOAD_STOP hooks within their limit and sends the last
    /// spans.
    async fn stop(&mut self) {
        let limit = self.settings.timing.stop_hooks_limit;
        let hooks = self
            .hooks
            .run(HookEvent::WorkloadStop, HookContext::default());
        if tokio::time::timeout(limit, hooks).await.is_err() {
            tracing::warn!(
                limit_s = limit.as_secs(),
                "WORKLOAD_STOP hooks did not finish in time"
            );
        }
        self.tracer.flush(FLUSH_LIMIT).await;
    }
}

/// Runs a startup call, retrying while the gateway is unavailable.
async fn startup_call<T, F, Fut>(method: &'static str, call: F) -> Result<T, AgentError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = agyn_core::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error)
                if error.code() == agyn_core::error::Code::Unavailable
                    && attempt < STARTUP_ATTEMPTS =>
            {
                tracing::warn!(method, attempt, %error, "Gateway unavailable at startup; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(AgentError::Startup {
                    method,
                    error: Box::new(error),
                });
            }
        }
    }
}
