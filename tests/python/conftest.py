"""Fixtures of the LLM proxy tests: one `agyn serve`, a fake provider, an
OIDC issuer for extra users, and an organization with providers and models."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from agyn_server import AgynServer
from connect_client import ConnectClient
from fake_issuer import FakeIssuer
from fake_provider import FakeProvider
from suite import (
    SERVER_LOG_NAME,
    Platform,
    Users,
    anthropic_client_for,
    create_platform,
    create_users,
    openai_client_for,
)

# SDK settings from the environment (keys, base URLs, organization headers)
# would change what the clients send.
for name in list(os.environ):
    if name.startswith(("OPENAI_", "ANTHROPIC_")):
        del os.environ[name]
# Loopback calls must not go through a proxy from the environment.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def log_dir() -> Path:
    """Directory of the server log: `$AGYN_TEST_LOG_DIR`, else a new temporary directory."""
    configured = os.environ.get("AGYN_TEST_LOG_DIR")
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="agyn-python-logs-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def issuer() -> Iterator[FakeIssuer]:
    fake = FakeIssuer()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def provider_server() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(provider_server: FakeProvider) -> FakeProvider:
    """The fake provider with no recorded requests and no planned replies."""
    provider_server.reset()
    return provider_server


@pytest.fixture(scope="session")
def server(log_dir: Path, issuer: FakeIssuer) -> Iterator[AgynServer]:
    agyn = AgynServer(log_dir / SERVER_LOG_NAME, ["--oidc-issuer", issuer.issuer])
    agyn.start()
    yield agyn
    agyn.stop()


@pytest.fixture(scope="session")
def admin(server: AgynServer) -> ConnectClient:
    """Connect client of the bootstrap cluster admin, which creates the test organization."""
    return ConnectClient(server.origin, server.admin_token)


@pytest.fixture(scope="session")
def platform(admin: ConnectClient, provider_server: FakeProvider) -> Platform:
    return create_platform(admin, provider_server.url)


@pytest.fixture(scope="session")
def users(
    server: AgynServer, issuer: FakeIssuer, admin: ConnectClient, platform: Platform
) -> Users:
    return create_users(server, issuer, admin, platform.organization_id)


@pytest.fixture
def member(server: AgynServer, users: Users) -> ConnectClient:
    """Connect client of the organization member."""
    return ConnectClient(server.origin, users.member_token)


@pytest.fixture
def openai_client(server: AgynServer, users: Users) -> openai.OpenAI:
    """An OpenAI client that authenticates as the organization member."""
    return openai_client_for(server, users.member_token)


@pytest.fixture(params=["x-api-key", "authorization"])
def anthropic_client(
    request: pytest.FixtureRequest, server: AgynServer, users: Users
) -> anthropic.Anthropic:
    """An Anthropic client that sends the member's API token in x-api-key or as a bearer token."""
    return anthropic_client_for(server, users.member_token, request.param)
