use agyn_api_llm::agynio::api::llm::v1::{Script, ScriptRule, ScriptStep, ScriptToolCall};
use agyn_core::error::Code;
use serde_json::{Value, json};

use super::*;

fn text(value: &str) -> ScriptStep {
    ScriptStep {
        reply: Some(Reply::Text(value.to_string())),
        ..Default::default()
    }
}

fn tool(name: &str, arguments: &str) -> ScriptStep {
    ScriptStep {
        reply: Some(Reply::ToolCall(Box::new(ScriptToolCall {
            name: name.to_string(),
            arguments_json: arguments.to_string(),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

fn rule(when: &str, steps: Vec<ScriptStep>) -> ScriptRule {
    ScriptRule {
        when_input_contains: when.to_string(),
        steps,
        ..Default::default()
    }
}

fn script() -> Script {
    Script {
        rules: vec![
            rule(
                "files",
                vec![
                    tool("list_directory", r#"{"path":"/tmp"}"#),
                    text("The tool said: {{tool_output}}"),
                ],
            ),
            rule("HELLO", vec![text("Hello from the script")]),
            rule("", vec![text("You said: {{input}}"), text("again")]),
        ],
        ..Default::default()
    }
}

#[test]
fn rules_match_the_latest_user_message_case_insensitively() {
    let request = json!({"model": "m", "input": [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": "…"},
        {"role": "user", "content": [{"type": "input_text", "text": "Well, hello there"}]},
    ]});
    let answer = answer(&script(), Protocol::Responses, &request).unwrap();
    assert_eq!(answer.output_text(), "Hello from the script");
}

#[test]
fn tool_call_step_leads_to_next_step() {
    let first = json!({"model": "m", "input": "show me the files"});
    let answer1 = answer(&script(), Protocol::Responses, &first).unwrap();
    assert_eq!(
        answer1.output(),
        &Output::ToolCall {
            name: "list_directory".into(),
            arguments: r#"{"path":"/tmp"}"#.into()
        }
    );
    let second = json!({"model": "m", "input": [
        {"role": "user", "content": "show me the files"},
        {"type": "function_call", "call_id": "c1", "name": "list_directory", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt b.txt"},
    ]});
    let answer2 = answer(&script(), Protocol::Responses, &second).unwrap();
    assert_eq!(answer2.output_text(), "The tool said: a.txt b.txt");
}

#[test]
fn turns_past_the_last_step_repeat_it() {
    let request = json!({"model": "m", "messages": [
        {"role": "user", "content": "anything"},
        {"role": "assistant", "content": "You said: anything"},
        {"role": "assistant", "content": "again"},
        {"role": "assistant", "content": "again"},
    ]});
    let answer = answer(&script(), Protocol::ChatCompletions, &request).unwrap();
    assert_eq!(answer.output_text(), "again");
}

#[test]
fn anthropic_tool_results_arrive_in_user_messages() {
    let request = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "files please"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "list_directory", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "c.txt"}]}]},
    ]});
    let answer = answer(&script(), Protocol::AnthropicMessages, &request).unwrap();
    assert_eq!(answer.output_text(), "The tool said: c.txt");
}

#[test]
fn no_matching_rule_is_an_invalid_argument() {
    let script = Script {
        rules: vec![rule("never", vec![text("x")])],
        ..Default::default()
    };
    let error = answer(&script, Protocol::Responses, &json!({"input": "hi"})).unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = answer(&script, Protocol::ChatCompletions, &json!({"input": "hi"})).unwrap_err();
    assert!(error.message().contains("messages"), "{}", error.message());
}

#[test]
fn validation_names_the_field() {
    let mut bad = script();
    bad.rules[0].steps[0] = tool("t", "[1, 2]");
    let error = validate(&bad).unwrap_err();
    assert!(
        error
            .message()
            .contains("script.rules[0].steps[0].tool_call.arguments_json"),
        "{}",
        error.message()
    );
    bad.rules[0].steps.clear();
    assert!(
        validate(&bad)
            .unwrap_err()
            .message()
            .contains("rules[0].steps")
    );
    assert!(validate(&Script::default()).is_err());
    let mut unset = script();
    unset.rules[1].steps[0].reply = None;
    assert!(
        validate(&unset)
            .unwrap_err()
            .message()
            .contains("text or tool_call")
    );
    assert!(validate(&script()).is_ok());
}

/// Decodes SSE frames into `(event name, data)` pairs.
fn decode(frames: &[bytes::Bytes]) -> Vec<(Option<String>, String)> {
    frames
        .iter()
        .map(|frame| {
            let text = std::str::from_utf8(frame).unwrap();
            assert!(text.ends_with("\n\n"), "{text:?}");
            let mut event = None;
            let mut data = String::new();
            for line in text.trim_end().lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_string());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = value.to_string();
                }
            }
            (event, data)
        })
        .collect()
}

#[test]
fn responses_stream_spells_out_text() {
    let request = json!({"model": "gpt-x", "input": "one two three four five six seven"});
    let answer = answer(&script(), Protocol::Responses, &request).unwrap();
    let events = decode(&answer.to_sse(false));
    let names: Vec<&str> = events
        .iter()
        .map(|(name, _)| name.as_deref().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));

    let mut text = String::new();
    for (index, (name, data)) in events.iter().enumerate() {
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data["type"], json!(name.as_deref().unwrap()));
        assert_eq!(data["sequence_number"], json!(index));
        if name.as_deref() == Some("response.output_text.delta") {
            text.push_str(data["delta"].as_str().unwrap());
        }
    }
    assert_eq!(text, "You said: one two three four five six seven");
    assert!(
        names
            .iter()
            .filter(|name| **name == "response.output_text.delta")
            .count()
            > 1
    );

    let done: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(done["response"]["model"], json!("gpt-x"));
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        json!(text)
    );
    assert!(done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn chat_stream_ends_with_done_and_optional_usage() {
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "show files"}]});
    let answer = answer(&script(), Protocol::ChatCompletions, &request).unwrap();
    let events = decode(&answer.to_sse(true));
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        json!("list_directory")
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], json!("tool_calls"));
    assert!(
        chunks.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(answer.to_sse(false).len(), events.len() - 1);
}

#[test]
fn anthropic_bodies_carry_tool_input_as_an_object() {
    let request = json!({"model": "claude", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "files"}]});
    let answer = answer(&script(), Protocol::AnthropicMessages, &request).unwrap();
    let body = answer.to_json();
    assert_eq!(body["type"], json!("message"));
    assert_eq!(body["stop_reason"], json!("tool_use"));
    assert_eq!(body["content"][0]["input"], json!({"path": "/tmp"}));
    let events = decode(&answer.to_sse(false));
    let names: Vec<&str> = events
        .iter()
        .map(|(name, _)| name.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[test]
fn count_tokens_estimates_the_request() {
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    let counted = count_tokens(&request).unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);
}
