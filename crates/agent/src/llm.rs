//! Model calls through the platform's LLM proxy with the OpenAI Responses
//! API, streamed as server-sent events.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Map, Value, json};

use crate::sse;

/// Maximum silence between two chunks of a streamed response, the same
/// limit the proxy applies upstream.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Error code of OpenAI-compatible APIs for a request that does not fit
/// the model's context window.
const CONTEXT_LENGTH_EXCEEDED: &str = "context_length_exceeded";

/// A failed model call, classified by what the turn does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The input is too long for the model: the turn drops history.
    #[error("the conversation is too long for the model: {0}")]
    ContextOverflow(String),
    /// A rate limit, a server error other than
    /// [`PERMANENT_SERVER_ERRORS`], or a network failure: the turn retries
    /// after a pause.
    #[error("{0}")]
    Retryable(String),
    /// Any other rejection, which a retry would not change.
    #[error("{0}")]
    Fatal(String),
}

/// One request of a turn.
#[derive(Debug)]
pub struct LlmRequest<'a> {
    pub instructions: &'a str,
    pub input: &'a [Value],
    pub tools: &'a [Value],
    pub temperature: Option<f64>,
    pub reasoning_effort: Option<&'a str>,
}

/// A function call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    pub call_id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// Token counts reported in `response.completed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
}

/// A completed response.
#[derive(Debug, Clone, Default)]
pub struct LlmResponse {
    /// Output items to send back in the next request of the turn: messages,
    /// function calls and reasoning items that carry encrypted content,
    /// without the ids that only a stored response could resolve.
    pub items: Vec<Value>,
    pub function_calls: Vec<FunctionCall>,
    /// The concatenated `output_text` of the response's messages.
    pub text: String,
    /// `stop`, `tool_calls`, or the reason of an incomplete response.
    pub finish_reason: String,
    pub usage: Usage,
}

/// The client of `POST {base}/responses`.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    url: String,
    model: String,
    thread_id: String,
}

impl LlmClient {
    pub fn new(http: reqwest::Client, base_url: &str, model: &str, thread_id: &str) -> Self {
        Self {
            http,
            url: format!("{}/responses", base_url.trim_end_matches('/')),
            model: model.to_string(),
            thread_id: thread_id.to_string(),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends one request and reads its event stream to the end.
    pub async fn respond(&self, request: &LlmRequest<'_>) -> Result<LlmResponse, LlmError> {
        let response = self
            .http
            .post(&self.url)
            .header("x-agyn-thread-id", &self.thread_id)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&self.body(request))
            .send()
            .await
            .map_err(|error| {
                LlmError::Retryable(format!("the model service is unreachable: {error}"))
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(http_error(status.as_u16(), &body));
        }
        read_stream(response).await
    }

    fn body(&self, request: &LlmRequest<'_>) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("instructions".into(), json!(request.instructions));
        body.insert("input".into(), json!(request.input));
        if !request.tools.is_empty() {
            body.insert("tools".into(), json!(request.tools));
        }
        body.insert("stream".into(), json!(true));
        body.insert("store".into(), json!(false));
        if let Some(temperature) = request.temperature {
            body.insert("temperature".into(), json!(temperature));
        }
        if let Some(effort) = request.reasoning_effort {
            body.insert("reasoning".into(), json!({"effort": effort}));
            // With store=false, a reasoning item can only be sent back with
            // its encrypted content.
            body.insert("include".into(), json!(["reasoning.encrypted_content"]));
        }
        Value::Object(body)
    }
}

/// Server errors that a retry of the same request cannot fix: 501 Not
/// Implemented, 505 HTTP Version Not Supported, and 508 Loop Detected,
/// which the LLM proxy returns for a provider that points back at it.
const PERMANENT_SERVER_ERRORS: [u16; 3] = [501, 505, 508];

/// Classifies a non-2xx response by its status and its OpenAI-shape body
/// `{"error": {"message", "type", "code"}}`.
fn http_error(status: u16, body: &str) -> LlmError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = parsed.get("error").unwrap_or(&parsed);
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.chars().take(200).collect());
    let reason = format!("the model service returned HTTP {status}: {message}");
    if code == CONTEXT_LENGTH_EXCEEDED {
        LlmError::ContextOverflow(message)
    } else if status == 429 || (status >= 500 && !PERMANENT_SERVER_ERRORS.contains(&status)) {
        LlmError::Retryable(reason)
    } else {
        LlmError::Fatal(reason)
    }
}

