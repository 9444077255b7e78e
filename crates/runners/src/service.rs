//! `RunnersService` (internal) and `RunnersGateway` (public) over
//! [`Runners`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request. Responses are built
//! from records, which never hold a service token.

use std::net::SocketAddr;

use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_core::caller::request_caller;
use agyn_core::time::{checked_micros, timestamp};
use agyn_core::{Error, Secret};
use axum::extract::ConnectInfo;
use buffa::{EnumValue, MessageField};
use buffa_types::google::protobuf::Timestamp;
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream};
use futures::StreamExt as _;

use crate::Runners;
use crate::model::{
    AgentState, Enrollment, FailureReason, ListSort, LogsRequest, NewRunner, NewVolume,
    NewWorkload, NewWorkloadVolume, PageRequest, RunnerChanges, RunnerRecord, RunnerStatus,
    SortField, VolumeChanges, VolumeFilter, VolumeRecord, VolumeStatus, WorkloadChanges,
    WorkloadFilter, WorkloadRecord, WorkloadStatus,
};

type Time = MessageField<Timestamp, buffa::Inline<Timestamp>>;

/// The internal `RunnersService`.
#[derive(Clone)]
pub struct RunnersRpc {
    runners: Runners,
}

impl RunnersRpc {
    pub fn new(runners: Runners) -> Self {
        Self { runners }
    }
}

fn meta(
    id: &str,
    created_at: i64,
    updated_at: i64,
) -> MessageField<pb::EntityMeta, buffa::Inline<pb::EntityMeta>> {
    pb::EntityMeta {
        id: id.to_string(),
        created_at: timestamp(created_at).into(),
        updated_at: timestamp(updated_at).into(),
        ..Default::default()
    }
    .into()
}

fn optional_time(micros: Option<i64>) -> Time {
    match micros {
        Some(micros) => timestamp(micros).into(),
        None => MessageField::none(),
    }
}

/// Reads an optional request timestamp as microseconds.
fn time_from_proto(field: &str, value: &Time) -> Result<Option<i64>, Error> {
    value
        .as_option()
        .map(|time| checked_micros(field, time))
        .transpose()
}

fn runner_status_to_proto(status: RunnerStatus) -> pb::RunnerStatus {
    match status {
        RunnerStatus::Pending => pb::RunnerStatus::RUNNER_STATUS_PENDING,
        RunnerStatus::Enrolled => pb::RunnerStatus::RUNNER_STATUS_ENROLLED,
        RunnerStatus::Offline => pb::RunnerStatus::RUNNER_STATUS_OFFLINE,
    }
}

fn runner_status_from_proto(value: &EnumValue<pb::RunnerStatus>) -> Option<RunnerStatus> {
    match value.as_known()? {
        pb::RunnerStatus::RUNNER_STATUS_PENDING => Some(RunnerStatus::Pending),
        pb::RunnerStatus::RUNNER_STATUS_ENROLLED => Some(RunnerStatus::Enrolled),
        pb::RunnerStatus::RUNNER_STATUS_OFFLINE => Some(RunnerStatus::Offline),
        pb::RunnerStatus::RUNNER_STATUS_UNSPECIFIED => None,
    }
}

fn workload_status_to_proto(status: WorkloadStatus) -> pb::WorkloadStatus {
    match status {
        WorkloadStatus::Starting => pb::WorkloadStatus::WORKLOAD_STATUS_STARTING,
        WorkloadStatus::Running => pb::WorkloadStatus::WORKLOAD_STATUS_RUNNING,
        WorkloadStatus::Stopping => pb::WorkloadStatus::WORKLOAD_STATUS_STOPPING,
        WorkloadStatus::Stopped => pb::WorkloadStatus::WORKLOAD_STATUS_STOPPED,
        WorkloadStatus::Failed => pb::WorkloadStatus::WORKLOAD_STATUS_FAILED,
    }
}

/// Reads a workload status. UNSPECIFIED and unknown numbers are invalid.
fn workload_status_from_proto(
    field: &str,
    value: &EnumValue<pb::WorkloadStatus>,
) -> Result<WorkloadStatus, Error> {
    let status = match value.as_known() {
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_STARTING) => Some(WorkloadStatus::Starting),
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_RUNNING) => Some(WorkloadStatus::Running),
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_STOPPING) => Some(WorkloadStatus::Stopping),
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_STOPPED) => Some(WorkloadStatus::Stopped),
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_FAILED) => Some(WorkloadStatus::Failed),
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_UNSPECIFIED) | None => None,
    };
    status.ok_or_else(|| Error::invalid_field(field, "must be a known workload status"))
}

