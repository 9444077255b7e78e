//! The LLM proxy of a real `agyn serve` against an upstream provider that
//! the test serves on loopback: credential injection, incremental
//! streaming, status pass-through, client disconnects, usage logging, and
//! a canary provider token and secret value that never reach the log.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use support::{Server, canary, connect_json};
use tokio::sync::{mpsc, oneshot};

/// What the upstream saw and how it must respond to the next request.
#[derive(Default)]
struct Upstream {
    requests: Vec<(String, http::HeaderMap, Value)>,
    /// Status and body of the next non-streaming response.
    reply: Option<(u16, String)>,
    /// Frames of the next streamed response, sent one by one through the
    /// channel that the test holds.
    stream: Option<mpsc::Receiver<Bytes>>,
    /// Told when the streamed response's body is dropped, which happens
    /// when the proxy gives up on the upstream request.
    dropped: Option<oneshot::Sender<()>>,
}

type Shared = Arc<Mutex<Upstream>>;

/// The thread id that the first call names in `x-agyn-thread-id`.
const THREAD: &str = "0190a000-0000-7000-8000-000000000001";

/// `(status, streamed, input_tokens, output_tokens, thread_id)` of a usage row.
type UsageRow = (i64, i64, Option<i64>, Option<i64>, String);

async fn upstream(State(shared): State<Shared>, request: Request) -> Response {
    let uri = request.uri().to_string();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = shared.lock().unwrap();
    state.requests.push((uri, headers, body));
    if let Some(frames) = state.stream.take() {
        let guard = DropSignal(state.dropped.take());
        let stream = futures::stream::unfold((frames, guard), |(mut rx, guard)| async move {
            let frame = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(frame), (rx, guard)))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .header("x-ratelimit-remaining-requests", "99")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let (status, body) = state
        .reply
        .take()
        .unwrap_or((200, json!({"ok": true}).to_string()));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-ratelimit-remaining-requests", "42")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .body(Body::from(body))
        .unwrap()
}

struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

async fn start_upstream() -> (String, Shared) {
    let shared = Shared::default();
    let app = axum::Router::new()
        .fallback(upstream)
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), shared)
}

async fn rpc(client: &reqwest::Client, server: &Server, method: &str, body: Value) -> Value {
    let (status, reply) = connect_json(
        client,
        &server.base_url(),
        method,
        body,
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200, "{method}: {reply}");
    reply
}

