//! OTLP ingest on SQLite and PostgreSQL: gRPC Export with the generated
//! client, OTLP/HTTP with protobuf and JSON bodies, the upsert of spans
//! exported while running, partial rejection and the attribute rules.

mod support;

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_api_tracing::opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse;
use agyn_core::error::Code;
use agyn_store::{Backend, on_both_backends};
use buffa::Message as _;
use connectrpc::ErrorCode;
use serde_json::{Value, json};
use support::*;

async fn grpc_export_stores_spans(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let server = Server::start(&w).await;
    let trace = random_trace();

    let export = request(
        vec![
            text("agyn.organization.id", &org),
            text("service.name", "probe"),
        ],
        vec![
            span(&trace, 1, "invocation.message", 1_000, 5_000),
            span(&trace, 2, "llm.call", 2_000, 3_000),
        ],
    );
    let response = server
        .otlp()
        .export_with_options(export, options(&owner))
        .await
        .unwrap()
        .into_owned();
    assert!(response.partial_success.as_option().is_none());

    let (envelopes, summary) = w.tracing.get_trace(&owner, &trace).await.unwrap();
    let spans = spans_of(&envelopes);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].name, "invocation.message");
    assert_eq!(spans[1].name, "llm.call");
    assert_eq!(summary.total_spans, 2);
    let resource = envelopes[0].resource.as_option().unwrap();
    assert_eq!(
        attribute_text(&resource.attributes, "agyn.identity.id").as_deref(),
        Some(id(&owner))
    );
    assert_eq!(
        attribute_text(&resource.attributes, "service.name").as_deref(),
        Some("probe")
    );
}

async fn grpc_export_without_credential_is_unauthenticated(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let trace = random_trace();
    let error = server
        .otlp()
        .export(request(vec![], vec![span(&trace, 1, "llm.call", 1, 2)]))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
    assert_eq!(w.span_rows(&trace).await, 0);
}

async fn http_protobuf_export(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let server = Server::start(&w).await;
    let trace = random_trace();
    let body = org_request(&org, vec![span(&trace, 7, "tool.execution", 10, 20)]).encode_to_vec();

    let (status, content_type, body) = server
        .post_traces(Some(&bearer_of(&owner)), "application/x-protobuf", body)
        .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-protobuf");
    let response = ExportTraceServiceResponse::decode_from_slice(&body).unwrap();
    assert!(response.partial_success.as_option().is_none());

    let stored = w
        .tracing
        .get_span(&owner, &trace, &span_id(7))
        .await
        .unwrap();
    assert_eq!(spans_of(&[stored])[0].name, "tool.execution");
}

async fn http_json_export_reads_hex_ids(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let server = Server::start(&w).await;
    let trace = random_trace();
    let body = json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "agyn.organization.id", "value": {"stringValue": org}}
            ]},
            "scopeSpans": [{
                "scope": {"name": "json-test"},
                "spans": [{
                    "traceId": hex(&trace),
                    "spanId": hex(&span_id(3)),
                    "parentSpanId": hex(&span_id(1)),
                    "name": "llm.call",
                    "kind": 3,
                    "startTimeUnixNano": "1700000000000000000",
                    "endTimeUnixNano": "1700000001000000000",
                    "attributes": [
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}
                    ],
                    "status": {"code": 2, "message": "rate limited"}
                }]
            }]
        }]
    });

    let (status, content_type, body) = server
        .post_traces(
            Some(&bearer_of(&owner)),
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/json");
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response, json!({}));

    let stored = w
        .tracing
        .get_span(&owner, &trace, &span_id(3))
        .await
        .unwrap();
    let stored = &spans_of(&[stored])[0];
    assert_eq!(stored.parent_span_id, span_id(1));
    assert_eq!(stored.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(stored.kind.to_i32(), 3);
    assert_eq!(stored.status.as_option().unwrap().message, "rate limited");
    let (_, summary) = w.tracing.get_trace(&owner, &trace).await.unwrap();
    assert_eq!(summary.token_usage.as_option().unwrap().input_tokens, 12);
    assert_eq!(
        summary.status.to_i32(),
        pb::TraceStatus::TRACE_STATUS_ERROR as i32
    );
}

