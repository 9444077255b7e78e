//! StreamRunEvents over TracingGateway on loopback, on SQLite and
//! PostgreSQL: the snapshot, live events from the event bus, heartbeats,
//! the end of a finished run and the authorization rules.

mod support;

use std::time::Duration;

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_core::Caller;
use agyn_store::{Backend, on_both_backends};
use agyn_tracing::StreamTiming;
use connectrpc::client::{ClientTransport, HttpClient, ServerStream};
use connectrpc::{ConnectError, ErrorCode};
use pb::__buffa::oneof::stream_run_events_request::Run;
use pb::stream_run_events_response::Kind;
use support::*;

type Stream = ServerStream<
    <HttpClient as ClientTransport>::ResponseBody,
    pb::StreamRunEventsResponseView<'static>,
>;

/// Timing that makes a finished run end its stream at the next heartbeat.
fn fast() -> StreamTiming {
    StreamTiming {
        heartbeat: Duration::from_millis(300),
        reauthorize: Duration::from_secs(60),
        summary: Duration::ZERO,
        finish_delay: Duration::ZERO,
    }
}

/// A client stream whose first message [`open`] already read, because
/// setup errors arrive with the first read.
struct Opened {
    stream: Stream,
    first: Option<pb::StreamRunEventsResponse>,
}

async fn open(
    server: &Server,
    caller: &Caller,
    run: Run,
    types: Vec<pb::RunEventType>,
    skip_snapshot: bool,
) -> Result<Opened, ConnectError> {
    let request = pb::StreamRunEventsRequest {
        run: Some(run),
        types: types.into_iter().map(Into::into).collect(),
        skip_snapshot,
        ..Default::default()
    };
    let stream = server
        .gateway()
        .stream_run_events_with_options(request, options(caller))
        .await?;
    let mut opened = Opened {
        stream,
        first: None,
    };
    opened.first = next(&mut opened).await?;
    Ok(opened)
}

/// Returns the next message, or `None` when the stream ended with OK.
/// Fails the test after 10 seconds.
async fn next(opened: &mut Opened) -> Result<Option<pb::StreamRunEventsResponse>, ConnectError> {
    if let Some(first) = opened.first.take() {
        return Ok(Some(first));
    }
    let message = tokio::time::timeout(Duration::from_secs(10), opened.stream.message())
        .await
        .expect("no stream message within 10 s")?;
    Ok(message.map(|view| view.to_owned_message()))
}

fn kind(message: &pb::StreamRunEventsResponse) -> Kind {
    message.kind.as_known().expect("a known kind")
}

/// Returns the next message that is not a heartbeat.
async fn next_event(stream: &mut Opened) -> pb::StreamRunEventsResponse {
    loop {
        let message = next(stream).await.unwrap().expect("the stream ended");
        if kind(&message) != Kind::KIND_HEARTBEAT {
            return message;
        }
    }
}

async fn open_error(server: &Server, caller: &Caller, run: Run) -> ConnectError {
    match open(server, caller, run, Vec::new(), false).await {
        Ok(_) => panic!("the stream should fail"),
        Err(error) => error,
    }
}

async fn live_events_then_the_end(backend: Backend) {
    let w = World::with_timing(backend, fast()).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "alpha").await;
    let agent = w.agent(&org);
    let workload_id = w.workload(&org, &[&owner]);
    let producer = agent_caller(id(&agent), Some(&workload_id));
    let trace = trace_of(&workload_id);
    let server = Server::start(&w).await;

    // Opened before the run exports anything.
    let mut stream = open(
        &server,
        &owner,
        Run::RunId(workload_id.clone()),
        Vec::new(),
        false,
    )
    .await
    .unwrap();
    let end = next_event(&mut stream).await;
    assert_eq!(kind(&end), Kind::KIND_SNAPSHOT_END);
    assert!(end.events.is_empty());
    assert_eq!(end.summary.as_option().unwrap().total_spans, 0);

    let heartbeat = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(kind(&heartbeat), Kind::KIND_HEARTBEAT);

    let mut running = span(&trace, 1, "llm.call", 1_000_000, 0);
    running.attributes = vec![text("gen_ai.request.model", "m1"), int("attempt", 2)];
    export(&w, &producer, request(vec![], vec![running]))
        .await
        .unwrap();
    let created = next_event(&mut stream).await;
    assert_eq!(kind(&created), Kind::KIND_CREATED);
    assert_eq!(created.events.len(), 1);
    let event = &created.events[0];
    assert_eq!(event.id, hex(&span_id(1)));
    assert_eq!(event.run_id, hex(&trace));
    assert_eq!(
        event.r#type.to_i32(),
        pb::RunEventType::RUN_EVENT_TYPE_LLM_CALL as i32
    );
    assert_eq!(
        event.status.to_i32(),
        pb::RunEventStatus::RUN_EVENT_STATUS_RUNNING as i32
    );
    assert!(event.ended_at.as_option().is_none());
    assert_eq!(event.duration_ms, None);
    let attributes = serde_json::to_value(event.attributes.as_option().unwrap()).unwrap();
    assert_eq!(attributes["gen_ai.request.model"], "m1");
    assert_eq!(attributes["attempt"], 2.0);
    assert_eq!(created.summary.as_option().unwrap().total_spans, 1);

    // Spans that are not run events are never emitted.
    export(
        &w,
        &producer,
        request(
            vec![],
            vec![span(&trace, 2, "http.request", 1_500_000, 1_600_000)],
        ),
    )
    .await
    .unwrap();
    let mut done = failed(span(&trace, 1, "llm.call", 1_000_000, 251_000_000), "");
    done.attributes = vec![text("error.type", "timeout")];
    export(&w, &producer, request(vec![], vec![done]))
        .await
        .unwrap();
    let updated = next_event(&mut stream).await;
    assert_eq!(kind(&updated), Kind::KIND_UPDATED);
    let event = &updated.events[0];
    assert_eq!(event.id, hex(&span_id(1)));
    assert_eq!(
        event.status.to_i32(),
        pb::RunEventStatus::RUN_EVENT_STATUS_ERROR as i32
    );
    assert_eq!(event.duration_ms, Some(250));
    assert_eq!(event.error_message, "timeout");
    assert_eq!(updated.summary.as_option().unwrap().total_spans, 2);

    // The trace no longer runs; once the workload is terminal the stream
    // ends with OK.
    w.finish_workload(&workload_id);
    loop {
        match next(&mut stream).await.unwrap() {
            None => break,
            Some(message) => assert_eq!(kind(&message), Kind::KIND_HEARTBEAT),
        }
    }
}

