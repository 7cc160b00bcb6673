"""The rollout runtime with fake Kubernetes: debounce, coalescing, recording after the rollout, retries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from managed_secrets import errors
from managed_secrets.api import RESTARTED_FOR_ANNOTATION
from managed_secrets.core import status as status_model
from managed_secrets.core.ports import SecretObject
from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.core.restarts import (
    RolloutFailed,
    RolloutReport,
    Workload,
    WorkloadNotFound,
    WorkloadRef,
    data_hash,
)
from managed_secrets.models.managedsecret import ManagedSecret, RolloutKind
from managed_secrets.runtime.rollout_stage import RolloutStage, ensure_hmac_key

NS = "ns"
#: The status field, as a person reads it.
DATA_HASH = "dataHash"
KEY = b"unit-test-key" * 3
MANAGED = {"managedsecrets.io/managed": "true"}


class FakeWorkloads:
    def __init__(self) -> None:
        self.items: dict[WorkloadRef, Workload] = {}
        self.patches: list[tuple[WorkloadRef, str]] = []
        self.lists = 0
        self.fail_next_patches = 0

    def add(
        self,
        name: str,
        *secrets: str,
        kind: RolloutKind = RolloutKind.DEPLOYMENT,
        annotations: Mapping[str, str] | None = None,
    ) -> WorkloadRef:
        ref = WorkloadRef(kind, NS, name)
        self.items[ref] = Workload(
            ref, uid=f"uid-{name}", annotations=dict(annotations or {}), secrets=frozenset(secrets)
        )
        return ref

    def list(self, namespace: str) -> list[Workload]:
        self.lists += 1
        return [
            w
            for w in self.items.values()
            if w.ref.namespace == namespace and w.ref.kind is not RolloutKind.ROLLOUT
        ]

    def get(self, ref: WorkloadRef) -> Workload:
        if ref not in self.items:
            raise WorkloadNotFound(f"{ref} not found")
        return self.items[ref]

    def restart(self, workload: Workload, key: str, now: str) -> None:
        if self.fail_next_patches:
            self.fail_next_patches -= 1
            raise RolloutFailed(f"patching {workload.ref}: HTTP 500 InternalError")
        self.patches.append((workload.ref, key))
        annotations = {**workload.template_annotations, RESTARTED_FOR_ANNOTATION: key}
        self.items[workload.ref] = Workload(
            workload.ref, workload.uid, workload.annotations, annotations, workload.secrets
        )


class FakeSecrets:
    def __init__(self) -> None:
        self.items: dict[str, SecretObject] = {}
        self.creates = 0

    def put(self, name: str, **data: str) -> dict[str, bytes]:
        encoded = {k: v.encode() for k, v in data.items()}
        self.items[name] = SecretObject(NS, name, data=encoded, labels=MANAGED)
        return encoded

    def get(self, namespace: str, name: str) -> SecretObject | None:
        return self.items.get(name)

    def create(self, secret: SecretObject) -> SecretObject:
        self.creates += 1
        if secret.name in self.items:
            raise errors.TargetExists("exists")
        self.items[secret.name] = secret
        return secret

    def replace(self, secret: SecretObject) -> SecretObject:
        raise NotImplementedError

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        raise NotImplementedError

    def check_create(self, secret: SecretObject) -> None:
        raise NotImplementedError


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self.events.append((involved["kind"], involved["name"], reason, message))


class FakeStatus:
    """The controller's part: records each rollout report in the object's status, as written."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def rollout_finished(self, report: RolloutReport) -> None:
        with self.lock:
            current = status_model.parse_status(self.status.get(report.ms.name, {}))
            new = status_model.after_rollouts(current, [report])
            self.status[report.ms.name] = status_model.status_dict(new)