async fn http_json_partial_rejection(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let server = Server::start(&w).await;
    let trace = random_trace();

    let body = json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "agyn.organization.id", "value": {"stringValue": org}}
            ]},
            "scopeSpans": [{"spans": [
                {"traceId": hex(&trace), "spanId": "00ff", "name": "short"},
                {"traceId": hex(&trace), "spanId": hex(&span_id(2)), "name": "good"}
            ]}]
        }]
    });
    let (status, _, body) = server
        .post_traces(
            Some(&bearer_of(&owner)),
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, 200);

    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["partialSuccess"]["rejectedSpans"], json!("1"));
    let message = response["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("span_id must be 8 bytes, got 2"),
        "{message}"
    );
    assert_eq!(w.span_rows(&trace).await, 1);
}

async fn http_rejects_bad_requests(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let server = Server::start(&w).await;
    let trace = random_trace();
    let body = org_request(&org, vec![span(&trace, 1, "llm.call", 1, 2)]).encode_to_vec();

    let (status, _, _) = server
        .post_traces(None, "application/x-protobuf", body.clone())
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = server
        .post_traces(Some(&bearer_of(&owner)), "text/plain", body.clone())
        .await;
    assert_eq!(status, 415);
    let (status, content_type, error) = server
        .post_traces(Some(&bearer_of(&owner)), "application/json", b"{".to_vec())
        .await;
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/json");
    let error: Value = serde_json::from_slice(&error).unwrap();
    assert_eq!(error["code"], json!(3));
    let oversized = vec![0u8; 4 * 1024 * 1024 + 1];
    let (status, _, _) = server
        .post_traces(
            Some(&bearer_of(&owner)),
            "application/x-protobuf",
            oversized,
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(w.span_rows(&trace).await, 0);
}

async fn running_span_updated_twice_stored_once(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let trace = random_trace();

    let running = span(&trace, 1, "llm.call", 100, 0);
    export(&w, &owner, org_request(&org, vec![running.clone()]))
        .await
        .unwrap();
    let mut progressed = running.clone();
    progressed.attributes = vec![int("gen_ai.usage.input_tokens", 5)];
    export(&w, &owner, org_request(&org, vec![progressed]))
        .await
        .unwrap();
    let mut done = failed(span(&trace, 1, "llm.call", 100, 900), "boom");
    done.attributes = vec![int("gen_ai.usage.input_tokens", 40)];
    export(&w, &owner, org_request(&org, vec![done]))
        .await
        .unwrap();

    assert_eq!(w.span_rows(&trace).await, 1);
    let (envelopes, summary) = w.tracing.get_trace(&owner, &trace).await.unwrap();
    let spans = spans_of(&envelopes);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].end_time_unix_nano, 900);
    assert_eq!(spans[0].status.as_option().unwrap().message, "boom");
    assert_eq!(summary.token_usage.as_option().unwrap().input_tokens, 40);
    assert_eq!(summary.last_span_end_time, 900);

    // A late in-progress export keeps the completion but takes new
    // attributes.
    let mut late = span(&trace, 1, "llm.call", 100, 0);
    late.attributes = vec![int("gen_ai.usage.input_tokens", 41)];
    export(&w, &owner, org_request(&org, vec![late]))
        .await
        .unwrap();
    let (envelopes, summary) = w.tracing.get_trace(&owner, &trace).await.unwrap();
    let spans = spans_of(&envelopes);
    assert_eq!(spans[0].end_time_unix_nano, 900);
    assert_eq!(spans[0].status.as_option().unwrap().message, "boom");
    assert_eq!(summary.token_usage.as_option().unwrap().input_tokens, 41);
    assert_eq!(
        summary.status.to_i32(),
        pb::TraceStatus::TRACE_STATUS_ERROR as i32
    );
}

