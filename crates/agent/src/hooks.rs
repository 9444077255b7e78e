//! Hooks: at each event the agent POSTs the event's JSON to every hook
//! server of that event, one after another in list order. A hook server
//! (`agyn hook serve`) runs the hook's shell command and returns its exit
//! status. A failing hook is logged and never stops the agent.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::settings::HookAddress;

/// Maximum time the agent waits for one hook server. A hook's own timeout
/// is at most 600 s and the server enforces it, so this bound only covers
/// a server that stops responding.
const HOOK_REQUEST_TIMEOUT: Duration = Duration::from_secs(615);

/// The moments at which hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    WorkloadStart,
    TurnStart,
    TurnEnd,
    WorkloadStop,
}

impl HookEvent {
    /// Returns the lowercase name used in `AGENT_HOOKS` and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkloadStart => "workload_start",
            Self::TurnStart => "turn_start",
            Self::TurnEnd => "turn_end",
            Self::WorkloadStop => "workload_stop",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::WorkloadStart,
            Self::TurnStart,
            Self::TurnEnd,
            Self::WorkloadStop,
        ]
        .into_iter()
        .find(|event| event.as_str() == name)
    }
}

/// The subject of a hook event.
#[derive(Debug, Default)]
pub struct HookContext<'a> {
    /// Ids of the turn's batch; empty for workload events.
    pub message_ids: &'a [String],
    /// Id of the turn's reply, for TURN_END of a turn that replied.
    pub reply_message_id: Option<&'a str>,
}

/// The response of a hook server.
#[derive(Debug, Deserialize)]
struct HookOutcome {
    #[serde(default)]
    exit_code: i64,
    #[serde(default)]
    timed_out: bool,
}

/// The hook servers of one workload.
#[derive(Debug, Clone)]
pub struct Hooks {
    http: reqwest::Client,
    hooks: Vec<HookAddress>,
    agent_id: String,
    thread_id: String,
    workload_id: String,
}

impl Hooks {
    pub fn new(
        http: reqwest::Client,
        hooks: Vec<HookAddress>,
        agent_id: &str,
        thread_id: &str,
        workload_id: &str,
    ) -> Self {
        Self {
            http,
            hooks,
            agent_id: agent_id.to_string(),
            thread_id: thread_id.to_string(),
            workload_id: workload_id.to_string(),
        }
    }

    /// Runs every hook of `event` in order. Failures are logged.
    pub async fn run(&self, event: HookEvent, context: HookContext<'_>) {
        let payload = json!({
            "event": event.as_str(),
            "agent_id": self.agent_id,
            "thread_id": self.thread_id,
            "workload_id": self.workload_id,
            "message_ids": context.message_ids,
            "reply_message_id": context.reply_message_id.unwrap_or_default(),
        });
        for (index, hook) in self
            .hooks
            .iter()
            .filter(|hook| hook.event == event)
            .enumerate()
        {
            let event = event.as_str();
            match self.call(&hook.url, &payload).await {
                Ok(outcome) if outcome.timed_out => {
                    tracing::warn!(event, hook = index, url = %hook.url, "Hook timed out");
                }
                Ok(outcome) if outcome.exit_code != 0 => {
                    tracing::warn!(
                        event,
                        hook = index,
                        url = %hook.url,
                        exit_code = outcome.exit_code,
                        "Hook failed"
                    );
                }
                Ok(_) => {
                    tracing::debug!(event, hook = index, url = %hook.url, "Hook finished");
                }
                Err(error) => {
                    tracing::warn!(event, hook = index, url = %hook.url, %error, "Hook call failed");
                }
            }
        }
    }

    async fn call(&self, url: &str, payload: &serde_json::Value) -> Result<HookOutcome, String> {
        let response = self
            .http
            .post(url)
            .timeout(HOOK_REQUEST_TIMEOUT)
            .json(payload)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the hook server returned HTTP {status}"));
        }
        response
            .json::<HookOutcome>()
            .await
            .map_err(|error| format!("invalid hook server response: {error}"))
    }
}