class Harness:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.workloads = FakeWorkloads()
        self.secrets = FakeSecrets()
        self.events = FakeEvents()
        self.status = FakeStatus()
        self.rollouts = RolloutStage(
            self.workloads,
            self.secrets,
            self.events,
            lambda: KEY,
            loop=loop,
            report=self.status.rollout_finished,
            retry_base=0.05,
        )

    def ms(self, name: str, secret: str, rollout: dict[str, Any] | None = None) -> ManagedSecret:
        spec: dict[str, Any] = {
            "backendRef": {"name": "vault"},
            "target": {"name": secret},
            "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}],
        }
        if rollout is not None:
            spec["rollout"] = rollout
        return ManagedSecret.model_validate(
            {"ref": {"namespace": NS, "name": name, "uid": f"uid-{name}"}, "spec": spec}
        )

    def sync(self, ms: ManagedSecret, **data: str) -> Mapping[str, Any]:
        """A successful sync that (re)wrote the Secret; returns what the hook adds to the status write."""
        encoded = self.secrets.put(ms.target_name, **data)
        result = SyncResult(
            ms.target_name, tuple(sorted(data)), WriteAction.UPDATED, data_changed=True, data=encoded
        )
        with self.status.lock:
            current = dict(self.status.status.get(ms.ref.name, {}))
        recorded = self.rollouts.after_sync(ms, result, current.get(DATA_HASH))
        extra = {DATA_HASH: recorded} if recorded else {}
        with self.status.lock:
            self.status.status[ms.ref.name] = {**current, **extra}
        return extra

    def hash_of(self, **data: str) -> str:
        return data_hash(KEY, {k: v.encode() for k, v in data.items()})


