//! Runner liveness: a `Ready()` probe of every enrolled or offline runner.
//!
//! A runner that responds gets `last_seen_at = now` and, when it was
//! OFFLINE, becomes ENROLLED again. Three failed probes in a row make an
//! ENROLLED runner OFFLINE, so it gets no new workloads. Failure counts
//! live in memory: a process that starts probing begins from zero.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agyn_core::time::now_micros;
use agyn_core::{Caller, Result};

use crate::{RunnerRecord, RunnerStatus, Runners};

/// Time between two probe rounds.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(30);

/// Maximum wait for one runner's response.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Failed probes in a row after which a runner is OFFLINE.
const FAILURES_BEFORE_OFFLINE: u32 = 3;

/// The caller the probes act as.
const PROBER: Caller = Caller::Component("orchestrator");

/// Consecutive failed probes per runner id.
#[derive(Clone, Default)]
pub struct Liveness {
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl Liveness {
    /// Probes every ENROLLED or OFFLINE runner once and records the
    /// outcome. Returns how many runners responded.
    pub async fn probe_all(&self, runners: &Runners) -> Result<usize> {
        let mut answered = 0;
        let mut token = String::new();
        loop {
            let (page, next) = runners.list_runners(&PROBER, None, 200, &token).await?;
            for runner in page {
                if matches!(
                    runner.status,
                    RunnerStatus::Enrolled | RunnerStatus::Offline
                ) && self.probe(runners, &runner).await?
                {
                    answered += 1;
                }
            }
            if next.is_empty() {
                return Ok(answered);
            }
            token = next;
        }
    }

    /// Probes one runner and returns whether it responded.
    async fn probe(&self, runners: &Runners, runner: &RunnerRecord) -> Result<bool> {
        let ready = match runners.connect(runner) {
            Ok(client) => match tokio::time::timeout(PROBE_TIMEOUT, client.ready()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            },
            // The built-in runner of another replica is reached only by
            // that replica, which probes it itself.
            Err(_) if runner.builtin && runner.endpoint.is_empty() => return Ok(false),
            Err(error) => Err(error.to_string()),
        };
        match ready {
            Ok(()) => {
                self.failures().remove(&runner.id);
                runners
                    .set_runner_status(
                        &PROBER,
                        &runner.id,
                        Some(RunnerStatus::Enrolled),
                        Some(now_micros()),
                    )
                    .await?;
                Ok(true)
            }
            Err(reason) => {
                let failures = {
                    let mut counts = self.failures();
                    let count = counts.entry(runner.id.clone()).or_insert(0);
                    *count += 1;
                    *count
                };
                tracing::warn!(runner_id = %runner.id, failures, %reason, "Runner did not respond to Ready");
                if failures >= FAILURES_BEFORE_OFFLINE && runner.status == RunnerStatus::Enrolled {
                    runners
                        .set_runner_status(&PROBER, &runner.id, Some(RunnerStatus::Offline), None)
                        .await?;
                }
                Ok(false)
            }
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
