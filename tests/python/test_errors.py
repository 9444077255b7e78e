"""Errors of the LLM proxy as the SDKs see them: the proxy's own errors in
the caller's API shape, and provider errors relayed unchanged."""

from __future__ import annotations

import uuid

import anthropic
import openai
import pytest

from agyn_server import AgynServer, free_ports
from connect_client import ConnectClient
from fake_provider import FakeProvider, JsonReply
from suite import (
    CANARY,
    Platform,
    Users,
    anthropic_client_for,
    create_model,
    create_provider,
    openai_client_for,
)


def assert_openai_shape(error: openai.APIStatusError, status: int, error_type: str) -> str:
    """Assert the status and the OpenAI error body, and return its message."""
    assert error.status_code == status
    body = error.response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["code"], str)
    return body["error"]["message"]


def assert_anthropic_shape(error: anthropic.APIStatusError, status: int, error_type: str) -> str:
    """Assert the status and the Anthropic error body, and return its message."""
    assert error.status_code == status
    body = error.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    return body["error"]["message"]


def test_outsider_gets_permission_error(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    client = openai_client_for(server, users.outsider_token)

    with pytest.raises(openai.PermissionDeniedError) as raised:
        client.responses.create(model=platform.responses_model, input="Let me in")

    message = assert_openai_shape(raised.value, 403, "permission_error")
    assert platform.responses_model in message
    assert upstream.requests == []


def test_outsider_gets_anthropic_permission_error(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    client = anthropic_client_for(server, users.outsider_token)

    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        client.messages.create(
            model=platform.anthropic_model,
            max_tokens=16,
            messages=[{"role": "user", "content": "Let me in"}],
        )

    assert_anthropic_shape(raised.value, 403, "permission_error")
    assert upstream.requests == []


def test_invalid_token_is_unauthenticated(server: AgynServer, platform: Platform) -> None:
    client = openai_client_for(server, "agyn_" + "0" * 44)

    with pytest.raises(openai.AuthenticationError) as raised:
        client.responses.create(model=platform.responses_model, input="Hi")

    assert_openai_shape(raised.value, 401, "authentication_error")


def test_unknown_model_is_not_found(openai_client: openai.OpenAI, upstream: FakeProvider) -> None:
    model_id = str(uuid.uuid4())

    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.responses.create(model=model_id, input="Hi")

    message = assert_openai_shape(raised.value, 404, "not_found_error")
    assert message == f"model {model_id} not found"
    assert upstream.requests == []


def test_unknown_model_anthropic_shape(anthropic_client: anthropic.Anthropic) -> None:
    model_id = str(uuid.uuid4())

    with pytest.raises(anthropic.NotFoundError) as raised:
        anthropic_client.messages.create(
            model=model_id, max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
        )

    message = assert_anthropic_shape(raised.value, 404, "not_found_error")
    assert message == f"model {model_id} not found"


def test_non_uuid_model_is_bad_request(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.responses.create(model="gpt-5", input="Hi")

    message = assert_openai_shape(raised.value, 400, "invalid_request_error")
    assert message == "model must be a platform model id"


def test_non_uuid_model_anthropic_shape(anthropic_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        anthropic_client.messages.create(
            model="claude-opus", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
        )

    message = assert_anthropic_shape(raised.value, 400, "invalid_request_error")
    assert message == "model must be a platform model id"


def test_protocol_mismatch_names_route(
    openai_client: openai.OpenAI, upstream: FakeProvider, platform: Platform
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.chat.completions.create(
            model=platform.responses_model, messages=[{"role": "user", "content": "Hi"}]
        )

    message = assert_openai_shape(raised.value, 400, "invalid_request_error")
    assert message == (
        f"model {platform.responses_model} uses protocol RESPONSES; call /v1/responses"
    )
    assert upstream.requests == []


def test_unknown_route_is_not_found(openai_client: openai.OpenAI, platform: Platform) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.embeddings.create(model=platform.responses_model, input="Hi")

    assert_openai_shape(raised.value, 404, "not_found_error")


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(429, openai.RateLimitError), (500, openai.InternalServerError)],
)
def test_provider_error_relayed_unchanged(
    openai_client: openai.OpenAI,
    upstream: FakeProvider,
    platform: Platform,
    status: int,
    error_class: type[openai.APIStatusError],
) -> None:
    provider_body = {
        "error": {
            "message": f"provider status {status}",
            "type": "provider_specific",
            "code": f"code_{status}",
        }
    }
    upstream.plan(
        JsonReply(
            status=status,
            body=provider_body,
            headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0"},
        )
    )

    with pytest.raises(error_class) as raised:
        openai_client.responses.create(model=platform.responses_model, input="Hi")

    assert raised.value.status_code == status
    assert raised.value.response.json() == provider_body
    assert raised.value.response.headers.get("x-ratelimit-remaining-requests") == "0"
    assert raised.value.response.headers.get("retry-after") == "7"
    assert len(upstream.requests) == 1


def test_provider_error_relayed_to_anthropic_client(
    anthropic_client: anthropic.Anthropic, upstream: FakeProvider, platform: Platform
) -> None:
    provider_body = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    upstream.plan(JsonReply(status=529, body=provider_body))

    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic_client.messages.create(
            model=platform.anthropic_model,
            max_tokens=16,
            messages=[{"role": "user", "content": "Hi"}],
        )

    assert raised.value.status_code == 529
    assert raised.value.response.json() == provider_body
    assert len(upstream.requests) == 1


def test_unreachable_provider_is_bad_gateway(
    admin: ConnectClient, openai_client: openai.OpenAI, platform: Platform
) -> None:
    # Nothing listens on a port that was just free.
    (closed_port,) = free_ports(1)
    provider_id = create_provider(
        admin,
        platform.organization_id,
        name="unreachable",
        endpoint=f"http://127.0.0.1:{closed_port}",
        protocol="PROTOCOL_RESPONSES",
        authMethod="AUTH_METHOD_BEARER",
        token=CANARY,
    )
    model_id = create_model(admin, platform.organization_id, provider_id, "gone-remote")

    with pytest.raises(openai.APIStatusError) as raised:
        openai_client.responses.create(model=model_id, input="Hi")

    message = assert_openai_shape(raised.value, 502, "api_error")
    assert message.startswith("provider unreachable: ")
    assert CANARY not in message
