//! TestModel: one fixed prompt sent to a model's provider, with the URL and
//! credential rules of the LLM proxy. Nothing is stored.

use std::time::{Duration, Instant};

use agyn_api_llm::agynio::api::llm::v1::{Protocol, Script};
use agyn_core::id::parse_id;
use agyn_core::{Caller, Error, Result};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::resolve::{Credential, ResolvedModel};
use crate::upstream::{Operation, upstream_url};
use crate::{Llm, model_object};

/// The prompt that TestModel sends.
pub const TEST_PROMPT: &str = "Hello, world";

/// `max_tokens` of the Anthropic Messages test request, which requires one.
const ANTHROPIC_MAX_TOKENS: u32 = 256;
/// `anthropic-version` sent unless a custom header of the provider sets it.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Connect timeout of upstream requests, as in the LLM proxy.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest successful response body read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Bytes of an upstream body quoted in an error message.
const QUOTED_BODY_BYTES: usize = 512;
/// Bytes of an error body read, so that a credential that the provider
/// echoes near the quoted part is still found and redacted.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Shortest credential value redacted from quoted bodies. Shorter values
/// would blank out ordinary words.
const MIN_REDACTED_BYTES: usize = 4;

/// Result of TestModel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutput {
    /// Text of the reply, extracted according to the protocol.
    pub output_text: String,
    /// Upstream round trip, from sending the request to the end of the
    /// response body.
    pub duration: Duration,
}

/// Builds the HTTP client of TestModel. Redirects are not followed, because
/// a redirect could carry the credential to another host.
pub(crate) fn http_client() -> reqwest::Client {
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agyn/", env!("CARGO_PKG_VERSION")))
    };
    match builder().build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(
                %error,
                "Failed to load the system root certificates; TestModel cannot verify HTTPS providers"
            );
            builder()
                .tls_built_in_native_certs(false)
                .build()
                .expect("an HTTP client without root certificates builds")
        }
    }
}

impl Llm {
    /// TestModel: `can_use` on the model. Sends [`TEST_PROMPT`] in one
    /// non-streaming request and returns the reply's text. For a scripted
    /// provider, the reply to the same request comes from its script.
    ///
    /// Failures are statuses, never an empty success: an upstream non-2xx
    /// status or a reply without text is `failed_precondition` quoting the
    /// first 512 bytes of the body, and a network error or timeout is
    /// `unavailable`.
    pub async fn test_model(&self, caller: &Caller, model_id: &str) -> Result<TestOutput> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("model_id", model_id)?;
        self.model_or_not_found(&id).await?;
        self.require(caller_id, "can_use", &model_object(&id))
            .await?;
        let resolved = self.resolve_model(&id).await?;
        let body = request_body(resolved.protocol, &resolved.remote_name);
        let output = match &resolved.script {
            Some(script) => answer_from_script(script, resolved.protocol, &body)?,
            None => self.send_test_request(&resolved, &body).await?,
        };
        tracing::info!(
            model_id = %id,
            provider_id = %resolved.provider_id,
            scripted = resolved.script.is_some(),
            duration_ms = output.duration.as_millis() as u64,
            "Model tested"
        );
        Ok(output)
    }

    async fn send_test_request(
        &self,
        resolved: &ResolvedModel,
        body: &Value,
    ) -> Result<TestOutput> {
        let url = upstream_url(&resolved.endpoint, operation(resolved.protocol), None);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if resolved.protocol == Protocol::PROTOCOL_ANTHROPIC_MESSAGES {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        // Credential headers come last, so a custom anthropic-version wins.
        for (name, value) in resolved.credential.headers() {
            headers.insert(name, value);
        }
        let body = serde_json::to_vec(body).expect("a JSON value encodes");

        let started = Instant::now();
        let response = self
            .http
            .post(&url)
            .headers(headers)
            .body(body)
            .timeout(self.test_timeout)
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let status = response.status();
        let limit = if status.is_success() {
            MAX_RESPONSE_BYTES
        } else {
            MAX_ERROR_BODY_BYTES
        };
        let (bytes, truncated) = read_body(response, limit)
            .await
            .map_err(|error| self.unreachable(&error))?;
        let duration = started.elapsed();

        let quote = || quote_body(&bytes, &resolved.credential);
        if !status.is_success() {
            return Err(Error::failed_precondition(format!(
                "provider returned HTTP {}: {}",
                status.as_u16(),
                quote()
            )));
        }
        if truncated {
            return Err(Error::failed_precondition(format!(
                "provider response exceeds {} KiB",
                MAX_RESPONSE_BYTES / 1024
            )));
        }
        let reply: Value = serde_json::from_slice(&bytes).map_err(|_| {
            Error::failed_precondition(format!(
                "provider returned a body that is not JSON: {}",
                quote()
            ))
        })?;
        let output_text = output_text(resolved.protocol, &reply).ok_or_else(|| {
            Error::failed_precondition(format!(
                "provider response contains no output text: {}",
                quote()
            ))
        })?;
        Ok(TestOutput {
            output_text,
            duration,
        })
    }

    /// Builds the `unavailable` error of a failed or timed-out upstream
    /// request, with the chain of causes.
    fn unreachable(&self, error: &reqwest::Error) -> Error {
        let reason = if error.is_timeout() {
            format!("timed out after {:?}", self.test_timeout)
        } else {
            error_chain(error)
        };
        Error::unavailable(format!("provider unreachable: {reason}"))
    }
}