fn workload_statuses_from_proto(
    field: &str,
    values: &[EnumValue<pb::WorkloadStatus>],
) -> Result<Vec<WorkloadStatus>, Error> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| workload_status_from_proto(&format!("{field}[{index}]"), value))
        .collect()
}

fn agent_state_to_proto(state: AgentState) -> pb::WorkloadAgentState {
    match state {
        AgentState::Processing => pb::WorkloadAgentState::WORKLOAD_AGENT_STATE_PROCESSING,
        AgentState::Idle => pb::WorkloadAgentState::WORKLOAD_AGENT_STATE_IDLE,
    }
}

fn failure_reason_to_proto(reason: Option<FailureReason>) -> pb::WorkloadFailureReason {
    use pb::WorkloadFailureReason as Proto;
    match reason {
        None => Proto::WORKLOAD_FAILURE_REASON_UNSPECIFIED,
        Some(FailureReason::StartFailed) => Proto::WORKLOAD_FAILURE_REASON_START_FAILED,
        Some(FailureReason::ImagePullFailed) => Proto::WORKLOAD_FAILURE_REASON_IMAGE_PULL_FAILED,
        Some(FailureReason::ConfigInvalid) => Proto::WORKLOAD_FAILURE_REASON_CONFIG_INVALID,
        Some(FailureReason::Crashloop) => Proto::WORKLOAD_FAILURE_REASON_CRASHLOOP,
        Some(FailureReason::RuntimeLost) => Proto::WORKLOAD_FAILURE_REASON_RUNTIME_LOST,
        Some(FailureReason::StartTimeout) => Proto::WORKLOAD_FAILURE_REASON_START_TIMEOUT,
    }
}

/// Reads a failure reason. UNSPECIFIED is `None`.
fn failure_reason_from_proto(
    value: &EnumValue<pb::WorkloadFailureReason>,
) -> Result<Option<FailureReason>, Error> {
    use pb::WorkloadFailureReason as Proto;
    match value.as_known() {
        Some(Proto::WORKLOAD_FAILURE_REASON_UNSPECIFIED) => Ok(None),
        Some(Proto::WORKLOAD_FAILURE_REASON_START_FAILED) => Ok(Some(FailureReason::StartFailed)),
        Some(Proto::WORKLOAD_FAILURE_REASON_IMAGE_PULL_FAILED) => {
            Ok(Some(FailureReason::ImagePullFailed))
        }
        Some(Proto::WORKLOAD_FAILURE_REASON_CONFIG_INVALID) => {
            Ok(Some(FailureReason::ConfigInvalid))
        }
        Some(Proto::WORKLOAD_FAILURE_REASON_CRASHLOOP) => Ok(Some(FailureReason::Crashloop)),
        Some(Proto::WORKLOAD_FAILURE_REASON_RUNTIME_LOST) => Ok(Some(FailureReason::RuntimeLost)),
        Some(Proto::WORKLOAD_FAILURE_REASON_START_TIMEOUT) => Ok(Some(FailureReason::StartTimeout)),
        None => Err(Error::invalid_field(
            "failure_reason",
            "must be a known failure reason",
        )),
    }
}

fn volume_status_to_proto(status: VolumeStatus) -> pb::VolumeStatus {
    match status {
        VolumeStatus::Provisioning => pb::VolumeStatus::VOLUME_STATUS_PROVISIONING,
        VolumeStatus::Active => pb::VolumeStatus::VOLUME_STATUS_ACTIVE,
        VolumeStatus::Deprovisioning => pb::VolumeStatus::VOLUME_STATUS_DEPROVISIONING,
        VolumeStatus::Deleted => pb::VolumeStatus::VOLUME_STATUS_DELETED,
        VolumeStatus::Failed => pb::VolumeStatus::VOLUME_STATUS_FAILED,
    }
}

