//! ListSpans, GetSpan, GetTrace and retention on SQLite and PostgreSQL,
//! over TracingGateway and TracingService on loopback and straight
//! through the service.

mod support;

use std::time::Duration;

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_api_tracing::opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
use agyn_core::Caller;
use agyn_core::error::Code;
use agyn_store::{Backend, on_both_backends};
use connectrpc::ErrorCode;
use support::*;

/// Exports the spans of one trace in two organizations: `a` contains an
/// `invocation.message` root and two children in two scopes, `b` one span.
async fn two_org_trace(w: &World, owner: &Caller, a: &str, b: &str, trace: &[u8]) {
    let mut root = span(trace, 1, "invocation.message", 100, 0);
    root.attributes = vec![int("gen_ai.usage.output_tokens", 1)];
    let mut llm = span(trace, 2, "llm.call", 200, 300);
    llm.parent_span_id = span_id(1);
    llm.attributes = vec![
        int("gen_ai.usage.input_tokens", 10),
        int("gen_ai.usage.cache_read.input_tokens", 4),
        int("gen_ai.usage.output_tokens", 6),
        int("agyn.usage.reasoning_tokens", 2),
    ];
    let mut tool = failed(span(trace, 3, "tool.execution", 150, 400), "exit 1");
    tool.parent_span_id = span_id(1);
    let mut other_scope = resource_spans(vec![text("agyn.organization.id", a)], vec![tool]);
    other_scope.scope_spans[0]
        .scope
        .get_or_insert_default()
        .name = "tools".to_string();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(vec![text("agyn.organization.id", a)], vec![root, llm]),
            other_scope,
            resource_spans(
                vec![text("agyn.organization.id", b)],
                vec![span(trace, 4, "llm.call", 50, 60)],
            ),
        ],
        ..Default::default()
    };
    export(w, owner, request).await.unwrap();
}

async fn get_trace_groups_and_summarizes(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let a = w.org(&owner, "alpha").await;
    let b = w.org(&owner, "beta").await;
    let trace = random_trace();
    two_org_trace(&w, &owner, &a, &b, &trace).await;
    let server = Server::start(&w).await;

    let response = server
        .gateway()
        .get_trace_with_options(
            pb::GetTraceRequest {
                trace_id: trace.clone(),
                ..Default::default()
            },
            options(&owner),
        )
        .await
        .unwrap()
        .into_owned();
    let names: Vec<String> = spans_of(&response.resource_spans)
        .iter()
        .map(|span| span.name.clone())
        .collect();
    // Beta's resource comes first (start 50). Alpha's two ResourceSpans
    // carry the same resource, so they share one envelope with a scope
    // each, in the order of their first span (100, then 150).
    assert_eq!(
        names,
        [
            "llm.call",
            "invocation.message",
            "llm.call",
            "tool.execution"
        ]
    );
    assert_eq!(response.resource_spans.len(), 2);
    let alpha = &response.resource_spans[1];
    assert_eq!(alpha.scope_spans.len(), 2);
    assert_eq!(alpha.scope_spans[0].spans.len(), 2);
    assert_eq!(
        alpha.scope_spans[1].scope.as_option().unwrap().name,
        "tools"
    );

    let summary = response.summary.as_option().unwrap();
    assert_eq!(summary.trace_id, trace);
    assert_eq!(
        summary.status.to_i32(),
        pb::TraceStatus::TRACE_STATUS_RUNNING as i32
    );
    assert_eq!(summary.total_spans, 4);
    assert_eq!(summary.first_span_start_time, 50);
    assert_eq!(summary.last_span_start_time, 200);
    assert_eq!(summary.last_span_end_time, 400);
    assert_eq!(summary.counts_by_name["llm.call"], 2);
    assert_eq!(summary.counts_by_status["SPAN_STATUS_RUNNING"], 1);
    assert_eq!(summary.counts_by_status["SPAN_STATUS_OK"], 2);
    assert_eq!(summary.counts_by_status["SPAN_STATUS_ERROR"], 1);
    let usage = summary.token_usage.as_option().unwrap();
    assert_eq!(usage.input_tokens, 10);
    assert_eq!(usage.cache_read_input_tokens, 4);
    assert_eq!(usage.output_tokens, 7);
    assert_eq!(usage.reasoning_tokens, 2);
    assert_eq!(usage.total_tokens, 17);
}