/// Returns the operation that a protocol's test request calls.
fn operation(protocol: Protocol) -> Operation {
    match protocol {
        Protocol::PROTOCOL_UNSPECIFIED | Protocol::PROTOCOL_RESPONSES => Operation::Responses,
        Protocol::PROTOCOL_CHAT_COMPLETIONS => Operation::ChatCompletions,
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES => Operation::Messages,
    }
}

/// Builds the test request body of a protocol.
pub(crate) fn request_body(protocol: Protocol, remote_name: &str) -> Value {
    match protocol {
        Protocol::PROTOCOL_UNSPECIFIED | Protocol::PROTOCOL_RESPONSES => {
            json!({ "model": remote_name, "input": TEST_PROMPT })
        }
        Protocol::PROTOCOL_CHAT_COMPLETIONS => json!({
            "model": remote_name,
            "messages": [{ "role": "user", "content": TEST_PROMPT }],
        }),
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES => json!({
            "model": remote_name,
            "max_tokens": ANTHROPIC_MAX_TOKENS,
            "messages": [{ "role": "user", "content": TEST_PROMPT }],
        }),
    }
}

/// Extracts the text of a non-streaming reply, or `None` when the reply
/// has none:
///
/// - Responses: the top-level `output_text`, else the concatenated
///   `output[].content[]` parts of type `output_text`.
/// - Chat Completions: `choices[0].message.content`.
/// - Anthropic Messages: the concatenated `content[]` parts of type `text`.
pub(crate) fn output_text(protocol: Protocol, reply: &Value) -> Option<String> {
    match protocol {
        Protocol::PROTOCOL_UNSPECIFIED | Protocol::PROTOCOL_RESPONSES => {
            if let Some(text) = reply.get("output_text").and_then(Value::as_str) {
                return Some(text.to_string());
            }
            let parts = reply
                .get("output")?
                .as_array()?
                .iter()
                .filter_map(|item| item.get("content")?.as_array())
                .flatten();
            concatenate_parts(parts, "output_text")
        }
        Protocol::PROTOCOL_CHAT_COMPLETIONS => reply
            .get("choices")?
            .get(0)?
            .get("message")?
            .get("content")?
            .as_str()
            .map(str::to_string),
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES => {
            concatenate_parts(reply.get("content")?.as_array()?.iter(), "text")
        }
    }
}

/// Concatenates the `text` of the parts of type `part_type`, or returns
/// `None` when there is no such part.
fn concatenate_parts<'a>(
    parts: impl Iterator<Item = &'a Value>,
    part_type: &str,
) -> Option<String> {
    let mut texts = parts
        .filter(|part| part.get("type").and_then(Value::as_str) == Some(part_type))
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .peekable();
    texts.peek()?;
    Some(texts.collect())
}

/// Generates the reply to the test request of a scripted provider from its
/// script.
fn answer_from_script(script: &Script, protocol: Protocol, body: &Value) -> Result<TestOutput> {
    let scripted_protocol = match protocol {
        Protocol::PROTOCOL_UNSPECIFIED | Protocol::PROTOCOL_RESPONSES => {
            agyn_scripted::Protocol::Responses
        }
        Protocol::PROTOCOL_CHAT_COMPLETIONS => agyn_scripted::Protocol::ChatCompletions,
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES => agyn_scripted::Protocol::AnthropicMessages,
    };
    let started = Instant::now();
    let reply = agyn_scripted::answer(script, scripted_protocol, body)?.to_json();
    let duration = started.elapsed();
    let output_text = output_text(protocol, &reply)
        .ok_or_else(|| Error::failed_precondition("scripted reply contains no output text"))?;
    Ok(TestOutput {
        output_text,
        duration,
    })
}

