//! `TracingService` (internal), `TracingGateway` (public) and the OTLP
//! gRPC `TraceService` over [`Tracing`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request.

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_api_tracing::opentelemetry::proto::collector::trace::v1 as otlp;
use agyn_core::caller::request_caller;
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream};

use crate::Tracing;

/// The internal `TracingService`.
#[derive(Clone)]
pub struct TracingRpc {
    tracing: Tracing,
}

impl TracingRpc {
    pub fn new(tracing: Tracing) -> Self {
        Self { tracing }
    }
}

impl pb::TracingService for TracingRpc {
    async fn list_spans(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListSpansRequest>,
    ) -> ServiceResult<pb::ListSpansResponse> {
        let request = request.to_owned_message();
        let (resource_spans, next_page_token) = self
            .tracing
            .list_spans(request_caller(&ctx)?, &request)
            .await?;
        Response::ok(pb::ListSpansResponse {
            resource_spans,
            next_page_token,
            ..Default::default()
        })
    }

    async fn get_span(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetSpanRequest>,
    ) -> ServiceResult<pb::GetSpanResponse> {
        let resource_spans = self
            .tracing
            .get_span(request_caller(&ctx)?, request.trace_id, request.span_id)
            .await?;
        Response::ok(pb::GetSpanResponse {
            resource_spans: resource_spans.into(),
            ..Default::default()
        })
    }

    async fn get_trace(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetTraceRequest>,
    ) -> ServiceResult<pb::GetTraceResponse> {
        let (resource_spans, summary) = self
            .tracing
            .get_trace(request_caller(&ctx)?, request.trace_id)
            .await?;
        Response::ok(pb::GetTraceResponse {
            resource_spans,
            summary: summary.into(),
            ..Default::default()
        })
    }

    async fn stream_run_events(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::StreamRunEventsRequest>,
    ) -> ServiceResult<ServiceStream<pb::StreamRunEventsResponse>> {
        let caller = request_caller(&ctx)?.clone();
        let request = request.to_owned_message();
        let stream = self.tracing.stream_run_events(caller, &request).await?;
        Response::stream_ok(stream)
    }
}

/// The public `TracingGateway`: every method dispatches to [`TracingRpc`].
#[derive(Clone)]
pub struct TracingGatewayRpc {
    inner: TracingRpc,
}

impl TracingGatewayRpc {
    pub fn new(tracing: Tracing) -> Self {
        Self {
            inner: TracingRpc::new(tracing),
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
                pb::TracingService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::TracingGateway for TracingGatewayRpc {
    dispatch! {
        list_spans(pb::ListSpansRequest) -> pb::ListSpansResponse;
        get_span(pb::GetSpanRequest) -> pb::GetSpanResponse;
        get_trace(pb::GetTraceRequest) -> pb::GetTraceResponse;
        stream_run_events(pb::StreamRunEventsRequest) -> ServiceStream<pb::StreamRunEventsResponse>;
    }
}

/// OTLP gRPC ingest, `opentelemetry.proto.collector.trace.v1.TraceService`.
/// The server's default request limit (4 MiB) rejects bigger requests with
/// `RESOURCE_EXHAUSTED`.
#[derive(Clone)]
pub struct TraceServiceRpc {
    tracing: Tracing,
}

impl TraceServiceRpc {
    pub fn new(tracing: Tracing) -> Self {
        Self { tracing }
    }
}

impl otlp::TraceService for TraceServiceRpc {
    async fn export(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, otlp::ExportTraceServiceRequest>,
    ) -> ServiceResult<otlp::ExportTraceServiceResponse> {
        let caller = request_caller(&ctx)?;
        let response = self
            .tracing
            .export(caller, request.to_owned_message())
            .await?;
        Response::ok(response)
    }
}
