"""The controller as the one writer of ManagedSecret status: the rollout stage's hash goes out with the
sync, a rollout's report comes back through the queue and is written by a run of that object (no second
writer, no sync, the refresh timer left alone), and nothing is written when nothing changed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.core.restarts import Outcome, RestartResult, RolloutReport, WorkloadRef
from managed_secrets.errors import WriteFailed
from managed_secrets.models.managedsecret import ManagedSecret, ManagedSecretRef, RolloutKind
from managed_secrets.runtime.controller import Controller, ControllerSettings

NS, NAME = "ns", "app"
FIRST_HASH = "0" * 32
NEW_HASH = "f" * 32


class FakeReconciler:
    def __init__(self) -> None:
        self.syncs = 0
        self.release = threading.Event()
        self.release.set()

    def sync(self, ms: ManagedSecret, **_: Any) -> SyncResult:
        self.syncs += 1
        self.release.wait(5)
        return SyncResult("app", ("k",), WriteAction.UNCHANGED, data_changed=False, data={"k": b"v"})

    def cleanup(self, ms: ManagedSecret) -> None: ...


class FakeStage:
    """The rollout stage's answer to each sync: the hash to record (a first sync) or None."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.recorded: list[str | None] = []

    def after_sync(
        self, ms: ManagedSecret, result: SyncResult, recorded: str | None, generation: int | None = None
    ) -> str | None:
        self.recorded.append(recorded)
        return self.answers.pop(0) if self.answers else None


class FakeWriter:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        #: The object's status on the API server: the merge patches applied.
        self.status: dict[str, Any] = {}
        self.threads: set[str] = set()
        self.fail_next = 0

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_next:
            self.fail_next -= 1
            raise WriteFailed("updating status: HTTP 500")
        self.patches.append(dict(patch))
        for key, value in patch.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = value

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None: ...

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None: ...


