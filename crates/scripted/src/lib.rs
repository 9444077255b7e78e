//! The scripted LLM provider: the platform answers a model call itself,
//! from the provider's [`Script`], in the wire format of the provider's
//! protocol. Tests, demos and machines without network access drive
//! agents through it.
//!
//! The reply to a request comes from the first rule whose `when_input_contains`
//! is found in the latest user message. Within the rule, the step is
//! chosen by the turn: the number of assistant outputs (messages and tool
//! calls) after that user message. A tool call step therefore leads to
//! the next step once the client sends the tool's result back.

mod request;
mod wire;

use agyn_api_llm::agynio::api::llm::v1::Script;
use agyn_api_llm::agynio::api::llm::v1::script_step::Reply;
use agyn_core::{Error, Result};
use bytes::Bytes;
use serde_json::Value;

pub use request::Conversation;

/// Wire protocol of a scripted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI Responses API.
    Responses,
    /// OpenAI Chat Completions API.
    ChatCompletions,
    /// Anthropic Messages API.
    AnthropicMessages,
}

const MAX_RULES: usize = 64;
const MAX_STEPS: usize = 32;
const MAX_MATCH_CHARS: usize = 1024;
const MAX_TEXT_BYTES: usize = 64 * 1024;
const MAX_TOOL_NAME_CHARS: usize = 128;
const MAX_ARGUMENTS_BYTES: usize = 64 * 1024;

/// Checks a script's limits, naming the first offending field.
pub fn validate(script: &Script) -> Result<()> {
    if script.rules.is_empty() || script.rules.len() > MAX_RULES {
        return Err(Error::invalid_field(
            "script.rules",
            &format!("must hold 1-{MAX_RULES} rules"),
        ));
    }
    for (r, rule) in script.rules.iter().enumerate() {
        if rule.when_input_contains.chars().count() > MAX_MATCH_CHARS {
            return Err(Error::invalid_field(
                &format!("script.rules[{r}].when_input_contains"),
                &format!("must be at most {MAX_MATCH_CHARS} characters"),
            ));
        }
        if rule.steps.is_empty() || rule.steps.len() > MAX_STEPS {
            return Err(Error::invalid_field(
                &format!("script.rules[{r}].steps"),
                &format!("must hold 1-{MAX_STEPS} steps"),
            ));
        }
        for (s, step) in rule.steps.iter().enumerate() {
            let field = format!("script.rules[{r}].steps[{s}]");
            match &step.reply {
                None => {
                    return Err(Error::invalid_field(&field, "must set text or tool_call"));
                }
                Some(Reply::Text(text)) => {
                    if text.len() > MAX_TEXT_BYTES {
                        return Err(Error::invalid_field(
                            &format!("{field}.text"),
                            "must be at most 64 KiB",
                        ));
                    }
                }
                Some(Reply::ToolCall(call)) => {
                    let chars = call.name.chars().count();
                    if chars == 0 || chars > MAX_TOOL_NAME_CHARS {
                        return Err(Error::invalid_field(
                            &format!("{field}.tool_call.name"),
                            &format!("must be 1-{MAX_TOOL_NAME_CHARS} characters"),
                        ));
                    }
                    if call.arguments_json.len() > MAX_ARGUMENTS_BYTES {
                        return Err(Error::invalid_field(
                            &format!("{field}.tool_call.arguments_json"),
                            "must be at most 64 KiB",
                        ));
                    }
                    if !call.arguments_json.is_empty()
                        && !matches!(
                            serde_json::from_str::<Value>(&call.arguments_json),
                            Ok(Value::Object(_))
                        )
                    {
                        return Err(Error::invalid_field(
                            &format!("{field}.tool_call.arguments_json"),
                            "must be a JSON object",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The output of a scripted step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A text message from the assistant.
    Text(String),
    /// A call of one tool, with its arguments as a JSON object in text.
    ToolCall { name: String, arguments: String },
}

/// One scripted reply, ready to be written as a JSON body or SSE events.
#[derive(Debug, Clone)]
pub struct Answer {
    protocol: Protocol,
    model: String,
    output: Output,
    input_tokens: u64,
    output_tokens: u64,
    id: String,
    created: u64,
}

impl Answer {
    /// The reply.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Text of the reply; empty for a tool call.
    pub fn output_text(&self) -> &str {
        match &self.output {
            Output::Text(text) => text,
            Output::ToolCall { .. } => "",
        }
    }

    /// Estimated `(input, output)` token counts reported as usage.
    pub fn usage(&self) -> (u64, u64) {
        (self.input_tokens, self.output_tokens)
    }

    /// Returns the non-streaming response body.
    pub fn to_json(&self) -> Value {
        wire::body(self)
    }

    /// Returns the streaming response as SSE frames, each ending in a blank line.
    /// `include_usage` adds the Chat Completions usage chunk that
    /// `stream_options.include_usage` requests.
    pub fn to_sse(&self, include_usage: bool) -> Vec<Bytes> {
        wire::events(self, include_usage)
    }
}

/// Builds the reply from `script` to `request`, a parsed request body of
/// `protocol`.
///
/// Fails with `INVALID_ARGUMENT` when the body is not a request of the
/// protocol or no rule matches its latest user message.
pub fn answer(script: &Script, protocol: Protocol, request: &Value) -> Result<Answer> {
    let conversation = Conversation::read(protocol, request)?;
    let needle_input = conversation.input.to_lowercase();
    let rule = script
        .rules
        .iter()
        .find(|rule| {
            rule.when_input_contains.is_empty()
                || needle_input.contains(&rule.when_input_contains.to_lowercase())
        })
        .ok_or_else(|| {
            Error::invalid_argument("the scripted provider has no rule matching the input")
        })?;
    let step = rule
        .steps
        .get(conversation.turn.min(rule.steps.len().saturating_sub(1)))
        .and_then(|step| step.reply.as_ref())
        .ok_or_else(|| Error::invalid_argument("the matching script rule has no steps"))?;
    let output = match step {
        Reply::Text(text) => Output::Text(
            text.replace("{{input}}", &conversation.input)
                .replace("{{tool_output}}", &conversation.tool_output),
        ),
        Reply::ToolCall(call) => Output::ToolCall {
            name: call.name.clone(),
            arguments: if call.arguments_json.is_empty() {
                "{}".to_string()
            } else {
                call.arguments_json.clone()
            },
        },
    };
    let output_tokens = match &output {
        Output::Text(text) => estimate_tokens(text),
        Output::ToolCall { name, arguments } => estimate_tokens(name) + estimate_tokens(arguments),
    };
    Ok(Answer {
        protocol,
        model: request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        output,
        input_tokens: conversation.input_tokens,
        output_tokens,
        id: uuid::Uuid::new_v4().simple().to_string(),
        created: agyn_core::time::now_micros().max(0) as u64 / 1_000_000,
    })
}

/// Estimates the input tokens of an Anthropic `count_tokens` request.
pub fn count_tokens(request: &Value) -> Result<Value> {
    let conversation = Conversation::read(Protocol::AnthropicMessages, request)?;
    Ok(serde_json::json!({ "input_tokens": conversation.input_tokens }))
}

/// Estimates a token count as one token per four bytes, at least one.
fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests;