/// Reads a volume status. UNSPECIFIED and unknown numbers are invalid.
fn volume_status_from_proto(
    field: &str,
    value: &EnumValue<pb::VolumeStatus>,
) -> Result<VolumeStatus, Error> {
    let status = match value.as_known() {
        Some(pb::VolumeStatus::VOLUME_STATUS_PROVISIONING) => Some(VolumeStatus::Provisioning),
        Some(pb::VolumeStatus::VOLUME_STATUS_ACTIVE) => Some(VolumeStatus::Active),
        Some(pb::VolumeStatus::VOLUME_STATUS_DEPROVISIONING) => Some(VolumeStatus::Deprovisioning),
        Some(pb::VolumeStatus::VOLUME_STATUS_DELETED) => Some(VolumeStatus::Deleted),
        Some(pb::VolumeStatus::VOLUME_STATUS_FAILED) => Some(VolumeStatus::Failed),
        Some(pb::VolumeStatus::VOLUME_STATUS_UNSPECIFIED) | None => None,
    };
    status.ok_or_else(|| Error::invalid_field(field, "must be a known volume status"))
}

fn sort_direction_from_proto(value: &EnumValue<pb::SortDirection>) -> Result<bool, Error> {
    match value.as_known() {
        Some(pb::SortDirection::SORT_DIRECTION_ASC) => Ok(true),
        Some(
            pb::SortDirection::SORT_DIRECTION_DESC | pb::SortDirection::SORT_DIRECTION_UNSPECIFIED,
        ) => Ok(false),
        None => Err(Error::invalid_field(
            "sort.direction",
            "must be a known sort direction",
        )),
    }
}

fn workload_sort_from_proto(sort: Option<&pb::WorkloadSort>) -> Result<ListSort, Error> {
    let Some(sort) = sort else {
        return Ok(ListSort::default());
    };
    let field = match sort.field.as_known() {
        Some(
            pb::WorkloadSortField::WORKLOAD_SORT_FIELD_UNSPECIFIED
            | pb::WorkloadSortField::WORKLOAD_SORT_FIELD_STARTED,
        ) => SortField::Created,
        Some(pb::WorkloadSortField::WORKLOAD_SORT_FIELD_STATUS) => SortField::Status,
        None => {
            return Err(Error::invalid_field(
                "sort.field",
                "must be a known sort field",
            ));
        }
    };
    Ok(ListSort {
        field,
        ascending: sort_direction_from_proto(&sort.direction)?,
    })
}

fn volume_sort_from_proto(sort: Option<&pb::VolumeSort>) -> Result<ListSort, Error> {
    let Some(sort) = sort else {
        return Ok(ListSort::default());
    };
    let field = match sort.field.as_known() {
        Some(
            pb::VolumeSortField::VOLUME_SORT_FIELD_UNSPECIFIED
            | pb::VolumeSortField::VOLUME_SORT_FIELD_CREATED,
        ) => SortField::Created,
        Some(pb::VolumeSortField::VOLUME_SORT_FIELD_STATUS) => SortField::Status,
        None => {
            return Err(Error::invalid_field(
                "sort.field",
                "must be a known sort field",
            ));
        }
    };
    Ok(ListSort {
        field,
        ascending: sort_direction_from_proto(&sort.direction)?,
    })
}

fn workload_filter_from_proto(
    filter: Option<&pb::WorkloadFilter>,
) -> Result<WorkloadFilter, Error> {
    let Some(filter) = filter else {
        return Ok(WorkloadFilter::default());
    };
    Ok(WorkloadFilter {
        agent_ids: filter.agent_id_in.clone(),
        runner_ids: filter.runner_id_in.clone(),
        thread_ids: filter.thread_id_in.clone(),
        statuses: workload_statuses_from_proto("filter.status_in", &filter.status_in)?,
        started_after: time_from_proto("filter.started_after", &filter.started_after)?,
        started_before: time_from_proto("filter.started_before", &filter.started_before)?,
    })
}

fn volume_filter_from_proto(filter: Option<&pb::VolumeFilter>) -> Result<VolumeFilter, Error> {
    let Some(filter) = filter else {
        return Ok(VolumeFilter::default());
    };
    let statuses = filter
        .status_in
        .iter()
        .enumerate()
        .map(|(index, value)| {
            volume_status_from_proto(&format!("filter.status_in[{index}]"), value)
        })
        .collect::<Result<_, _>>()?;
    Ok(VolumeFilter {
        statuses,
        runner_ids: filter.runner_id_in.clone(),
        thread_ids: filter.thread_id_in.clone(),
        volume_ids: filter.volume_id_in.clone(),
    })
}

