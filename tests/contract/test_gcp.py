"""Google Cloud Secret Manager against the real GCP Secret Manager emulator (harness/gcp_emulator.py), plus
GCP-only cases.

The emulator checks no credentials (IAM off), so "wrong credentials" here is a service-account key the
client cannot use (refused before any call), and a call without credentials is not refused at all. It
sends no CRC32C either: test_checksum_mismatch_is_detected corrupts the real answer with a narrow fake.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core.exceptions import NotFound
from google.cloud.secretmanager_v1 import SecretManagerServiceClient

from harness.gcp_emulator import GcpSecretManagerEmulator
from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    InvalidBackend,
    InvalidSpec,
    VersionNotFound,
)
from managed_secrets.providers.base import RemoteKey, SecretProvider
from managed_secrets.providers.gcp import crc32c
from managed_secrets.testing.contract import ProviderContract, Value

from .conftest import NAMESPACE, InMemoryCredentials, make_provider

OPTIONS = {"timeout_seconds": 2}


class SecretManagerRemote:
    supports_binary = True
    max_value_size = 64 * 1024

    def __init__(self, emulator: GcpSecretManagerEmulator) -> None:
        self.emulator = emulator

    def new_key(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    def _parent(self, key: str) -> str:
        return f"projects/{self.emulator.project}/secrets/{key}"

    def create(self, key: str, labels: dict[str, str] | None = None) -> None:
        # With replication, as real GCP requires (the emulator would accept a secret without).
        with self.emulator.client() as client:
            client.create_secret(
                request={
                    "parent": f"projects/{self.emulator.project}",
                    "secret_id": key,
                    "secret": {"replication": {"automatic": {}}, "labels": labels or {}},
                }
            )

    def put(self, key: str, value: Value) -> str:
        with self.emulator.client() as client:
            try:
                client.get_secret(request={"name": self._parent(key)})
            except NotFound:
                self.create(key)
            version = client.add_secret_version(
                request={"parent": self._parent(key), "payload": {"data": self.expected(value)}}
            )
        return str(version.name.rsplit("/", 1)[-1])

    def delete(self, key: str) -> None:
        with self.emulator.client() as client:
            client.delete_secret(request={"name": self._parent(key)})

    def disable(self, key: str, version: str) -> None:
        with self.emulator.client() as client:
            client.disable_secret_version(request={"name": f"{self._parent(key)}/versions/{version}"})

    def expected(self, value: Value) -> bytes:
        if isinstance(value, dict):
            return json.dumps(value).encode()
        return value if isinstance(value, bytes) else value.encode()

    def missing_version(self) -> str:
        return "999"

    def stop_server(self) -> None:
        self.emulator.stop()

    def start_server(self) -> None:
        self.emulator.start()


def key_credentials(key_json: str) -> InMemoryCredentials:
    return InMemoryCredentials({(NAMESPACE, "gcp-sa", "key.json"): key_json})


def gcp_config(emulator: GcpSecretManagerEmulator, **extra: Any) -> dict[str, Any]:
    return {
        "projectID": emulator.project,
        "endpoint": emulator.endpoint,
        "auth": {"secretRef": {"secretAccessKey": {"name": "gcp-sa", "key": "key.json"}}},
        **extra,
    }


@pytest.fixture
def remote(gcp_emulator: GcpSecretManagerEmulator) -> SecretManagerRemote:
    return SecretManagerRemote(gcp_emulator)


@pytest.fixture
def provider(gcp_emulator: GcpSecretManagerEmulator) -> Iterator[SecretProvider]:
    provider = make_provider(
        "gcp", gcp_config(gcp_emulator), key_credentials(gcp_emulator.reader.json), OPTIONS
    )
    yield provider
    provider.close()


class TestSecretManagerContract(ProviderContract):
    @pytest.fixture
    def bad_credentials_provider(self, gcp_emulator: GcpSecretManagerEmulator) -> Iterator[SecretProvider]:
        # The emulator accepts any token, so the refusal is the client's: a key whose private key is
        # not a key. Real Google would refuse an unknown key too; that is not provable here.
        stranger = {
            **gcp_emulator.reader.info,
            "private_key": "-----BEGIN PRIVATE KEY-----\nbm9w\n-----END PRIVATE KEY-----\n",
        }
        provider = make_provider(
            "gcp", gcp_config(gcp_emulator), key_credentials(json.dumps(stranger)), OPTIONS
        )
        yield provider
        provider.close()


def test_checksum_mismatch_is_detected(
    remote: SecretManagerRemote, provider: SecretProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Narrow fake: the emulator sends no data_crc32c (and accepts wrong ones), so the client's
    access_secret_version is wrapped to add a checksum to the emulator's real answer: the right one
    passes, a wrong one is a BackendUnavailable that does not show the value."""
    key = remote.new_key()
    remote.put(key, "tampered-in-transit")
    real = SecretManagerServiceClient.access_secret_version
    flip = {"bits": 0}

    def with_checksum(self: SecretManagerServiceClient, *args: Any, **kwargs: Any) -> Any:
        response = real(self, *args, **kwargs)
        response.payload.data_crc32c = crc32c(bytes(response.payload.data)) ^ flip["bits"]
        return response

    monkeypatch.setattr(SecretManagerServiceClient, "access_secret_version", with_checksum)
    assert provider.fetch(RemoteKey(key)) == b"tampered-in-transit"
    flip["bits"] = 1
    with pytest.raises(BackendUnavailable) as caught:
        provider.fetch(RemoteKey(key))
    assert "checksum" in str(caught.value)
    assert "tampered" not in str(caught.value)


def test_disabled_version_and_latest_enabled(remote: SecretManagerRemote, provider: SecretProvider) -> None:
    key = remote.new_key()
    remote.put(key, "one")
    second = remote.put(key, "two")
    remote.disable(key, second)
    with pytest.raises(VersionNotFound):
        provider.fetch(RemoteKey(key, second))
    # latest is the newest enabled version.
    assert provider.fetch(RemoteKey(key)) == b"one"
    assert provider.fetch(RemoteKey(key, "latest")) == b"one"


def test_full_resource_name(remote: SecretManagerRemote, provider: SecretProvider) -> None:
    key = remote.new_key()
    version = remote.put(key, "by-name")
    name = f"projects/{remote.emulator.project}/secrets/{key}"
    assert provider.fetch(RemoteKey(name)) == b"by-name"
    assert provider.fetch(RemoteKey(name, version)) == b"by-name"


def test_invalid_key_and_version(provider: SecretProvider) -> None:
    with pytest.raises(InvalidSpec) as caught:
        provider.fetch(RemoteKey("not/a valid id"))
    assert "secret id" in str(caught.value)
    with pytest.raises(VersionNotFound) as caught_version:
        provider.fetch(RemoteKey("fine", "v1"))
    assert "'latest' or a number" in str(caught_version.value)


def test_malformed_key_json_is_auth_failed(gcp_emulator: GcpSecretManagerEmulator) -> None:
    provider = make_provider(
        "gcp", gcp_config(gcp_emulator), key_credentials('{"type": "nonsense"}'), OPTIONS
    )
    with pytest.raises(AuthFailed) as caught:
        provider.fetch(RemoteKey("any"))
    assert "service-account key" in str(caught.value)


def test_invalid_project() -> None:
    with pytest.raises(InvalidBackend):
        make_provider("gcp", {"projectID": "Not A Project"})
    with pytest.raises(InvalidBackend):
        make_provider("gcp", {"endpoint": "127.0.0.1:1"})
