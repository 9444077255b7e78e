//! The MCP stdio bridge in front of a real MCP server: the Python `mcp`
//! package's MCPServer on the stdio transport (tests/mcp_stdio_server.py,
//! run from the test virtual environment of tests/python/venv.sh), and
//! `/bin/sh` children for exits and signals.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use agyn_launch::bridge;
use rustix::process::Signal;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Protocol revision the test client asks for.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// Maximum wait for a bridge or its child to end.
const WAIT: Duration = Duration::from_secs(30);

/// Returns the interpreter of the test virtual environment
/// (`AGYN_TEST_VENV`, default `.venv-tests` in the repository root).
fn venv_python() -> PathBuf {
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var("AGYN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repository.join(".venv-tests"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the bridge tests need the Python mcp package at {}; run tests/python/venv.sh",
        python.display()
    );
    python
}

fn python_server() -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_stdio_server.py");
    vec![
        venv_python().display().to_string(),
        script.display().to_string(),
    ]
}

fn shell(script: &str) -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()]
}

/// A bridge served by a task of the test's runtime.
struct Bridge {
    url: String,
    http: reqwest::Client,
    signals: mpsc::UnboundedSender<Signal>,
    task: tokio::task::JoinHandle<std::io::Result<ExitStatus>>,
}

impl Bridge {
    async fn start(command: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let (signals, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(bridge::serve(
            listener,
            "/mcp".to_string(),
            command,
            received,
        ));
        Self {
            url,
            http: reqwest::Client::new(),
            signals,
            task,
        }
    }

    fn request(&self, method: reqwest::Method, session: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, &self.url)
            .header("accept", "application/json, text/event-stream");
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        request
    }

    async fn post(&self, session: Option<&str>, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, session)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Initializes a session and returns its id.
    async fn initialize(&self) -> String {
        let response = self.post(None, &initialize_request(0)).await;
        assert_eq!(response.status(), 200);
        let session = response
            .headers()
            .get("mcp-session-id")
            .expect("initialize response without Mcp-Session-Id")
            .to_str()
            .unwrap()
            .to_string();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["result"]["protocolVersion"], PROTOCOL_VERSION,
            "{body}"
        );
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let response = self.post(Some(&session), &initialized).await;
        assert_eq!(response.status(), 202);
        session
    }

    async fn call(&self, session: &str, id: Value, tool: &str, arguments: Value) -> Value {
        let request = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": { "name": tool, "arguments": arguments },
        });
        let response = self.post(Some(session), &request).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn exit_status(self) -> ExitStatus {
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the bridge did not end")
            .unwrap()
            .unwrap()
    }
}

fn initialize_request(id: i64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "agyn-bridge-test", "version": "1" },
        },
    })
}

fn text_of(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {response}"))
}

#[tokio::test]
async fn bridge_lists_and_calls_tools() {
    let bridge = Bridge::start(python_server()).await;
    let response = bridge.post(None, &initialize_request(0)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!session.is_empty());
    let initialized: Value = response.json().await.unwrap();
    assert_eq!(initialized["id"], 0);
    assert_eq!(
        initialized["result"]["serverInfo"]["name"],
        "agyn-bridge-test"
    );
    assert!(
        initialized["result"]["capabilities"]["tools"].is_object(),
        "{initialized}"
    );

    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let response = bridge.post(Some(&session), &notification).await;
    assert_eq!(response.status(), 202);
    assert!(response.bytes().await.unwrap().is_empty());

    let list = json!({ "jsonrpc": "2.0", "id": "list-1", "method": "tools/list" });
    let response = bridge.post(Some(&session), &list).await;
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.unwrap();
    assert_eq!(listed["id"], "list-1");
    let mut names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["add", "echo", "list_roots", "sleep"]);

    let called = bridge
        .call(&session, json!(7), "add", json!({ "a": 2, "b": 3 }))
        .await;
    assert_eq!(called["id"], 7);
    assert_eq!(called["jsonrpc"], "2.0");
    assert_eq!(text_of(&called), "5");
    assert_eq!(called["result"]["structuredContent"]["result"], 5);
    assert_eq!(called["result"]["isError"], false);
}

#[tokio::test]
async fn bridge_serves_python_sdk_client() {
    let bridge = Bridge::start(python_server()).await;
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_http_client.py");
    let output = tokio::process::Command::new(venv_python())
        .arg(client)
        .arg(&bridge.url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result["tools"],
        json!(["add", "echo", "list_roots", "sleep"])
    );
    assert_eq!(result["text"], json!(["5"]));
    assert_eq!(result["is_error"], false);
}

#[tokio::test]
async fn bridge_drops_server_notifications() {
    let bridge = Bridge::start(python_server()).await;
    let session = bridge.initialize().await;
    let called = bridge
        .call(
            &session,
            json!(1),
            "echo",
            json!({ "text": "line one\nline two" }),
        )
        .await;
    assert_eq!(text_of(&called), "line one\nline two");
}

#[tokio::test]
async fn bridge_rejects_server_requests() {
    let bridge = Bridge::start(python_server()).await;
    let session = bridge.initialize().await;
    let called = bridge
        .call(&session, json!(1), "list_roots", json!({}))
        .await;
    let text = text_of(&called);
    assert!(text.starts_with("error: "), "{text}");
    assert!(text.contains("does not forward"), "{text}");
}