@pytest.fixture
def harness() -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    h = Harness(loop)
    yield h
    done = threading.Event()

    def close() -> None:
        h.rollouts.close()
        done.set()

    loop.call_soon_threadsafe(close)
    done.wait(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_first_sync_records_the_hash_and_restarts_nothing(harness: Harness) -> None:
    web = harness.workloads.add("web", "app")
    ms = harness.ms("app", "app", {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "0"})
    assert harness.sync(ms, k="v1") == {DATA_HASH: harness.hash_of(k="v1")}
    assert harness.sync(ms, k="v1") == {}, "same data: nothing to write, nothing to do"
    time.sleep(0.2)
    assert harness.workloads.patches == []
    assert harness.workloads.lists == 0, "workloads are listed only when a rollout is due"
    assert web in harness.workloads.items


def test_change_restarts_once_and_records_the_hash_after_the_rollout(harness: Harness) -> None:
    web = harness.workloads.add("web", "app")
    ms = harness.ms("app", "app", {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "200ms"})
    harness.sync(ms, k="v1")
    assert harness.sync(ms, k="v2") == {}, "the new hash is not written with the sync"
    assert harness.status.status["app"][DATA_HASH] == harness.hash_of(k="v1")
    eventually(lambda: harness.status.status["app"].get(DATA_HASH) == harness.hash_of(k="v2"))
    assert [ref for ref, _ in harness.workloads.patches] == [web]
    status = harness.status.status["app"]
    assert [(r["kind"], r["name"]) for r in status["restarts"]] == [("Deployment", "web")]
    assert (
        "Deployment",
        "web",
        "Restarted",
        "restarted Deployment web: Secret app changed",
    ) in harness.events.events
    assert (
        "ManagedSecret",
        "app",
        "Restarted",
        "restarted Deployment web: Secret app changed",
    ) in harness.events.events
    # The same data once more (a crash-replay or a refresh): the key is the same, so no second patch.
    harness.status.status["app"][DATA_HASH] = harness.hash_of(k="v1")
    harness.sync(ms, k="v2")
    eventually(lambda: harness.status.status["app"].get(DATA_HASH) == harness.hash_of(k="v2"))
    assert len(harness.workloads.patches) == 1


def test_three_secrets_within_the_window_give_one_restart(harness: Harness) -> None:
    web = harness.workloads.add("web", "a", "b", "c")
    mss = [harness.ms(name, name, {"auto": True, "debounce": "300ms"}) for name in "abc"]
    for ms in mss:
        harness.sync(ms, k="v1")
    for ms in mss:
        harness.sync(ms, k="v2")
    for name in "abc":

        def rehashed(name: str = name) -> bool:
            return harness.status.status[name].get(DATA_HASH) == harness.hash_of(k="v2")

        eventually(rehashed)
    assert [ref for ref, _ in harness.workloads.patches] == [web]
    assert (
        "Deployment",
        "web",
        "Restarted",
        "restarted Deployment web: Secrets a, b, c changed",
    ) in harness.events.events


def test_each_workload_has_its_own_debounce_and_key(harness: Harness) -> None:
    harness.workloads.add("one", "a")
    harness.workloads.add("two", "a", "b")
    a = harness.ms("a", "a", {"auto": True, "debounce": "100ms"})
    b = harness.ms("b", "b", {"auto": True, "debounce": "100ms"})
    harness.sync(a, k="1")
    harness.sync(b, k="1")
    harness.sync(a, k="2")
    eventually(lambda: len(harness.workloads.patches) == 2)
    keys = dict(harness.workloads.patches)
    assert (
        keys[WorkloadRef(RolloutKind.DEPLOYMENT, NS, "one")]
        != keys[WorkloadRef(RolloutKind.DEPLOYMENT, NS, "two")]
    )
    harness.sync(b, k="2")
    eventually(lambda: len(harness.workloads.patches) == 3)
    time.sleep(0.3)
    assert [ref.name for ref, _ in harness.workloads.patches] == ["one", "two", "two"]


def test_missing_workload_leaves_the_rollout_due_until_it_ran(harness: Harness) -> None:
    ms = harness.ms("app", "app", {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "0"})
    harness.sync(ms, k="v1")
    harness.sync(ms, k="v2")
    cond = eventually(
        lambda: next(
            (c for c in harness.status.status["app"].get("conditions", []) if c["type"] == "Rollout"), None
        )
    )
    assert (cond["status"], cond["reason"]) == ("False", "WorkloadNotFound")
    assert harness.status.status["app"][DATA_HASH] == harness.hash_of(k="v1")
    warnings = [e for e in harness.events.events if e[2] == "WorkloadNotFound"]
    assert len(warnings) == 1
    harness.workloads.add("web", "app")
    harness.sync(ms, k="v2")  # the next sync (refresh, operator restart): same data, still due
    eventually(lambda: harness.status.status["app"].get(DATA_HASH) == harness.hash_of(k="v2"))
    assert len(harness.workloads.patches) == 1
    cond = next(c for c in harness.status.status["app"]["conditions"] if c["type"] == "Rollout")
    assert (cond["status"], cond["reason"]) == ("True", "Restarted")


def test_transient_patch_failure_is_retried(harness: Harness) -> None:
    harness.workloads.add("web", "app")
    harness.workloads.fail_next_patches = 2
    ms = harness.ms("app", "app", {"auto": True, "debounce": "0"})
    harness.sync(ms, k="v1")
    harness.sync(ms, k="v2")
    eventually(lambda: harness.status.status["app"].get(DATA_HASH) == harness.hash_of(k="v2"))
    assert len(harness.workloads.patches) == 1


def test_opt_out_and_opt_in(harness: Harness) -> None:
    harness.workloads.add("out", "app", annotations={"managedsecrets.io/reload": "false"})
    harness.workloads.add("in", "app", annotations={"managedsecrets.io/reload": "true"})
    harness.workloads.add("plain", "app")
    ms = harness.ms("app", "app", {"targets": [{"kind": "Deployment", "name": "out"}], "debounce": "0"})
    harness.sync(ms, k="v1")
    harness.sync(ms, k="v2")
    eventually(lambda: harness.status.status["app"].get(DATA_HASH) == harness.hash_of(k="v2"))
    assert [ref.name for ref, _ in harness.workloads.patches] == ["in"]


def test_restart_key_ignores_unmanaged_secrets(harness: Harness) -> None:
    web = harness.workloads.add("web", "app", "hand-made")
    harness.secrets.items["hand-made"] = SecretObject(NS, "hand-made", data={"k": b"1"})
    ms = harness.ms("app", "app", {"auto": True, "debounce": "0"})
    harness.sync(ms, k="v1")
    harness.sync(ms, k="v2")
    eventually(lambda: harness.workloads.patches)
    key = harness.workloads.patches[0][1]
    harness.secrets.items["hand-made"] = SecretObject(NS, "hand-made", data={"k": b"2"})
    harness.status.status["app"][DATA_HASH] = harness.hash_of(k="v1")  # replay the same change
    harness.sync(ms, k="v2")
    eventually(lambda: harness.status.status["app"].get(DATA_HASH) == harness.hash_of(k="v2"))
    assert harness.workloads.patches == [(web, key)]


def test_hmac_key_is_created_once_and_then_read() -> None:
    store = FakeSecrets()
    key = ensure_hmac_key(store, "system", "managed-secrets-hmac-key")
    assert len(key) == 32
    assert ensure_hmac_key(store, "system", "managed-secrets-hmac-key") == key
    assert store.creates == 1


def test_hmac_key_created_by_someone_else_meanwhile_is_read() -> None:
    class Racing(FakeSecrets):
        def __init__(self) -> None:
            super().__init__()
            self.first_get = True

        def get(self, namespace: str, name: str) -> SecretObject | None:
            if self.first_get:
                self.first_get = False
                self.items[name] = SecretObject(namespace, name, data={"key": b"theirs"})
                return None
            return super().get(namespace, name)

    assert ensure_hmac_key(Racing(), "system", "k") == b"theirs"
