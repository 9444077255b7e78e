//! Subscribe and Publish over gRPC (h2c) on loopback, with the generated
//! Rust clients.
//!
//! The test server mounts `NotificationsGateway` and `NotificationsService`
//! behind a stand-in for the gateway's authentication: the bearer value
//! `user:<id>` makes the caller that user, and `component:<name>` makes it
//! that platform component.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agyn_api_notifications::agynio::api::notifications::v1::{
    self as pb, NotificationsGatewayClient, NotificationsServiceClient,
};
use agyn_api_rpc::google::rpc::ErrorInfo;
use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_core::events::EventSink as _;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_events::{Events, EventsConfig};
use agyn_notifications::Notifications;
use agyn_notifications::service::{NotificationsGatewayRpc, NotificationsRpc};
use agyn_store::{Backend, on_both_backends};
use base64::Engine as _;
use connectrpc::client::{CallOptions, ClientConfig, ClientTransport, HttpClient, ServerStream};
use connectrpc::{ConnectError, ErrorCode, Protocol};
use pb::__buffa::oneof::subscribe_response::Kind;
use serde_json::json;

type Stream =
    ServerStream<<HttpClient as ClientTransport>::ResponseBody, pb::SubscribeResponseView<'static>>;

const HEARTBEAT: Duration = Duration::from_millis(400);

struct Server {
    uri: http::Uri,
    notifications: Notifications,
    events: Events,
    authorizer: Authorizer,
}

/// Maps the test bearer values to callers, in place of the gateway.
async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    let caller = match bearer.as_deref().and_then(|value| value.split_once(':')) {
        Some(("user", id)) => Some(Caller::Identity {
            identity_id: id.to_string(),
            kind: IdentityKind::User,
            workload_id: None,
            credential: CredentialKind::ApiToken,
        }),
        Some(("component", "orchestrator")) => Some(Caller::Component("orchestrator")),
        Some(("component", "threads")) => Some(Caller::Component("threads")),
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

impl Server {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |notifications| notifications).await
    }

    async fn start_with(
        backend: Backend,
        configure: impl FnOnce(Notifications) -> Notifications,
    ) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let events = Events::start(db.clone(), EventsConfig::default()).unwrap();
        let authorizer = Authorizer::new(db);
        let notifications = configure(
            Notifications::new(events.clone(), authorizer.clone())
                .with_heartbeat_interval(HEARTBEAT),
        );
        let router = connectrpc::Router::new()
            .add_service(Arc::new(NotificationsGatewayRpc::new(
                notifications.clone(),
            )))
            .add_service(Arc::new(NotificationsRpc::new(notifications.clone())));
        let app = axum::Router::new()
            .fallback_service(connectrpc::ConnectRpcService::new(router))
            .layer(axum::middleware::from_fn(authenticate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            uri,
            notifications,
            events,
            authorizer,
        }
    }

    fn gateway(&self) -> NotificationsGatewayClient<HttpClient> {
        NotificationsGatewayClient::new(
            HttpClient::plaintext_http2_only(),
            ClientConfig::new(self.uri.clone()).with_protocol(Protocol::Grpc),
        )
    }

    fn internal(&self) -> NotificationsServiceClient<HttpClient> {
        NotificationsServiceClient::new(
            HttpClient::plaintext_http2_only(),
            ClientConfig::new(self.uri.clone()).with_protocol(Protocol::Grpc),
        )
    }

    /// Opens a gateway stream as `user` and returns it with its `ready`.
    async fn subscribe(
        &self,
        user: &str,
        rooms: &[&str],
        last_event_id: Option<&str>,
    ) -> Result<(Stream, pb::SubscriptionReady), ConnectError> {
        let request = pb::SubscribeRequest {
            rooms: rooms.iter().map(|room| room.to_string()).collect(),
            last_event_id: last_event_id.map(str::to_string),
            ..Default::default()
        };
        let mut stream = self
            .gateway()
            .subscribe_with_options(request, bearer(&format!("user:{user}")))
            .await?;
        match next(&mut stream).await? {
            Kind::Ready(ready) => Ok((stream, *ready)),
            other => panic!("the first message is not ready: {other:?}"),
        }
    }
}