async fn snapshot_then_live_updates(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "alpha").await;
    let trace = random_trace();
    export(
        &w,
        &owner,
        org_request(
            &org,
            vec![
                span(&trace, 1, "invocation.message", 10, 0),
                span(&trace, 2, "tool.execution", 30, 0),
                span(&trace, 3, "llm.call", 20, 25),
                span(&trace, 4, "http.request", 5, 6),
            ],
        ),
    )
    .await
    .unwrap();
    let server = Server::start(&w).await;
    let types = vec![
        pb::RunEventType::RUN_EVENT_TYPE_LLM_CALL,
        pb::RunEventType::RUN_EVENT_TYPE_TOOL_EXECUTION,
    ];

    let mut stream = open(
        &server,
        &owner,
        Run::TraceId(trace.clone()),
        types.clone(),
        false,
    )
    .await
    .unwrap();
    let snapshot = next_event(&mut stream).await;
    assert_eq!(kind(&snapshot), Kind::KIND_SNAPSHOT);
    let ids: Vec<&str> = snapshot
        .events
        .iter()
        .map(|event| event.id.as_str())
        .collect();
    assert_eq!(ids, [hex(&span_id(3)), hex(&span_id(2))]);
    assert_eq!(
        snapshot.events[0].status.to_i32(),
        pb::RunEventStatus::RUN_EVENT_STATUS_SUCCESS as i32
    );
    assert!(snapshot.summary.as_option().is_none());
    let end = next_event(&mut stream).await;
    assert_eq!(kind(&end), Kind::KIND_SNAPSHOT_END);
    let summary = end.summary.as_option().unwrap();
    assert_eq!(summary.total_spans, 4);
    assert_eq!(
        summary.status.to_i32(),
        pb::TraceStatus::TRACE_STATUS_RUNNING as i32
    );

    // The invocation is not a requested type, so only the tool update
    // arrives.
    export(
        &w,
        &owner,
        org_request(
            &org,
            vec![
                span(&trace, 1, "invocation.message", 10, 90),
                span(&trace, 2, "tool.execution", 30, 80),
            ],
        ),
    )
    .await
    .unwrap();
    let updated = next_event(&mut stream).await;
    assert_eq!(kind(&updated), Kind::KIND_UPDATED);
    assert_eq!(updated.events.len(), 1);
    assert_eq!(updated.events[0].id, hex(&span_id(2)));

    let mut skipped = open(
        &server,
        &owner,
        Run::TraceId(trace.clone()),
        Vec::new(),
        true,
    )
    .await
    .unwrap();
    let end = next_event(&mut skipped).await;
    assert_eq!(kind(&end), Kind::KIND_SNAPSHOT_END);
    assert_eq!(end.summary.as_option().unwrap().total_spans, 4);
}

async fn stream_authorization(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "alpha").await;
    let server = Server::start(&w).await;

    let unknown = new_id();
    let error = open_error(&server, &owner, Run::RunId(unknown.clone())).await;
    assert_eq!(error.code, ErrorCode::NotFound);
    assert_eq!(error.message, Some(format!("run {unknown} not found")));

    let workload_id = w.workload(&org, &[&owner]);
    let error = open_error(&server, &outsider, Run::RunId(workload_id.clone())).await;
    assert_eq!(error.code, ErrorCode::PermissionDenied);

    export(
        &w,
        &owner,
        org_request(
            &org,
            vec![span(&trace_of(&workload_id), 1, "llm.call", 1, 0)],
        ),
    )
    .await
    .unwrap();
    let error = open_error(&server, &outsider, Run::RunId(workload_id.clone())).await;
    assert_eq!(error.code, ErrorCode::PermissionDenied);

    let error = open_error(&server, &owner, Run::RunId("not-a-uuid".to_string())).await;
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    let error = open_error(&server, &owner, Run::TraceId(vec![1; 8])).await;
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    let error = match open(
        &server,
        &owner,
        Run::RunId(workload_id),
        vec![pb::RunEventType::RUN_EVENT_TYPE_UNSPECIFIED],
        false,
    )
    .await
    {
        Ok(_) => panic!("the stream should fail"),
        Err(error) => error,
    };
    assert_eq!(error.code, ErrorCode::InvalidArgument);
}

on_both_backends!(
    live_events_then_the_end,
    snapshot_then_live_updates,
    stream_authorization,
);
