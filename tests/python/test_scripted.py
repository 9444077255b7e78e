"""Scripted providers through the proxy, and TestModel on scripted and
networked models."""

from __future__ import annotations

import json

import openai
import pytest

from connect_client import ConnectClient, ConnectError
from fake_provider import FakeProvider, JsonReply
from provider_replies import anthropic_message, responses_body
from suite import CANARY, LLM, SCRIPT_TOOL_NAME, Platform


def test_scripted_response_uses_script(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform
) -> None:
    response = openai_client.responses.create(model=platform.scripted_model, input="Good morning")

    assert response.output_text == "Scripted reply to Good morning"
    assert response.status == "completed"
    assert upstream.requests == [], "a scripted model must not call any provider"


def test_scripted_stream_spells_out_text(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform
) -> None:
    stream = openai_client.responses.create(
        model=platform.scripted_model, input="Good evening", stream=True
    )
    events = list(stream)

    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == "Scripted reply to Good evening"
    assert events[-1].response.output_text == "Scripted reply to Good evening"
    assert upstream.requests == []


def test_scripted_tool_call_then_text(openai_client: openai.OpenAI, platform: Platform) -> None:
    question = {"role": "user", "content": "Please list files here"}

    first = openai_client.responses.create(model=platform.scripted_model, input=[question])

    assert len(first.output) == 1
    call = first.output[0]
    assert call.type == "function_call"
    assert call.name == SCRIPT_TOOL_NAME
    assert json.loads(call.arguments) == {"path": "."}
    assert call.call_id

    second = openai_client.responses.create(
        model=platform.scripted_model,
        input=[
            question,
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "a.txt b.txt"},
        ],
    )

    assert second.output_text == "Files: a.txt b.txt"


def test_scripted_tool_call_streamed(openai_client: openai.OpenAI, platform: Platform) -> None:
    stream = openai_client.responses.create(
        model=platform.scripted_model, input="list files, please", stream=True
    )
    events = list(stream)

    assert events[-1].type == "response.completed"
    output = events[-1].response.output
    assert [item.type for item in output] == ["function_call"]
    assert output[0].name == SCRIPT_TOOL_NAME
    arguments = "".join(
        event.delta for event in events if event.type == "response.function_call_arguments.delta"
    )
    assert json.loads(arguments) == {"path": "."}


def test_test_model_scripted(
    member: ConnectClient, upstream: FakeProvider, platform: Platform
) -> None:
    result = member.call(f"{LLM}/TestModel", {"modelId": platform.scripted_model})

    assert result["outputText"] == "Scripted reply to Hello, world"
    assert upstream.requests == []


def test_test_model_http_provider(
    member: ConnectClient, upstream: FakeProvider, platform: Platform
) -> None:
    upstream.plan(JsonReply(body=responses_body("pong", "gpt-remote")))

    result = member.call(f"{LLM}/TestModel", {"modelId": platform.responses_model})

    assert result["outputText"] == "pong"
    assert result["duration"].endswith("s")
    request = upstream.single_request()
    assert request.path == "/openai/v1/responses"
    assert request.json() == {"model": "gpt-remote", "input": "Hello, world"}
    assert request.header("authorization") == f"Bearer {CANARY}"


def test_test_model_anthropic_provider(
    member: ConnectClient, upstream: FakeProvider, platform: Platform
) -> None:
    upstream.plan(JsonReply(body=anthropic_message("Claude pong", "claude-remote")))

    result = member.call(f"{LLM}/TestModel", {"modelId": platform.anthropic_model})

    assert result["outputText"] == "Claude pong"
    request = upstream.single_request()
    assert request.path == "/anthropic/v1/messages"
    assert request.json() == {
        "model": "claude-remote",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hello, world"}],
    }
    assert request.header("anthropic-version") == "2023-06-01"
    assert request.header("x-api-key") == CANARY


def test_test_model_upstream_error(
    member: ConnectClient, upstream: FakeProvider, platform: Platform
) -> None:
    upstream.plan(JsonReply(status=500, body={"error": {"message": "provider exploded"}}))

    with pytest.raises(ConnectError) as raised:
        member.call(f"{LLM}/TestModel", {"modelId": platform.responses_model})

    assert raised.value.code == "failed_precondition"
    assert raised.value.message.startswith("provider returned HTTP 500: ")
    assert "provider exploded" in raised.value.message
