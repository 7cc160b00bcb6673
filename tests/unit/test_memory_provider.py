"""The in-memory provider: the shipped contract suite, its registration as an entry point, its guard against
serving a deployed operator, and the behaviour the contract does not pin down (canonical keys, validate)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    InvalidBackend,
    KeyNotAllowed,
    RemoteKeyNotFound,
    VersionNotFound,
)
from managed_secrets.models.parse import parse_backend
from managed_secrets.providers.base import CanonicalizingProvider, RemoteKey, SecretProvider
from managed_secrets.providers.memory import MemoryProvider, MemoryStore, create_provider
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.testing import drop_store, memory_store, provider_context
from managed_secrets.testing.contract import MemoryRemote, ProviderContract

STRANGER = "stranger"


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    name = f"unit-{uuid.uuid4().hex[:8]}"
    yield memory_store(name)
    drop_store(name)


def build(store: MemoryStore, identity: str = "operator") -> SecretProvider:
    return create_provider({"store": store.name, "identity": identity}, provider_context(backend="mem"))


class TestMemoryContract(ProviderContract):
    @pytest.fixture
    def remote(self, store: MemoryStore) -> MemoryRemote:
        return MemoryRemote(store)

    @pytest.fixture
    def provider(self, store: MemoryStore) -> SecretProvider:
        return build(store)

    @pytest.fixture
    def bad_credentials_provider(self, store: MemoryStore) -> SecretProvider:
        store.refuse(STRANGER)
        return build(store, STRANGER)


def test_registered_through_the_entry_point_like_a_third_party_provider(store: MemoryStore) -> None:
    store.put("db", {"password": "pw"})
    backend = parse_backend(
        {
            "kind": "SecretBackend",
            "metadata": {"name": "mem", "namespace": "team-a"},
            "spec": {"memory": {"store": store.name}},
        }
    )
    assert backend.provider == "memory"
    assert "memory" not in ProviderRegistry(load_entry_points=False).names()
    factory = ProviderRegistry().factory("memory")
    provider = factory(backend.config, provider_context(backend="mem"))
    assert provider.fetch(RemoteKey("db")) == b'{"password":"pw"}'


def test_a_store_no_code_created_is_refused() -> None:
    """What a deployed operator sees: nothing in it creates stores, so a memory backend cannot sync."""
    with pytest.raises(InvalidBackend, match="no in-memory store 'nobody-made-this'"):
        create_provider({"store": "nobody-made-this"}, provider_context())


def test_values_in_the_backend_block_are_refused(store: MemoryStore) -> None:
    with pytest.raises(InvalidBackend) as caught:
        create_provider({"store": store.name, "values": {"db": "in-a-crd-0f3c"}}, provider_context())
    assert "values" in str(caught.value)
    assert "in-a-crd-0f3c" not in str(caught.value)


def test_validate_proves_the_identity_and_reachability(store: MemoryStore) -> None:
    provider = build(store)
    assert isinstance(provider, MemoryProvider)
    provider.validate()
    store.refuse()
    with pytest.raises(AuthFailed, match="refuses identity 'operator'"):
        provider.validate()
    store.accept()
    with store.outage(), pytest.raises(BackendUnavailable):
        provider.validate()
    provider.validate()
    assert store.reads == []  # validation reads no key


def test_canonical_keys_and_versions(store: MemoryStore) -> None:
    provider = build(store)
    assert isinstance(provider, CanonicalizingProvider)
    assert provider.canonical_ref(RemoteKey("a/b", "latest")) == RemoteKey("a/b")
    assert provider.canonical_ref(RemoteKey("a/b", "01")) == RemoteKey("a/b", "1")
    for ambiguous in ("a/../b", "/a", "a//b", "a%2Fb"):
        with pytest.raises(KeyNotAllowed):
            provider.canonical_ref(RemoteKey(ambiguous))
    for version in ("0", "v1", "-1", "\u0661"):
        with pytest.raises(VersionNotFound):
            provider.canonical_ref(RemoteKey("a", version))


def test_disabled_and_deleted(store: MemoryStore) -> None:
    first = store.put("k", "one")
    store.put("k", "two")
    provider = build(store)
    store.disable("k", "2")
    assert provider.fetch(RemoteKey("k")) == b"one"  # latest: the newest enabled version
    with pytest.raises(VersionNotFound):
        provider.fetch(RemoteKey("k", "2"))
    assert provider.fetch(RemoteKey("k", first)) == b"one"
    store.delete("k")
    with pytest.raises(RemoteKeyNotFound):
        provider.fetch(RemoteKey("k"))


def test_seed_and_repr_hide_values(store: MemoryStore) -> None:
    store.seed({"a": ["v1-secret", "v2-secret"], "b": {"x": 1}})
    provider = build(store)
    assert provider.fetch(RemoteKey("a", "1")) == b"v1-secret"
    assert provider.fetch(RemoteKey("a")) == b"v2-secret"
    assert "secret" not in repr(store)