def body(
    uid: str = "uid-app", generation: int = 1, status: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The object as a watch event brings it (with the status as last written)."""
    return {
        "metadata": {"namespace": NS, "name": NAME, "uid": uid, "generation": generation},
        "status": dict(status or {}),
        "spec": {
            "backendRef": {"name": "vault"},
            "refreshInterval": "1h",
            "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}],
        },
    }


def report(uid: str = "uid-app", result: RestartResult = RestartResult.RESTARTED) -> RolloutReport:
    web = WorkloadRef(RolloutKind.DEPLOYMENT, NS, "web")
    return RolloutReport(
        ManagedSecretRef(namespace=NS, name=NAME, uid=uid),
        NEW_HASH,
        (Outcome(web, result, "" if result is RestartResult.RESTARTED else "Deployment web not found"),),
        1,
        "2026-01-01T00:00:00Z",
    )


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def scenario(
    steps: Callable[[Controller, FakeReconciler, FakeWriter, FakeStage], Any], stage: FakeStage
) -> None:
    async def main() -> None:
        reconciler, writer = FakeReconciler(), FakeWriter()
        controller = Controller(
            reconciler,  # type: ignore[arg-type]
            writer,
            ControllerSettings(workers=2, backoff_base=0.01, backoff_max=0.01, stop_grace=0.5),
            rollouts=stage,
        )
        await controller.start()
        try:
            await steps(controller, reconciler, writer, stage)
        finally:
            reconciler.release.set()
            await controller.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_first_hash_goes_out_with_the_sync_and_a_report_comes_back_through_the_queue() -> None:
    async def steps(c: Controller, r: FakeReconciler, w: FakeWriter, stage: FakeStage) -> None:
        c.observe(body())
        await until(lambda: len(w.patches) == 1)
        assert w.patches[0]["dataHash"] == FIRST_HASH, "recorded in the sync's one write"
        due = c.due_of(NS, NAME)
        assert due is not None
        threading.Thread(target=c.rollout_finished, args=(report(),)).start()  # as from a rollout thread
        await until(lambda: len(w.patches) == 2)
        patch = w.patches[1]
        assert patch["dataHash"] == NEW_HASH
        assert patch["restarts"] == [{"kind": "Deployment", "name": "web", "time": "2026-01-01T00:00:00Z"}]
        assert [c["type"] for c in patch["conditions"]] == ["Ready", "Rollout"]
        assert r.syncs == 1, "recording a rollout is not a sync"
        assert c.due_of(NS, NAME) == due, "and leaves the refresh where it was"
        assert all(name.startswith("reconcile") for name in w.threads), "written by the controller's workers"
        state = c.state_of(NS, NAME)
        assert state is not None
        assert state.status.data_hash == NEW_HASH
        c.observe(body(status=w.status))  # the echo of the write: nothing new
        await asyncio.sleep(0.05)
        assert len(w.patches) == 2

    scenario(steps, FakeStage(FIRST_HASH))


def test_a_report_arriving_during_a_sync_is_recorded_by_a_run_after_it() -> None:
    async def steps(c: Controller, r: FakeReconciler, w: FakeWriter, stage: FakeStage) -> None:
        r.release.clear()
        c.observe(body())
        await until(lambda: r.syncs == 1)
        c.rollout_finished(report(result=RestartResult.NOT_FOUND))
        await asyncio.sleep(0.02)
        assert w.patches == [], "no write while the sync runs"
        r.release.set()
        await until(lambda: len(w.patches) == 2)
        assert r.syncs == 1
        rollout = next(c for c in w.patches[1]["conditions"] if c["type"] == "Rollout")
        assert (rollout["status"], rollout["reason"]) == ("False", "WorkloadNotFound")
        assert "dataHash" not in w.patches[1], "a failed rollout records no hash"

    scenario(steps, FakeStage(FIRST_HASH))


def test_the_next_sync_decides_on_the_hash_a_pending_report_recorded() -> None:
    """A report waiting when a sync starts is folded in first: the rollout stage sees its dataHash, and
    the one write of that run carries both."""

    async def steps(c: Controller, r: FakeReconciler, w: FakeWriter, stage: FakeStage) -> None:
        c.observe(body())
        await until(lambda: len(w.patches) == 1)
        r.release.clear()
        c.observe(body(generation=2, status=w.status))
        await until(lambda: r.syncs == 2)
        c.rollout_finished(report())  # while sync 2 runs: waits for the next run
        c.observe(body(generation=3, status=w.status))  # that next run is a sync
        await asyncio.sleep(0.02)
        r.release.set()
        await until(lambda: r.syncs == 3 and len(w.patches) == 3)
        assert stage.recorded == [None, FIRST_HASH, NEW_HASH]
        assert w.patches[2]["dataHash"] == NEW_HASH
        assert w.patches[2]["observedGeneration"] == 3

    scenario(steps, FakeStage(FIRST_HASH))


def test_a_failed_write_keeps_the_report_for_the_retry() -> None:
    async def steps(c: Controller, r: FakeReconciler, w: FakeWriter, stage: FakeStage) -> None:
        c.observe(body())
        await until(lambda: len(w.patches) == 1)
        w.fail_next = 1
        c.rollout_finished(report())
        await until(lambda: len(w.patches) == 2)  # the backoff retry (a sync) records it
        assert w.patches[1]["dataHash"] == NEW_HASH
        assert w.patches[1]["restarts"][0]["name"] == "web"

    scenario(steps, FakeStage(FIRST_HASH))


def test_a_report_for_another_incarnation_or_a_deleted_object_is_dropped() -> None:
    async def steps(c: Controller, r: FakeReconciler, w: FakeWriter, stage: FakeStage) -> None:
        c.observe(body())
        await until(lambda: len(w.patches) == 1)
        c.rollout_finished(report(uid="uid-old"))
        await asyncio.sleep(0.05)
        assert len(w.patches) == 1
        c.forget(NS, NAME)
        c.rollout_finished(report())
        await asyncio.sleep(0.05)
        assert len(w.patches) == 1

    scenario(steps, FakeStage(FIRST_HASH))


def test_a_status_field_written_by_someone_else_during_a_run_is_not_nulled() -> None:
    """The patch is taken against the status the run started from: a watch event that arrives during the
    run (another writer's field) must not make the run's write null that field."""

    async def steps(c: Controller, r: FakeReconciler, w: FakeWriter, stage: FakeStage) -> None:
        c.observe(body())
        await until(lambda: len(w.patches) == 1)
        r.release.clear()
        c.observe(body(generation=2, status=w.status))
        await until(lambda: r.syncs == 2)
        w.status["secretName"] = "written-by-an-earlier-version"  # while sync 2 runs
        c.observe(body(generation=2, status=w.status))
        r.release.set()
        await until(lambda: len(w.patches) == 2)
        assert "secretName" not in w.patches[1], "only what the run changed"
        assert w.status["secretName"] == "written-by-an-earlier-version"
        state = c.state_of(NS, NAME)
        assert state is not None
        assert state.status.secret_name == "written-by-an-earlier-version", "the newer observation is kept"

    scenario(steps, FakeStage(FIRST_HASH))
