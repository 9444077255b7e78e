"""A fake LLM provider on loopback that records requests and sends planned replies.

Tests plan one reply per expected upstream request, in order. A planned
reply is either a JSON body with a status or an SSE stream. A stream sends
its first event, then holds the rest until the test releases it, which
proves that the proxy relays events as they arrive: a proxy that buffers
would deliver nothing until the hold times out.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# How long a stream holds its remaining events for the release. A hold that
# runs out means the proxy buffered, because the client never got the first
# event and so never released the rest.
STREAM_HOLD_SECONDS = 5.0
KEEP_OPEN_INTERVAL_SECONDS = 0.02


@dataclass
class RecordedRequest:
    """One request that the fake provider received."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        """Return every value of header `name`, compared case-insensitively."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        """Return the value of header `name`, or None when absent.

        Raises AssertionError when the header was sent more than once.
        """
        values = self.header_values(name)
        assert len(values) <= 1, f"header {name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class JsonReply:
    """A non-streamed reply: `status`, JSON `body` and extra `headers`."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    """An SSE reply whose events after the first wait for `release`.

    `rest_started` is set just before the remaining events are written, and
    `timed_out` is True when they were written because the hold of
    STREAM_HOLD_SECONDS ran out rather than because of the release.

    With `keep_open`, the stream does not end after the events: it sends an
    SSE comment every KEEP_OPEN_INTERVAL_SECONDS until a write fails, which
    sets `disconnected`, or until STREAM_HOLD_SECONDS have passed.
    """

    events: list[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    keep_open: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    rest_started: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False


def sse_event(data: Any, event: str | None = None) -> bytes:
    """Encode one SSE event whose data is `data` as JSON, or verbatim when a string."""
    payload = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


class FakeProvider:
    """The provider server on `127.0.0.1` at `url`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._replies: queue.Queue[JsonReply | StreamReply] = queue.Queue()
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the http.server hook name)
                provider._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget recorded requests and drop replies that no request used."""
        with self._lock:
            self.requests.clear()
        while True:
            try:
                self._replies.get_nowait()
            except queue.Empty:
                return

    def plan(self, reply: JsonReply | StreamReply) -> JsonReply | StreamReply:
        """Queue `reply` for the next request and return it."""
        self._replies.put(reply)
        return reply

    def single_request(self) -> RecordedRequest:
        """Return the only recorded request. Raises AssertionError unless there is exactly one."""
        with self._lock:
            recorded = list(self.requests)
        assert len(recorded) == 1, (
            f"expected 1 upstream request, got {len(recorded)}: "
            f"{[request.path for request in recorded]}"
        )
        return recorded[0]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        recorded = RecordedRequest(
            method=handler.command,
            path=url.path,
            query=url.query,
            headers=list(handler.headers.items()),
            body=read_body(handler),
        )
        with self._lock:
            self.requests.append(recorded)
        try:
            reply = self._replies.get_nowait()
        except queue.Empty:
            reply = JsonReply(
                status=500,
                body={"error": {"message": f"fake provider: no reply planned for {url.path}"}},
            )
        if isinstance(reply, StreamReply):
            send_stream(handler, reply)
        else:
            send_json(handler, reply)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Read the request body, whether sized by Content-Length or chunked."""
    length = handler.headers.get("Content-Length")
    if length is not None:
        return handler.rfile.read(int(length))
    if "chunked" not in handler.headers.get("Transfer-Encoding", "").lower():
        return b""
    body = bytearray()
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            # Skip trailers up to the blank line that ends the message.
            while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        body += handler.rfile.read(size)
        handler.rfile.readline()


def send_json(handler: BaseHTTPRequestHandler, reply: JsonReply) -> None:
    body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
    handler.send_response(reply.status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def send_stream(handler: BaseHTTPRequestHandler, reply: StreamReply) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    first, *rest = reply.events
    write_chunk(handler, first)
    if not reply.release.wait(STREAM_HOLD_SECONDS):
        reply.timed_out = True
    reply.rest_started.set()
    for event in rest:
        write_chunk(handler, event)
    if reply.keep_open:
        keep_open(handler, reply)
        return
    write_chunk(handler, b"")


def keep_open(handler: BaseHTTPRequestHandler, reply: StreamReply) -> None:
    """Send SSE comments until the reader goes away or the hold runs out."""
    deadline = time.monotonic() + STREAM_HOLD_SECONDS
    while time.monotonic() < deadline:
        try:
            write_chunk(handler, b": keep-alive\n\n")
        except OSError:
            reply.disconnected.set()
            handler.close_connection = True
            return
        time.sleep(KEEP_OPEN_INTERVAL_SECONDS)
    write_chunk(handler, b"")


def write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    """Write one chunk of a chunked body and flush it. Empty `data` ends the body."""
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()