async fn get_trace_scopes_to_readable_orgs(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let outsider = w.user("outsider").await;
    let a = w.org(&owner, "alpha").await;
    let b = w.org(&owner, "beta").await;
    w.join(&a, &owner, &member).await;
    let trace = random_trace();
    two_org_trace(&w, &owner, &a, &b, &trace).await;
    let server = Server::start(&w).await;
    let get = |trace_id: Vec<u8>| pb::GetTraceRequest {
        trace_id,
        ..Default::default()
    };

    let response = server
        .gateway()
        .get_trace_with_options(get(trace.clone()), options(&member))
        .await
        .unwrap()
        .into_owned();
    assert_eq!(spans_of(&response.resource_spans).len(), 3);
    assert_eq!(response.summary.as_option().unwrap().total_spans, 3);

    let denied = server
        .gateway()
        .get_trace_with_options(get(trace.clone()), options(&outsider))
        .await
        .unwrap_err();
    assert_eq!(denied.code, ErrorCode::PermissionDenied);

    let unknown = server
        .gateway()
        .get_trace_with_options(get(random_trace()), options(&owner))
        .await
        .unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound);
    assert_eq!(unknown.message.as_deref(), Some("trace not found"));

    let short = server
        .internal()
        .get_trace_with_options(get(vec![1, 2, 3]), options(&owner))
        .await
        .unwrap_err();
    assert_eq!(short.code, ErrorCode::InvalidArgument);
}

async fn get_span_checks_the_span_org(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let admin = w.admin("admin").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "alpha").await;
    let trace = random_trace();
    export(
        &w,
        &owner,
        org_request(&org, vec![span(&trace, 1, "llm.call", 1, 2)]),
    )
    .await
    .unwrap();
    // A component may export spans without an organization.
    let orphan_trace = random_trace();
    export(
        &w,
        &Caller::Component("orchestrator"),
        request(vec![], vec![span(&orphan_trace, 1, "startup", 1, 2)]),
    )
    .await
    .unwrap();

    let found = w
        .tracing
        .get_span(&owner, &trace, &span_id(1))
        .await
        .unwrap();
    assert_eq!(spans_of(&[found])[0].name, "llm.call");
    let denied = w
        .tracing
        .get_span(&outsider, &trace, &span_id(1))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let missing = w
        .tracing
        .get_span(&owner, &trace, &span_id(2))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "span not found");
    let bad = w.tracing.get_span(&owner, &trace, &[1]).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let orphan = w
        .tracing
        .get_span(&owner, &orphan_trace, &span_id(1))
        .await
        .unwrap_err();
    assert_eq!(orphan.code(), Code::PermissionDenied);
    assert!(
        w.tracing
            .get_span(&admin, &orphan_trace, &span_id(1))
            .await
            .is_ok()
    );
}

/// Returns the names of the spans ListSpans returns for `filter`.
async fn listed_names(
    w: &World,
    caller: &Caller,
    org: &str,
    filter: pb::SpanFilter,
) -> Vec<String> {
    let spans = listed_spans(w, caller, org, filter).await;
    spans.into_iter().map(|span| span.name).collect()
}

