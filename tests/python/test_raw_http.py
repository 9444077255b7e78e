"""Proxy behaviour below what the SDKs show, checked with raw HTTP/1.1
requests: header filtering, byte-exact relaying, compression, disconnects,
body limits and the per-call log line."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import time
import uuid
from dataclasses import dataclass

import pytest

from agyn_server import AgynServer
from fake_provider import FakeProvider, JsonReply, StreamReply
from provider_replies import (
    USAGE_INPUT_TOKENS,
    USAGE_OUTPUT_TOKENS,
    responses_body,
    responses_stream,
)
from suite import CANARY, Platform, Users

MAX_BODY_BYTES = 64 << 20
LOG_WAIT_SECONDS = 5


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def raw_post(
    server: AgynServer, path: str, body: bytes, headers: list[tuple[str, str]]
) -> RawResponse:
    """POST `body` with exactly `headers`, plus Host and Content-Length, and read the reply."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return RawResponse(response.status, response.headers, response.read())
    finally:
        connection.close()


def bearer(users: Users) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "application/json"),
        ("Authorization", f"Bearer {users.member_token}"),
    ]


def responses_request(platform: Platform, **fields: object) -> bytes:
    return json.dumps({"model": platform.responses_model, "input": "Hi", **fields}).encode()


def test_hop_by_hop_and_platform_headers_removed(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(JsonReply(body=responses_body("ok", "gpt-remote")))
    headers = bearer(users) + [
        ("Connection", "keep-alive, x-hop-header"),
        ("x-hop-header", "named in Connection"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic cHJveHk6cHJveHk="),
        ("x-api-key", "caller-key"),
        ("x-identity-id", "forged"),
        ("x-workload-id", "forged"),
        ("x-agyn-thread-id", "thread-7"),
        ("x-agyn-anything", "internal"),
        ("openai-organization", "org-kept"),
        ("x-caller-note", "kept"),
    ]

    response = raw_post(server, "/v1/responses", responses_request(platform), headers)

    assert response.status == 200, response.body
    request = upstream.single_request()
    removed = [
        "x-hop-header",
        "keep-alive",
        "proxy-authorization",
        "x-identity-id",
        "x-workload-id",
        "x-agyn-thread-id",
        "x-agyn-anything",
    ]
    for name in removed:
        assert request.header(name) is None, f"{name} was forwarded"
    assert request.header("x-api-key") is None
    assert request.header("authorization") == f"Bearer {CANARY}"
    assert request.header("openai-organization") == "org-kept"
    assert request.header("x-caller-note") == "kept"


def test_body_bytes_preserved_except_model(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(JsonReply(body=responses_body("ok", "gpt-remote")))
    template = '{ "input" : "keep   this",\n  "model":"%s", "zz_unknown": {"b": 1, "a": [2, 1]} }'
    sent = (template % platform.responses_model).encode()

    response = raw_post(server, "/v1/responses?beta=true&x=1", sent, bearer(users))

    assert response.status == 200, response.body
    assert response.json()["output"][0]["content"][0]["text"] == "ok"
    request = upstream.single_request()
    assert request.body == (template % "gpt-remote").encode()
    assert request.query == "beta=true&x=1"
    assert request.header("content-length") == str(len(request.body))


def test_api_prefix_serves_proxy(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    upstream.plan(JsonReply(body=responses_body("via api", "gpt-remote")))

    response = raw_post(server, "/api/v1/responses", responses_request(platform), bearer(users))

    assert response.status == 200, response.body
    assert upstream.single_request().path == "/openai/v1/responses"


def test_compressed_reply_relayed_verbatim(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    compressed = gzip.compress(json.dumps(responses_body("zipped", "gpt-remote")).encode())
    upstream.plan(JsonReply(body=compressed, headers={"Content-Encoding": "gzip"}))
    headers = bearer(users) + [("Accept-Encoding", "gzip")]

    response = raw_post(server, "/v1/responses", responses_request(platform), headers)

    assert response.status == 200
    assert response.headers.get("content-encoding") == "gzip"
    assert response.body == compressed
    assert upstream.single_request().header("accept-encoding") == "gzip"


def test_event_stream_relayed_byte_for_byte(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    events = responses_stream(["byte ", "exact"], "gpt-remote")
    reply = upstream.plan(StreamReply(events=events))
    reply.release.set()

    response = raw_post(
        server, "/v1/responses", responses_request(platform, stream=True), bearer(users)
    )

    assert response.status == 200
    assert response.headers.get("content-type", "").startswith("text/event-stream")
    assert response.headers.get("x-accel-buffering") == "no"
    assert response.body == b"".join(events)


def test_client_disconnect_aborts_upstream(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    events = responses_stream(["never ", "read"], "gpt-remote")
    reply = upstream.plan(StreamReply(events=events[:1], keep_open=True))
    body = responses_request(platform, stream=True)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    connection.putrequest("POST", "/v1/responses", skip_accept_encoding=True)
    for name, value in bearer(users):
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()

    first = response.read1(65536)
    assert first.startswith(b"event: response.created"), first
    response.close()
    connection.close()
    reply.release.set()

    assert reply.disconnected.wait(5), "the provider connection stayed open after the caller left"


@pytest.mark.parametrize(("path", "anthropic"), [("/v1/responses", False), ("/v1/messages", True)])
def test_non_json_body_rejected(
    server: AgynServer, upstream: FakeProvider, users: Users, path: str, anthropic: bool
) -> None:
    response = raw_post(server, path, b"model=not-json", bearer(users))

    assert response.status == 400
    body = response.json()
    if anthropic:
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("path", "error_type"),
    [("/v1/responses", "invalid_request_error"), ("/v1/messages", "request_too_large")],
)
def test_oversized_body_rejected(
    server: AgynServer, upstream: FakeProvider, users: Users, path: str, error_type: str
) -> None:
    prefix = b'{"model": "00000000-0000-0000-0000-000000000000", "pad": "'
    suffix = b'"}'
    padding = MAX_BODY_BYTES + 1 - len(prefix) - len(suffix)
    body = prefix + b"a" * padding + suffix

    response = raw_post(server, path, body, bearer(users))

    assert response.status == 413
    parsed = response.json()
    assert parsed["error"]["type"] == error_type
    assert upstream.requests == []


def wait_for_log_line(server: AgynServer, marker: str) -> str:
    """Return the first server log line that contains `marker`, waiting up to 5 s."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        for line in server.log_path.read_text(errors="replace").splitlines():
            if marker in line and "LLM proxy call" in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no LLM proxy log line with {marker} within {LOG_WAIT_SECONDS} s")
        time.sleep(0.05)


def test_call_logged_without_headers_or_body(
    server: AgynServer, upstream: FakeProvider, platform: Platform, users: Users
) -> None:
    events = responses_stream(["logged"], "gpt-remote")
    reply = upstream.plan(StreamReply(events=events))
    reply.release.set()
    request_id = f"python-log-{uuid.uuid4()}"
    body_marker = f"body-marker-{uuid.uuid4()}"
    header_marker = f"header-marker-{uuid.uuid4()}"
    thread_id = str(uuid.uuid4())
    headers = bearer(users) + [
        ("x-request-id", request_id),
        ("x-agyn-thread-id", thread_id),
        ("x-caller-note", header_marker),
    ]

    response = raw_post(
        server,
        "/v1/responses",
        responses_request(platform, input=body_marker, stream=True),
        headers,
    )

    assert response.status == 200
    line = wait_for_log_line(server, request_id)
    assert platform.responses_model in line
    assert platform.provider_ids[0] in line
    assert f"thread_id={thread_id}" in line
    assert "/v1/responses" in line
    assert re.search(r"upstream_status\W+200\b", line), line
    assert re.search(r"streamed\W+true\b", line), line
    assert re.search(rf"input_tokens\W+{USAGE_INPUT_TOKENS}\b", line), line
    assert re.search(rf"output_tokens\W+{USAGE_OUTPUT_TOKENS}\b", line), line
    log = server.log_path.read_text(errors="replace")
    assert body_marker not in log, "a request body reached the server log"
    assert header_marker not in log, "a request header reached the server log"
    assert users.member_token not in log, "the caller's API token reached the server log"
