//! [`OrchestratorConfig`]: the timings, limits and workload settings of
//! the orchestrator, with the platform defaults.

use std::time::Duration;

/// Settings of the orchestrator. [`Default`] gives the platform defaults;
/// tests shorten the timings.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Gateway URL that workloads call, such as `https://127.0.0.1:8080`.
    /// Workloads get it as `AGYN_GATEWAY_URL`, the LLM proxy at `<url>/v1`
    /// and the OTLP endpoint at `<url>`.
    pub workload_gateway_url: String,
    /// Interval of the start pass and the idle check. A `message.created`
    /// event triggers an extra start pass for its thread.
    pub poll_interval: Duration,
    /// Interval of the workload reconciliation of each runner.
    pub reconcile_interval: Duration,
    /// Interval of the volume reconciliation of each runner.
    pub volume_reconcile_interval: Duration,
    /// Interval of the runner `Ready()` probes.
    pub liveness_interval: Duration,
    /// How long a STARTING workload may wait on an image pull or on a
    /// container configuration error, counted from its creation.
    pub start_grace: Duration,
    /// Age after which a STARTING workload fails with `START_TIMEOUT`.
    pub start_timeout: Duration,
    /// Age after which a STARTING workload that its runner does not know
    /// fails with `START_FAILED`.
    pub missing_grace: Duration,
    /// Grace period passed to `StopWorkload` before the runner kills.
    pub stop_timeout: Duration,
    /// Time in STOPPING after which the workload is removed by force.
    pub stopping_timeout: Duration,
    /// Maximum wait for the runner's `StartWorkload` response.
    pub start_call_timeout: Duration,
    /// Delay before the next start after the n-th consecutive failure; the
    /// last entry repeats. Must not be empty.
    pub backoff_schedule: Vec<Duration>,
    /// Consecutive failed starts after which the thread is degraded.
    pub max_attempts: u32,
    /// Time without a touch after which a PROCESSING agent becomes IDLE.
    pub keepalive_grace: Duration,
    /// Interval of the activity sweep that applies `keepalive_grace`.
    pub activity_sweep_interval: Duration,
    /// Time an OFFLINE runner may stay silent before its workloads fail
    /// with `RUNTIME_LOST`.
    pub offline_fail_after: Duration,
    /// Maximum number of start decisions and starts running at once.
    pub max_concurrent_starts: usize,
    /// Image of the `agyn-init` container when the agent sets none.
    pub default_init_image: String,
    /// Image of the main container, and of sidecars, when the agent, MCP
    /// server or hook sets none.
    pub default_agent_image: String,
}

/// The image of this build of agyn, `agyn/agyn:<version>`.
pub fn default_image() -> String {
    format!("agyn/agyn:{}", env!("CARGO_PKG_VERSION"))
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            workload_gateway_url: "https://127.0.0.1:8080".to_string(),
            poll_interval: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(15),
            volume_reconcile_interval: Duration::from_secs(60),
            liveness_interval: agyn_runners::LIVENESS_INTERVAL,
            start_grace: Duration::from_secs(60),
            start_timeout: Duration::from_secs(300),
            missing_grace: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            stopping_timeout: Duration::from_secs(120),
            start_call_timeout: Duration::from_secs(60),
            backoff_schedule: [10, 30, 60, 300, 900]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_attempts: 10,
            keepalive_grace: Duration::from_secs(25),
            activity_sweep_interval: Duration::from_secs(5),
            offline_fail_after: Duration::from_secs(600),
            max_concurrent_starts: 16,
            default_init_image: default_image(),
            default_agent_image: default_image(),
        }
    }
}

impl OrchestratorConfig {
    /// Returns the delay after `failures` consecutive failed starts: entry
    /// `failures - 1` of the schedule, or its last entry. No failure means
    /// no delay.
    pub fn backoff_after(&self, failures: u32) -> Duration {
        let Some(index) = (failures as usize).checked_sub(1) else {
            return Duration::ZERO;
        };
        self.backoff_schedule
            .get(index)
            .or(self.backoff_schedule.last())
            .copied()
            .unwrap_or_default()
    }

    /// Returns the gateway URL without a trailing `/`.
    pub(crate) fn gateway_base(&self) -> &str {
        self.workload_gateway_url.trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_the_last_delay() {
        let config = OrchestratorConfig::default();
        let seconds = |failures| config.backoff_after(failures).as_secs();
        assert_eq!(seconds(0), 0);
        assert_eq!(seconds(1), 10);
        assert_eq!(seconds(2), 30);
        assert_eq!(seconds(5), 900);
        assert_eq!(seconds(9), 900);
    }
}
