//! State-change events, published after the transaction commits.

use serde_json::json;

use crate::Runners;
use crate::model::{VolumeRecord, WorkloadRecord};

const SOURCE: &str = "runners";

impl Runners {
    /// Publishes `workload.updated` to `workload:<id>`,
    /// `organization:<org>` and the platform room `workloads`.
    pub(crate) fn publish_workload(&self, record: &WorkloadRecord) {
        let payload = json!({
            "workload_id": record.id,
            "organization_id": record.organization_id,
            "thread_id": record.thread_id,
            "agent_id": record.agent_id,
            "runner_id": record.runner_id,
            "status": format!("WORKLOAD_STATUS_{}", record.status.name()),
            "agent_state": format!("WORKLOAD_AGENT_STATE_{}", record.agent_state.name()),
        });
        for room in [
            format!("workload:{}", record.id),
            format!("organization:{}", record.organization_id),
            "workloads".to_string(),
        ] {
            self.events
                .publish(SOURCE, "workload.updated", room, payload.clone());
        }
    }

    /// Publishes `volume.updated` to `organization:<org>`.
    pub(crate) fn publish_volume(&self, record: &VolumeRecord) {
        let payload = json!({
            "provisioned_volume_id": record.id,
            "volume_id": record.volume_id,
            "organization_id": record.organization_id,
            "thread_id": record.thread_id,
            "runner_id": record.runner_id,
            "status": format!("VOLUME_STATUS_{}", record.status.name()),
        });
        self.events.publish(
            SOURCE,
            "volume.updated",
            format!("organization:{}", record.organization_id),
            payload,
        );
    }
}
