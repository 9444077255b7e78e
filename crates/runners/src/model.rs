//! Records, inputs and the status enums of runners, workloads and
//! provisioned volumes. Each enum is stored as its
//! `agynio.api.runners.v1` number.

use std::collections::BTreeMap;

use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_core::Secret;

/// Defines a status enum with its stored number and its short name (the
/// proto name without the enum prefix, as error messages show it).
macro_rules! numbered_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $number:literal, $label:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            pub fn number(self) -> i32 {
                match self {
                    $(Self::$variant => $number,)*
                }
            }

            pub fn from_number(number: i64) -> Option<Self> {
                match number {
                    $($number => Some(Self::$variant),)*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }
        }
    };
}

numbered_enum! {
    /// Liveness status of a runner.
    RunnerStatus {
        Pending = 1, "PENDING";
        Enrolled = 2, "ENROLLED";
        Offline = 3, "OFFLINE";
    }
}

numbered_enum! {
    /// Lifecycle status of a workload. STOPPED and FAILED are terminal.
    WorkloadStatus {
        Starting = 1, "STARTING";
        Running = 2, "RUNNING";
        Stopping = 3, "STOPPING";
        Stopped = 4, "STOPPED";
        Failed = 5, "FAILED";
    }
}

numbered_enum! {
    /// Whether a workload's agent is busy.
    AgentState {
        Processing = 1, "PROCESSING";
        Idle = 2, "IDLE";
    }
}

numbered_enum! {
    /// Cause of a FAILED workload.
    FailureReason {
        StartFailed = 1, "START_FAILED";
        ImagePullFailed = 2, "IMAGE_PULL_FAILED";
        ConfigInvalid = 3, "CONFIG_INVALID";
        Crashloop = 4, "CRASHLOOP";
        RuntimeLost = 5, "RUNTIME_LOST";
        StartTimeout = 6, "START_TIMEOUT";
    }
}

numbered_enum! {
    /// Lifecycle status of a provisioned volume. DELETED and FAILED are
    /// terminal.
    VolumeStatus {
        Provisioning = 1, "PROVISIONING";
        Active = 2, "ACTIVE";
        Deprovisioning = 3, "DEPROVISIONING";
        Deleted = 4, "DELETED";
        Failed = 5, "FAILED";
    }
}

impl WorkloadStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed)
    }

    /// Returns whether an update may move a workload from `self` to
    /// `next`. Keeping a non-terminal status is allowed.
    pub fn can_move_to(self, next: Self) -> bool {
        use WorkloadStatus::*;
        matches!(
            (self, next),
            (Starting, Starting | Running | Failed | Stopping)
                | (Running, Running | Stopping | Failed)
                | (Stopping, Stopping | Stopped)
        )
    }
}

impl VolumeStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Deleted | Self::Failed)
    }

    /// Returns whether an update may move a volume from `self` to `next`.
    /// Keeping a non-terminal status is allowed.
    pub fn can_move_to(self, next: Self) -> bool {
        use VolumeStatus::*;
        if self.is_terminal() {
            return false;
        }
        self == next
            || next == Failed
            || matches!(
                (self, next),
                (Provisioning, Active) | (Active, Deprovisioning) | (Deprovisioning, Deleted)
            )
    }
}

/// A stored runner. The service token is never part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRecord {
    /// Also the runner's identity id.
    pub id: String,
    /// `None` for a cluster runner.
    pub organization_id: Option<String>,
    pub name: String,
    pub status: RunnerStatus,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    /// `https://host:port`, or empty for a runner reached in process.
    pub endpoint: String,
    pub builtin: bool,
    pub enrolled_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RunnerRecord {
    /// Returns the runner's service name, `runner-<id>`.
    pub fn service_name(&self) -> String {
        format!("runner-{}", self.id)
    }
}

/// Input of RegisterRunner.
#[derive(Debug, Clone, Default)]
pub struct NewRunner {
    pub name: String,
    /// `None` or empty registers a cluster runner.
    pub organization_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub endpoint: Option<String>,
    pub builtin: bool,
}

/// A runner just registered, with its service token, which is returned
/// only this once.
#[derive(Debug)]
pub struct RegisteredRunner {
    pub runner: RunnerRecord,
    pub service_token: Secret<String>,
}

/// Changes of UpdateRunner. `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct RunnerChanges {
    pub name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub capabilities: Option<Vec<String>>,
    pub endpoint: Option<String>,
}

/// Input of EnrollRunner.
#[derive(Debug)]
pub struct Enrollment<'a> {
    pub service_token: &'a Secret<String>,
    pub endpoint: &'a str,
    pub csr_pem: Option<&'a str>,
}

/// Result of EnrollRunner.
#[derive(Debug)]
pub struct Enrolled {
    /// UTF-8 JSON with `identity_id`, `certificate_pem`, `private_key_pem`
    /// (absent with a CSR), `ca_pem` and `expires_at` (RFC 3339).
    pub identity_json: Secret<Vec<u8>>,
    pub service_name: String,
    pub identity_id: String,
}