async fn invalid_spans_are_counted(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let trace = random_trace();
    let mut zero_trace = span(&[0; 16], 1, "zero", 1, 2);
    zero_trace.trace_id = vec![0; 16];
    let zero_span = span(&trace, 0, "zero span", 1, 2);
    let mut huge = span(&trace, 5, "huge", 1, 2);
    huge.attributes = vec![text("blob", &"x".repeat(1024 * 1024 + 1))];
    let good = span(&trace, 9, "good", 1, 2);

    let response = w
        .tracing
        .export(
            &owner,
            org_request(&org, vec![zero_trace, zero_span, huge, good]),
        )
        .await
        .unwrap();
    let partial = response.partial_success.as_option().unwrap();
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial
            .error_message
            .contains("trace_id must not be all zeros"),
        "{}",
        partial.error_message
    );
    assert_eq!(w.span_rows(&trace).await, 1);
}

async fn agent_attributes_are_overwritten(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let other_org = w.org(&owner, "other").await;
    let agent = w.agent(&org);
    let workload_id = new_id();
    let workload_agent = agent_caller(id(&agent), Some(&workload_id));
    let trace = trace_of(&workload_id);
    let forged = vec![
        text("agyn.organization.id", &other_org),
        text("agyn.agent.id", "forged"),
        text("agyn.identity.id", "forged"),
        text("agyn.workload.id", "forged"),
    ];

    export(
        &w,
        &workload_agent,
        request(forged, vec![span(&trace, 1, "invocation.message", 1, 0)]),
    )
    .await
    .unwrap();

    let agent_id = w.directory.agents.lock().unwrap()[id(&agent)]
        .agent_id
        .clone();
    let (envelopes, _) = w.tracing.get_trace(&owner, &trace).await.unwrap();
    let attributes = &envelopes[0].resource.as_option().unwrap().attributes;
    assert_eq!(
        attribute_text(attributes, "agyn.organization.id"),
        Some(org.clone())
    );
    assert_eq!(attribute_text(attributes, "agyn.agent.id"), Some(agent_id));
    assert_eq!(
        attribute_text(attributes, "agyn.identity.id").as_deref(),
        Some(id(&agent))
    );
    assert_eq!(
        attribute_text(attributes, "agyn.workload.id"),
        Some(workload_id.clone())
    );
    let listed = listed_spans(
        &w,
        &owner,
        &org,
        pb::SpanFilter {
            workload_id: Some(workload_id.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), 1);
    let elsewhere = listed_spans(&w, &owner, &other_org, pb::SpanFilter::default()).await;
    assert!(elsewhere.is_empty());
}

async fn unknown_agent_is_denied(backend: Backend) {
    let w = World::new(backend).await;
    let trace = random_trace();
    let stranger = agent_caller(&new_id(), None);
    let error = export(
        &w,
        &stranger,
        request(vec![], vec![span(&trace, 1, "x", 1, 2)]),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(w.span_rows(&trace).await, 0);
}

async fn user_needs_a_readable_organization(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "acme").await;
    let server = Server::start(&w).await;
    let trace = random_trace();

    let missing = export(
        &w,
        &owner,
        request(vec![], vec![span(&trace, 1, "x", 1, 2)]),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::PermissionDenied);
    assert!(
        missing.message().contains("agyn.organization.id"),
        "{}",
        missing.message()
    );

    // One forbidden resource rejects the whole request, over both
    // transports.
    let mixed = || {
        agyn_api_tracing::opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(vec![], vec![span(&trace, 1, "x", 1, 2)]),
                resource_spans(
                    vec![text("agyn.organization.id", &org)],
                    vec![span(&trace, 2, "y", 1, 2)],
                ),
            ],
            ..Default::default()
        }
    };
    let (status, _, _) = server
        .post_traces(
            Some(&bearer_of(&outsider)),
            "application/x-protobuf",
            mixed().encode_to_vec(),
        )
        .await;
    assert_eq!(status, 403);
    let error = server
        .otlp()
        .export_with_options(mixed(), options(&outsider))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);
    assert_eq!(w.span_rows(&trace).await, 0);
}

