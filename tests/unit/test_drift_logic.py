"""Drift repair, the pure parts: the per-object rate limit, the ledger of the operator's own writes, the
re-list diff of the Secret watch, and the controller's drift trigger (with a fake reconciler)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Mapping
from typing import Any

from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.kube.secretwatch import OwnWrites, SecretChange, SecretWatch, change_from_metadata
from managed_secrets.models.managedsecret import ManagedSecret, ManagedSecretRef
from managed_secrets.runtime.controller import Controller, ControllerSettings
from managed_secrets.runtime.drift import DriftLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the rate limit ----------------------------------------------------------------------------------------


def test_first_drift_is_repaired_at_once_then_repairs_space_out_exponentially() -> None:
    clock = Clock()
    limiter = DriftLimiter(base=1.0, cap=60.0, clock=clock)
    repairs = []
    # A tenant changes the Secret every 0.1 s for 100 s; a repair is admitted whenever none is pending.
    pending_until = None
    for _ in range(1000):
        if pending_until is None or clock.now >= pending_until:
            delay = limiter.admit("a")
            if delay is not None:
                pending_until = clock.now + delay
                repairs.append(round(clock.now + delay, 1))
        else:
            assert limiter.admit("a") is None, "a pending repair covers later changes"
        clock.now += 0.1
    assert repairs[:6] == [1000.0, 1001.0, 1003.0, 1007.0, 1015.0, 1031.0]
    gaps = [b - a for a, b in itertools.pairwise(repairs)]
    assert max(gaps) <= 60.0 + 0.2, "capped"
    assert len(repairs) <= 8, f"100 s of flapping gave {len(repairs)} repairs"


def test_objects_are_limited_independently_and_a_quiet_period_resets() -> None:
    clock = Clock()
    limiter = DriftLimiter(base=1.0, cap=8.0, clock=clock)
    for _ in range(5):
        limiter.admit("noisy")
        clock.now += 0.01
    assert limiter.admit("quiet") == 0.0, "another object is not slowed by a noisy one"
    clock.now += 16.0 + 8.0  # twice the cap after the last due repair
    assert limiter.admit("noisy") == 0.0
    clock.now += 1000
    limiter.admit("other")  # sweeps ended streaks
    assert len(limiter) == 1
    limiter.forget("other")
    assert len(limiter) == 0


# -- the ledger of own writes -------------------------------------------------------------------------------


def change(rv: str, *, deleted: bool = False, uid: str = "u1") -> SecretChange:
    return SecretChange("ns", "s", deleted, rv, uid, ("ms",))


def test_echo_of_own_write_is_not_drift_and_a_foreign_version_is() -> None:
    own = OwnWrites()
    own.begin(("ns", "s"))
    own.wrote(("ns", "s"), "10", "u1")
    own.end(("ns", "s"))
    assert own.judge(change("10")) is False
    assert own.judge(change("11")) is True
    assert own.judge(change("12", deleted=True)) is True, "a deletion by someone else"
    assert len(own) == 0, "a deletion of that uid ends the ledger entry"


def test_event_arriving_before_the_write_returns_is_held_then_judged() -> None:
    own = OwnWrites()
    released: list[SecretChange] = []
    own.on_foreign = released.append
    key = ("ns", "s")
    own.begin(key)
    assert own.judge(change("10")) is None  # the apiserver's event outran our HTTP response
    own.wrote(key, "10", "u1")
    own.end(key)
    assert released == [], "it was our own echo"
    own.begin(key)
    assert own.judge(change("11")) is None  # someone else's edit while we write
    own.wrote(key, "12", "u1")  # ours returned another version: the held change was someone else's
    own.end(key)
    assert [c.resource_version for c in released] == ["11"], "released as drift when the write ended"


def test_own_delete_and_recreate_type_change_is_not_drift() -> None:
    own = OwnWrites()
    key = ("ns", "s")
    own.begin(key)
    own.deleted(key, "old")
    own.wrote(key, "20", "new")
    own.end(key)
    assert own.judge(change("19", deleted=True, uid="old")) is False
    assert own.judge(change("20", uid="new")) is False
    assert own.judge(change("21", uid="new")) is True


def test_only_names_versions_and_owners_are_kept_from_metadata() -> None:
    meta = {
        "namespace": "ns",
        "name": "s",
        "uid": "u",
        "resourceVersion": "5",
        "labels": {"managedsecrets.io/managed": "true"},
        "annotations": {
            "managedsecrets.io/owner": "a",
            "managedsecrets.io/merged-by": "b",
            "kubectl.kubernetes.io/last-applied-configuration": '{"data": {"password": "c2VjcmV0"}}',
        },
        "managedFields": [{"manager": "kubectl"}],
    }
    parsed = change_from_metadata(meta, deleted=False)
    assert parsed == SecretChange("ns", "s", deleted=False, resource_version="5", uid="u", owners=("a", "b"))
    assert "c2VjcmV0" not in repr(parsed)


# -- the re-list diff ---------------------------------------------------------------------------------------


class FakeWatch(SecretWatch):
    def __init__(self, pages: list[Mapping[str, Any]]) -> None:
        self.delivered: list[SecretChange] = []
        super().__init__(None, OwnWrites(), self.delivered.append)
        self.pages = pages

    def _get(self, path: str, query: Any, accept: str, *, timeout: Any) -> Mapping[str, Any]:
        assert "PartialObjectMetadataList" in accept, "metadata only, never the data"
        assert ("labelSelector", "managedsecrets.io/managed in (true,merged)") in query
        return self.pages.pop(0)


def page(*items: tuple[str, str], cont: str | None = None, rv: str = "100") -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": rv, **({"continue": cont} if cont else {})},
        "items": [
            {
                "metadata": {
                    "namespace": "ns",
                    "name": name,
                    "uid": f"uid-{name}",
                    "resourceVersion": version,
                    "annotations": {"managedsecrets.io/owner": name},
                }
            }
            for name, version in items
        ],
    }


def test_first_listing_delivers_nothing_and_a_relist_delivers_the_differences() -> None:
    watch = FakeWatch(
        [
            page(("a", "1"), cont="next"),
            page(("b", "2"), ("c", "3"), rv="50"),
            page(("a", "1"), ("c", "9"), ("d", "4"), rv="60"),
        ]
    )
    assert watch._relist(None, deliver=False) == "50"
    assert watch.known == 3
    assert watch.delivered == []
    assert watch._relist(None, deliver=True) == "60"
    got = {(c.name, c.deleted) for c in watch.delivered}
    assert got == {("b", True), ("c", False), ("d", False)}, (
        "missed while disconnected: deleted, edited, added"
    )
    assert watch.known == 3


# -- the controller's drift trigger -------------------------------------------------------------------------


class FakeReconciler:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.action = WriteAction.CREATED
        self.lock = threading.Lock()

    def sync(self, ms: ManagedSecret, **kwargs: Any) -> SyncResult:
        with self.lock:
            self.calls.append(kwargs)
        action, self.action = self.action, WriteAction.UNCHANGED
        return SyncResult(ms.target_name, ("k",), action, data_changed=False, data={"k": b"v"})

    def cleanup(self, ms: ManagedSecret) -> None:
        pass


class FakeWriter:
    def __init__(self) -> None:
        self.events: list[str] = []

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        pass

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self.events.append(reason)

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None:
        pass


def body(interval: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "ms", "uid": "u", "generation": 1},
        "spec": {
            "backendRef": {"name": "vault"},
            "refreshInterval": interval,
            "target": {"name": "target"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "a/b"}}],
        },
    }


async def wait_calls(reconciler: FakeReconciler, count: int) -> None:
    for _ in range(500):
        if len(reconciler.calls) >= count:
            await asyncio.sleep(0.05)  # let the worker finish the run
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} reconciles, got {len(reconciler.calls)}")


def test_drift_repair_reads_from_cache_and_keeps_the_refresh_schedule() -> None:
    async def scenario() -> None:
        reconciler, writer = FakeReconciler(), FakeWriter()
        controller = Controller(reconciler, writer, ControllerSettings(workers=2))  # type: ignore[arg-type]
        await controller.start()
        try:
            controller.observe(body("1h"))
            await wait_calls(reconciler, 1)
            state = controller.state_of("ns", "ms")
            assert state is not None
            refreshed, due = state.last_refresh, controller.due_of("ns", "ms")
            controller.secret_drifted("ns", "ms", "other-secret", deleted=True)
            controller.secret_drifted("ns", "absent", "target", deleted=True)
            await asyncio.sleep(0.1)
            assert len(reconciler.calls) == 1, "a Secret that is not the target (or of no object) is ignored"
            reconciler.action = WriteAction.CREATED
            controller.secret_drifted("ns", "ms", "target", deleted=True)
            await wait_calls(reconciler, 2)
            assert reconciler.calls[1]["last_refresh"] is None, "cached reads of any age within the window"
            assert reconciler.calls[1]["force"] is False
            assert state.last_refresh == refreshed
            assert due is not None
            assert abs((controller.due_of("ns", "ms") or 0) - due) < 0.5, "the hourly refresh stays"
            assert writer.events == ["DriftRepaired"]
            controller.secret_drifted("ns", "ms", "target", deleted=False)  # within the base: delayed
            await asyncio.sleep(0.2)
            assert len(reconciler.calls) == 2
            await wait_calls(reconciler, 3)
        finally:
            await controller.stop()

    asyncio.run(scenario())