/// Calls a Create method as the admin and returns the id of the resource
/// in `field` of the response.
async fn create(
    client: &reqwest::Client,
    server: &Server,
    method: &str,
    body: Value,
    field: &str,
) -> String {
    rpc(client, server, method, body).await[field]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_proxy_relays_upstream_calls() {
    let server = Server::start();
    let client = reqwest::Client::new();
    let (upstream_url, shared) = start_upstream().await;
    let secret = canary();

    let org = create(
        &client,
        &server,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Proxy"}),
        "organization",
    )
    .await;
    let provider = rpc(
        &client,
        &server,
        "agynio.api.llm.v1.LLMGateway/CreateProvider",
        json!({"organizationId": org, "name": "upstream", "endpoint": upstream_url,
               "protocol": "PROTOCOL_RESPONSES", "token": secret}),
    )
    .await;
    assert!(!provider.to_string().contains(&secret));
    let provider_id = provider["provider"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let model = create(
        &client,
        &server,
        "agynio.api.llm.v1.LLMGateway/CreateModel",
        json!({"organizationId": org, "name": "Test", "providerId": provider_id,
               "remoteName": "gpt-upstream"}),
        "model",
    )
    .await;
    let created = rpc(
        &client,
        &server,
        "agynio.api.secrets.v1.SecretsGateway/CreateSecret",
        json!({"organizationId": org, "name": "canary", "value": secret}),
    )
    .await;
    assert!(!created.to_string().contains(&secret));

    let proxy = |path: &str| format!("{}{path}", server.base_url());

    // A non-streamed call: the body keeps its bytes but the model, the
    // provider's token replaces the caller's, and the response comes back
    // with its status and rate-limit headers.
    shared.lock().unwrap().reply = Some((
        200,
        json!({"output": [], "usage": {"input_tokens": 11, "output_tokens": 4}}).to_string(),
    ));
    let body = format!(r#"{{"model": "{model}",  "input": "hi", "extra": [1, 2]}}"#);
    let response = client
        .post(proxy("/v1/responses?beta=true"))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/json")
        .header("openai-beta", "responses=v1")
        .header("x-agyn-thread-id", THREAD)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "42");
    assert!(!response.headers().contains_key("x-hop"));
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["usage"]["input_tokens"], 11);
    {
        let state = shared.lock().unwrap();
        let (uri, headers, body) = state.requests.last().unwrap();
        assert_eq!(uri, "/v1/responses?beta=true");
        assert_eq!(
            headers["authorization"],
            format!("Bearer {secret}").as_str()
        );
        assert_eq!(headers["openai-beta"], "responses=v1");
        assert!(!headers.contains_key("x-agyn-thread-id"));
        assert_eq!(
            body,
            &json!({"model": "gpt-upstream", "input": "hi", "extra": [1, 2]})
        );
    }

    // Upstream errors keep their status and body.
    shared.lock().unwrap().reply = Some((429, r#"{"error":{"message":"slow down"}}"#.into()));
    let response = client
        .post(proxy("/v1/responses"))
        .bearer_auth(&server.admin_token)
        .body(json!({"model": model, "input": "hi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":{"message":"slow down"}}"#
    );

    // A streamed response arrives event by event: the first event reaches
    // the client while the upstream still keeps back the rest.
    let (frames, receiver) = mpsc::channel(8);
    shared.lock().unwrap().stream = Some(receiver);
    let mut response = client
        .post(proxy("/v1/responses"))
        .bearer_auth(&server.admin_token)
        .body(json!({"model": model, "input": "hi", "stream": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    frames
        .send(Bytes::from_static(b"event: response.created\ndata: {}\n\n"))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first event was relayed before the upstream finished")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"event: response.created\ndata: {}\n\n");
    let completed = b"event: response.completed\ndata: {\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":5}}}\n\n";
    frames.send(Bytes::from_static(completed)).await.unwrap();
    drop(frames);
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, completed);

    // A caller that goes away mid-stream ends the upstream request.
    let (frames, receiver) = mpsc::channel(8);
    let (dropped_tx, dropped) = oneshot::channel();
    {
        let mut state = shared.lock().unwrap();
        state.stream = Some(receiver);
        state.dropped = Some(dropped_tx);
    }
    let mut response = client
        .post(proxy("/v1/responses"))
        .bearer_auth(&server.admin_token)
        .body(json!({"model": model, "input": "hi", "stream": true}).to_string())
        .send()
        .await
        .unwrap();
    frames
        .send(Bytes::from_static(b"data: {}\n\n"))
        .await
        .unwrap();
    response.chunk().await.unwrap().unwrap();
    drop(response);
    tokio::time::timeout(Duration::from_secs(10), dropped)
        .await
        .expect("the upstream request ended after the caller left")
        .unwrap();
    drop(frames);

    // The wrong route for the model's protocol is rejected by name.
    let response = client
        .post(proxy("/v1/chat/completions"))
        .bearer_auth(&server.admin_token)
        .body(json!({"model": model, "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        format!("model {model} uses protocol RESPONSES; call /v1/responses")
    );
    assert_eq!(error["error"]["type"], "invalid_request_error");

    // A provider whose endpoint is the platform itself would make the
    // proxy call itself without end; the second hop is rejected.
    let looping = create(
        &client,
        &server,
        "agynio.api.llm.v1.LLMGateway/CreateProvider",
        json!({"organizationId": org, "name": "loop", "endpoint": server.base_url(),
               "token": server.admin_token}),
        "provider",
    )
    .await;
    let looping_model = create(
        &client,
        &server,
        "agynio.api.llm.v1.LLMGateway/CreateModel",
        json!({"organizationId": org, "name": "Loop", "providerId": looping,
               "remoteName": "unused"}),
        "model",
    )
    .await;
    let response = client
        .post(proxy("/v1/responses"))
        .bearer_auth(&server.admin_token)
        .body(json!({"model": looping_model, "input": "hi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::LOOP_DETECTED);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "proxy_loop");

    // No credential, an unknown route and a GET, in the caller's error
    // shape.
    let response = client
        .post(proxy("/v1/messages"))
        .body(json!({"model": model}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    let response = client
        .post(proxy("/v1/embeddings"))
        .bearer_auth(&server.admin_token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "not_found_error");
    assert_eq!(
        error["error"]["message"],
        "unknown LLM proxy route POST /v1/embeddings"
    );
    let response = client
        .get(proxy("/api/v1/responses"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "not_found_error");

    // The call log names the model and the usage, and no log line contains
    // the provider token or the secret value.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    let calls: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("LLM proxy call") && line.contains(&model))
        .collect();
    assert!(
        calls.iter().any(|line| line.contains("input_tokens=11")),
        "{calls:#?}"
    );
    assert!(
        calls.iter().any(|line| line.contains("output_tokens=5")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|line| line.contains(&format!("thread_id={THREAD}"))),
        "{calls:#?}"
    );
    assert!(
        log.lines().any(|line| line.contains("TRACE")),
        "the log is at trace level"
    );
    assert!(!log.contains(&secret), "the canary reached the server log");

    // Each relayed call left a usage row with the tokens it reported.
    use agyn_store::sqlx::{self, Row as _};
    sqlx::any::install_default_drivers();
    let url = format!(
        "sqlite://{}?mode=ro",
        server.data_dir.join("agyn.db").display()
    );
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let rows = sqlx::query(
        "SELECT status, streamed, input_tokens, output_tokens, thread_id FROM llm_usage \
         WHERE model_id = $1 ORDER BY id",
    )
    .bind(&model)
    .fetch_all(&pool)
    .await
    .unwrap();
    let usage: Vec<UsageRow> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    assert_eq!(usage[0], (200, 0, Some(11), Some(4), THREAD.to_string()));
    assert_eq!(usage[1], (429, 0, None, None, String::new()));
    assert_eq!(usage[2], (200, 1, Some(3), Some(5), String::new()));
    assert_eq!(usage.len(), 4, "{usage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_proxy_reports_unreachable_providers() {
    let server = Server::start();
    let client = reqwest::Client::new();
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let org = create(
        &client,
        &server,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Down"}),
        "organization",
    )
    .await;
    let provider = create(
        &client,
        &server,
        "agynio.api.llm.v1.LLMGateway/CreateProvider",
        json!({"organizationId": org, "name": "down", "endpoint": endpoint,
               "protocol": "PROTOCOL_ANTHROPIC_MESSAGES", "authMethod": "AUTH_METHOD_X_API_KEY",
               "token": canary()}),
        "provider",
    )
    .await;
    let model = create(
        &client,
        &server,
        "agynio.api.llm.v1.LLMGateway/CreateModel",
        json!({"organizationId": org, "name": "Claude", "providerId": provider,
               "remoteName": "claude-test"}),
        "model",
    )
    .await;

    let response = client
        .post(format!("{}/api/v1/messages", server.base_url()))
        .header("x-api-key", &server.admin_token)
        .body(json!({"model": model, "max_tokens": 5, "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "api_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("provider unreachable: "),
        "{error}"
    );
    assert!(!server.log().contains(&canary()));
}
