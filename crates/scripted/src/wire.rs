//! The response bodies and stream events of each protocol.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::{Answer, Output, Protocol};

/// Builds the non-streaming body of `answer`.
pub(crate) fn body(answer: &Answer) -> Value {
    match answer.protocol {
        Protocol::Responses => responses_body(answer, "completed", Some(responses_item(answer))),
        Protocol::ChatCompletions => chat_body(answer),
        Protocol::AnthropicMessages => anthropic_body(answer),
    }
}

/// Builds the SSE frames of `answer`.
pub(crate) fn events(answer: &Answer, include_usage: bool) -> Vec<Bytes> {
    match answer.protocol {
        Protocol::Responses => responses_events(answer),
        Protocol::ChatCompletions => chat_events(answer, include_usage),
        Protocol::AnthropicMessages => anthropic_events(answer),
    }
}

/// Splits text into stream deltas of a few words each, keeping every byte.
fn chunks(text: &str) -> Vec<&str> {
    const WORDS_PER_CHUNK: usize = 3;
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_word = false;
    for (index, character) in text.char_indices() {
        if character.is_whitespace() {
            if in_word {
                words += 1;
                in_word = false;
                if words == WORDS_PER_CHUNK {
                    pieces.push(&text[start..index]);
                    start = index;
                    words = 0;
                }
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() || pieces.is_empty() {
        pieces.push(&text[start..]);
    }
    pieces
}

fn frame(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

// OpenAI Responses API.

fn responses_item(answer: &Answer) -> Value {
    match &answer.output {
        Output::Text(text) => json!({
            "type": "message",
            "id": format!("msg_{}", answer.id),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }),
        Output::ToolCall { name, arguments } => json!({
            "type": "function_call",
            "id": format!("fc_{}", answer.id),
            "call_id": format!("call_{}", answer.id),
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }),
    }
}

fn responses_body(answer: &Answer, status: &str, item: Option<Value>) -> Value {
    let (input, output) = answer.usage();
    let done = status == "completed";
    json!({
        "id": format!("resp_{}", answer.id),
        "object": "response",
        "created_at": answer.created,
        "status": status,
        "model": answer.model,
        "output": item.into_iter().collect::<Vec<_>>(),
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "metadata": {},
        "parallel_tool_calls": true,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "usage": if done {
            json!({
                "input_tokens": input,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input + output,
            })
        } else {
            Value::Null
        },
    })
}

fn responses_events(answer: &Answer) -> Vec<Bytes> {
    let mut events = Vec::new();
    let mut sequence = 0u64;
    let mut push = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        events.push(frame(Some(kind), &data));
    };

    let in_progress = responses_body(answer, "in_progress", None);
    push("response.created", json!({"response": in_progress}));
    push("response.in_progress", json!({"response": in_progress}));

    let item = responses_item(answer);
    let item_id = item["id"].clone();
    let mut started = item.clone();
    started["status"] = json!("in_progress");

    match &answer.output {
        Output::Text(text) => {
            started["content"] = json!([]);
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": started}),
            );
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
            push(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part("")}),
            );
            for delta in chunks(text) {
                push(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "delta": delta, "logprobs": []}),
                );
            }
            push(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "text": text, "logprobs": []}),
            );
            push(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part(text)}),
            );
        }
        Output::ToolCall { arguments, .. } => {
            started["arguments"] = json!("");
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": started}),
            );
            push(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": 0, "delta": arguments}),
            );
            push(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": arguments}),
            );
        }
    }
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    push(
        "response.completed",
        json!({"response": responses_body(answer, "completed", Some(responses_item(answer)))}),
    );
    events
}

// OpenAI Chat Completions API.

fn chat_body(answer: &Answer) -> Value {
    let (input, output) = answer.usage();
    let (message, finish_reason) = match &answer.output {
        Output::Text(text) => (
            json!({"role": "assistant", "content": text, "refusal": null}),
            "stop",
        ),
        Output::ToolCall { name, arguments } => (
            json!({
                "role": "assistant",
                "content": null,
                "refusal": null,
                "tool_calls": [{
                    "id": format!("call_{}", answer.id),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }],
            }),
            "tool_calls",
        ),
    };
    json!({
        "id": format!("chatcmpl-{}", answer.id),
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason,
            "logprobs": null,
        }],
        "usage": {
            "prompt_tokens": input,
            "completion_tokens": output,
            "total_tokens": input + output,
        },
    })
}

