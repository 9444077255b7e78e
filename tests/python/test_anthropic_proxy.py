"""The LLM proxy called with the official Anthropic SDK, authenticated by
x-api-key or by a bearer token, against a provider that takes its own
x-api-key."""

from __future__ import annotations

import anthropic

from fake_provider import FakeProvider, JsonReply, RecordedRequest, StreamReply
from provider_replies import anthropic_message, anthropic_stream
from suite import CANARY, Platform, Users

BUFFERED = "the proxy delivered the first event only after the provider had sent the rest"


def sdk_anthropic_version(client: anthropic.Anthropic) -> str:
    """Return the anthropic-version header that the SDK sends."""
    version = client.default_headers["anthropic-version"]
    assert isinstance(version, str)
    return version


def assert_provider_credential(request: RecordedRequest, users: Users) -> None:
    """Assert that the provider got its own key and none of the caller's credentials."""
    assert request.header("x-api-key") == CANARY
    assert request.header("authorization") is None
    for name, value in request.headers:
        assert users.member_token not in value, f"caller token forwarded in {name}"


def test_messages_create_reaches_provider(
    anthropic_client: anthropic.Anthropic, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(JsonReply(body=anthropic_message("Hello from Claude", "claude-remote")))

    message = anthropic_client.messages.create(
        model=platform.anthropic_model,
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"anthropic-beta": "tools-2024-04-04"},
        extra_query={"beta": "true"},
    )

    assert message.content[0].text == "Hello from Claude"
    request = upstream.single_request()
    assert request.path == "/anthropic/v1/messages"
    assert request.query == "beta=true"
    body = request.json()
    assert body["model"] == "claude-remote"
    assert body["max_tokens"] == 64
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert request.header("anthropic-version") == sdk_anthropic_version(anthropic_client)
    assert request.header("anthropic-beta") == "tools-2024-04-04"
    assert_provider_credential(request, users)


def test_messages_stream_relays_incrementally(
    anthropic_client: anthropic.Anthropic, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    reply = upstream.plan(
        StreamReply(events=anthropic_stream(["Streamed ", "Claude"], "claude-remote"))
    )

    stream = anthropic_client.messages.create(
        model=platform.anthropic_model,
        max_tokens=64,
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
    )
    events = iter(stream)
    first = next(events)
    assert first.type == "message_start"
    assert not reply.rest_started.is_set(), BUFFERED
    reply.release.set()
    rest = list(events)

    assert not reply.timed_out, BUFFERED
    assert [event.type for event in rest] == [
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(event.delta.text for event in rest if event.type == "content_block_delta")
    assert text == "Streamed Claude"
    request = upstream.single_request()
    assert request.json()["stream"] is True
    assert request.header("anthropic-version") == sdk_anthropic_version(anthropic_client)
    assert_provider_credential(request, users)


def test_count_tokens_reaches_provider(
    anthropic_client: anthropic.Anthropic, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(JsonReply(body={"input_tokens": 42}))

    counted = anthropic_client.messages.count_tokens(
        model=platform.anthropic_model,
        messages=[{"role": "user", "content": "Count me"}],
    )

    assert counted.input_tokens == 42
    request = upstream.single_request()
    assert request.path == "/anthropic/v1/messages/count_tokens"
    assert request.json()["model"] == "claude-remote"
    assert_provider_credential(request, users)
