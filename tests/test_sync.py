"""ManagedSecret -> Secret from Vault (OpenBao), on the real control plane, with the real operator."""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.vault]


def put(openbao: OpenBao, path: str, data: dict[str, Any], mount: str = "secret") -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=mount)


def spec(key: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "backendRef": {"name": "vault"},
        "data": [
            {"secretKey": "username", "remoteRef": {"key": key, "property": "username"}},
            {"secretKey": "password", "remoteRef": {"key": key, "property": "password"}},
        ],
    }
    base.update(extra)
    return base


def test_create_syncs_secret_with_keys_type_labels_and_owner(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/db", {"username": "app", "password": "s3cret"})
    kube.create_ms(
        namespace,
        "db",
        spec(
            f"{namespace}/db",
            target={
                "name": "db-creds",
                "type": "kubernetes.io/basic-auth",
                "labels": {"team": "a"},
                "annotations": {"note": "x"},
            },
        ),
    )
    kube.wait_secret_data(namespace, "db-creds", {"username": "app", "password": "s3cret"})
    secret = kube.secret(namespace, "db-creds")
    assert secret is not None
    assert secret.type == "kubernetes.io/basic-auth"
    assert secret.metadata.labels["team"] == "a"
    assert secret.metadata.labels["managedsecrets.io/managed"] == "true"
    assert secret.metadata.annotations["note"] == "x"
    owner = secret.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("ManagedSecret", "db", True)
    cond = kube.wait_ready(namespace, "db")
    assert cond["reason"] == "Synced"
    status = kube.get_ms(namespace, "db")["status"]
    assert status["secretName"] == "db-creds"
    assert status["syncedKeys"] == ["password", "username"]
    assert status["observedGeneration"] == 1
    assert status["lastSyncTime"]


def test_rotation_on_refresh_and_at_once_on_force_sync(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/fast", {"username": "u", "password": "one"})
    put(openbao, f"{namespace}/slow", {"username": "u", "password": "one"})
    kube.create_ms(namespace, "fast", spec(f"{namespace}/fast", refreshInterval="2s"))
    kube.create_ms(namespace, "slow", spec(f"{namespace}/slow", refreshInterval="1h"))
    kube.wait_secret_data(namespace, "fast", {"username": "u", "password": "one"})
    kube.wait_secret_data(namespace, "slow", {"username": "u", "password": "one"})

    put(openbao, f"{namespace}/fast", {"username": "u", "password": "two"})
    put(openbao, f"{namespace}/slow", {"username": "u", "password": "two"})
    kube.wait_secret_data(namespace, "fast", {"username": "u", "password": "two"}, timeout=30)
    time.sleep(1)
    assert kube.secret_data(namespace, "slow") == {"username": "u", "password": "one"}, (
        "a 1h refresh must not fetch again"
    )
    # Any bound far below the hour shows the force-sync read at once; a generous one holds on a busy machine.
    kube.force_sync(namespace, "slow")
    kube.wait_secret_data(namespace, "slow", {"username": "u", "password": "two"}, timeout=60)


def test_noop_refresh_writes_nothing(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/same", {"username": "u", "password": "p"})
    kube.create_ms(namespace, "same", spec(f"{namespace}/same", refreshInterval="1s"))
    kube.wait_ready(namespace, "same")
    kube.wait_secret_data(namespace, "same", {"username": "u", "password": "p"})
    state = operator.runtime.controller.state_of(namespace, "same")
    assert state is not None
    syncs: list[float] = []

    def synced_times(count: int) -> bool:
        """At least ``count`` syncs of this object seen, the last one finished (its status written)."""
        if state.last_refresh is not None and (not syncs or state.last_refresh != syncs[-1]):
            syncs.append(state.last_refresh)
        return len(syncs) >= count and not state.running

    # One refresh after the first sync (whose status write may still be on its way), then the baseline.
    wait_for(lambda: synced_times(2), 30, interval=0.05, what="a first refresh")
    secret_version = kube.existing_secret(namespace, "same").metadata.resource_version
    ms_version = kube.get_ms(namespace, "same")["metadata"]["resourceVersion"]
    writes = operator.secret_writes
    # Counted, not timed: three more refreshes however long a busy machine makes them take.
    target = len(syncs) + 3
    wait_for(lambda: synced_times(target), 60, interval=0.05, what="three more refreshes")
    assert kube.existing_secret(namespace, "same").metadata.resource_version == secret_version
    assert kube.get_ms(namespace, "same")["metadata"]["resourceVersion"] == ms_version, "no status churn"
    assert operator.secret_writes == writes


def test_template_and_extract(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/pg", {"host": "db.local", "port": 5432, "user": "app", "pass": "pw"})
    kube.create_ms(
        namespace,
        "extract",
        {"backendRef": {"name": "vault"}, "dataFrom": [{"extract": {"key": f"{namespace}/pg"}}]},
    )
    kube.wait_secret_data(
        namespace, "extract", {"host": "db.local", "port": "5432", "user": "app", "pass": "pw"}
    )
    kube.create_ms(
        namespace,
        "templated",
        {
            "backendRef": {"name": "vault"},
            "dataFrom": [{"extract": {"key": f"{namespace}/pg"}}],
            "target": {
                "template": {
                    "data": {
                        "DATABASE_URL": "postgres://{{ user }}:{{ values['pass'] }}@{{ host }}:{{ port }}/app",
                        "auth": "{{ (user ~ ':' ~ pass) | b64encode }}",
                    }
                }
            },
        },
    )
    kube.wait_secret_data(
        namespace, "templated", {"DATABASE_URL": "postgres://app:pw@db.local:5432/app", "auth": "YXBwOnB3"}
    )


def test_owner_policy_deletes_with_the_managed_secret(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/k", {"username": "u", "password": "p"})
    kube.create_ms(namespace, "owned", spec(f"{namespace}/k"))
    kube.wait_ready(namespace, "owned")
    kube.delete_ms(namespace, "owned")
    wait_for(lambda: kube.secret(namespace, "owned") is None, 40, what="garbage collection of the Secret")


@pytest.mark.parametrize("creation", ["Owner", "Orphan"])
def test_retain_keeps_the_secret(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, creation: str
) -> None:
    put(openbao, f"{namespace}/k", {"username": "u", "password": "p"})
    kube.create_ms(
        namespace,
        "kept",
        spec(f"{namespace}/k", target={"creationPolicy": creation, "deletionPolicy": "Retain"}),
    )
    kube.wait_ready(namespace, "kept")
    assert not kube.existing_secret(namespace, "kept").metadata.owner_references
    kube.delete_ms(namespace, "kept")
    wait_for(lambda: _gone(kube, namespace, "kept"), 10, what="ManagedSecret deletion")
    time.sleep(2)
    assert kube.secret_data(namespace, "kept") == {"username": "u", "password": "p"}


def _gone(kube: Kube, namespace: str, name: str) -> bool:
    try:
        kube.get_ms(namespace, name)
    except Exception:
        return True
    return False


def test_orphan_with_delete_policy_is_removed_by_the_finalizer(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/k", {"username": "u", "password": "p"})
    kube.create_ms(namespace, "orphan", spec(f"{namespace}/k", target={"creationPolicy": "Orphan"}))
    kube.wait_ready(namespace, "orphan")
    assert not kube.existing_secret(namespace, "orphan").metadata.owner_references
    assert "managedsecrets.io/cleanup" in kube.get_ms(namespace, "orphan")["metadata"]["finalizers"]
    kube.delete_ms(namespace, "orphan")
    wait_for(lambda: kube.secret(namespace, "orphan") is None, 15, what="the finalizer to delete the Secret")
    wait_for(lambda: _gone(kube, namespace, "orphan"), 15, what="ManagedSecret deletion")


def test_merge_adds_keys_to_an_existing_secret_and_removes_them_on_delete(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    kube.create_secret(namespace, "shared", {"mine": "hand-made"})
    put(openbao, f"{namespace}/k", {"username": "u", "password": "p"})
    kube.create_ms(
        namespace, "merger", spec(f"{namespace}/k", target={"name": "shared", "creationPolicy": "Merge"})
    )
    kube.wait_secret_data(namespace, "shared", {"mine": "hand-made", "username": "u", "password": "p"})
    assert not kube.existing_secret(namespace, "shared").metadata.owner_references
    kube.delete_ms(namespace, "merger")
    kube.wait_secret_data(namespace, "shared", {"mine": "hand-made"}, timeout=15)


def test_merge_into_a_missing_secret_is_reported(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/k", {"username": "u", "password": "p"})
    kube.create_ms(
        namespace, "merger", spec(f"{namespace}/k", target={"name": "absent", "creationPolicy": "Merge"})
    )
    cond = kube.wait_ready(namespace, "merger", "False", "TargetNotFound")
    assert "absent" in cond["message"]


def test_existing_secret_is_never_overwritten(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    kube.create_secret(namespace, "taken", {"password": "hand-made"})
    before = kube.existing_secret(namespace, "taken").metadata.resource_version
    put(openbao, f"{namespace}/k", {"username": "u", "password": "p"})
    kube.create_ms(namespace, "taken", spec(f"{namespace}/k"))
    cond = kube.wait_ready(namespace, "taken", "False", "TargetExists")
    assert "taken" in cond["message"]
    time.sleep(1)
    secret = kube.existing_secret(namespace, "taken")
    assert secret.metadata.resource_version == before
    assert kube.secret_data(namespace, "taken") == {"password": "hand-made"}


def test_third_party_provider_through_the_plugin_block(
    operator: OperatorRunner, kube: Kube, namespace: str
) -> None:
    """A provider registered like an entry point, configured by the plugin block, syncs for real."""
    from managed_secrets.providers.registry import ProviderSpec

    registry = operator.runtime.providers._registry
    name = f"static-{namespace}"
    registry.register(
        name, ProviderSpec("unit.test_provider_registry:create_static", "pip install static-store")
    )
    kube.create_backend(
        namespace, "corp", {"plugin": {"name": name, "config": {"values": {"db": "from-plugin"}}}}
    )
    kube.create_ms(
        namespace,
        "corp",
        {"backendRef": {"name": "corp"}, "data": [{"secretKey": "db", "remoteRef": {"key": "db"}}]},
    )
    kube.wait_secret_data(namespace, "corp", {"db": "from-plugin"})