fn chat_events(answer: &Answer, include_usage: bool) -> Vec<Bytes> {
    let chunk = |choices: Value, usage: Value| {
        frame(
            None,
            &json!({
                "id": format!("chatcmpl-{}", answer.id),
                "object": "chat.completion.chunk",
                "created": answer.created,
                "model": answer.model,
                "choices": choices,
                "usage": usage,
            }),
        )
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]);
    let mut events = Vec::new();
    let finish_reason = match &answer.output {
        Output::Text(text) => {
            events.push(chunk(
                choice(json!({"role": "assistant", "content": ""}), Value::Null),
                Value::Null,
            ));
            for delta in chunks(text) {
                events.push(chunk(
                    choice(json!({"content": delta}), Value::Null),
                    Value::Null,
                ));
            }
            "stop"
        }
        Output::ToolCall { name, arguments } => {
            events.push(chunk(
                choice(
                    json!({"role": "assistant", "content": null, "tool_calls": [{
                        "index": 0,
                        "id": format!("call_{}", answer.id),
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]}),
                    Value::Null,
                ),
                Value::Null,
            ));
            events.push(chunk(
                choice(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}),
                    Value::Null,
                ),
                Value::Null,
            ));
            "tool_calls"
        }
    };
    events.push(chunk(choice(json!({}), json!(finish_reason)), Value::Null));
    if include_usage {
        let (input, output) = answer.usage();
        events.push(chunk(
            json!([]),
            json!({"prompt_tokens": input, "completion_tokens": output,
                   "total_tokens": input + output}),
        ));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

// Anthropic Messages API.

fn anthropic_block(answer: &Answer) -> (Value, &'static str) {
    match &answer.output {
        Output::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Output::ToolCall { name, arguments } => (
            json!({
                "type": "tool_use",
                "id": format!("toolu_{}", answer.id),
                "name": name,
                "input": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({})),
            }),
            "tool_use",
        ),
    }
}

fn anthropic_message(answer: &Answer, content: Vec<Value>, stop: Value, output: u64) -> Value {
    let (input, _) = answer.usage();
    json!({
        "id": format!("msg_{}", answer.id),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output},
    })
}

fn anthropic_body(answer: &Answer) -> Value {
    let (block, stop) = anthropic_block(answer);
    anthropic_message(answer, vec![block], json!(stop), answer.usage().1)
}

fn anthropic_events(answer: &Answer) -> Vec<Bytes> {
    let mut events = Vec::new();
    let mut push = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        events.push(frame(Some(kind), &data));
    };
    push(
        "message_start",
        json!({"message": anthropic_message(answer, Vec::new(), Value::Null, 1)}),
    );
    let (block, stop) = anthropic_block(answer);
    match &answer.output {
        Output::Text(text) => {
            push(
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            push("ping", json!({}));
            for delta in chunks(text) {
                push(
                    "content_block_delta",
                    json!({"index": 0, "delta": {"type": "text_delta", "text": delta}}),
                );
            }
        }
        Output::ToolCall { arguments, .. } => {
            let mut start = block;
            start["input"] = json!({});
            push(
                "content_block_start",
                json!({"index": 0, "content_block": start}),
            );
            push("ping", json!({}));
            push(
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            );
        }
    }
    push("content_block_stop", json!({"index": 0}));
    push(
        "message_delta",
        json!({"delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": answer.usage().1}}),
    );
    push("message_stop", json!({}));
    events
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_keep_every_byte() {
        for text in [
            "",
            "one",
            "one two three four five",
            "  lead and trail  ",
            "héllo wörld ünï cödé",
        ] {
            assert_eq!(chunks(text).concat(), text);
        }
        assert_eq!(chunks("a b c d e f g").len(), 3);
    }
}
