"""Google Cloud Secret Manager against the real GCP Secret Manager emulator (harness/gcp_emulator.py), plus
GCP-only cases.

The emulator checks no credentials (IAM off), so "wrong credentials" here is a service-account key the
client cannot use (refused before any call), and a call without credentials is not refused at all. What
the client sends is proven instead at a recording proxy in front of the emulator (harness.gcp_auth): a
JWT signed by the configured key, or by the Application Default Credentials' key. It sends no CRC32C
either: test_checksum_mismatch_is_detected corrupts the real answer with a narrow fake.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.cloud.secretmanager_v1 import SecretManagerServiceClient

from harness.controlplane import free_port
from harness.gcp_auth import RecordingGrpcProxy, verify_self_signed_jwt
from harness.gcp_emulator import GcpSecretManagerEmulator, SecretManagerRemote, new_service_account_key
from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    InvalidBackend,
    InvalidSpec,
    VersionNotFound,
)
from managed_secrets.providers.base import (
    RemoteKey,
    SecretProvider,
    ValidatingProvider,
    expiry_of,
    version_of,
)
from managed_secrets.providers.gcp import crc32c
from managed_secrets.testing.contract import ProviderContract

from .conftest import NAMESPACE, InMemoryCredentials, make_provider

OPTIONS = {"timeout_seconds": 2}


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


def test_expire_time_is_the_expiry_asked_once_per_version(
    remote: SecretManagerRemote, provider: SecretProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator keeps no expireTime: its real GetSecret answer gives no expiry. Narrow fake after
    that: the answer gets an expireTime, as Secret Manager sends it for a secret with expire_time or ttl.
    GetSecret is asked once per version, not on every read."""
    key = remote.new_key()
    remote.put(key, "one")
    first = provider.fetch(RemoteKey(key))
    assert expiry_of(first) is None
    real = SecretManagerServiceClient.get_secret
    asked: list[str] = []
    expires = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)

    def with_expire_time(self: SecretManagerServiceClient, *args: Any, **kwargs: Any) -> Any:
        response = real(self, *args, **kwargs)
        asked.append(response.name)
        response.expire_time = expires
        return response

    monkeypatch.setattr(SecretManagerServiceClient, "get_secret", with_expire_time)
    assert expiry_of(provider.fetch(RemoteKey(key))) is None, "version one was asked already"
    assert asked == []
    second = remote.put(key, "two")
    asked.clear()  # the remote's own calls
    for _ in range(3):
        fetched = provider.fetch(RemoteKey(key))
        assert fetched == b"two"
        assert version_of(fetched) == second
        assert expiry_of(fetched) == expires.timestamp()
    assert asked == [f"projects/{remote.emulator.project}/secrets/{key}"]


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


@pytest.fixture
def proxy(gcp_emulator: GcpSecretManagerEmulator) -> Iterator[RecordingGrpcProxy]:
    with RecordingGrpcProxy(gcp_emulator.endpoint) as recording:
        yield recording


def test_key_auth_sends_a_jwt_signed_by_the_key(
    remote: SecretManagerRemote, proxy: RecordingGrpcProxy, gcp_emulator: GcpSecretManagerEmulator
) -> None:
    key = remote.new_key()
    remote.put(key, "via-key")
    config = {**gcp_config(gcp_emulator), "endpoint": proxy.endpoint}
    provider = make_provider("gcp", config, key_credentials(gcp_emulator.reader.json), OPTIONS)
    try:
        assert provider.fetch(RemoteKey(key)) == b"via-key"
    finally:
        provider.close()
    tokens = proxy.tokens()
    # The value, then the secret's metadata (its expireTime) once for that version.
    assert [c.method.rsplit("/", 1)[-1] for c in proxy.calls] == ["AccessSecretVersion", "GetSecret"]
    assert len(tokens) == 2, proxy.calls
    for token in tokens:
        verify_self_signed_jwt(token, gcp_emulator.reader.info)


@pytest.fixture
def no_ambient_google_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ADC from this machine: no key file variable, an empty gcloud config, and the metadata server's
    address a closed loopback port (nothing leaves 127.0.0.1)."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GCE_METADATA_DETECT_RETRIES", "1")


@pytest.mark.usefixtures("no_ambient_google_identity")
def test_application_default_credentials_from_a_key_file(
    remote: SecretManagerRemote,
    proxy: RecordingGrpcProxy,
    gcp_emulator: GcpSecretManagerEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Without an auth block the operator's own ADC are used (here GOOGLE_APPLICATION_CREDENTIALS, as a
    mounted key would be): the calls carry a JWT signed by that file's key, and no Secret is read."""
    operator_key = new_service_account_key(gcp_emulator.project, "operator")
    key_file = tmp_path / "adc.json"
    key_file.write_text(operator_key.json)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    key = remote.new_key()
    remote.put(key, "via-adc")
    credentials = InMemoryCredentials()
    config = {"projectID": gcp_emulator.project, "endpoint": proxy.endpoint}
    provider = make_provider("gcp", config, credentials, OPTIONS)
    try:
        assert provider.fetch(RemoteKey(key)) == b"via-adc"
        assert isinstance(provider, ValidatingProvider)
        provider.validate()
    finally:
        provider.close()
    tokens = proxy.tokens()
    assert len(tokens) == len(proxy.calls) == 3, proxy.calls  # read, its expireTime, validate
    for token in tokens:
        verify_self_signed_jwt(token, operator_key.info)
    assert credentials.reads == []


@pytest.mark.usefixtures("no_ambient_google_identity")
def test_without_application_default_credentials_nothing_is_sent(
    proxy: RecordingGrpcProxy, gcp_emulator: GcpSecretManagerEmulator
) -> None:
    """No ADC on this machine: AuthFailed naming the cause, and no call reaches the server unauthenticated."""
    config = {"projectID": gcp_emulator.project, "endpoint": proxy.endpoint}
    provider = make_provider("gcp", config, InMemoryCredentials(), OPTIONS)
    with pytest.raises(AuthFailed) as caught:
        provider.fetch(RemoteKey("anything"))
    assert "DefaultCredentialsError" in str(caught.value)
    assert proxy.calls == []
