//! The activity sweep: RUNNING workloads whose agent stopped touching them
//! go from PROCESSING to IDLE.

use agyn_core::time::now_micros;
use agyn_core::{Caller, Result};

use crate::model::{AgentState, WorkloadStatus};
use crate::store::workloads;
use crate::{Runners, require_component};

impl Runners {
    /// MarkIdleWorkloads: orchestrator only. Sets agent state IDLE on every
    /// RUNNING workload whose agent is PROCESSING and whose
    /// `last_activity_at` is before `idle_before` (µs), and publishes
    /// `workload.updated` for each. Each row is re-read under a lock, so a
    /// touch that commits first keeps its workload PROCESSING. Returns how
    /// many workloads became IDLE.
    pub async fn mark_idle_workloads(&self, caller: &Caller, idle_before: i64) -> Result<usize> {
        require_component(caller, "MarkIdleWorkloads", &["orchestrator"])?;
        let candidates = {
            let mut connection = self.db.pool().acquire().await?;
            workloads::processing_before(&mut connection, idle_before).await?
        };
        let mut changed = 0;
        for id in candidates {
            let mut tx = self.db.begin_write().await?;
            let Some(mut record) = workloads::lock(&mut tx, self.db.backend(), &id).await? else {
                continue;
            };
            let still_idle = record.status == WorkloadStatus::Running
                && record.agent_state == AgentState::Processing
                && record.last_activity_at < idle_before;
            if !still_idle {
                continue;
            }
            record.agent_state = AgentState::Idle;
            record.updated_at = now_micros().max(record.updated_at);
            workloads::update(&mut tx, &record).await?;
            tx.commit().await?;
            tracing::debug!(workload_id = %id, "Workload agent is idle");
            self.publish_workload(&record);
            changed += 1;
        }
        Ok(changed)
    }
}
