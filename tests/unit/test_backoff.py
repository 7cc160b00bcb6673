"""Retry backoff of transient failures: exponential, capped by backoff_max and by the refresh interval,
full jitter, never an overflow; a retry shares reads made after its failure instead of forcing its own."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.errors import BackendUnavailable, PropertyNotFound
from managed_secrets.models.managedsecret import ManagedSecret, ManagedSecretRef
from managed_secrets.runtime.controller import Controller, ControllerSettings

PRODUCTION = ControllerSettings(backoff_base=5.0, backoff_max=300.0)


def backoff_delay(settings: ControllerSettings, failures: int, interval: float = 0.0) -> float:
    return settings.backoff.delay(failures, interval)


@pytest.fixture(autouse=True)
def _seeded_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", random.Random(1234).uniform)


def upper(settings: ControllerSettings, failures: int, interval: float = 0.0) -> float:
    return max(backoff_delay(settings, failures, interval) for _ in range(2000))


def test_doubles_from_the_base_up_to_the_maximum() -> None:
    bounds = [upper(PRODUCTION, n) for n in range(1, 10)]
    for got, want in zip(bounds, [5, 10, 20, 40, 80, 160, 300, 300, 300], strict=True):
        assert want * 0.99 <= got <= want


def test_capped_by_the_refresh_interval() -> None:
    """After a long outage a 5 s object retries within 5 s, not after minutes of grown backoff."""
    for failures in (1, 5, 12, 100):
        assert upper(PRODUCTION, failures, interval=5.0) <= 5.0
    assert upper(PRODUCTION, 1, interval=3600.0) <= 5.0  # a long interval does not lengthen the backoff
    assert upper(PRODUCTION, 20, interval=3600.0) <= 300.0
    assert upper(PRODUCTION, 20, interval=0.0) > 290.0  # 0: fetched once, so only backoff_max caps it


def test_full_jitter_spreads_retries_over_the_whole_window() -> None:
    delays = [backoff_delay(PRODUCTION, 10, interval=5.0) for _ in range(5000)]
    assert min(delays) >= 0
    assert max(delays) <= 5.0
    # No herd: every tenth of the window gets its share of retries.
    buckets = [0] * 10
    for delay in delays:
        buckets[min(int(delay / 0.5), 9)] += 1
    assert min(buckets) > 350, buckets


@pytest.mark.parametrize("failures", [1024, 1025, 5000, 10**9])
def test_an_object_failing_for_days_never_overflows(failures: int) -> None:
    assert 0 <= backoff_delay(PRODUCTION, failures) <= 300.0
    assert 0 <= backoff_delay(PRODUCTION, failures, interval=1.0) <= 1.0


# -- the controller: which delay a failure gets, and what its retry may reuse ------------------------------


class FakeReconciler:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[dict[str, Any]] = []

    def sync(self, ms: ManagedSecret, **kwargs: Any) -> SyncResult:
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return SyncResult("app", ("v",), WriteAction.UNCHANGED, data_changed=False, data={"v": b"x"})

    def cleanup(self, ms: ManagedSecret) -> None: ...


class FakeWriter:
    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None: ...

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None: ...

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def body(interval: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": "app", "uid": "u", "generation": 1},
        "spec": {
            "backendRef": {"name": "vault"},
            "refreshInterval": interval,
            "data": [{"secretKey": "v", "remoteRef": {"key": "app/db"}}],
        },
    }


def controller(reconciler: FakeReconciler, clock: Clock) -> Controller:
    return Controller(reconciler, FakeWriter(), PRODUCTION, clock=clock)  # type: ignore[arg-type]


def reconcile_once(subject: Controller, state: Any) -> float | None:
    """One reconcile, as a worker runs it (no queue, no event loop needed)."""
    return subject._reconcile(state, force=False)


def test_transient_failures_retry_within_the_refresh_interval() -> None:
    clock = Clock()
    reconciler = FakeReconciler(*[BackendUnavailable("store down") for _ in range(20)])
    subject = controller(reconciler, clock)
    subject.observe(body("5s"))
    state = subject.state_of("team-a", "app")
    assert state is not None
    delays = []
    for _ in range(20):
        delays.append(reconcile_once(subject, state))
        clock.now += 5
    assert state.failures == 20
    assert all(delay is not None and 0 <= delay <= 5.0 for delay in delays), delays


def test_a_retry_reuses_only_reads_made_after_its_failure() -> None:
    """No forced read per retrying object (a herd on a store coming back): values read after the failure
    are good enough, values from before it are not (they may be what failed)."""
    clock = Clock()
    reconciler = FakeReconciler(PropertyNotFound("no such property"), BackendUnavailable("down"))
    subject = controller(reconciler, clock)
    subject.observe(body("1h"))
    state = subject.state_of("team-a", "app")
    assert state is not None
    reconcile_once(subject, state)
    first_failure = clock.now
    clock.now += 7
    reconcile_once(subject, state)
    second_failure = clock.now
    clock.now += 7
    reconcile_once(subject, state)  # succeeds
    assert [call["force"] for call in reconciler.calls] == [False, False, False]
    assert [call["last_refresh"] for call in reconciler.calls] == [None, first_failure, second_failure]
    assert state.failures == 0
    synced_at = clock.now
    assert state.last_refresh == synced_at
    clock.now += 3600
    reconcile_once(subject, state)  # a plain refresh: reads made after the last sync
    assert reconciler.calls[-1]["last_refresh"] == synced_at


def test_a_backend_change_restarts_the_backoff() -> None:
    clock = Clock()
    reconciler = FakeReconciler(*[BackendUnavailable("down") for _ in range(8)])
    subject = controller(reconciler, clock)
    subject.observe(body("0"))
    state = subject.state_of("team-a", "app")
    assert state is not None
    for _ in range(8):
        reconcile_once(subject, state)
    assert state.failures == 8
    assert state.backend is not None
    kind, namespace, name = state.backend
    subject.backend_changed(kind, name, namespace)
    assert state.failures == 0
