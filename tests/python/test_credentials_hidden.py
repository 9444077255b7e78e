"""Read methods never return a provider credential or a secret value, which
are all the canary string in this suite."""

from __future__ import annotations

import json

from connect_client import ConnectClient
from suite import CANARY, CUSTOM_HEADER_NAME, LLM, SECRETS, Platform


def test_provider_reads_omit_credentials(admin: ConnectClient, platform: Platform) -> None:
    listed = admin.call(f"{LLM}/ListProviders", {"organizationId": platform.organization_id})
    assert CANARY not in json.dumps(listed)
    by_name = {provider["name"]: provider for provider in listed["providers"]}
    assert by_name["responses"].get("hasToken") is True
    assert by_name["anthropic"].get("hasToken") is True
    assert by_name["custom headers"].get("headerNames") == [CUSTOM_HEADER_NAME]
    assert by_name["custom headers"].get("hasToken", False) is False

    for provider_id in platform.provider_ids:
        response = admin.call(f"{LLM}/GetProvider", {"id": provider_id})
        assert CANARY not in json.dumps(response), provider_id


def test_secret_reads_omit_value(admin: ConnectClient, platform: Platform) -> None:
    got = admin.call(f"{SECRETS}/GetSecret", {"id": platform.secret_id})
    assert got["secret"]["name"] == "canary"
    assert got["secret"]["storage"] == "SECRET_STORAGE_LOCAL"
    assert CANARY not in json.dumps(got)

    listed = admin.call(f"{SECRETS}/ListSecrets", {"organizationId": platform.organization_id})
    assert [secret["meta"]["id"] for secret in listed["secrets"]] == [platform.secret_id]
    assert CANARY not in json.dumps(listed)