/// Converts a runner. The service token is never part of a record.
pub fn runner_to_proto(record: &RunnerRecord) -> pb::Runner {
    pb::Runner {
        meta: meta(&record.id, record.created_at, record.updated_at),
        name: record.name.clone(),
        organization_id: record.organization_id.clone().unwrap_or_default(),
        status: runner_status_to_proto(record.status).into(),
        labels: record
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        capabilities: record.capabilities.clone(),
        endpoint: record.endpoint.clone(),
        builtin: record.builtin,
        service_name: record.service_name(),
        enrolled_at: optional_time(record.enrolled_at),
        last_seen_at: optional_time(record.last_seen_at),
        ..Default::default()
    }
}

pub fn workload_to_proto(record: &WorkloadRecord) -> pb::Workload {
    pb::Workload {
        meta: meta(&record.id, record.created_at, record.updated_at),
        runner_id: record.runner_id.clone(),
        runner_name: record.runner_name.clone(),
        thread_id: record.thread_id.clone(),
        agent_id: record.agent_id.clone(),
        agent_name: record.agent_name.clone(),
        organization_id: record.organization_id.clone(),
        status: workload_status_to_proto(record.status).into(),
        agent_state: agent_state_to_proto(record.agent_state).into(),
        containers: record.containers.clone(),
        instance_id: record.instance_id.clone(),
        credential_id: record.credential_id.clone(),
        last_activity_at: timestamp(record.last_activity_at).into(),
        started_at: optional_time(record.started_at),
        removed_at: optional_time(record.removed_at),
        failure_reason: failure_reason_to_proto(record.failure_reason).into(),
        failure_message: record.failure_message.clone(),
        allocated_cpu_millicores: record.allocated_cpu_millicores,
        allocated_ram_bytes: record.allocated_ram_bytes,
        ..Default::default()
    }
}

pub fn volume_to_proto(record: &VolumeRecord) -> pb::ProvisionedVolume {
    pb::ProvisionedVolume {
        meta: meta(&record.id, record.created_at, record.updated_at),
        volume_id: record.volume_id.clone(),
        volume_name: record.volume_name.clone(),
        thread_id: record.thread_id.clone(),
        agent_id: record.agent_id.clone(),
        runner_id: record.runner_id.clone(),
        organization_id: record.organization_id.clone(),
        size: record.size.clone(),
        persistent_name: record.persistent_name.clone(),
        instance_id: record.instance_id.clone(),
        status: volume_status_to_proto(record.status).into(),
        removed_at: optional_time(record.removed_at),
        attachments: record.attachments.clone(),
        ..Default::default()
    }
}

/// Returns the client address the gateway attached to the request, for
/// the EnrollRunner rate limit.
fn client_address(ctx: &RequestContext) -> String {
    ctx.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".to_string(),
            |ConnectInfo(peer)| peer.ip().to_string(),
        )
}

impl pb::RunnersService for RunnersRpc {
    async fn register_runner(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::RegisterRunnerRequest>,
    ) -> ServiceResult<pb::RegisterRunnerResponse> {
        let request = request.to_owned_message();
        let input = NewRunner {
            name: request.name,
            organization_id: request.organization_id,
            labels: request.labels.into_iter().collect(),
            capabilities: request.capabilities,
            endpoint: request.endpoint,
            builtin: request.builtin,
        };
        let registered = self
            .runners
            .register_runner(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::RegisterRunnerResponse {
            runner: runner_to_proto(&registered.runner).into(),
            service_token: registered.service_token.into_inner(),
            ..Default::default()
        })
    }

