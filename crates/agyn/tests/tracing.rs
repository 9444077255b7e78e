//! Tracing end to end against the real binary. Spans arrive over OTLP/HTTP
//! (JSON and protobuf) and OTLP gRPC on the public listener. An in-progress
//! span exported again with its final values is stored once, and
//! TracingGateway returns the spans, including live run events.

mod support;

use std::time::Duration;

use agyn_api_tracing::opentelemetry::proto::collector::trace::v1::{
    ExportTraceServiceRequest, TraceServiceClient,
};
use agyn_api_tracing::opentelemetry::proto::common::v1::__buffa::oneof::any_value::Value as Any;
use agyn_api_tracing::opentelemetry::proto::common::v1::{AnyValue, KeyValue};
use agyn_api_tracing::opentelemetry::proto::resource::v1::Resource;
use agyn_api_tracing::opentelemetry::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use buffa::Message as _;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use connectrpc::{ErrorCode, Protocol};
use serde_json::{Value, json};
use support::{ConnectStream, Server, connect_json};

const TRACING: &str = "agynio.api.tracing.v1.TracingGateway";

/// Starts a server on SQLite, or on a fresh PostgreSQL database.
async fn start(postgres: bool) -> Server {
    if postgres {
        let url = support::fresh_postgres_url().await;
        Server::start_with(&["--database-url".to_string(), url])
    } else {
        Server::start()
    }
}

/// Creates an organization as the bootstrap admin and returns its id.
async fn create_org(server: &Server) -> String {
    let (status, org) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Tracing"}),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200, "{org}");
    org["organization"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Returns a new trace id: the bytes of a new UUIDv7.
fn random_trace() -> Vec<u8> {
    let id = agyn_core::id::new_id().replace('-', "");
    (0..id.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&id[at..at + 2], 16).unwrap())
        .collect()
}

/// Builds an OTLP/JSON request of one span of `org` (ids in hex).
fn json_export(org: &str, trace: &[u8], span: u64, name: &str, end: u64) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "agyn.organization.id", "value": {"stringValue": org}},
                {"key": "service.name", "value": {"stringValue": "black-box"}}
            ]},
            "scopeSpans": [{
                "scope": {"name": "agyn-tests"},
                "spans": [{
                    "traceId": hex(trace),
                    "spanId": hex(&span.to_be_bytes()),
                    "name": name,
                    "startTimeUnixNano": "1000000",
                    "endTimeUnixNano": end.to_string(),
                    "attributes": [
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}}
                    ]
                }]
            }]
        }]
    })
}

/// Builds an OTLP protobuf request of one ended span of `org`.
fn protobuf_export(org: &str, trace: &[u8], span: u64, name: &str) -> ExportTraceServiceRequest {
    let organization = KeyValue {
        key: "agyn.organization.id".to_string(),
        value: AnyValue {
            value: Some(Any::StringValue(org.to_string())),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Resource {
                attributes: vec![organization],
                ..Default::default()
            }
            .into(),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace.to_vec(),
                    span_id: span.to_be_bytes().to_vec(),
                    name: name.to_string(),
                    start_time_unix_nano: 1_000_000,
                    end_time_unix_nano: 9_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Posts `body` to `/v1/traces` and returns the status and body.
async fn post_traces(
    server: &Server,
    content_type: &str,
    body: Vec<u8>,
    bearer: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.base_url()))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn get_trace(server: &Server, trace: &[u8]) -> (u16, Value) {
    connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        &format!("{TRACING}/GetTrace"),
        json!({"traceId": STANDARD.encode(trace)}),
        Some(&server.admin_token),
    )
    .await
}

/// Returns the spans of a GetTrace or ListSpans response, in order.
fn spans(response: &Value) -> Vec<Value> {
    let mut spans = Vec::new();
    for resource in response["resourceSpans"].as_array().unwrap() {
        for scope in resource["scopeSpans"].as_array().unwrap() {
            spans.extend(scope["spans"].as_array().unwrap().iter().cloned());
        }
    }
    spans
}

async fn export_and_query(postgres: bool) {
    let server = start(postgres).await;
    let org = create_org(&server).await;
    let admin = Some(server.admin_token.as_str());
    let trace = random_trace();

    // An in-progress span over OTLP/JSON, then its final version.
    for end in [0u64, 5_000_000] {
        let body = json_export(&org, &trace, 1, "llm.call", end).to_string();
        let (status, reply) =
            post_traces(&server, "application/json", body.into_bytes(), admin).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        assert_eq!(serde_json::from_slice::<Value>(&reply).unwrap(), json!({}));
    }
    // A second span over OTLP/HTTP protobuf.
    let body = protobuf_export(&org, &trace, 2, "tool.execution").encode_to_vec();
    let (status, _) = post_traces(&server, "application/x-protobuf", body, admin).await;
    assert_eq!(status, 200);

    let (status, trace_response) = get_trace(&server, &trace).await;
    assert_eq!(status, 200, "{trace_response}");
    let stored = spans(&trace_response);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["name"], "llm.call");
    assert_eq!(stored[0]["endTimeUnixNano"], "5000000");
    assert_eq!(stored[0]["spanId"], STANDARD.encode(1u64.to_be_bytes()));
    assert_eq!(stored[1]["name"], "tool.execution");
    let summary = &trace_response["summary"];
    assert_eq!(summary["status"], "TRACE_STATUS_COMPLETED");
    assert_eq!(summary["totalSpans"], "2");
    assert_eq!(summary["tokenUsage"]["inputTokens"], "3");

    let (status, listed) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        &format!("{TRACING}/ListSpans"),
        json!({"organizationId": org, "filter": {"names": ["tool.execution"]}}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let listed = spans(&listed);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "tool.execution");

    let (status, missing) = get_trace(&server, &random_trace()).await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["message"], "trace not found");

    let body = json_export(&org, &trace, 3, "llm.call", 0).to_string();
    let (status, _) = post_traces(&server, "application/json", body.into_bytes(), None).await;
    assert_eq!(status, 401);
    let oversized = vec![0u8; 5 << 20];
    let (status, _) = post_traces(&server, "application/x-protobuf", oversized, admin).await;
    assert_eq!(status, 413);
}

