"""The provider registry: lazy imports with install hints, third-party providers, the plugin block."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from managed_secrets.errors import InvalidBackend, ProviderNotInstalled
from managed_secrets.models.parse import parse_backend
from managed_secrets.providers.base import ProviderContext, RemoteKey, SecretProvider
from managed_secrets.providers.registry import BUILTIN_PROVIDERS, ProviderRegistry, ProviderSpec


class StaticProvider:
    def __init__(self, config: Mapping[str, Any]) -> None:
        self.values = dict(config.get("values", {}))

    def fetch(self, ref: RemoteKey) -> bytes:
        return str(self.values[ref.key]).encode()

    def close(self) -> None:
        pass


def create_static(config: Mapping[str, Any], context: ProviderContext) -> SecretProvider:
    return StaticProvider(config)


def test_builtin_names_map_to_modules_not_yet_imported() -> None:
    assert set(BUILTIN_PROVIDERS) == {"vault", "aws", "gcp", "azure"}
    assert all(spec.target.startswith("managed_secrets.providers.") for spec in BUILTIN_PROVIDERS.values())


def test_missing_sdk_fails_with_an_install_hint() -> None:
    registry = ProviderRegistry(
        {"ghost": ProviderSpec("no_such_sdk_module:create", "pip install 'managed-secrets[ghost]'")},
        load_entry_points=False,
    )
    with pytest.raises(ProviderNotInstalled, match=r"pip install 'managed-secrets\[ghost\]'"):
        registry.factory("ghost")


def test_unknown_backend_type_lists_the_known_ones() -> None:
    with pytest.raises(InvalidBackend, match="known: aws, azure, gcp, vault"):
        ProviderRegistry(load_entry_points=False).factory("nope")


def test_registering_a_name_twice_is_an_error() -> None:
    registry = ProviderRegistry(load_entry_points=False)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("vault", ProviderSpec("x:y", "hint"))


def test_plugin_block_selects_a_third_party_provider() -> None:
    body = {
        "apiVersion": "managedsecrets.io/v1alpha1",
        "kind": "SecretBackend",
        "metadata": {"name": "corp", "namespace": "team-a", "uid": "u1", "generation": 1},
        "spec": {"plugin": {"name": "corp-store", "config": {"values": {"db": "from-plugin"}}}},
    }
    backend = parse_backend(body)
    assert (backend.provider, backend.config) == ("corp-store", {"values": {"db": "from-plugin"}})
    registry = ProviderRegistry(load_entry_points=False)
    registry.register("corp-store", ProviderSpec(f"{__name__}:create_static", "pip install corp-store"))
    provider = registry.factory(backend.provider)(backend.config, None)  # type: ignore[arg-type]
    assert provider.fetch(RemoteKey("db")) == b"from-plugin"


def test_plugin_block_needs_a_name() -> None:
    body = {
        "kind": "SecretBackend",
        "metadata": {"name": "corp", "namespace": "a"},
        "spec": {"plugin": {"config": {}}},
    }
    with pytest.raises(InvalidBackend, match=r"plugin\.name"):
        parse_backend(body)