fn bearer(value: &str) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {value}"))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Returns the next message, failing the test after 5 seconds.
async fn next(stream: &mut Stream) -> Result<Kind, ConnectError> {
    let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no stream message within 5 s")?
        .expect("the stream ended cleanly");
    Ok(message
        .to_owned_message()
        .kind
        .expect("a message sets its kind"))
}

/// Returns the next envelope, skipping heartbeats.
async fn next_envelope(stream: &mut Stream) -> pb::NotificationEnvelope {
    loop {
        match next(stream).await.unwrap() {
            Kind::Envelope(envelope) => return *envelope,
            Kind::Heartbeat(_) => {}
            other => panic!("expected an envelope, got {other:?}"),
        }
    }
}

/// Returns the error that ends the stream, skipping other messages.
async fn stream_error(stream: &mut Stream) -> ConnectError {
    loop {
        if let Err(error) = next(stream).await {
            return error;
        }
    }
}

fn publish(events: &Events, room: &str, n: i64) {
    events.publish(
        "threads",
        "message.created",
        room.to_string(),
        json!({"n": n}),
    );
}

async fn ready_comes_first_then_live_envelopes(backend: Backend) {
    let server = Server::start(backend).await;
    let user = new_id();
    let (mut stream, ready) = server
        .subscribe(&user, &["thread_participant:me"], None)
        .await
        .unwrap();

    assert!(!ready.subscription_id.is_empty());
    assert_eq!(ready.rooms, vec![format!("thread_participant:{user}")]);
    assert!(!ready.resumed);
    assert!(!ready.gap);
    assert_eq!(ready.replayed_count, 0);
    assert_eq!(
        ready
            .heartbeat_interval
            .as_option()
            .map(|interval| interval.nanos),
        Some(400_000_000)
    );
    assert_eq!(
        ready.gap_reason.as_known(),
        Some(pb::GapReason::GAP_REASON_UNSPECIFIED)
    );

    publish(&server.events, &format!("thread_participant:{user}"), 7);
    let envelope = next_envelope(&mut stream).await;
    assert_eq!(envelope.event, "message.created");
    assert_eq!(envelope.source, "threads");
    assert_eq!(envelope.rooms, vec![format!("thread_participant:{user}")]);
    let payload = serde_json::to_value(envelope.payload.as_option().unwrap()).unwrap();
    assert_eq!(payload, json!({"n": 7.0}));

    let published = server
        .internal()
        .publish_with_options(
            pb::PublishRequest {
                event: "message.created".to_string(),
                rooms: vec![format!("thread_participant:{user}")],
                payload: serde_json::from_value::<buffa_types::google::protobuf::Struct>(
                    json!({"thread_id": "t1"}),
                )
                .unwrap()
                .into(),
                ..Default::default()
            },
            bearer("component:threads"),
        )
        .await
        .unwrap()
        .into_owned();
    let envelope = next_envelope(&mut stream).await;
    assert_eq!(envelope.id, published.id);
    assert_eq!(
        envelope.source, "threads",
        "an empty source is the caller's component"
    );
    assert_eq!(envelope.ts, published.ts);
}

