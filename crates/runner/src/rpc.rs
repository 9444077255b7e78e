//! [`RunnerRpc`]: the generated `RunnerService` server trait over any
//! [`Runner`], so a runner can be mounted on a connectrpc router.
//!
//! The handlers only convert messages. Who may call which method is
//! checked by the transport in front of the router (see
//! [`crate::serve_tls`]).

use std::sync::Arc;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use futures::StreamExt as _;

use crate::Runner;

/// `RunnerService` over a [`Runner`].
#[derive(Clone)]
pub struct RunnerRpc {
    runner: Arc<dyn Runner>,
}

impl RunnerRpc {
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Self { runner }
    }
}

impl pb::RunnerService for RunnerRpc {
    async fn ready(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::ReadyRequest>,
    ) -> ServiceResult<pb::ReadyResponse> {
        Response::ok(self.runner.ready().await?)
    }

    async fn start_workload(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::StartWorkloadRequest>,
    ) -> ServiceResult<pb::StartWorkloadResponse> {
        let response = self
            .runner
            .start_workload(request.to_owned_message())
            .await?;
        Response::ok(response)
    }

    async fn stop_workload(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::StopWorkloadRequest>,
    ) -> ServiceResult<pb::StopWorkloadResponse> {
        self.runner
            .stop_workload(request.to_owned_message())
            .await?;
        Response::ok(pb::StopWorkloadResponse::default())
    }

    async fn remove_workload(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::RemoveWorkloadRequest>,
    ) -> ServiceResult<pb::RemoveWorkloadResponse> {
        self.runner
            .remove_workload(request.to_owned_message())
            .await?;
        Response::ok(pb::RemoveWorkloadResponse::default())
    }

    async fn inspect_workload(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::InspectWorkloadRequest>,
    ) -> ServiceResult<pb::InspectWorkloadResponse> {
        let response = self
            .runner
            .inspect_workload(request.to_owned_message())
            .await?;
        Response::ok(response)
    }

    async fn list_workloads(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::ListWorkloadsRequest>,
    ) -> ServiceResult<pb::ListWorkloadsResponse> {
        Response::ok(pb::ListWorkloadsResponse {
            workloads: self.runner.list_workloads().await?,
            ..Default::default()
        })
    }

    async fn list_volumes(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::ListVolumesRequest>,
    ) -> ServiceResult<pb::ListVolumesResponse> {
        Response::ok(pb::ListVolumesResponse {
            volumes: self.runner.list_volumes().await?,
            ..Default::default()
        })
    }

    async fn remove_volume(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::RemoveVolumeRequest>,
    ) -> ServiceResult<pb::RemoveVolumeResponse> {
        self.runner
            .remove_volume(request.to_owned_message())
            .await?;
        Response::ok(pb::RemoveVolumeResponse::default())
    }

    async fn stream_workload_logs(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::StreamWorkloadLogsRequest>,
    ) -> ServiceResult<ServiceStream<pb::StreamWorkloadLogsResponse>> {
        let logs = self
            .runner
            .stream_workload_logs(request.to_owned_message())
            .await?;
        let responses = logs.map(|item| {
            item.map(|chunk| pb::StreamWorkloadLogsResponse {
                chunk: chunk.into(),
                ..Default::default()
            })
            .map_err(ConnectError::from)
        });
        Response::stream_ok(responses)
    }
}