/// Reads up to `limit` bytes of a response body. The flag is true when the
/// body was longer.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Returns the first [`QUOTED_BODY_BYTES`] of a body as text, with every
/// credential value that the provider echoed replaced by `[redacted]`.
fn quote_body(body: &[u8], credential: &Credential) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    let values: Vec<&str> = match credential {
        Credential::None => Vec::new(),
        Credential::Bearer(token) | Credential::ApiKey(token) => vec![token.expose().as_str()],
        Credential::Headers(headers) => headers
            .iter()
            .map(|(_, value)| value.expose().as_str())
            .collect(),
    };
    for value in values {
        if value.len() < MIN_REDACTED_BYTES {
            continue;
        }
        // Providers that echo request headers inside JSON escape quotes
        // and backslashes, so the escaped form is redacted too.
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        text = text.replace(value, "[redacted]");
        if escaped != value {
            text = text.replace(escaped, "[redacted]");
        }
    }
    let mut end = text.len().min(QUOTED_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// Formats an error with its chain of causes, `outer: inner: …`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use agyn_core::Secret;

    use super::*;

    #[test]
    fn responses_prefers_top_level_output_text() {
        let reply = json!({ "output_text": "top", "output": [] });
        assert_eq!(
            output_text(Protocol::PROTOCOL_RESPONSES, &reply).as_deref(),
            Some("top")
        );
    }

    #[test]
    fn responses_concatenates_output_text_parts() {
        let reply = json!({ "output": [
            { "type": "reasoning", "content": [{ "type": "reasoning_text", "text": "hmm" }] },
            { "type": "message", "content": [
                { "type": "output_text", "text": "Hello" },
                { "type": "refusal", "refusal": "no" },
                { "type": "output_text", "text": ", there" },
            ]},
        ]});
        assert_eq!(
            output_text(Protocol::PROTOCOL_RESPONSES, &reply).as_deref(),
            Some("Hello, there")
        );
        let empty = json!({ "output": [{ "type": "message", "content": [] }] });
        assert_eq!(output_text(Protocol::PROTOCOL_RESPONSES, &empty), None);
    }

    #[test]
    fn chat_completions_reads_first_choice() {
        let reply = json!({ "choices": [
            { "message": { "role": "assistant", "content": "first" } },
            { "message": { "role": "assistant", "content": "second" } },
        ]});
        assert_eq!(
            output_text(Protocol::PROTOCOL_CHAT_COMPLETIONS, &reply).as_deref(),
            Some("first")
        );
        let tool_call = json!({ "choices": [{ "message": { "content": null } }] });
        assert_eq!(
            output_text(Protocol::PROTOCOL_CHAT_COMPLETIONS, &tool_call),
            None
        );
    }

    #[test]
    fn anthropic_concatenates_text_parts() {
        let reply = json!({ "content": [
            { "type": "thinking", "thinking": "hmm" },
            { "type": "text", "text": "Hi" },
            { "type": "text", "text": "!" },
        ]});
        assert_eq!(
            output_text(Protocol::PROTOCOL_ANTHROPIC_MESSAGES, &reply).as_deref(),
            Some("Hi!")
        );
        assert_eq!(
            output_text(
                Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
                &json!({ "error": {} })
            ),
            None
        );
    }

    #[test]
    fn quoted_body_redacts_json_escaped_values() {
        let credential = Credential::Bearer(Secret::new(r#"q"w\e-canary"#.to_string()));
        let body = br#"{"echo": ["authorization", "Bearer q\"w\\e-canary"]}"#;
        let quoted = quote_body(body, &credential);
        assert!(!quoted.contains("canary"), "{quoted}");
        assert!(quoted.contains("Bearer [redacted]"), "{quoted}");
    }

    #[test]
    fn quoted_body_is_truncated_and_redacted() {
        let credential = Credential::Bearer(Secret::new("sk-canary".to_string()));
        let body = format!("invalid key sk-canary {}", "é".repeat(600));
        let quoted = quote_body(body.as_bytes(), &credential);
        assert!(quoted.starts_with("invalid key [redacted] "), "{quoted}");
        assert!(quoted.len() <= QUOTED_BODY_BYTES);
        assert!(quoted.len() > QUOTED_BODY_BYTES - 2);
    }

    #[test]
    fn request_bodies_follow_each_protocol() {
        assert_eq!(
            request_body(Protocol::PROTOCOL_RESPONSES, "gpt-5"),
            json!({ "model": "gpt-5", "input": "Hello, world" })
        );
        assert_eq!(
            request_body(Protocol::PROTOCOL_CHAT_COMPLETIONS, "m"),
            json!({ "model": "m", "messages": [{ "role": "user", "content": "Hello, world" }] })
        );
        assert_eq!(
            request_body(Protocol::PROTOCOL_ANTHROPIC_MESSAGES, "claude"),
            json!({
                "model": "claude",
                "max_tokens": 256,
                "messages": [{ "role": "user", "content": "Hello, world" }],
            })
        );
    }
}