async fn list_spans_filters(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let a = w.org(&owner, "alpha").await;
    let b = w.org(&owner, "beta").await;
    let trace = random_trace();
    two_org_trace(&w, &owner, &a, &b, &trace).await;

    let server_kind =
        agyn_api_tracing::opentelemetry::proto::trace::v1::span::SpanKind::SPAN_KIND_SERVER;
    let cases: Vec<(&str, pb::SpanFilter, Vec<&str>)> = vec![
        // Newest first (200, 150, 100), then grouped: the llm.call and the
        // invocation share a scope that appears before the tools scope.
        (
            "no filter",
            pb::SpanFilter::default(),
            vec!["llm.call", "invocation.message", "tool.execution"],
        ),
        (
            "roots",
            pb::SpanFilter {
                parent_span_id: Some(Vec::new()),
                ..Default::default()
            },
            vec!["invocation.message"],
        ),
        (
            "names override name",
            pb::SpanFilter {
                parent_span_id: Some(span_id(1)),
                names: vec!["tool.execution".to_string()],
                name: Some("llm.call".to_string()),
                ..Default::default()
            },
            vec!["tool.execution"],
        ),
        (
            "in progress",
            pb::SpanFilter {
                in_progress: Some(true),
                ..Default::default()
            },
            vec!["invocation.message"],
        ),
        (
            "statuses override in_progress",
            pb::SpanFilter {
                in_progress: Some(true),
                statuses: vec![
                    pb::SpanStatus::SPAN_STATUS_OK.into(),
                    pb::SpanStatus::SPAN_STATUS_ERROR.into(),
                ],
                ..Default::default()
            },
            vec!["llm.call", "tool.execution"],
        ),
        (
            "start window and trace",
            pb::SpanFilter {
                start_time_min: Some(100),
                start_time_max: Some(150),
                trace_id: Some(trace.clone()),
                ..Default::default()
            },
            vec!["tool.execution", "invocation.message"],
        ),
        (
            "kind",
            pb::SpanFilter {
                kind: Some(server_kind.into()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (case, filter, expected) in cases {
        let names = listed_names(&w, &owner, &a, filter).await;
        assert_eq!(names, expected, "{case}");
    }

    let other = listed_names(&w, &owner, &b, pb::SpanFilter::default()).await;
    assert_eq!(other, ["llm.call"]);
}

async fn list_spans_rejects_bad_requests(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "alpha").await;

    let cases = [
        pb::SpanFilter {
            trace_id: Some(vec![1; 15]),
            ..Default::default()
        },
        pb::SpanFilter {
            parent_span_id: Some(vec![1; 9]),
            ..Default::default()
        },
        pb::SpanFilter {
            statuses: vec![pb::SpanStatus::SPAN_STATUS_UNSPECIFIED.into()],
            ..Default::default()
        },
    ];
    for filter in cases {
        let error = w
            .tracing
            .list_spans(&owner, &list_request(&org, filter.clone()))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{filter:?}");
    }

    let mut negative = list_request(&org, pb::SpanFilter::default());
    negative.page_size = -1;
    let error = w.tracing.list_spans(&owner, &negative).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = w
        .tracing
        .list_spans(&owner, &list_request("", pb::SpanFilter::default()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    let error = w
        .tracing
        .list_spans(&outsider, &list_request(&org, pb::SpanFilter::default()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

async fn list_spans_pages(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let other = w.user("other").await;
    let org = w.org(&owner, "alpha").await;
    w.join(&org, &owner, &other).await;
    let trace = random_trace();
    // Spans 1..=5 share start 10 so that the tiebreak decides their order.
    let spans: Vec<_> = (1..=7)
        .map(|n| {
            span(
                &trace,
                n,
                &format!("s{n}"),
                if n <= 5 { 10 } else { n * 10 },
                1_000,
            )
        })
        .collect();
    export(&w, &owner, org_request(&org, spans)).await.unwrap();

    for (order, expected) in [
        (
            pb::SpanOrder::SPAN_ORDER_START_TIME_ASC,
            ["s1", "s2", "s3", "s4", "s5", "s6", "s7"],
        ),
        (
            pb::SpanOrder::SPAN_ORDER_UNSPECIFIED,
            ["s7", "s6", "s5", "s4", "s3", "s2", "s1"],
        ),
    ] {
        let mut names = Vec::new();
        let mut request = list_request(&org, pb::SpanFilter::default());
        request.order = order.into();
        request.page_size = 3;
        let mut pages = 0;
        loop {
            let (envelopes, token) = w.tracing.list_spans(&owner, &request).await.unwrap();
            pages += 1;
            names.extend(spans_of(&envelopes).into_iter().map(|span| span.name));
            if token.is_empty() {
                break;
            }
            request.page_token = token;
        }
        assert_eq!(names, expected);
        assert_eq!(pages, 3);
    }

    let mut first = list_request(&org, pb::SpanFilter::default());
    first.page_size = 2;
    let (_, token) = w.tracing.list_spans(&owner, &first).await.unwrap();
    let mut replayed = first.clone();
    replayed.page_token = token;
    let error = w.tracing.list_spans(&other, &replayed).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
}

async fn prune_deletes_old_spans(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "alpha").await;
    let old_trace = random_trace();
    let new_trace = random_trace();
    export(
        &w,
        &owner,
        org_request(&org, vec![span(&old_trace, 1, "old", 1, 2)]),
    )
    .await
    .unwrap();
    agyn_store::sqlx::query("UPDATE spans SET updated_at = updated_at - $1 WHERE trace_id = $2")
        .bind(15i64 * 24 * 3600 * 1_000_000)
        .bind(hex(&old_trace))
        .execute(w.db.pool())
        .await
        .unwrap();
    export(
        &w,
        &owner,
        org_request(&org, vec![span(&new_trace, 1, "new", 1, 2)]),
    )
    .await
    .unwrap();

    let deleted = w
        .tracing
        .prune(agyn_tracing::DEFAULT_RETENTION)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(w.span_rows(&old_trace).await, 0);
    assert_eq!(w.span_rows(&new_trace).await, 1);
    let expired = w.tracing.get_trace(&owner, &old_trace).await.unwrap_err();
    assert_eq!(expired.code(), Code::NotFound);
    assert_eq!(w.tracing.prune(Duration::from_secs(3600)).await.unwrap(), 0);
}

on_both_backends!(
    get_trace_groups_and_summarizes,
    get_trace_scopes_to_readable_orgs,
    get_span_checks_the_span_org,
    list_spans_filters,
    list_spans_rejects_bad_requests,
    list_spans_pages,
    prune_deletes_old_spans,
);
