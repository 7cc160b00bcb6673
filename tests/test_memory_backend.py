"""The in-memory provider in the real operator: selected by a `plugin` block through its entry point, on the
real control plane (the operator under test runs in this process, so it sees the stores this test made)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.operator import OperatorRunner
from kube import Kube
from managed_secrets.testing import MemoryStore, drop_store, memory_store

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    yield memory_store(name)
    drop_store(name)


def test_a_plugin_block_selects_the_memory_provider_and_an_unknown_store_is_refused(
    operator: OperatorRunner, kube: Kube, namespace: str, store: MemoryStore
) -> None:
    store.put("db", {"username": "app", "password": "pw-1"})
    kube.create_backend(namespace, "mem", {"plugin": {"name": "memory", "config": {"store": store.name}}})
    kube.create_ms(
        namespace,
        "app",
        {
            "backendRef": {"name": "mem"},
            "refreshInterval": "1s",
            "data": [{"secretKey": "password", "remoteRef": {"key": "db", "property": "password"}}],
        },
    )
    kube.wait_secret_data(namespace, "app", {"password": "pw-1"})
    store.put("db", {"username": "app", "password": "pw-2"})
    kube.wait_secret_data(namespace, "app", {"password": "pw-2"})

    kube.create_backend(namespace, "nowhere", {"plugin": {"name": "memory", "config": {"store": "absent"}}})
    kube.create_ms(
        namespace,
        "lost",
        {"backendRef": {"name": "nowhere"}, "data": [{"secretKey": "k", "remoteRef": {"key": "db"}}]},
    )
    cond = kube.wait_ready(namespace, "lost", status="False", reason="InvalidBackend")
    assert "no in-memory store 'absent'" in cond["message"]
    assert kube.secret(namespace, "lost") is None
