"""The fake cluster of the test kit keeps the API server's rules the core relies on: resourceVersions,
preconditions, immutable fields, validation; and a Reconciler driven through it sees the same conflicts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from managed_secrets import errors
from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.ports import SecretObject
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.reconcile import Reconciler
from managed_secrets.core.restarts import Workload, WorkloadNotFound, WorkloadRef
from managed_secrets.models.managedsecret import BackendKind, CreationPolicy, ManagedSecretRef, RolloutKind
from managed_secrets.models.parse import parse_managed_secret
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.testing import FakeCluster, MemoryStore, drop_store, memory_store
from managed_secrets.testing.fakes import merge_patch

NS = "team-a"
KEY = b"fake-cluster-tests-operator-key!"


def secret(name: str = "s", **changes: Any) -> SecretObject:
    return replace(SecretObject(namespace=NS, name=name, data={"k": b"v"}), **changes)


def test_writes_get_new_versions_and_conflicts_are_409s() -> None:
    cluster = FakeCluster()
    created = cluster.create(secret())
    assert created.uid
    assert created.resource_version
    with pytest.raises(errors.TargetExists):
        cluster.create(secret())
    updated = cluster.replace(replace(created, data={"k": b"v2"}))
    assert int(updated.resource_version or 0) > int(created.resource_version or 0)
    assert updated.uid == created.uid
    with pytest.raises(errors.WriteFailed, match="409 Conflict"):
        cluster.replace(replace(created, data={"k": b"stale"}))  # the old resourceVersion
    with pytest.raises(errors.WriteFailed, match="UID in precondition"):
        cluster.replace(replace(updated, uid="another-incarnation"))
    # Without a resourceVersion an update is unconditional, as a PUT without one is.
    cluster.replace(replace(updated, resource_version=None, data={"k": b"v3"}))
    with pytest.raises(errors.WriteFailed, match="404"):
        cluster.replace(secret("absent"))
    assert [w.verb for w in cluster.writes] == ["create", "replace", "replace"]


def test_delete_honours_preconditions_and_a_missing_object_is_done() -> None:
    cluster = FakeCluster()
    stored = cluster.add_secret(secret())
    with pytest.raises(errors.WriteFailed, match="Precondition"):
        cluster.delete(NS, "s", resource_version="0")
    with pytest.raises(errors.WriteFailed, match="Precondition"):
        cluster.delete(NS, "s", uid="other")
    cluster.delete(NS, "s", uid=stored.uid, resource_version=stored.resource_version)
    assert cluster.get(NS, "s") is None
    cluster.delete(NS, "s")
    assert cluster.writes_of(NS, "s") == ["delete"]


def test_immutable_fields_and_validation_are_422s() -> None:
    cluster = FakeCluster()
    stored = cluster.add_secret(secret(immutable=True))
    with pytest.raises(errors.TargetRejected, match="type: field is immutable"):
        cluster.replace(replace(stored, type="kubernetes.io/basic-auth"))
    with pytest.raises(errors.TargetRejected, match="data: field is immutable"):
        cluster.replace(replace(stored, data={"k": b"other"}))
    with pytest.raises(errors.TargetRejected, match="immutable: field is immutable"):
        cluster.replace(replace(stored, immutable=False))
    cluster.replace(replace(stored, labels={"fine": "yes"}))  # metadata may change
    tls = secret("tls", type="kubernetes.io/tls", data={"tls.crt": b"c"})
    with pytest.raises(errors.TargetRejected, match=r"tls\.key"):
        cluster.create(tls)
    with pytest.raises(errors.TargetRejected, match="would refuse"):
        cluster.check_create(tls)
    assert cluster.get(NS, "tls") is None


def test_injected_failures_come_first_and_once() -> None:
    cluster = FakeCluster()
    cluster.fail_next("create", errors.WriteFailed("creating Secret s: 500"), times=2)
    for _ in range(2):
        with pytest.raises(errors.WriteFailed, match="500"):
            cluster.create(secret())
    cluster.create(secret())
    with pytest.raises(ValueError, match="unknown verb"):
        cluster.fail_next("patch", errors.WriteFailed("x"))


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    drop_store("fake-cluster")
    yield memory_store("fake-cluster")
    drop_store("fake-cluster")


class RacingCluster(FakeCluster):
    """Another writer changes the Secret right after the operator read it."""

    race = True

    def get(self, namespace: str, name: str) -> SecretObject | None:
        found = super().get(namespace, name)
        if found is not None and self.race:
            self.race = False
            self.add_secret(replace(found, labels={**found.labels, "touched": "by-someone"}))
        return found


def test_a_reconcile_racing_another_writer_gets_the_conflict_and_loses_nothing(store: MemoryStore) -> None:
    store.put("db", {"password": "pw-1"})
    cluster = RacingCluster()
    cluster.add_backend(
        {
            "kind": "SecretBackend",
            "metadata": {"name": "mem", "namespace": NS},
            "spec": {"memory": {"store": store.name}},
        }
    )
    ms = parse_managed_secret(
        {
            "metadata": {"name": "app", "namespace": NS, "uid": "uid-app"},
            "spec": {
                "backendRef": {"name": "mem"},
                "data": [{"secretKey": "password", "remoteRef": {"key": "db", "property": "password"}}],
            },
        }
    )
    reconciler = Reconciler(
        cluster, ProviderPool(ProviderRegistry(), cluster), ReadCache(), operator_key=lambda: KEY
    )
    cluster.race = False
    reconciler.sync(ms)  # created
    store.put("db", {"password": "pw-2"})
    cluster.race = True
    with pytest.raises(errors.WriteFailed, match="409 Conflict"):
        reconciler.sync(ms, force=True)
    after = cluster.get(NS, "app")
    assert after is not None
    assert after.labels["touched"] == "by-someone"
    assert after.data["password"] == b"pw-1"
    result = reconciler.sync(ms, force=True)  # the retry reads the new version and wins
    assert result.data_changed
    updated = cluster.get(NS, "app")
    assert updated is not None
    assert updated.data["password"] == b"pw-2"
    assert updated.labels["touched"] == "by-someone"
    # Deletion with the Delete policy on an Owner target is the garbage collector's; an Orphan one is ours.
    orphan = ms.model_copy(
        update={
            "spec": ms.spec.model_copy(
                update={
                    "target": ms.spec.target.model_copy(update={"creation_policy": CreationPolicy.ORPHAN})
                }
            )
        }
    )
    reconciler.cleanup(orphan)
    assert cluster.get(NS, "app") is None


def test_backends_namespaces_and_credentials() -> None:
    cluster = FakeCluster()
    cluster.add_backend({"kind": "ClusterSecretBackend", "metadata": {"name": "c"}, "spec": {"memory": {}}})
    cluster.add_backend({"kind": "SecretBackend", "metadata": {"name": "bad", "namespace": NS}, "spec": {}})
    found = cluster.get_backend(BackendKind.CLUSTER_SECRET_BACKEND, "c", None)
    assert found is not None
    assert found.provider == "memory"
    with pytest.raises(errors.InvalidBackend, match="exactly one provider block"):
        cluster.get_backend(BackendKind.SECRET_BACKEND, "bad", NS)
    assert cluster.get_backend(BackendKind.SECRET_BACKEND, "c", NS) is None
    cluster.set_namespace_labels(NS, {"tier": "apps"})
    assert cluster.namespace_labels(NS) == {"tier": "apps"}
    cluster.add_secret(secret("creds", annotations={"a": "b"}, data={"token": b"t"}))
    value = cluster.read_secret_key(NS, "creds", "token")
    assert (value.value, dict(value.annotations)) == (b"t", {"a": "b"})
    assert cluster.read_secret_key(NS, "creds", "absent").value is None
    with pytest.raises(errors.AuthFailed):
        cluster.read_secret_key(NS, "missing", "token")
    with pytest.raises(errors.AuthFailed):
        cluster.request_token(NS, "app", ["aud"])
    cluster.add_service_account(NS, "app", {"x": "y"})
    assert cluster.service_account_annotations(NS, "app") == {"x": "y"}
    assert "aud" in cluster.request_token(NS, "app", ["aud"])
    assert cluster.token_requests == [(NS, "app", ("aud",))]


def test_workloads_status_finalizers_and_events() -> None:
    cluster = FakeCluster()
    deployment = Workload(WorkloadRef(RolloutKind.DEPLOYMENT, NS, "web"), secrets=frozenset({"app"}))
    argo = Workload(WorkloadRef(RolloutKind.ROLLOUT, NS, "canary"))
    cluster.add_workload(deployment)
    cluster.add_workload(argo)
    workloads = cluster.workload_api()
    assert workloads.list(NS) == [deployment]  # Argo Rollouts are not discovered, only named
    workloads.restart(deployment, "key-1", "2026-01-01T00:00:00Z")
    workloads.restart(argo, "key-2", "2026-01-01T00:00:00Z")
    assert workloads.get(deployment.ref).restarted_for == "key-1"
    assert workloads.get(argo.ref).restarted_for == "key-2"
    with pytest.raises(WorkloadNotFound):
        workloads.get(WorkloadRef(RolloutKind.STATEFUL_SET, NS, "db"))
    assert [r.ref.name for r in cluster.restarts] == ["web", "canary"]

    ref = ManagedSecretRef(namespace=NS, name="app", uid="u")
    version = cluster.add_managed_secret(NS, "app", "u")
    cluster.patch_status(ref, {"secretName": "app", "conditions": [{"type": "Ready"}]})
    cluster.patch_status(ref, {"secretName": None, "dataHash": "h"})
    assert cluster.status_of(NS, "app") == {"conditions": [{"type": "Ready"}], "dataHash": "h"}
    with pytest.raises(errors.WriteFailed, match="409"):
        cluster.set_finalizers(ref, ["x"], version)  # the status patches moved it on
    cluster.set_finalizers(ref, ["x"], cluster.managed_secrets[NS, "app"].resource_version)
    assert cluster.finalizers_of(NS, "app") == ["x"]
    cluster.post_event({"namespace": NS, "name": "app"}, reason="Synced", message="m" * 2000)
    assert [(e.reason, len(e.message)) for e in cluster.events] == [("Synced", 1024)]


def test_merge_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": None, "e": 3}, "d": [1]}) == {
        "a": {"c": 2, "e": 3},
        "d": [1],
    }