/// Classifies the `error` object of a `response.failed` or `error` event.
fn stream_error(error: &Value) -> LlmError {
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the response failed")
        .to_string();
    match code {
        CONTEXT_LENGTH_EXCEEDED => LlmError::ContextOverflow(message),
        "rate_limit_exceeded" | "server_error" | "server_is_overloaded" | "" => {
            LlmError::Retryable(format!("the model failed: {message}"))
        }
        _ => LlmError::Fatal(format!("the model failed: {message}")),
    }
}

async fn read_stream(response: reqwest::Response) -> Result<LlmResponse, LlmError> {
    let mut parser = sse::Parser::default();
    let mut state = StreamState::default();
    let mut body = response.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, body.next()).await {
            Err(_) => {
                return Err(LlmError::Retryable(
                    "the model stream was silent for too long".to_string(),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(LlmError::Retryable(format!(
                    "the model stream broke off: {error}"
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        for event in parser.feed(&chunk) {
            if let Some(done) = state.apply(&event)? {
                return Ok(done);
            }
        }
    }
    Err(LlmError::Retryable(
        "the model stream ended before response.completed".to_string(),
    ))
}

/// The output read from one event stream so far.
#[derive(Debug, Default)]
struct StreamState {
    items: Vec<Value>,
    /// Text of `response.output_text.delta` events, used when the final
    /// items carry no message.
    deltas: String,
}

impl StreamState {
    /// Applies one event and returns the response once it is complete.
    fn apply(&mut self, event: &sse::Event) -> Result<Option<LlmResponse>, LlmError> {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return Ok(None);
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        match kind {
            "response.output_text.delta" => {
                if let Some(delta) = data.get("delta").and_then(Value::as_str) {
                    self.deltas.push_str(delta);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = data.get("item") {
                    self.items.push(item.clone());
                }
            }
            "response.completed" | "response.incomplete" => {
                let response = data.get("response").cloned().unwrap_or_default();
                return Ok(Some(self.finish(&response)));
            }
            "response.failed" => {
                let error = data.pointer("/response/error").cloned().unwrap_or_default();
                return Err(stream_error(&error));
            }
            "error" => {
                let error = data.get("error").unwrap_or(&data);
                return Err(stream_error(error));
            }
            _ => {}
        }
        Ok(None)
    }

    fn finish(&mut self, response: &Value) -> LlmResponse {
        let items = if self.items.is_empty() {
            response
                .get("output")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        } else {
            std::mem::take(&mut self.items)
        };
        let mut result = LlmResponse::default();
        let mut texts = Vec::new();
        for item in &items {
            match item.get("type").and_then(Value::as_str) {
                Some("message") => {
                    let text = message_text(item);
                    result.items.push(json!({
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    }));
                    texts.push(text);
                }
                Some("function_call") => {
                    let field = |name: &str| {
                        item.get(name)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let call = FunctionCall {
                        call_id: field("call_id"),
                        name: field("name"),
                        arguments: field("arguments"),
                    };
                    result.items.push(json!({
                        "type": "function_call",
                        "call_id": call.call_id,
                        "name": call.name,
                        "arguments": call.arguments,
                    }));
                    result.function_calls.push(call);
                }
                Some("reasoning") if item.get("encrypted_content").is_some() => {
                    result.items.push(item.clone());
                }
                _ => {}
            }
        }
        result.text = if texts.is_empty() {
            std::mem::take(&mut self.deltas)
        } else {
            texts.concat()
        };
        result.finish_reason = if !result.function_calls.is_empty() {
            "tool_calls".to_string()
        } else if let Some(reason) = response
            .pointer("/incomplete_details/reason")
            .and_then(Value::as_str)
        {
            reason.to_string()
        } else {
            "stop".to_string()
        };
        result.usage = usage(response.get("usage").unwrap_or(&Value::Null));
        result
    }
}

/// Concatenates the `output_text` parts of a message item.
fn message_text(item: &Value) -> String {
    item.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|part| part.get("type").and_then(Value::as_str) == Some("output_text"))
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect()
}

fn usage(usage: &Value) -> Usage {
    let number = |pointer: &str| usage.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    Usage {
        input_tokens: number("/input_tokens"),
        cached_input_tokens: number("/input_tokens_details/cached_tokens"),
        output_tokens: number("/output_tokens"),
        reasoning_tokens: number("/output_tokens_details/reasoning_tokens"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(frames: &[(&str, Value)]) -> Result<Option<LlmResponse>, LlmError> {
        let mut state = StreamState::default();
        for (name, data) in frames {
            let event = sse::Event {
                event: name.to_string(),
                data: data.to_string(),
            };
            if let Some(done) = state.apply(&event)? {
                return Ok(Some(done));
            }
        }
        Ok(None)
    }

    #[test]
    fn function_calls_and_usage_are_read() {
        let call = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1",
                          "name": "tools__add", "arguments": "{\"a\":1}", "status": "completed"});
        let response = events(&[
            (
                "response.output_item.done",
                json!({"type": "response.output_item.done", "item": call}),
            ),
            (
                "response.completed",
                json!({"type": "response.completed", "response": {
                "usage": {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2},
                          "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}}}}),
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            response.function_calls,
            vec![FunctionCall {
                call_id: "call_1".into(),
                name: "tools__add".into(),
                arguments: "{\"a\":1}".into(),
            }]
        );
        assert_eq!(response.items[0].get("id"), None);
        assert_eq!(response.finish_reason, "tool_calls");
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 7,
                cached_input_tokens: 2,
                output_tokens: 3,
                reasoning_tokens: 1,
            }
        );
    }

    #[test]
    fn text_comes_from_messages_or_deltas() {
        let message = json!({"type": "message", "role": "assistant",
                             "content": [{"type": "output_text", "text": "Hello there"}]});
        let from_items = events(&[
            (
                "",
                json!({"type": "response.output_text.delta", "delta": "Hel"}),
            ),
            (
                "",
                json!({"type": "response.output_item.done", "item": message}),
            ),
            ("", json!({"type": "response.completed", "response": {}})),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(from_items.text, "Hello there");
        assert_eq!(from_items.finish_reason, "stop");

        let from_deltas = events(&[
            (
                "",
                json!({"type": "response.output_text.delta", "delta": "Hel"}),
            ),
            (
                "",
                json!({"type": "response.output_text.delta", "delta": "lo"}),
            ),
            ("", json!({"type": "response.completed", "response": {}})),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(from_deltas.text, "Hello");
    }

    #[test]
    fn failures_are_classified() {
        let overflow = events(&[(
            "",
            json!({"type": "response.failed", "response": {"error": {
                "code": "context_length_exceeded", "message": "too long"}}}),
        )]);
        assert_eq!(
            overflow.unwrap_err(),
            LlmError::ContextOverflow("too long".into())
        );
        let error = events(&[(
            "",
            json!({"type": "error", "code": "invalid_prompt", "message": "no"}),
        )]);
        assert!(matches!(error, Err(LlmError::Fatal(_))));
        assert!(matches!(http_error(503, "{}"), LlmError::Retryable(_)));
        assert!(matches!(http_error(429, "{}"), LlmError::Retryable(_)));
        assert!(matches!(http_error(404, "{}"), LlmError::Fatal(_)));
        assert!(matches!(http_error(508, "{}"), LlmError::Fatal(_)));
        assert!(matches!(http_error(501, "{}"), LlmError::Fatal(_)));
        let body = r#"{"error":{"message":"too many tokens","code":"context_length_exceeded"}}"#;
        assert_eq!(
            http_error(400, body),
            LlmError::ContextOverflow("too many tokens".into())
        );
    }
}
