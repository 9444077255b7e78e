"""Reply bodies and SSE events of the fake provider, in each protocol's wire format."""

from __future__ import annotations

from typing import Any

from fake_provider import sse_event

USAGE_INPUT_TOKENS = 11
USAGE_OUTPUT_TOKENS = 7


def responses_message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_fake_1",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_body(text: str, model: str, status: str = "completed") -> dict[str, Any]:
    """An OpenAI Responses API response whose only output is `text`."""
    return {
        "id": "resp_fake_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": model,
        "output": [responses_message(text)] if status == "completed" else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": USAGE_INPUT_TOKENS,
            "output_tokens": USAGE_OUTPUT_TOKENS,
            "total_tokens": USAGE_INPUT_TOKENS + USAGE_OUTPUT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def responses_stream(parts: list[str], model: str) -> list[bytes]:
    """Responses API stream events: created, one text delta per part, completed."""
    created = responses_body("", model, status="in_progress")
    del created["usage"]
    events = [
        sse_event(
            {"type": "response.created", "sequence_number": 0, "response": created},
            "response.created",
        )
    ]
    for number, part in enumerate(parts, start=1):
        delta = {
            "type": "response.output_text.delta",
            "sequence_number": number,
            "item_id": "msg_fake_1",
            "output_index": 0,
            "content_index": 0,
            "delta": part,
            "logprobs": [],
        }
        events.append(sse_event(delta, "response.output_text.delta"))
    completed = {
        "type": "response.completed",
        "sequence_number": len(parts) + 1,
        "response": responses_body("".join(parts), model),
    }
    events.append(sse_event(completed, "response.completed"))
    return events


def chat_body(text: str, model: str) -> dict[str, Any]:
    """A Chat Completions response with one choice."""
    return {
        "id": "chatcmpl-fake-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": USAGE_INPUT_TOKENS,
            "completion_tokens": USAGE_OUTPUT_TOKENS,
            "total_tokens": USAGE_INPUT_TOKENS + USAGE_OUTPUT_TOKENS,
        },
    }


def chat_stream(parts: list[str], model: str) -> list[bytes]:
    """Chat Completions chunks: the role, one content delta per part, the finish reason, [DONE]."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse_event(
            {
                "id": "chatcmpl-fake-1",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": part}) for part in parts]
    events.append(chunk({}, "stop"))
    events.append(sse_event("[DONE]"))
    return events


def anthropic_message(text: str, model: str) -> dict[str, Any]:
    """An Anthropic Messages response with one text block."""
    return {
        "id": "msg_fake_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": USAGE_INPUT_TOKENS, "output_tokens": USAGE_OUTPUT_TOKENS},
    }


def anthropic_stream(parts: list[str], model: str) -> list[bytes]:
    """Anthropic Messages stream events from message_start to message_stop."""
    start = anthropic_message("", model)
    start["content"] = []
    start["stop_reason"] = None
    start["usage"] = {"input_tokens": USAGE_INPUT_TOKENS, "output_tokens": 1}
    events = [
        sse_event({"type": "message_start", "message": start}, "message_start"),
        sse_event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
    ]
    for part in parts:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": part},
        }
        events.append(sse_event(delta, "content_block_delta"))
    events.append(sse_event({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": USAGE_OUTPUT_TOKENS},
    }
    events.append(sse_event(message_delta, "message_delta"))
    events.append(sse_event({"type": "message_stop"}, "message_stop"))
    return events
