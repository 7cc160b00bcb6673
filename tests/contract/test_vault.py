"""The Vault provider (KV v2, token auth) against the OpenBao dev server, through the same contract."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.openbao import OpenBao
from managed_secrets.providers.base import SecretProvider
from managed_secrets.testing.contract import ProviderContract, Value

from .conftest import NAMESPACE, InMemoryCredentials, make_provider

MOUNT = "secret"  # KV v2, mounted by the dev server


class VaultRemote:
    """KV v2 keeps maps of strings: a plain value is written as ``{"value": ...}``."""

    supports_binary = False
    max_value_size = 64 * 1024

    def __init__(self, bao: OpenBao) -> None:
        self.bao = bao

    def new_key(self) -> str:
        return f"contract/{uuid.uuid4().hex[:12]}"

    @staticmethod
    def _data(value: Value) -> dict[str, Any]:
        if isinstance(value, bytes):
            raise TypeError("KV keeps text")
        return value if isinstance(value, dict) else {"value": value}

    def put(self, key: str, value: Value) -> str:
        response = self.bao.client().secrets.kv.v2.create_or_update_secret(
            path=key, secret=self._data(value), mount_point=MOUNT
        )
        return str(response["data"]["version"])

    def delete(self, key: str) -> None:
        self.bao.client().secrets.kv.v2.delete_metadata_and_all_versions(path=key, mount_point=MOUNT)

    def expected(self, value: Value) -> bytes:
        return json.dumps(self._data(value), ensure_ascii=False, separators=(",", ":")).encode()

    def missing_version(self) -> str:
        return "999"

    def stop_server(self) -> None:
        self.bao.stop()

    def start_server(self) -> None:
        self.bao.start()


def vault_config(bao: OpenBao) -> dict[str, Any]:
    return {
        "server": bao.addr,
        "path": MOUNT,
        "version": "v2",
        "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
    }


class TestVaultContract(ProviderContract):
    @pytest.fixture
    def remote(self, openbao: OpenBao) -> VaultRemote:
        return VaultRemote(openbao)

    @pytest.fixture
    def provider(self, openbao: OpenBao) -> Iterator[SecretProvider]:
        credentials = InMemoryCredentials({(NAMESPACE, "vault-token", "token"): openbao.root_token})
        provider = make_provider("vault", vault_config(openbao), credentials, {"timeout_seconds": 3})
        yield provider
        provider.close()

    @pytest.fixture
    def bad_credentials_provider(self, openbao: OpenBao) -> Iterator[SecretProvider]:
        credentials = InMemoryCredentials({(NAMESPACE, "vault-token", "token"): "hvs.not-a-real-token"})
        provider = make_provider("vault", vault_config(openbao), credentials, {"timeout_seconds": 3})
        yield provider
        provider.close()