#[tokio::test]
async fn bridge_keeps_session_ids_apart() {
    let bridge = Bridge::start(python_server()).await;
    let first = bridge.initialize().await;
    let second = bridge.initialize().await;
    assert_ne!(first, second);
    let (slow, fast) = tokio::join!(
        bridge.call(&first, json!(1), "sleep", json!({ "seconds": 0.5 })),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            bridge
                .call(&second, json!(1), "add", json!({ "a": 40, "b": 2 }))
                .await
        },
    );
    assert_eq!(slow["id"], 1);
    assert_eq!(text_of(&slow), "slept");
    assert_eq!(fast["id"], 1);
    assert_eq!(text_of(&fast), "42");
}

#[tokio::test]
async fn bridge_answers_batches_in_order() {
    let bridge = Bridge::start(python_server()).await;
    let session = bridge.initialize().await;
    let batch = json!([
        { "jsonrpc": "2.0", "id": "a", "method": "tools/call",
          "params": { "name": "sleep", "arguments": { "seconds": 0.2 } } },
        { "jsonrpc": "2.0", "method": "notifications/progress",
          "params": { "progressToken": "t", "progress": 1 } },
        { "jsonrpc": "2.0", "id": "b", "method": "tools/call",
          "params": { "name": "add", "arguments": { "a": 1, "b": 1 } } },
    ]);
    let response = bridge.post(Some(&session), &batch).await;
    assert_eq!(response.status(), 200);
    let answers: Value = response.json().await.unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["id"], "a");
    assert_eq!(text_of(&answers[0]), "slept");
    assert_eq!(answers[1]["id"], "b");
    assert_eq!(text_of(&answers[1]), "2");

    let only_notification = json!([{ "jsonrpc": "2.0", "method": "notifications/initialized" }]);
    let response = bridge.post(Some(&session), &only_notification).await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn bridge_checks_sessions() {
    let bridge = Bridge::start(python_server()).await;
    let session = bridge.initialize().await;
    let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });

    let response = bridge
        .request(reqwest::Method::POST, None)
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "without a session");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Session-Id"),
        "{body}"
    );

    let response = bridge.post(Some("unknown-session"), &list).await;
    assert_eq!(response.status(), 404, "unknown session");

    let response = bridge
        .request(reqwest::Method::POST, None)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-03-26")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "other protocol version");

    let response = bridge
        .request(reqwest::Method::POST, None)
        .header("mcp-session-id", &session)
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "no protocol version header");

    let response = bridge
        .request(reqwest::Method::DELETE, Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = bridge.post(Some(&session), &list).await;
    assert_eq!(response.status(), 404, "deleted session");
}

#[tokio::test]
async fn bridge_rejects_bad_requests() {
    let bridge = Bridge::start(python_server()).await;
    let session = bridge.initialize().await;
    let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });

    let response = bridge
        .request(reqwest::Method::POST, Some(&session))
        .header("origin", "http://attacker.example")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "foreign origin");
    let response = bridge
        .request(reqwest::Method::POST, Some(&session))
        .header("origin", "http://localhost:3000")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "loopback origin");

    let response = bridge
        .request(reqwest::Method::GET, Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405, "GET");
    assert_eq!(response.headers()["allow"], "POST, DELETE");

    let response = bridge
        .http
        .post(bridge.url.replace("/mcp", "/other"))
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "other path");

    let response = bridge
        .request(reqwest::Method::POST, Some(&session))
        .header("content-type", "text/plain")
        .body(list.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415, "text/plain body");

    let response = bridge
        .request(reqwest::Method::POST, Some(&session))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "invalid JSON");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700);

    let response = bridge
        .post(
            Some(&session),
            &json!({ "jsonrpc": "1.0", "id": 1, "method": "x" }),
        )
        .await;
    assert_eq!(response.status(), 400, "JSON-RPC 1.0");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600);

    let batch = json!([initialize_request(5)]);
    let response = bridge.post(Some(&session), &batch).await;
    assert_eq!(response.status(), 400, "initialize in a batch");

    // The server still responds after every rejected request.
    let called = bridge
        .call(&session, json!(9), "add", json!({ "a": 1, "b": 2 }))
        .await;
    assert_eq!(text_of(&called), "3");
}

#[tokio::test]
async fn bridge_exits_with_child_code() {
    let bridge = Bridge::start(shell("exit 5")).await;
    assert_eq!(bridge.exit_status().await.code(), Some(5));
}

#[tokio::test]
async fn bridge_forwards_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let bridge = Bridge::start(shell(&format!(
        "trap 'exit 4' TERM; touch '{}'; while :; do sleep 0.05; done",
        ready.display()
    )))
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bridge.signals.send(Signal::TERM).unwrap();
    assert_eq!(bridge.exit_status().await.code(), Some(4));
}

#[tokio::test]
async fn bridge_fails_requests_when_server_exits() {
    let bridge = Bridge::start(shell("read line; exit 0")).await;
    let response = bridge.post(None, &initialize_request(3)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], 3);
    assert_eq!(body["error"]["code"], -32603);
    assert_eq!(bridge.exit_status().await.code(), Some(0));
}
