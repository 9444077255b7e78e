"""Shared constants and setup steps of the LLM proxy tests.

Every provider credential that the platform must keep secret, and one local
secret value, is the canary string (`$AGYN_TEST_CANARY`). After the suite,
`canary_check.sh` asserts that it appears in no server log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import anthropic
import openai

from agyn_server import AgynServer
from connect_client import ConnectClient
from fake_issuer import FakeIssuer

DEFAULT_CANARY = "agyn-canary-7c1f0e9b4d2a"
CANARY = os.environ.get("AGYN_TEST_CANARY") or DEFAULT_CANARY
SERVER_LOG_NAME = "python-llm-proxy-server.log"
CLIENT_TIMEOUT_SECONDS = 20

ORGANIZATIONS = "agynio.api.organizations.v1.OrganizationsGateway"
USERS = "agynio.api.users.v1.UsersGateway"
LLM = "agynio.api.llm.v1.LLMGateway"
SECRETS = "agynio.api.secrets.v1.SecretsGateway"

# Token of the Chat Completions provider. It differs from the canary so a
# test can tell which provider's credential reached the upstream.
CHAT_PROVIDER_TOKEN = "chat-provider-token-5b0d"
# Header that the custom-headers provider stores, with the canary as value.
CUSTOM_HEADER_NAME = "x-provider-key"

SCRIPT_GREETING = "Scripted reply to {{input}}"
SCRIPT_TOOL_NAME = "list_directory"
SCRIPT_TOOL_ARGUMENTS = '{"path": "."}'
SCRIPT_AFTER_TOOL = "Files: {{tool_output}}"


@dataclass
class Platform:
    """Ids of what the suite creates in its organization."""

    organization_id: str
    responses_model: str
    chat_model: str
    custom_header_model: str
    anthropic_model: str
    scripted_model: str
    provider_ids: list[str]
    secret_id: str


@dataclass
class Users:
    """API tokens of an organization member and of a user outside the organization."""

    member_token: str
    outsider_token: str


def sign_in(server: AgynServer, issuer: FakeIssuer, subject: str, username: str) -> tuple[str, str]:
    """Create the user `subject` by signing in over OIDC and mint an API token for it.

    Returns the user's identity id and the plaintext API token.
    """
    issuer.set_profile(subject, {"preferred_username": username, "name": username.title()})
    oidc = ConnectClient(server.origin, issuer.token(subject))
    me = oidc.call(f"{USERS}/GetMe", {})
    identity_id = me["user"]["meta"]["id"]
    created = oidc.call(f"{USERS}/CreateAPIToken", {"name": "python tests"})
    return identity_id, created["plaintextToken"]


def create_provider(admin: ConnectClient, organization_id: str, **fields: object) -> str:
    """Create a provider from Connect JSON `fields` and return its id."""
    response = admin.call(f"{LLM}/CreateProvider", {"organizationId": organization_id, **fields})
    return response["provider"]["meta"]["id"]


def create_model(
    admin: ConnectClient, organization_id: str, provider_id: str, remote_name: str
) -> str:
    """Create a model named after its `remote_name` and return its id."""
    response = admin.call(
        f"{LLM}/CreateModel",
        {
            "organizationId": organization_id,
            "name": remote_name,
            "providerId": provider_id,
            "remoteName": remote_name,
        },
    )
    return response["model"]["meta"]["id"]


def scripted_rules() -> list[dict[str, object]]:
    """Script of the scripted provider: a tool call then a text, and a catch-all greeting."""
    return [
        {
            "whenInputContains": "list files",
            "steps": [
                {"toolCall": {"name": SCRIPT_TOOL_NAME, "argumentsJson": SCRIPT_TOOL_ARGUMENTS}},
                {"text": SCRIPT_AFTER_TOOL},
            ],
        },
        {"whenInputContains": "", "steps": [{"text": SCRIPT_GREETING}]},
    ]


def create_platform(admin: ConnectClient, provider_url: str) -> Platform:
    """Create the organization, one provider and model per kind, and the canary secret."""
    organization = admin.call(f"{ORGANIZATIONS}/CreateOrganization", {"name": "Python proxy tests"})
    organization_id = organization["organization"]["meta"]["id"]
    responses_provider = create_provider(
        admin,
        organization_id,
        name="responses",
        endpoint=f"{provider_url}/openai/v1",
        protocol="PROTOCOL_RESPONSES",
        authMethod="AUTH_METHOD_BEARER",
        token=CANARY,
    )
    chat_provider = create_provider(
        admin,
        organization_id,
        name="chat",
        endpoint=f"{provider_url}/chat",
        protocol="PROTOCOL_CHAT_COMPLETIONS",
        authMethod="AUTH_METHOD_BEARER",
        token=CHAT_PROVIDER_TOKEN,
    )
    custom_header_provider = create_provider(
        admin,
        organization_id,
        name="custom headers",
        endpoint=f"{provider_url}/custom/v1/chat/completions",
        protocol="PROTOCOL_CHAT_COMPLETIONS",
        authMethod="AUTH_METHOD_CUSTOM_HEADERS",
        headers={CUSTOM_HEADER_NAME: CANARY},
    )
    anthropic_provider = create_provider(
        admin,
        organization_id,
        name="anthropic",
        endpoint=f"{provider_url}/anthropic",
        protocol="PROTOCOL_ANTHROPIC_MESSAGES",
        authMethod="AUTH_METHOD_X_API_KEY",
        token=CANARY,
    )
    scripted_provider = create_provider(
        admin,
        organization_id,
        name="scripted",
        protocol="PROTOCOL_RESPONSES",
        script={"rules": scripted_rules()},
    )
    secret = admin.call(
        f"{SECRETS}/CreateSecret",
        {"organizationId": organization_id, "name": "canary", "value": CANARY},
    )
    return Platform(
        organization_id=organization_id,
        responses_model=create_model(admin, organization_id, responses_provider, "gpt-remote"),
        chat_model=create_model(admin, organization_id, chat_provider, "chat-remote"),
        custom_header_model=create_model(
            admin, organization_id, custom_header_provider, "custom-remote"
        ),
        anthropic_model=create_model(admin, organization_id, anthropic_provider, "claude-remote"),
        scripted_model=create_model(admin, organization_id, scripted_provider, "scripted-remote"),
        provider_ids=[
            responses_provider,
            chat_provider,
            custom_header_provider,
            anthropic_provider,
            scripted_provider,
        ],
        secret_id=secret["secret"]["meta"]["id"],
    )


def create_users(
    server: AgynServer, issuer: FakeIssuer, admin: ConnectClient, organization_id: str
) -> Users:
    """Sign in a member of the organization and a user outside it."""
    member_id, member_token = sign_in(server, issuer, "idp|member", "member")
    membership = admin.call(
        f"{ORGANIZATIONS}/CreateMembership",
        {
            "organizationId": organization_id,
            "identityId": member_id,
            "role": "MEMBERSHIP_ROLE_MEMBER",
        },
    )
    # A cluster admin adds the member directly, an owner only invites.
    if membership["membership"].get("status") == "MEMBERSHIP_STATUS_PENDING":
        ConnectClient(server.origin, member_token).call(
            f"{ORGANIZATIONS}/AcceptMembership", {"id": membership["membership"]["meta"]["id"]}
        )
    _, outsider_token = sign_in(server, issuer, "idp|outsider", "outsider")
    return Users(member_token=member_token, outsider_token=outsider_token)


def openai_client_for(server: AgynServer, token: str) -> openai.OpenAI:
    """An OpenAI client for the proxy, without retries so each call reaches the provider once."""
    return openai.OpenAI(
        base_url=f"{server.origin}/v1",
        api_key=token,
        max_retries=0,
        timeout=CLIENT_TIMEOUT_SECONDS,
    )


def anthropic_client_for(
    server: AgynServer, token: str, header: str = "x-api-key"
) -> anthropic.Anthropic:
    """An Anthropic client for the proxy that sends `token` in `header`, without retries.

    `header` is "x-api-key" or "authorization". The SDK sends `api_key` as
    a bearer token in Authorization since anthropic 2.0 (in X-Api-Key
    before), so the x-api-key client sets the header itself.
    """
    if header == "authorization":
        return anthropic.Anthropic(
            base_url=server.origin,
            api_key=token,
            max_retries=0,
            timeout=CLIENT_TIMEOUT_SECONDS,
        )
    return anthropic.Anthropic(
        base_url=server.origin,
        api_key=None,
        auth_token=None,
        default_headers={"X-Api-Key": token},
        max_retries=0,
        timeout=CLIENT_TIMEOUT_SECONDS,
    )