    async fn get_runner(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetRunnerRequest>,
    ) -> ServiceResult<pb::GetRunnerResponse> {
        let record = self
            .runners
            .get_runner(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetRunnerResponse {
            runner: runner_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_runners(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListRunnersRequest>,
    ) -> ServiceResult<pb::ListRunnersResponse> {
        let request = request.to_owned_message();
        let (records, next_page_token) = self
            .runners
            .list_runners(
                request_caller(&ctx)?,
                request.organization_id.as_deref(),
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListRunnersResponse {
            runners: records.iter().map(runner_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_runner(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateRunnerRequest>,
    ) -> ServiceResult<pb::UpdateRunnerResponse> {
        let request = request.to_owned_message();
        let changes = RunnerChanges {
            name: request.name,
            labels: request
                .labels
                .as_option()
                .map(|labels| labels.entries.clone().into_iter().collect()),
            capabilities: request
                .capabilities
                .as_option()
                .map(|list| list.values.clone()),
            endpoint: request.endpoint,
        };
        let record = self
            .runners
            .update_runner(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateRunnerResponse {
            runner: runner_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn delete_runner(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteRunnerRequest>,
    ) -> ServiceResult<pb::DeleteRunnerResponse> {
        self.runners
            .delete_runner(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteRunnerResponse::default())
    }

    async fn enroll_runner(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::EnrollRunnerRequest>,
    ) -> ServiceResult<pb::EnrollRunnerResponse> {
        let request = request.to_owned_message();
        let service_token = Secret::new(request.service_token);
        let enrolled = self
            .runners
            .enroll_runner(
                &client_address(&ctx),
                &Enrollment {
                    service_token: &service_token,
                    endpoint: &request.endpoint,
                    csr_pem: request.csr_pem.as_deref(),
                },
            )
            .await?;
        Response::ok(pb::EnrollRunnerResponse {
            identity_json: enrolled.identity_json.into_inner(),
            service_name: enrolled.service_name,
            identity_id: enrolled.identity_id,
            ..Default::default()
        })
    }

    async fn list_workloads(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListWorkloadsRequest>,
    ) -> ServiceResult<pb::ListWorkloadsResponse> {
        let request = request.to_owned_message();
        let (records, next_page_token) = self
            .runners
            .list_workloads(
                request_caller(&ctx)?,
                &request.organization_id,
                &workload_filter_from_proto(request.filter.as_option())?,
                workload_sort_from_proto(request.sort.as_option())?,
                PageRequest {
                    size: request.page_size,
                    token: &request.page_token,
                },
            )
            .await?;
        Response::ok(pb::ListWorkloadsResponse {
            workloads: records.iter().map(workload_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn get_workload(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetWorkloadRequest>,
    ) -> ServiceResult<pb::GetWorkloadResponse> {
        let record = self
            .runners
            .get_workload(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetWorkloadResponse {
            workload: workload_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_workloads_by_thread(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListWorkloadsByThreadRequest>,
    ) -> ServiceResult<pb::ListWorkloadsByThreadResponse> {
        let request = request.to_owned_message();
        let statuses = workload_statuses_from_proto("statuses", &request.statuses)?;
        let (records, next_page_token) = self
            .runners
            .list_workloads_by_thread(
                request_caller(&ctx)?,
                &request.thread_id,
                request.agent_id.as_deref(),
                &statuses,
                PageRequest {
                    size: request.page_size,
                    token: &request.page_token,
                },
            )
            .await?;
        Response::ok(pb::ListWorkloadsByThreadResponse {
            workloads: records.iter().map(workload_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn touch_workload(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::TouchWorkloadRequest>,
    ) -> ServiceResult<pb::TouchWorkloadResponse> {
        self.runners
            .touch_workload(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::TouchWorkloadResponse::default())
    }

    async fn stream_workload_logs(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::StreamWorkloadLogsRequest>,
    ) -> ServiceResult<ServiceStream<pb::StreamWorkloadLogsResponse>> {
        let request = request.to_owned_message();
        let input = LogsRequest {
            since_time: time_from_proto("since_time", &request.since_time)?,
            workload_id: request.workload_id,
            container_name: request.container_name,
            follow: request.follow,
            tail_lines: request.tail_lines,
        };
        let chunks = self
            .runners
            .stream_workload_logs(request_caller(&ctx)?, &input)
            .await?;
        Response::stream_ok(chunks.map(|chunk| {
            chunk
                .map(|chunk| pb::StreamWorkloadLogsResponse {
                    chunk: chunk.into(),
                    ..Default::default()
                })
                .map_err(Into::into)
        }))
    }

    async fn get_volume(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetVolumeRequest>,
    ) -> ServiceResult<pb::GetVolumeResponse> {
        let record = self
            .runners
            .get_volume(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetVolumeResponse {
            volume: volume_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_volumes(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListVolumesRequest>,
    ) -> ServiceResult<pb::ListVolumesResponse> {
        let request = request.to_owned_message();
        let (records, next_page_token) = self
            .runners
            .list_volumes(
                request_caller(&ctx)?,
                &request.organization_id,
                &volume_filter_from_proto(request.filter.as_option())?,
                volume_sort_from_proto(request.sort.as_option())?,
                PageRequest {
                    size: request.page_size,
                    token: &request.page_token,
                },
            )
            .await?;
        Response::ok(pb::ListVolumesResponse {
            volumes: records.iter().map(volume_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn list_volumes_by_thread(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListVolumesByThreadRequest>,
    ) -> ServiceResult<pb::ListVolumesByThreadResponse> {
        let (records, next_page_token) = self
            .runners
            .list_volumes_by_thread(
                request_caller(&ctx)?,
                request.thread_id,
                PageRequest {
                    size: request.page_size,
                    token: request.page_token,
                },
            )
            .await?;
        Response::ok(pb::ListVolumesByThreadResponse {
            volumes: records.iter().map(volume_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn create_workload(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateWorkloadRequest>,
    ) -> ServiceResult<pb::CreateWorkloadResponse> {
        let request = request.to_owned_message();
        let input = NewWorkload {
            failure_reason: failure_reason_from_proto(&request.failure_reason)?,
            id: request.id,
            runner_id: request.runner_id,
            thread_id: request.thread_id,
            agent_id: request.agent_id,
            organization_id: request.organization_id,
            containers: request.containers,
            credential_id: request.credential_id,
            allocated_cpu_millicores: request.allocated_cpu_millicores,
            allocated_ram_bytes: request.allocated_ram_bytes,
            failure_message: request.failure_message,
            provisioned_volumes: request
                .provisioned_volumes
                .into_iter()
                .map(|volume| NewWorkloadVolume {
                    id: volume.id,
                    volume_id: volume.volume_id,
                    size: volume.size,
                })
                .collect(),
        };
        let (workload, volumes) = self
            .runners
            .create_workload(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateWorkloadResponse {
            workload: workload_to_proto(&workload).into(),
            provisioned_volumes: volumes.iter().map(volume_to_proto).collect(),
            ..Default::default()
        })
    }

    async fn update_workload(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateWorkloadRequest>,
    ) -> ServiceResult<pb::UpdateWorkloadResponse> {
        let request = request.to_owned_message();
        let changes = WorkloadChanges {
            status: request
                .status
                .as_ref()
                .map(|status| workload_status_from_proto("status", status))
                .transpose()?,
            containers: request
                .containers
                .as_option()
                .map(|list| list.values.clone()),
            instance_id: request.instance_id,
            removed_at: time_from_proto("removed_at", &request.removed_at)?,
            failure_reason: match &request.failure_reason {
                Some(reason) => Some(failure_reason_from_proto(reason)?.ok_or_else(|| {
                    Error::invalid_field("failure_reason", "must not be UNSPECIFIED when set")
                })?),
                None => None,
            },
            failure_message: request.failure_message,
        };
        let record = self
            .runners
            .update_workload(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateWorkloadResponse {
            workload: workload_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn create_provisioned_volume(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateProvisionedVolumeRequest>,
    ) -> ServiceResult<pb::CreateProvisionedVolumeResponse> {
        let request = request.to_owned_message();
        let input = NewVolume {
            id: request.id,
            volume_id: request.volume_id,
            thread_id: request.thread_id,
            runner_id: request.runner_id,
            agent_id: request.agent_id,
            organization_id: request.organization_id,
            size: request.size,
        };
        let record = self
            .runners
            .create_provisioned_volume(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateProvisionedVolumeResponse {
            volume: volume_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn update_provisioned_volume(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateProvisionedVolumeRequest>,
    ) -> ServiceResult<pb::UpdateProvisionedVolumeResponse> {
        let request = request.to_owned_message();
        let changes = VolumeChanges {
            status: request
                .status
                .as_ref()
                .map(|status| volume_status_from_proto("status", status))
                .transpose()?,
            instance_id: request.instance_id,
            removed_at: time_from_proto("removed_at", &request.removed_at)?,
        };
        let record = self
            .runners
            .update_provisioned_volume(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateProvisionedVolumeResponse {
            volume: volume_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_workloads_internal(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListWorkloadsInternalRequest>,
    ) -> ServiceResult<pb::ListWorkloadsInternalResponse> {
        let request = request.to_owned_message();
        let (records, next_page_token) = self
            .runners
            .list_workloads_internal(
                request_caller(&ctx)?,
                &request.organization_id,
                &workload_filter_from_proto(request.filter.as_option())?,
                workload_sort_from_proto(request.sort.as_option())?,
                PageRequest {
                    size: request.page_size,
                    token: &request.page_token,
                },
            )
            .await?;
        Response::ok(pb::ListWorkloadsInternalResponse {
            workloads: records.iter().map(workload_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn list_volumes_internal(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListVolumesInternalRequest>,
    ) -> ServiceResult<pb::ListVolumesInternalResponse> {
        let request = request.to_owned_message();
        let (records, next_page_token) = self
            .runners
            .list_volumes_internal(
                request_caller(&ctx)?,
                &request.organization_id,
                &volume_filter_from_proto(request.filter.as_option())?,
                volume_sort_from_proto(request.sort.as_option())?,
                PageRequest {
                    size: request.page_size,
                    token: &request.page_token,
                },
            )
            .await?;
        Response::ok(pb::ListVolumesInternalResponse {
            volumes: records.iter().map(volume_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn set_runner_status(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SetRunnerStatusRequest>,
    ) -> ServiceResult<pb::SetRunnerStatusResponse> {
        let request = request.to_owned_message();
        let record = self
            .runners
            .set_runner_status(
                request_caller(&ctx)?,
                &request.id,
                runner_status_from_proto(&request.status),
                time_from_proto("last_seen_at", &request.last_seen_at)?,
            )
            .await?;
        Response::ok(pb::SetRunnerStatusResponse {
            runner: runner_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn resolve_workload_credential(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ResolveWorkloadCredentialRequest>,
    ) -> ServiceResult<pb::ResolveWorkloadCredentialResponse> {
        let resolved = self
            .runners
            .resolve_workload_credential(request_caller(&ctx)?, request.credential_id)
            .await?;
        Response::ok(pb::ResolveWorkloadCredentialResponse {
            workload_id: resolved.workload_id,
            agent_id: resolved.agent_id,
            status: workload_status_to_proto(resolved.status).into(),
            ..Default::default()
        })
    }

    async fn delete_organization_resources(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        self.runners
            .delete_organization_resources(request_caller(&ctx)?, request.organization_id)
            .await?;
        Response::ok(pb::DeleteOrganizationResourcesResponse::default())
    }
}

/// The public `RunnersGateway`: every method dispatches to [`RunnersRpc`].
#[derive(Clone)]
pub struct RunnersGatewayRpc {
    inner: RunnersRpc,
}

impl RunnersGatewayRpc {
    pub fn new(runners: Runners) -> Self {
        Self {
            inner: RunnersRpc::new(runners),
        }
    }
}

macro_rules! dispatch {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            async fn $method(
                &self,
                ctx: RequestContext,
                request: ServiceRequest<'_, $request>,
            ) -> ServiceResult<$response> {
                pb::RunnersService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::RunnersGateway for RunnersGatewayRpc {
    dispatch! {
        register_runner(pb::RegisterRunnerRequest) -> pb::RegisterRunnerResponse;
        get_runner(pb::GetRunnerRequest) -> pb::GetRunnerResponse;
        list_runners(pb::ListRunnersRequest) -> pb::ListRunnersResponse;
        update_runner(pb::UpdateRunnerRequest) -> pb::UpdateRunnerResponse;
        delete_runner(pb::DeleteRunnerRequest) -> pb::DeleteRunnerResponse;
        enroll_runner(pb::EnrollRunnerRequest) -> pb::EnrollRunnerResponse;
        list_workloads(pb::ListWorkloadsRequest) -> pb::ListWorkloadsResponse;
        get_workload(pb::GetWorkloadRequest) -> pb::GetWorkloadResponse;
        list_workloads_by_thread(pb::ListWorkloadsByThreadRequest) -> pb::ListWorkloadsByThreadResponse;
        touch_workload(pb::TouchWorkloadRequest) -> pb::TouchWorkloadResponse;
        stream_workload_logs(pb::StreamWorkloadLogsRequest) -> ServiceStream<pb::StreamWorkloadLogsResponse>;
        get_volume(pb::GetVolumeRequest) -> pb::GetVolumeResponse;
        list_volumes(pb::ListVolumesRequest) -> pb::ListVolumesResponse;
        list_volumes_by_thread(pb::ListVolumesByThreadRequest) -> pb::ListVolumesByThreadResponse;
    }
}