async fn me_is_rewritten_to_the_caller(backend: Backend) {
    let server = Server::start(backend).await;
    let user = new_id();
    let (mut stream, ready) = server
        .subscribe(
            &user,
            &[
                " identity:me",
                "thread_participant:me",
                &format!("identity:{user}"),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        ready.rooms,
        vec![
            format!("identity:{user}"),
            format!("thread_participant:{user}")
        ]
    );

    publish(&server.events, &format!("identity:{user}"), 1);
    publish(&server.events, "identity:me", 2);
    publish(&server.events, &format!("thread_participant:{user}"), 3);
    let first = next_envelope(&mut stream).await;
    assert_eq!(first.rooms, vec![format!("identity:{user}")]);
    let second = next_envelope(&mut stream).await;
    assert_eq!(
        second.rooms,
        vec![format!("thread_participant:{user}")],
        "an envelope published to the literal room identity:me reaches no one"
    );
}

async fn one_denied_room_fails_the_call(backend: Backend) {
    let server = Server::start(backend).await;
    let user = new_id();
    let org = new_id();
    let agent = new_id();
    server
        .authorizer
        .write(
            &[
                Tuple::new(
                    ObjectRef::identity(&user),
                    "member",
                    ObjectRef::new("organization", &org),
                ),
                Tuple::new(
                    ObjectRef::new("organization", &org),
                    "org",
                    ObjectRef::new("agent", &agent),
                ),
            ],
            &[],
        )
        .await
        .unwrap();
    let allowed = [
        "identity:me".to_string(),
        format!("organization:{org}"),
        format!("agent:{agent}"),
        format!("thread_participant:{user}"),
    ];
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let (_stream, ready) = server.subscribe(&user, &allowed, None).await.unwrap();
    assert_eq!(ready.rooms.len(), 4);

    let someone_else = format!("thread_participant:{}", new_id());
    let other_org = format!("organization:{}", new_id());
    let denied = [
        someone_else.as_str(),
        "identity:someone",
        other_org.as_str(),
        "agent:00000000-0000-4000-8000-000000000000",
        "workload:w1",
        "trace:0123456789abcdef0123456789abcdef",
        "agent_messages",
        "workloads",
        "unknown_prefix:x",
        "organization:me",
    ];
    for room in denied {
        let mut rooms = allowed.clone();
        rooms.insert(2, room);
        let error = server.subscribe(&user, &rooms, None).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::PermissionDenied, "room {room}");
        assert_eq!(
            error.message.as_deref(),
            Some(format!("permission denied: room \"{room}\"").as_str())
        );
    }
}

