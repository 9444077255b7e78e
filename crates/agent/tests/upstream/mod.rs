//! An LLM provider on loopback for the LLM proxy to forward to. It records
//! every request body and replies with a Responses API event stream in the
//! scripted provider's wire format, or rejects a request as too long for
//! the context window.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

#[derive(Default)]
struct Recorded {
    requests: Vec<Value>,
    /// Rejects the next request whose input has more items than this.
    reject_longer_than: Option<usize>,
}

pub struct Upstream {
    pub url: String,
    state: Arc<Mutex<Recorded>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(Recorded::default()));
        let app = axum::Router::new()
            .fallback(respond)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// Makes the next request with more than `items` input items fail with
    /// `context_length_exceeded`.
    pub fn reject_inputs_longer_than(&self, items: usize) {
        self.state.lock().unwrap().reject_longer_than = Some(items);
    }

    /// Returns the request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn respond(State(state): State<Arc<Mutex<Recorded>>>, body: axum::body::Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let items = request["input"].as_array().map_or(0, Vec::len);
    let reject = {
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        match state.reject_longer_than {
            Some(limit) if items > limit => {
                state.reject_longer_than = None;
                true
            }
            _ => false,
        }
    };
    if reject {
        let error = json!({"error": {
            "message": format!("{items} input items exceed the context window"),
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }});
        return Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(Body::from(error.to_string()))
            .unwrap();
    }
    let script = agyn_client::llm::Script {
        rules: vec![super::support::rule(
            "",
            vec![super::support::text("Upstream: {{input}}")],
        )],
        ..Default::default()
    };
    let answer = agyn_scripted::answer(&script, agyn_scripted::Protocol::Responses, &request)
        .expect("the request is a Responses API request");
    let frames = answer.to_sse(false);
    let stream = futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