/// A stored workload. `runner_name` and `agent_name` are resolved when the
/// record is read and are empty when the runner or agent is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRecord {
    pub id: String,
    pub runner_id: String,
    pub runner_name: String,
    pub thread_id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub organization_id: String,
    pub status: WorkloadStatus,
    pub agent_state: AgentState,
    pub containers: Vec<pb::Container>,
    pub instance_id: String,
    pub credential_id: String,
    pub last_activity_at: i64,
    pub started_at: Option<i64>,
    pub removed_at: Option<i64>,
    pub failure_reason: Option<FailureReason>,
    pub failure_message: String,
    pub allocated_cpu_millicores: i32,
    pub allocated_ram_bytes: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Input of CreateWorkload.
#[derive(Debug, Clone, Default)]
pub struct NewWorkload {
    pub id: String,
    pub runner_id: String,
    pub thread_id: String,
    pub agent_id: String,
    pub organization_id: String,
    pub containers: Vec<pb::Container>,
    pub credential_id: String,
    pub allocated_cpu_millicores: i32,
    pub allocated_ram_bytes: i64,
    /// Creates the record directly as FAILED when set.
    pub failure_reason: Option<FailureReason>,
    pub failure_message: String,
    pub provisioned_volumes: Vec<NewWorkloadVolume>,
}

/// A volume that CreateWorkload provisions with the workload.
#[derive(Debug, Clone, Default)]
pub struct NewWorkloadVolume {
    pub id: String,
    pub volume_id: String,
    pub size: String,
}

/// Changes of UpdateWorkload. `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct WorkloadChanges {
    pub status: Option<WorkloadStatus>,
    pub containers: Option<Vec<pb::Container>>,
    pub instance_id: Option<String>,
    /// Used only when the status becomes terminal, and defaults to now.
    pub removed_at: Option<i64>,
    pub failure_reason: Option<FailureReason>,
    pub failure_message: Option<String>,
}

/// Filter of the workload lists. Lists are ORed within, fields ANDed.
#[derive(Debug, Clone, Default)]
pub struct WorkloadFilter {
    pub agent_ids: Vec<String>,
    pub runner_ids: Vec<String>,
    pub thread_ids: Vec<String>,
    pub statuses: Vec<WorkloadStatus>,
    /// Keeps workloads created at or after this time (µs).
    pub started_after: Option<i64>,
    /// Keeps workloads created before this time (µs).
    pub started_before: Option<i64>,
}

/// Sort key of a workload or volume list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortField {
    /// By creation time.
    #[default]
    Created,
    /// By the status number, then by creation time.
    Status,
}

/// Sort of a workload or volume list. The id breaks ties in the same
/// direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSort {
    pub field: SortField,
    pub ascending: bool,
}

impl Default for ListSort {
    /// Newest first.
    fn default() -> Self {
        Self {
            field: SortField::Created,
            ascending: false,
        }
    }
}

/// A page request: `page_size` and `page_token` as the request sent them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageRequest<'a> {
    pub size: i32,
    pub token: &'a str,
}

/// A stored provisioned volume. `volume_name` and `attachments` are
/// resolved when the record is read.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRecord {
    pub id: String,
    pub volume_id: String,
    pub volume_name: String,
    pub thread_id: String,
    pub agent_id: String,
    pub runner_id: String,
    pub organization_id: String,
    pub size: String,
    pub persistent_name: String,
    pub instance_id: String,
    pub status: VolumeStatus,
    pub removed_at: Option<i64>,
    pub attachments: Vec<pb::Attachment>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Input of CreateProvisionedVolume.
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    pub id: String,
    pub volume_id: String,
    pub thread_id: String,
    pub runner_id: String,
    pub agent_id: String,
    pub organization_id: String,
    pub size: String,
}

/// Changes of UpdateProvisionedVolume. `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct VolumeChanges {
    pub status: Option<VolumeStatus>,
    pub instance_id: Option<String>,
    /// Used only when the status becomes terminal, and defaults to now.
    pub removed_at: Option<i64>,
}

/// Filter of the volume lists. Lists are ORed within, fields ANDed.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    pub statuses: Vec<VolumeStatus>,
    pub runner_ids: Vec<String>,
    pub thread_ids: Vec<String>,
    pub volume_ids: Vec<String>,
}

/// Request of StreamWorkloadLogs.
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    pub workload_id: String,
    pub container_name: String,
    pub follow: bool,
    /// 0 means the last 1,000 lines.
    pub tail_lines: i32,
    /// Skips output before this time (µs) when set.
    pub since_time: Option<i64>,
}

/// Result of ResolveWorkloadCredential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCredential {
    pub workload_id: String,
    pub agent_id: String,
    pub status: WorkloadStatus,
}
