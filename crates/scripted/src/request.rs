//! Reading the parts of a request that choose a scripted reply.

use agyn_core::{Error, Result};
use serde_json::Value;

use crate::{Protocol, estimate_tokens};

/// The parts of a request body that a script reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Text of the latest user message; empty when there is none.
    pub input: String,
    /// Text of the latest tool result; empty when there is none.
    pub tool_output: String,
    /// Assistant outputs (messages and tool calls) after the latest user
    /// message.
    pub turn: usize,
    /// Estimated size of the whole request in tokens.
    pub input_tokens: u64,
}

/// One entry of a request's history, in protocol-neutral form.
enum Entry {
    User(String),
    Assistant,
    ToolResult(String),
    Other,
}

impl Conversation {
    /// Reads a request body of `protocol`.
    pub fn read(protocol: Protocol, request: &Value) -> Result<Self> {
        let Value::Object(body) = request else {
            return Err(Error::invalid_argument(
                "request body must be a JSON object",
            ));
        };
        let entries = match protocol {
            Protocol::Responses => match body.get("input") {
                Some(Value::String(text)) => vec![Entry::User(text.clone())],
                Some(Value::Array(items)) => items.iter().flat_map(responses_entries).collect(),
                _ => {
                    return Err(Error::invalid_field(
                        "input",
                        "must be a string or an array of input items",
                    ));
                }
            },
            Protocol::ChatCompletions => match body.get("messages") {
                Some(Value::Array(messages)) => messages.iter().map(chat_entry).collect(),
                _ => return Err(Error::invalid_field("messages", "must be an array")),
            },
            Protocol::AnthropicMessages => match body.get("messages") {
                Some(Value::Array(messages)) => {
                    messages.iter().flat_map(anthropic_entries).collect()
                }
                _ => return Err(Error::invalid_field("messages", "must be an array")),
            },
        };
        let mut conversation = Conversation {
            input_tokens: estimate_tokens(&request.to_string()),
            ..Conversation::default()
        };
        for entry in entries {
            match entry {
                Entry::User(text) => {
                    conversation.input = text;
                    conversation.turn = 0;
                }
                Entry::Assistant => conversation.turn += 1,
                Entry::ToolResult(text) => conversation.tool_output = text,
                Entry::Other => {}
            }
        }
        Ok(conversation)
    }
}

/// Text of a content value: a string, or the text parts of an array.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|part| {
                    matches!(
                        part.get("type").and_then(Value::as_str),
                        Some("text" | "input_text" | "output_text") | None
                    )
                })
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn role(item: &Value) -> Option<&str> {
    item.get("role").and_then(Value::as_str)
}

fn responses_entries(item: &Value) -> Vec<Entry> {
    match item.get("type").and_then(Value::as_str) {
        Some("function_call" | "custom_tool_call") => vec![Entry::Assistant],
        Some("function_call_output" | "custom_tool_call_output") => {
            let output = item.get("output").map(|output| match output {
                Value::String(text) => text.clone(),
                other => content_text(other).unwrap_or_else(|| other.to_string()),
            });
            vec![Entry::ToolResult(output.unwrap_or_default())]
        }
        Some("message") | None => match role(item) {
            Some("user") => item
                .get("content")
                .and_then(content_text)
                .map(Entry::User)
                .into_iter()
                .collect(),
            Some("assistant") => vec![Entry::Assistant],
            _ => vec![Entry::Other],
        },
        Some(_) => vec![Entry::Other],
    }
}

fn chat_entry(message: &Value) -> Entry {
    match role(message) {
        Some("user") => message
            .get("content")
            .and_then(content_text)
            .map_or(Entry::Other, Entry::User),
        Some("assistant") => Entry::Assistant,
        Some("tool") => Entry::ToolResult(
            message
                .get("content")
                .and_then(content_text)
                .unwrap_or_default(),
        ),
        _ => Entry::Other,
    }
}

/// Anthropic sends tool results inside user messages, so one message may
/// hold both results and new text.
fn anthropic_entries(message: &Value) -> Vec<Entry> {
    match role(message) {
        Some("assistant") => vec![Entry::Assistant],
        Some("user") => match message.get("content") {
            Some(Value::String(text)) => vec![Entry::User(text.clone())],
            Some(Value::Array(parts)) => {
                let mut entries = Vec::new();
                let mut texts = Vec::new();
                for part in parts {
                    match part.get("type").and_then(Value::as_str) {
                        Some("tool_result") => entries.push(Entry::ToolResult(
                            part.get("content")
                                .and_then(content_text)
                                .unwrap_or_default(),
                        )),
                        Some("text") => {
                            if let Some(text) = part.get("text").and_then(Value::as_str) {
                                texts.push(text);
                            }
                        }
                        _ => {}
                    }
                }
                if !texts.is_empty() {
                    entries.push(Entry::User(texts.join("\n")));
                }
                entries
            }
            _ => vec![Entry::Other],
        },
        _ => vec![Entry::Other],
    }
}