async fn invalid_room_lists_are_rejected(backend: Backend) {
    let server = Server::start(backend).await;
    let user = new_id();
    let too_many: Vec<String> = (0..101).map(|i| format!("agent:a{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let cases: [(&[&str], &str); 3] = [
        (&["", "  "], "rooms: at least one room is required"),
        (&too_many, "rooms: at most 100 rooms are allowed, got 101"),
        (
            &["identity:me", "Identity:me"],
            "rooms: invalid room \"Identity:me\": must match ^[a-z_]+(:[A-Za-z0-9_.-]{1,100})?$",
        ),
    ];
    for (rooms, message) in cases {
        let error = server.subscribe(&user, rooms, None).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert_eq!(error.message.as_deref(), Some(message));
    }
}

async fn components_subscribe_to_flat_rooms(backend: Backend) {
    let server = Server::start(backend).await;
    let request = pb::SubscribeRequest {
        rooms: vec!["agent_messages".to_string(), "workloads".to_string()],
        ..Default::default()
    };
    let mut stream = server
        .internal()
        .subscribe_with_options(request, bearer("component:orchestrator"))
        .await
        .unwrap();
    let Kind::Ready(ready) = next(&mut stream).await.unwrap() else {
        panic!("the first message is not ready");
    };
    assert_eq!(ready.rooms, vec!["agent_messages", "workloads"]);
    publish(&server.events, "workloads", 1);
    assert_eq!(next_envelope(&mut stream).await.rooms, vec!["workloads"]);

    let request = pb::SubscribeRequest {
        rooms: vec!["identity:me".to_string()],
        ..Default::default()
    };
    let denied = match server
        .internal()
        .subscribe_with_options(request, bearer("component:orchestrator"))
        .await
    {
        Ok(mut stream) => next(&mut stream).await.unwrap_err(),
        Err(error) => error,
    };
    assert_eq!(denied.code, ErrorCode::PermissionDenied);
}

async fn heartbeats_arrive_at_the_interval(backend: Backend) {
    let server = Server::start(backend).await;
    let (mut stream, _ready) = server
        .subscribe(&new_id(), &["identity:me"], None)
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();
    for beat in 1..=3u32 {
        let message = next(&mut stream).await.unwrap();
        assert!(matches!(message, Kind::Heartbeat(_)), "got {message:?}");
        let elapsed = opened.elapsed();
        let expected = HEARTBEAT * beat;
        assert!(
            elapsed + Duration::from_millis(100) >= expected,
            "heartbeat {beat} came after {elapsed:?}, before {expected:?}"
        );
        assert!(
            elapsed <= expected + Duration::from_millis(300),
            "heartbeat {beat} came after {elapsed:?}, expected about {expected:?}"
        );
    }
}

async fn resume_after_a_cut_sees_every_envelope_once(backend: Backend) {
    let server = Server::start(backend).await;
    let user = new_id();
    let room = format!("thread_participant:{user}");
    let (mut stream, _ready) = server
        .subscribe(&user, &["thread_participant:me"], None)
        .await
        .unwrap();

    // Publish 30 envelopes, one every 20 ms, while the client reads, cuts
    // the stream and resumes.
    let events = server.events.clone();
    let publisher_room = room.clone();
    let publisher = tokio::spawn(async move {
        for n in 0..30 {
            publish(&events, &publisher_room, n);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let mut seen: Vec<i64> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut last_id = String::new();
    while seen.len() < 8 {
        let envelope = next_envelope(&mut stream).await;
        last_id = envelope.id.clone();
        assert!(
            ids.insert(envelope.id.clone()),
            "the first stream repeated an envelope"
        );
        seen.push(payload_n(&envelope));
    }
    drop(stream);
    tokio::time::sleep(Duration::from_millis(150)).await;

    let (mut resumed, ready) = server
        .subscribe(&user, &["thread_participant:me"], Some(&last_id))
        .await
        .unwrap();
    assert!(ready.resumed);
    assert!(!ready.gap);
    assert!(
        ready.replayed_count > 0,
        "the envelopes of the cut are replayed"
    );
    let mut repeats = 0;
    while seen.len() < 30 {
        let envelope = next_envelope(&mut resumed).await;
        if ids.insert(envelope.id.clone()) {
            seen.push(payload_n(&envelope));
        } else {
            repeats += 1;
        }
    }
    publisher.await.unwrap();
    assert_eq!(
        seen,
        (0..30).collect::<Vec<i64>>(),
        "every envelope once, in order"
    );
    assert!(
        repeats <= ready.replayed_count,
        "only replayed envelopes may repeat ones the client had"
    );
}

fn payload_n(envelope: &pb::NotificationEnvelope) -> i64 {
    let payload = serde_json::to_value(envelope.payload.as_option().unwrap()).unwrap();
    payload["n"].as_f64().unwrap() as i64
}

async fn unknown_cursor_is_a_gap(backend: Backend) {
    let server = Server::start(backend).await;
    let (_stream, ready) = server
        .subscribe(&new_id(), &["identity:me"], Some(&new_id()))
        .await
        .unwrap();
    assert!(!ready.resumed);
    assert!(ready.gap);
    assert_eq!(ready.replayed_count, 0);
    assert_eq!(
        ready.gap_reason.as_known(),
        Some(pb::GapReason::GAP_REASON_CURSOR_NOT_FOUND)
    );
}

async fn streams_per_identity_are_limited(backend: Backend) {
    let server = Server::start(backend).await;
    let user = new_id();
    let mut open = Vec::new();
    for _ in 0..agyn_notifications::MAX_STREAMS_PER_IDENTITY {
        open.push(
            server
                .subscribe(&user, &["identity:me"], None)
                .await
                .unwrap(),
        );
    }
    let error = server
        .subscribe(&user, &["identity:me"], None)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert_eq!(
        error.message.as_deref(),
        Some("too many open streams: an identity may hold at most 32")
    );
    assert!(
        server
            .subscribe(&new_id(), &["identity:me"], None)
            .await
            .is_ok(),
        "another identity is not limited"
    );

    open.pop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match server.subscribe(&user, &["identity:me"], None).await {
            Ok(_) => break,
            Err(error) if error.code == ErrorCode::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a closed stream did not release its slot within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("unexpected error: {error:?}"),
        }
    }
}

async fn slow_subscriber_is_dropped(backend: Backend) {
    let server = Server::start(backend).await;
    let user = new_id();
    let room = format!("identity:{user}");
    let (mut slow, _) = server
        .subscribe(&user, &["identity:me"], None)
        .await
        .unwrap();
    let (mut fast, _) = server
        .subscribe(&user, &["identity:me"], None)
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut count = 0usize;
        loop {
            match next(&mut fast).await {
                Ok(Kind::Envelope(_)) => count += 1,
                Ok(Kind::Heartbeat(_)) => {}
                Ok(other) => panic!("unexpected message {other:?}"),
                Err(error) => {
                    panic!("the fast subscriber's stream failed after {count} envelopes: {error:?}")
                }
            }
        }
    });

    // Large envelopes fill the transport's buffers, so the slow stream's
    // hub buffer fills next.
    let filler = "x".repeat(16 * 1024);
    let mut published = 0;
    while server.events.subscriber_count() == 2 {
        assert!(published < 20_000, "the slow subscriber was never dropped");
        let batch = (0..100).map(|_| {
            server.events.publish_and_wait(
                "threads".to_string(),
                "message.created".to_string(),
                vec![room.clone()],
                serde_json::Map::from_iter([("filler".to_string(), json!(filler))]),
            )
        });
        let results =
            tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(batch))
                .await
                .unwrap_or_else(|_| panic!("100 publishes after {published} took over 30 s"));
        for result in results {
            result.unwrap();
        }
        published += 100;
    }

    let error = stream_error(&mut slow).await;
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert_eq!(error.message.as_deref(), Some("subscriber too slow"));
    let info = error
        .details
        .iter()
        .find(|detail| detail.type_url.ends_with("google.rpc.ErrorInfo"))
        .and_then(|detail| detail.value.as_deref())
        .expect("an ErrorInfo detail");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(info.trim_end_matches('='))
        .unwrap();
    let info = <ErrorInfo as buffa::Message>::decode_from_slice(&bytes).unwrap();
    assert_eq!(info.reason, "SUBSCRIBER_TOO_SLOW");
    assert_eq!(info.domain, "agyn.dev");
    assert!(
        !reader.is_finished(),
        "the fast subscriber's stream is unaffected"
    );
    reader.abort();
}

