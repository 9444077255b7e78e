"""A minimal ConnectRPC client: unary calls with JSON bodies over HTTP/1.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_SECONDS = 30
# Loopback calls must not go through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ConnectError(Exception):
    """A failed Connect call: the Connect error code, its message and the HTTP status."""

    def __init__(self, method: str, http_status: int, code: str, message: str) -> None:
        super().__init__(f"{method} failed with HTTP {http_status} {code}: {message}")
        self.http_status = http_status
        self.code = code
        self.message = message


class ConnectClient:
    """Calls `<origin>/<service>/<method>` with a bearer token."""

    def __init__(self, origin: str, token: str) -> None:
        self.origin = origin
        self.token = token

    def call(self, method: str, request: dict[str, Any]) -> dict[str, Any]:
        """Send `request` to `method`, such as `agynio.api.llm.v1.LLMGateway/TestModel`.

        Returns the decoded response message. Raises ConnectError when the
        server returns a non-2xx status.
        """
        http_request = urllib.request.Request(
            f"{self.origin}/{method}",
            data=json.dumps(request).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.token}",
            },
        )
        try:
            with OPENER.open(http_request, timeout=TIMEOUT_SECONDS) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                details = json.loads(body)
            except ValueError:
                details = {"code": "unknown", "message": body.decode(errors="replace")}
            raise ConnectError(
                method, error.code, details.get("code", ""), details.get("message", "")
            ) from None
