"""The controller's workers with a fake reconciler: fairness across namespaces, one reconcile per object,
liveness when nothing finishes, and a stop that does not wait for stuck threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.errors import TemplateError
from managed_secrets.models.managedsecret import ManagedSecret, ManagedSecretRef
from managed_secrets.runtime.controller import Controller, ControllerSettings

SPEC = {
    "backendRef": {"name": "vault"},
    "refreshInterval": "0",
    "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}],
}


def body(namespace: str, name: str, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "generation": generation},
        "spec": SPEC,
    }


class FakeReconciler:
    """Blocks the reconciles of the namespaces in ``blocked`` until ``release`` is set."""

    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.most_running: Counter[str] = Counter()
        self.synced: list[tuple[str, str]] = []
        self.concurrent_per_object: Counter[tuple[str, str]] = Counter()
        self.overlaps = 0

    def sync(self, ms: ManagedSecret, **_: Any) -> SyncResult:
        key = (ms.ref.namespace, ms.ref.name)
        with self.lock:
            self.running[ms.ref.namespace] += 1
            self.concurrent_per_object[key] += 1
            self.overlaps += self.concurrent_per_object[key] > 1
            self.most_running[ms.ref.namespace] = max(
                self.most_running[ms.ref.namespace], self.running[ms.ref.namespace]
            )
        try:
            if ms.ref.namespace in self.blocked:
                self.release.wait()
            else:
                time.sleep(0.01)
        finally:
            with self.lock:
                self.running[ms.ref.namespace] -= 1
                self.concurrent_per_object[key] -= 1
                self.synced.append(key)
        return SyncResult(ms.ref.name, ("k",), WriteAction.UNCHANGED, data_changed=False, data={})

    def cleanup(self, ms: ManagedSecret) -> None:
        pass


class FakeWriter:
    def __init__(self) -> None:
        self.patches: list[tuple[ManagedSecretRef, Mapping[str, Any]]] = []

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        self.patches.append((ref, patch))

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        pass

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None:
        pass


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def make(
    reconciler: FakeReconciler, **settings: Any
) -> tuple[Controller, FakeWriter, list[ManagedSecretRef]]:
    writer = FakeWriter()
    deleted: list[ManagedSecretRef] = []
    controller = Controller(
        reconciler,  # type: ignore[arg-type]
        writer,
        ControllerSettings(**{"workers": 4, "stop_grace": 0.5, **settings}),
        on_deleted=deleted.append,
    )
    return controller, writer, deleted


def test_a_namespace_holds_at_most_its_share_and_others_still_sync() -> None:
    reconciler = FakeReconciler(blocked={"hostile"})

    async def scenario() -> None:
        controller, _, _ = make(reconciler)
        await controller.start()
        try:
            for i in range(20):
                controller.observe(body("hostile", f"h{i}"))
            await until(lambda: reconciler.running["hostile"] == 2)
            controller.observe(body("good", "app"))
            await until(lambda: ("good", "app") in reconciler.synced, seconds=5)
            assert reconciler.most_running["hostile"] == 2, "half of the 4 workers"
            assert controller.liveness().details["queued"] == 18
        finally:
            reconciler.release.set()
            await controller.stop()

    run(scenario())


def test_without_a_cap_the_good_namespace_is_served_next() -> None:
    """workers_per_namespace = workers: the hostile namespace may take every worker, but the good
    object still comes before the rest of the hostile backlog as soon as one worker is free."""
    reconciler = FakeReconciler(blocked=set())
    order: list[str] = []
    original = reconciler.sync

    def sync(ms: ManagedSecret, **kwargs: Any) -> SyncResult:
        order.append(ms.ref.namespace)
        time.sleep(0.05)
        return original(ms, **kwargs)

    reconciler.sync = sync  # type: ignore[method-assign]

    async def scenario() -> None:
        controller, _, _ = make(reconciler, workers=2, workers_per_namespace=2)
        await controller.start()
        try:
            for i in range(30):
                controller.observe(body("hostile", f"h{i}"))
            await until(lambda: len(order) >= 2)
            controller.observe(body("good", "app"))
            await until(lambda: "good" in order)
            assert order.index("good") <= 4
        finally:
            await controller.stop()

    run(scenario())


def test_one_reconcile_per_object_and_events_during_a_run_coalesce() -> None:
    reconciler = FakeReconciler(blocked={"ns"})

    async def scenario() -> None:
        controller, _, _ = make(reconciler)
        await controller.start()
        try:
            controller.observe(body("ns", "a", generation=1))
            await until(lambda: reconciler.running["ns"] == 1)
            for generation in range(2, 12):
                controller.observe(body("ns", "a", generation=generation))
            reconciler.release.set()
            await until(lambda: len(reconciler.synced) == 2)
            await asyncio.sleep(0.2)
            assert reconciler.synced == [("ns", "a"), ("ns", "a")], "one rerun for all the changes"
            assert reconciler.overlaps == 0
        finally:
            await controller.stop()

    run(scenario())


def test_liveness_fails_when_nothing_finishes_and_recovers() -> None:
    reconciler = FakeReconciler(blocked={"ns"})

    async def scenario() -> None:
        controller, _, _ = make(reconciler, stall_timeout=0.3)
        assert controller.liveness().alive
        await controller.start()
        try:
            for i in range(6):
                controller.observe(body("ns", f"o{i}"))
            await until(lambda: not controller.liveness().alive, seconds=5)
            liveness = controller.liveness()
            assert "no reconcile finished for" in liveness.message
            assert liveness.details["running"] == 2
            reconciler.release.set()
            await until(lambda: controller.liveness().details["queued"] == 0)
            assert controller.liveness().alive
        finally:
            reconciler.release.set()
            await controller.stop()

    run(scenario())


def test_idle_is_alive() -> None:
    reconciler = FakeReconciler(blocked=set())

    async def scenario() -> None:
        controller, _, _ = make(reconciler, stall_timeout=0.1)
        await controller.start()
        try:
            controller.observe(body("ns", "a"))
            await until(lambda: len(reconciler.synced) == 1)
            await asyncio.sleep(0.3)
            assert controller.liveness().alive, "no work: nothing is stalled"
        finally:
            await controller.stop()

    run(scenario())


def test_stop_does_not_wait_for_a_stuck_thread() -> None:
    reconciler = FakeReconciler(blocked={"ns"})

    async def scenario() -> float:
        controller, _, _ = make(reconciler, stop_grace=0.5)
        await controller.start()
        controller.observe(body("ns", "stuck"))
        await until(lambda: reconciler.running["ns"] == 1)
        started = time.monotonic()
        await controller.stop()
        return time.monotonic() - started

    try:
        assert run(scenario()) < 3
        stuck = [t for t in threading.enumerate() if t.name.startswith("reconcile")]
        assert stuck, "the stuck thread is still there"
        assert all(t.daemon for t in stuck), "so it cannot keep the process from exiting"
    finally:
        reconciler.release.set()


def test_a_failure_during_stop_or_deletion_is_not_reported() -> None:
    class Failing(FakeReconciler):
        def sync(self, ms: ManagedSecret, **kwargs: Any) -> SyncResult:
            super().sync(ms, **kwargs)
            raise TemplateError("rendering cancelled")

    reconciler = Failing(blocked={"ns"})

    async def scenario() -> tuple[list[Any], list[ManagedSecretRef]]:
        controller, writer, deleted = make(reconciler)
        await controller.start()
        try:
            controller.observe(body("ns", "gone"))
            await until(lambda: reconciler.running["ns"] == 1)
            controller.forget("ns", "gone")
            reconciler.release.set()
            await until(lambda: len(reconciler.synced) == 1)
            await asyncio.sleep(0.1)
            return writer.patches, deleted
        finally:
            await controller.stop()

    patches, deleted = run(scenario())
    assert patches == [], "no status written for a deleted object"
    assert [ref.name for ref in deleted] == ["gone"], "work in flight for it was told to stop"


@pytest.mark.parametrize(
    ("workers", "share", "expected"), [(32, None, 16), (8, None, 4), (1, None, 1), (4, 9, 4), (8, 3, 3)]
)
def test_namespace_share(workers: int, share: int | None, expected: int) -> None:
    assert ControllerSettings(workers=workers, workers_per_namespace=share).namespace_share == expected
