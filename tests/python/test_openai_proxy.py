"""The LLM proxy called with the official OpenAI SDK: Responses and Chat
Completions, streamed and not, against the fake provider."""

from __future__ import annotations

import openai

from fake_provider import FakeProvider, JsonReply, RecordedRequest, StreamReply
from provider_replies import chat_body, chat_stream, responses_body, responses_stream
from suite import CANARY, CHAT_PROVIDER_TOKEN, CUSTOM_HEADER_NAME, Platform, Users

BUFFERED = "the proxy delivered the first event only after the provider had sent the rest"


def assert_caller_credentials_removed(request: RecordedRequest, users: Users) -> None:
    """Assert that the caller's agyn token reached the provider in no header."""
    for name, value in request.headers:
        assert users.member_token not in value, f"caller token forwarded in {name}"
    assert request.header("x-api-key") is None


def test_responses_call_reaches_provider(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(
        JsonReply(
            body=responses_body("Hello from the provider", "gpt-remote"),
            headers={"x-provider-request-id": "provider-req-1"},
        )
    )

    raw = openai_client.responses.with_raw_response.create(
        model=platform.responses_model,
        input="Say hello",
        extra_query={"beta": "true"},
        extra_headers={"openai-beta": "responses=v1"},
    )
    response = raw.parse()

    assert response.output_text == "Hello from the provider"
    assert raw.headers.get("x-provider-request-id") == "provider-req-1"
    request = upstream.single_request()
    assert request.path == "/openai/v1/responses"
    assert request.query == "beta=true"
    body = request.json()
    assert body["model"] == "gpt-remote"
    assert body["input"] == "Say hello"
    assert request.header("authorization") == f"Bearer {CANARY}"
    assert request.header("openai-beta") == "responses=v1"
    assert_caller_credentials_removed(request, users)


def test_responses_stream_relays_incrementally(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform
) -> None:
    reply = upstream.plan(StreamReply(events=responses_stream(["Hello, ", "stream"], "gpt-remote")))

    raw = openai_client.responses.with_raw_response.create(
        model=platform.responses_model, input="Stream a greeting", stream=True
    )
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    assert raw.headers.get("x-accel-buffering") == "no"
    events = iter(raw.parse())
    first = next(events)
    assert first.type == "response.created"
    assert not reply.rest_started.is_set(), BUFFERED
    reply.release.set()
    rest = list(events)

    assert not reply.timed_out, BUFFERED
    assert [event.type for event in rest] == [
        "response.output_text.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert "".join(event.delta for event in rest[:-1]) == "Hello, stream"
    assert rest[-1].response.output_text == "Hello, stream"
    body = upstream.single_request().json()
    assert body["model"] == "gpt-remote"
    assert body["stream"] is True


def test_chat_completion_reaches_provider(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(JsonReply(body=chat_body("Chat reply", "chat-remote")))

    completion = openai_client.chat.completions.create(
        model=platform.chat_model,
        messages=[{"role": "user", "content": "Hi there"}],
        extra_query={"beta": "true"},
        extra_headers={"openai-beta": "assistants=v2"},
    )

    assert completion.choices[0].message.content == "Chat reply"
    request = upstream.single_request()
    assert request.path == "/chat/v1/chat/completions"
    assert request.query == "beta=true"
    body = request.json()
    assert body["model"] == "chat-remote"
    assert body["messages"] == [{"role": "user", "content": "Hi there"}]
    assert request.header("authorization") == f"Bearer {CHAT_PROVIDER_TOKEN}"
    assert request.header("openai-beta") == "assistants=v2"
    assert_caller_credentials_removed(request, users)


def test_chat_completion_stream_relays_incrementally(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform
) -> None:
    reply = upstream.plan(StreamReply(events=chat_stream(["Chunked ", "chat"], "chat-remote")))

    stream = openai_client.chat.completions.create(
        model=platform.chat_model,
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
    )
    chunks = iter(stream)
    first = next(chunks)
    assert first.choices[0].delta.role == "assistant"
    assert not reply.rest_started.is_set(), BUFFERED
    reply.release.set()
    rest = list(chunks)

    assert not reply.timed_out, BUFFERED
    text = "".join(chunk.choices[0].delta.content or "" for chunk in rest)
    assert text == "Chunked chat"
    assert rest[-1].choices[0].finish_reason == "stop"
    assert upstream.single_request().json()["stream"] is True


def test_custom_headers_replace_caller_headers(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(JsonReply(body=chat_body("Custom reply", "custom-remote")))

    completion = openai_client.chat.completions.create(
        model=platform.custom_header_model,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={CUSTOM_HEADER_NAME: "caller-value"},
    )

    assert completion.choices[0].message.content == "Custom reply"
    request = upstream.single_request()
    # The endpoint is a full operation URL, which the proxy uses as is.
    assert request.path == "/custom/v1/chat/completions"
    assert request.header_values(CUSTOM_HEADER_NAME) == [CANARY]
    assert request.header("authorization") is None
    assert_caller_credentials_removed(request, users)
