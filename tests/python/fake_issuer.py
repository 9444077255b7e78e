"""An OIDC issuer on loopback that signs EdDSA access tokens.

It serves the discovery document, the JWKS and a userinfo endpoint, so
`agyn serve --oidc-issuer <issuer>` creates a user at the first sign-in of
a subject. The tests use it to get a second user, because no public method
creates users.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ISSUER_PATH = "/realms/agyn-tests"
KEY_ID = "python-tests-1"
TOKEN_LIFETIME_SECONDS = 300


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_base64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeIssuer:
    """The issuer at `issuer`, such as `http://127.0.0.1:<port>/realms/agyn-tests`.

    Its userinfo endpoint does not verify the token: it returns the profile
    stored for the token's `sub`.
    """

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self._profiles: dict[str, dict[str, Any]] = {}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the http.server hook name)
                issuer._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}{ISSUER_PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_profile(self, subject: str, profile: dict[str, Any]) -> None:
        """Store the userinfo claims returned for `subject`."""
        self._profiles[subject] = profile

    def token(self, subject: str) -> str:
        """Sign an access token for `subject` that is valid for five minutes."""
        now = int(time.time())
        header = {"alg": "EdDSA", "typ": "JWT", "kid": KEY_ID}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_SECONDS,
        }
        signing_input = ".".join(
            base64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode())
        return f"{signing_input}.{base64url(signature)}"

    def _jwks(self) -> dict[str, Any]:
        public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "use": "sig",
                    "kid": KEY_ID,
                    "x": base64url(public_key),
                }
            ]
        }

    def _userinfo(self, authorization: str) -> dict[str, Any] | None:
        if not authorization.startswith("Bearer "):
            return None
        parts = authorization.removeprefix("Bearer ").split(".")
        if len(parts) != 3:
            return None
        subject = json.loads(decode_base64url(parts[1])).get("sub")
        if not isinstance(subject, str):
            return None
        return {**self._profiles.get(subject, {}), "sub": subject}

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        body: dict[str, Any] | None
        if path == f"{ISSUER_PATH}/.well-known/openid-configuration":
            body = {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/jwks",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "id_token_signing_alg_values_supported": ["EdDSA"],
            }
        elif path == f"{ISSUER_PATH}/jwks":
            body = self._jwks()
        elif path == f"{ISSUER_PATH}/userinfo":
            body = self._userinfo(handler.headers.get("Authorization", ""))
            if body is None:
                send(handler, 401, {"error": "invalid_token"})
                return
        else:
            send(handler, 404, {"error": f"unknown path {path}"})
            return
        send(handler, 200, body)


def send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
