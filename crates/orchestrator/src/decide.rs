//! The start decision of one (thread, agent) pair: start now, wait out the
//! backoff, or degrade the thread after too many failed starts.

use std::time::Duration;

use agyn_core::Result;
use agyn_core::error::Code;
use agyn_core::time::now_micros;
use agyn_runners::{ListSort, PageRequest, WorkloadFilter, WorkloadRecord, WorkloadStatus};

use crate::{ORCHESTRATOR, Orchestrator, Pair};

/// Degrade reason once `max_attempts` starts in a row failed.
const START_FAILURES_EXHAUSTED: &str = "agent_start_failures_exhausted";

pub(crate) const NON_TERMINAL: [WorkloadStatus; 3] = [
    WorkloadStatus::Starting,
    WorkloadStatus::Running,
    WorkloadStatus::Stopping,
];

/// Outcome of the start decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// A non-terminal workload serves the pair.
    Active,
    Start,
    /// The last start failed less than the backoff ago.
    Backoff(Duration),
    /// `max_attempts` starts in a row failed.
    Exhausted,
}

impl Orchestrator {
    /// Decides for `pair` and starts a workload, waits or degrades the
    /// thread accordingly. A pair whose agent is gone is ignored.
    pub(crate) async fn start_if_needed(&self, pair: &Pair) -> Result<()> {
        let bundle = match self
            .services()
            .agents
            .get_agent_bundle(&ORCHESTRATOR, &pair.agent_id)
            .await
        {
            Ok(bundle) => bundle,
            Err(error) if error.code() == Code::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        match self.decide(pair, bundle.agent.updated_at).await? {
            Decision::Active => Ok(()),
            Decision::Backoff(remaining) => {
                tracing::debug!(
                    thread_id = %pair.thread_id,
                    agent_id = %pair.agent_id,
                    remaining_ms = remaining.as_millis() as u64,
                    "Waiting out the backoff before the next start"
                );
                Ok(())
            }
            Decision::Exhausted => {
                tracing::warn!(
                    thread_id = %pair.thread_id,
                    agent_id = %pair.agent_id,
                    max_attempts = self.inner.config.max_attempts,
                    "Starts failed too often; degrading the thread"
                );
                self.degrade(&pair.thread_id, START_FAILURES_EXHAUSTED)
                    .await
            }
            Decision::Start => self.start(pair, bundle).await,
        }
    }

    /// Applies the decision rules to the workload history of `pair`.
    /// `agent_updated_at` is the agent's last configuration change (µs).
    async fn decide(&self, pair: &Pair, agent_updated_at: i64) -> Result<Decision> {
        if !self
            .pair_workloads(pair, &NON_TERMINAL, None, 1)
            .await?
            .is_empty()
        {
            return Ok(Decision::Active);
        }
        let terminal = [WorkloadStatus::Stopped, WorkloadStatus::Failed];
        let Some(latest) = self
            .pair_workloads(pair, &terminal, None, 1)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(Decision::Start);
        };
        let latest_removed_at = latest.removed_at.unwrap_or(latest.updated_at);
        if latest.status == WorkloadStatus::Stopped || agent_updated_at > latest_removed_at {
            return Ok(Decision::Start);
        }

        let newest_stopped = self
            .pair_workloads(pair, &[WorkloadStatus::Stopped], None, 1)
            .await?
            .into_iter()
            .next()
            .map_or(0, |stopped| stopped.created_at);
        let reset_floor = newest_stopped.max(agent_updated_at);
        let limit = self.inner.config.max_attempts.saturating_add(1);
        let failures = self
            .pair_workloads(
                pair,
                &[WorkloadStatus::Failed],
                Some(reset_floor + 1),
                limit,
            )
            .await?
            .len() as u32;
        if failures >= self.inner.config.max_attempts {
            return Ok(Decision::Exhausted);
        }
        let backoff = self.inner.config.backoff_after(failures);
        let since_failure = micros_to_duration(now_micros() - latest_removed_at);
        if since_failure < backoff {
            return Ok(Decision::Backoff(backoff - since_failure));
        }
        Ok(Decision::Start)
    }

    /// Returns up to `limit` workloads of `pair` in `statuses`, newest
    /// first, created at or after `created_from` (µs) when given.
    async fn pair_workloads(
        &self,
        pair: &Pair,
        statuses: &[WorkloadStatus],
        created_from: Option<i64>,
        limit: u32,
    ) -> Result<Vec<WorkloadRecord>> {
        let filter = WorkloadFilter {
            agent_ids: vec![pair.agent_id.clone()],
            thread_ids: vec![pair.thread_id.clone()],
            statuses: statuses.to_vec(),
            started_after: created_from,
            ..WorkloadFilter::default()
        };
        let (records, _) = self
            .services()
            .runners
            .list_workloads_internal(
                &ORCHESTRATOR,
                &pair.organization_id,
                &filter,
                ListSort::default(),
                PageRequest {
                    size: i32::try_from(limit).unwrap_or(i32::MAX),
                    token: "",
                },
            )
            .await?;
        Ok(records)
    }

    /// Degrades thread `thread_id` with `reason`.
    pub(crate) async fn degrade(&self, thread_id: &str, reason: &str) -> Result<()> {
        self.services()
            .threads
            .degrade_thread(&ORCHESTRATOR, thread_id, reason)
            .await?;
        tracing::warn!(%thread_id, reason, "Thread degraded");
        Ok(())
    }
}

/// Converts a non-negative span of microseconds; a negative one is zero.
pub(crate) fn micros_to_duration(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}