async fn grpc_export(postgres: bool) {
    let server = start(postgres).await;
    let org = create_org(&server).await;
    let trace = random_trace();
    let client = TraceServiceClient::new(
        HttpClient::plaintext_http2_only(),
        ClientConfig::new(server.base_url().parse().unwrap()).with_protocol(Protocol::Grpc),
    );
    let bearer = CallOptions::default()
        .with_header("authorization", format!("Bearer {}", server.admin_token));

    let response = client
        .export_with_options(protobuf_export(&org, &trace, 7, "llm.call"), bearer)
        .await
        .unwrap()
        .into_owned();
    assert!(response.partial_success.as_option().is_none());
    let (status, trace_response) = get_trace(&server, &trace).await;
    assert_eq!(status, 200, "{trace_response}");
    assert_eq!(spans(&trace_response)[0]["name"], "llm.call");

    let anonymous = client
        .export(protobuf_export(&org, &trace, 8, "llm.call"))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code, ErrorCode::Unauthenticated);

    // Requests over 4 MiB are rejected before any span is read.
    let mut oversized = protobuf_export(&org, &trace, 9, "llm.call");
    oversized.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(5 << 20);
    let bearer = CallOptions::default()
        .with_header("authorization", format!("Bearer {}", server.admin_token));
    let too_large = client
        .export_with_options(oversized, bearer)
        .await
        .unwrap_err();
    assert_eq!(too_large.code, ErrorCode::ResourceExhausted);
}

async fn run_events_stream(postgres: bool) {
    let server = start(postgres).await;
    let org = create_org(&server).await;
    let admin = Some(server.admin_token.as_str());
    let trace = random_trace();
    let body = json_export(&org, &trace, 1, "llm.call", 0).to_string();
    let (status, _) = post_traces(&server, "application/json", body.into_bytes(), admin).await;
    assert_eq!(status, 200);

    let mut stream = ConnectStream::open(
        &reqwest::Client::new(),
        &server.base_url(),
        &format!("{TRACING}/StreamRunEvents"),
        json!({"traceId": STANDARD.encode(&trace)}),
        &server.admin_token,
    )
    .await;
    let wait = Duration::from_secs(10);
    let snapshot = stream.next(wait).await.unwrap().unwrap();
    assert_eq!(snapshot["kind"], "KIND_SNAPSHOT", "{snapshot}");
    assert_eq!(snapshot["events"][0]["id"], hex(&1u64.to_be_bytes()));
    assert_eq!(snapshot["events"][0]["status"], "RUN_EVENT_STATUS_RUNNING");
    let end = stream.next(wait).await.unwrap().unwrap();
    assert_eq!(end["kind"], "KIND_SNAPSHOT_END", "{end}");
    assert_eq!(end["summary"]["totalSpans"], "1");

    let body = json_export(&org, &trace, 1, "llm.call", 7_000_000).to_string();
    let (status, _) = post_traces(&server, "application/json", body.into_bytes(), admin).await;
    assert_eq!(status, 200);
    let updated = loop {
        let message = stream.next(wait).await.unwrap().unwrap();
        if message["kind"] != "KIND_HEARTBEAT" {
            break message;
        }
    };
    assert_eq!(updated["kind"], "KIND_UPDATED", "{updated}");
    assert_eq!(updated["events"][0]["status"], "RUN_EVENT_STATUS_SUCCESS");
    assert_eq!(updated["events"][0]["durationMs"], "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_query_on_sqlite() {
    export_and_query(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_query_on_postgres() {
    export_and_query(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_on_sqlite() {
    grpc_export(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_on_postgres() {
    grpc_export(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_events_stream_on_sqlite() {
    run_events_stream(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_events_stream_on_postgres() {
    run_events_stream(true).await;
}