async fn shutdown_ends_streams_with_unavailable(backend: Backend) {
    let server = Server::start(backend).await;
    let (mut stream, _) = server
        .subscribe(&new_id(), &["identity:me"], None)
        .await
        .unwrap();
    server.notifications.shutdown();
    let error = stream_error(&mut stream).await;
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert_eq!(error.message.as_deref(), Some("server is shutting down"));
    let error = server
        .subscribe(&new_id(), &["identity:me"], None)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
}

async fn lost_access_ends_the_stream(backend: Backend) {
    let server = Server::start_with(backend, |notifications| {
        notifications.with_revalidate_interval(Duration::from_millis(200))
    })
    .await;
    let user = new_id();
    let org = new_id();
    let membership = Tuple::new(
        ObjectRef::identity(&user),
        "member",
        ObjectRef::new("organization", &org),
    );
    server
        .authorizer
        .write(std::slice::from_ref(&membership), &[])
        .await
        .unwrap();
    let room = format!("organization:{org}");
    let (mut stream, _) = server.subscribe(&user, &[&room], None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish(&server.events, &room, 1);
    assert_eq!(next_envelope(&mut stream).await.rooms, vec![room.clone()]);

    server.authorizer.write(&[], &[membership]).await.unwrap();

    let error = stream_error(&mut stream).await;
    assert_eq!(error.code, ErrorCode::PermissionDenied);
    assert_eq!(
        error.message.as_deref(),
        Some(format!("permission denied: room \"{room}\"").as_str())
    );
}

on_both_backends!(
    ready_comes_first_then_live_envelopes,
    me_is_rewritten_to_the_caller,
    one_denied_room_fails_the_call,
    invalid_room_lists_are_rejected,
    components_subscribe_to_flat_rooms,
    heartbeats_arrive_at_the_interval,
    resume_after_a_cut_sees_every_envelope_once,
    unknown_cursor_is_a_gap,
    streams_per_identity_are_limited,
    slow_subscriber_is_dropped,
    shutdown_ends_streams_with_unavailable,
    lost_access_ends_the_stream,
);