async fn message_links_need_a_readable_thread(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "acme").await;
    let agent = w.agent(&org);
    let readable = w.message(&org, &[&agent]).await;
    let unreadable = w.message(&org, &[&owner]).await;
    let trace = random_trace();

    let mut linked = span(&trace, 1, "invocation.message", 1, 2);
    linked.attributes = vec![text("agyn.thread.message.id", &readable)];
    export(&w, &agent, request(vec![], vec![linked]))
        .await
        .unwrap();

    let mut legacy = span(&trace, 2, "invocation.message", 1, 2);
    legacy.attributes = vec![text("agyn.message.id", &unreadable)];
    let error = export(&w, &agent, request(vec![], vec![legacy]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);

    let error = export(
        &w,
        &agent,
        request(
            vec![text("agyn.thread.message.id", &new_id())],
            vec![span(&trace, 3, "llm.call", 1, 2)],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(w.span_rows(&trace).await, 1);

    let listed = listed_spans(
        &w,
        &owner,
        &org,
        pb::SpanFilter {
            message_id: Some(readable.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].span_id, span_id(1));
}

async fn users_cannot_forge_or_take_over_spans(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let alice_org = w.org(&alice, "alice-org").await;
    let bob_org = w.org(&bob, "bob-org").await;
    let trace = random_trace();
    export(
        &w,
        &alice,
        request(
            vec![text("agyn.organization.id", &alice_org)],
            vec![span(&trace, 1, "alice's span", 1, 2)],
        ),
    )
    .await
    .unwrap();

    // The same trace and span id exported into another organization is
    // refused, and the stored span keeps its organization.
    let error = export(
        &w,
        &bob,
        request(
            vec![text("agyn.organization.id", &bob_org)],
            vec![span(&trace, 1, "hijacked", 1, 3)],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert!(
        error.message().contains("another organization"),
        "{}",
        error.message()
    );
    let listed = listed_spans(&w, &alice, &alice_org, pb::SpanFilter::default()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "alice's span");

    // A second organization attribute is refused, and a user cannot plant
    // agent or workload attributes.
    let error = export(
        &w,
        &bob,
        request(
            vec![
                text("agyn.organization.id", &bob_org),
                text("agyn.organization.id", &alice_org),
            ],
            vec![span(&random_trace(), 1, "two orgs", 1, 2)],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    let planted = random_trace();
    export(
        &w,
        &bob,
        request(
            vec![
                text("agyn.organization.id", &bob_org),
                text("agyn.agent.id", "forged-agent"),
                text("agyn.workload.id", "forged-workload"),
            ],
            vec![span(&planted, 1, "planted", 1, 2)],
        ),
    )
    .await
    .unwrap();
    let stored = w.stored_resource_keys(&planted).await;
    assert!(
        !stored.iter().any(|key| key == "agyn.agent.id"),
        "{stored:?}"
    );
    assert!(
        !stored.iter().any(|key| key == "agyn.workload.id"),
        "{stored:?}"
    );
}

on_both_backends!(
    grpc_export_stores_spans,
    grpc_export_without_credential_is_unauthenticated,
    http_protobuf_export,
    http_json_export_reads_hex_ids,
    http_json_partial_rejection,
    http_rejects_bad_requests,
    running_span_updated_twice_stored_once,
    invalid_spans_are_counted,
    agent_attributes_are_overwritten,
    unknown_agent_is_denied,
    user_needs_a_readable_organization,
    message_links_need_a_readable_thread,
    users_cannot_forge_or_take_over_spans,
);
