"""Pinned versions, per provider: only the store's own version forms pass, anything else is VersionNotFound
before any read (a tenant's `version: "-1"` must never read the latest value and report Synced)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from managed_secrets.errors import SyncError, VersionNotFound
from managed_secrets.providers.aws import parameter_selector, secrets_manager_version
from managed_secrets.providers.base import CredentialValue, ProviderContext, RemoteKey, SecretProvider
from managed_secrets.providers.guard import CredentialPolicy, EndpointAllowlist
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.providers.vault import kv2_version

UUID = "0b9a2f6e-3c1d-4e8f-9a7b-6c5d4e3f2a1b"
HEX32 = "0123456789abcdef0123456789ABCDEF"

#: Junk every store must refuse: signs, zero, fractions, leading zeros, spaces, paths, Unicode digits,
#: control characters, very long numbers.
COMMON_JUNK = [
    "-1",
    "0",
    "00",
    "01",
    "1.5",
    "1e3",
    "+1",
    " 1",
    "1 ",
    "1\n",
    "0x1",
    "1/../..",
    "../1",
    "1/versions/2",
    "%31",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() says yes
    "\u00b2",  # SUPERSCRIPT TWO, a digit to str.isdigit() too
    "1" * 40,
    "1\x00",
]


@pytest.mark.parametrize("version", [*COMMON_JUNK, "latest", "LATEST", "v1", "one", "first"])
def test_vault_kv2_refuses(version: str) -> None:
    with pytest.raises(VersionNotFound) as caught:
        kv2_version(version, "SecretBackend ns/vault: app/db")
    assert "a number from 1" in caught.value.message


@pytest.mark.parametrize(
    ("version", "number"), [("1", 1), ("9", 9), ("10", 10), ("123456789012345678", 123456789012345678)]
)
def test_vault_kv2_accepts(version: str, number: int) -> None:
    assert kv2_version(version, "x") == number


@pytest.mark.parametrize(
    ("version", "kwargs"),
    [
        ("AWSCURRENT", {"VersionStage": "AWSCURRENT"}),
        ("AWSPREVIOUS", {"VersionStage": "AWSPREVIOUS"}),
        ("blue", {"VersionStage": "blue"}),
        ("release-2024.1", {"VersionStage": "release-2024.1"}),
        # What the store decides: as labels these do not exist, so the read is VersionNotFound.
        ("-1", {"VersionStage": "-1"}),
        ("latest", {"VersionStage": "latest"}),
        (UUID, {"VersionId": UUID}),
        (UUID.replace("-", ""), {"VersionId": UUID.replace("-", "")}),
        (f"uuid/{UUID}", {"VersionId": UUID}),
        ("uuid/" + "a" * 64, {"VersionId": "a" * 64}),
    ],
)
def test_secrets_manager_versions(version: str, kwargs: dict[str, str]) -> None:
    assert secrets_manager_version(version, "x") == kwargs


@pytest.mark.parametrize(
    "version",
    [
        "uuid/",
        "uuid/short",
        "uuid/" + "a" * 65,
        f"uuid/{UUID}/..",
        " AWSCURRENT",
        "AWSCURRENT\n",
        "a\x00",
        "x" * 257,
    ],
)
def test_secrets_manager_refuses(version: str) -> None:
    with pytest.raises(VersionNotFound):
        secrets_manager_version(version, "x")


@pytest.mark.parametrize("version", ["1", "2", "42", "prod", "Prod_2", "release.1", "-1", "_x", "a" * 100])
def test_parameter_store_selectors(version: str) -> None:
    assert parameter_selector(version, "x") == version


@pytest.mark.parametrize(
    "version",
    [v for v in COMMON_JUNK if v != "-1"]  # "-1" is a well-formed label (the store says it does not exist)
    + ["1a", "aws-label", "AWSlabel", "ssm", "a:b", "a b", "a/b", "a" * 101, ""],
)
def test_parameter_store_refuses(version: str) -> None:
    with pytest.raises(VersionNotFound) as caught:
        parameter_selector(version, "x")
    assert "a number from 1 or a label" in caught.value.message


# -- through the providers: refused before any read (the stores here are unreachable) --------------------------


class NoCredentials:
    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        raise AssertionError("a malformed version must be refused before credentials are read")

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        raise AssertionError("a malformed version must be refused before a ServiceAccount is read")

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        raise AssertionError("a malformed version must be refused before a token is requested")


DEAD = "127.0.0.1:9"  # discard port: nothing listens, and nothing leaves the machine

PROVIDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "vault": (
        "vault",
        {"server": f"http://{DEAD}", "auth": {"token": {"secretRef": {"name": "t", "key": "token"}}}},
    ),
    "gcp": (
        "gcp",
        {
            "projectID": "p",
            "endpoint": DEAD,
            "auth": {"secretRef": {"secretAccessKey": {"name": "g", "key": "key.json"}}},
        },
    ),
    "azure": (
        "azure",
        {
            "vaultURL": f"https://{DEAD}",
            "tenantID": "t",
            "authSecretRef": {
                "clientID": {"name": "a", "key": "id"},
                "clientSecret": {"name": "a", "key": "secret"},
            },
        },
    ),
    "secretsmanager": (
        "aws",
        {
            "region": "eu-central-1",
            "endpoint": f"http://{DEAD}",
            "auth": {
                "secretRef": {
                    "accessKeyID": {"name": "a", "key": "id"},
                    "secretAccessKey": {"name": "a", "key": "secret"},
                }
            },
        },
    ),
    "ssm": (
        "aws",
        {
            "service": "ParameterStore",
            "region": "eu-central-1",
            "endpoint": f"http://{DEAD}",
            "auth": {
                "secretRef": {
                    "accessKeyID": {"name": "a", "key": "id"},
                    "secretAccessKey": {"name": "a", "key": "secret"},
                }
            },
        },
    ),
}

#: Per store: malformed versions (VersionNotFound with no read).
REFUSED: dict[str, list[str]] = {
    "vault": [*COMMON_JUNK, "latest", "v2"],
    "gcp": [*COMMON_JUNK, "LATEST", "latest ", "v1", "latest/../1"],
    "azure": [*COMMON_JUNK, HEX32[:31], HEX32 + "0", "g" * 32, f"{HEX32}/..", " latest"],
    "ssm": [v for v in COMMON_JUNK if v != "-1"] + ["aws", "a:b"],
    # Staging labels are the store's to judge; only what cannot be a label or an id is refused here.
    "secretsmanager": ["uuid/", "uuid/1/../..", "1\n", " AWSCURRENT", "1\x00", "x" * 257],
}


def provider(store: str) -> SecretProvider:
    name, config = PROVIDERS[store]
    context = ProviderContext(
        credentials=NoCredentials(),
        default_namespace="team-a",
        backend_label=f"SecretBackend team-a/{store}",
        options={"timeout_seconds": 1, "max_attempts": 1},
        # The endpoints in PROVIDERS are on 127.0.0.1, where nothing listens.
        policy=CredentialPolicy(
            endpoints=EndpointAllowlist.from_patterns(["http://127.0.0.1:*", "https://127.0.0.1:*"])
        ),
    )
    return ProviderRegistry(load_entry_points=False).factory(name)(config, context)


@pytest.mark.parametrize(
    ("store", "version"), [(store, version) for store, versions in REFUSED.items() for version in versions]
)
def test_a_malformed_version_is_refused_before_any_read(store: str, version: str) -> None:
    subject = provider(store)
    try:
        with pytest.raises(VersionNotFound) as caught:
            subject.fetch(RemoteKey("app-db", version))
    finally:
        subject.close()
    assert isinstance(caught.value, SyncError)
    assert "app-db" in caught.value.message
