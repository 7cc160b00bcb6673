"""The controller: runs ManagedSecrets through the work queue, and is the one writer of their status.

Every trigger (watch event, refresh timer, backend change, retry) becomes an entry of the work queue
(runtime/workqueue.py: deduplicated, one run at a time per object, fair across namespaces). Watch events
only decide *whether* to reconcile: a new generation or a new force-sync token does; the echo of our own
status write does not. Blocking work (SDKs, the Kubernetes client) runs in a thread pool sized with the
workers, so the event loop stays free.

One run: sync, then the rollout stage (runtime/rollout_stage.py) decides whether the new data calls for
restarts and schedules them; the status is computed (core/status.py) and written once, only if it
changed. A rollout ends later, in a thread of its own: its report comes back through the queue as a
run of that object that records it (``sync=False``), so no two writers ever race on one status.

Liveness: ``liveness`` reports the controller stalled when work has waited or run for ``stall_timeout``
without any run finishing (the liveness probe then fails and the pod is restarted). ``stop`` waits at most
``stop_grace`` for runs in flight: the worker threads are daemons, so a stuck one cannot keep the process
from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from managed_secrets import metrics
from managed_secrets.api import (
    API_VERSION,
    FINALIZER,
    FORCE_SYNC_ANNOTATION,
    MANAGED_SECRET_KIND,
)
from managed_secrets.core import status as status_model
from managed_secrets.core.audit import change_record
from managed_secrets.core.reconcile import (
    ChangeCause,
    Reconciler,
    SourceVersion,
    SyncResult,
    WriteAction,
    needs_finalizer,
)
from managed_secrets.core.restarts import RolloutReport
from managed_secrets.errors import InvalidSpec, Reason, SyncError
from managed_secrets.memory import release_free_memory
from managed_secrets.models.managedsecret import BackendKind, ManagedSecret, ManagedSecretRef
from managed_secrets.models.parse import parse_managed_secret
from managed_secrets.models.status import ManagedSecretStatus
from managed_secrets.runtime.drift import DriftLimiter
from managed_secrets.runtime.threads import DaemonThreadPool
from managed_secrets.runtime.workqueue import Backoff, Work, WorkQueue, jittered

log = logging.getLogger(__name__)
#: One line per change of a Secret's data (and per revocation): which keys, which versions, why.
audit_log = logging.getLogger("managed_secrets.audit")
#: A certificate already due is issued anew after this long (not in a tight loop if the store lags).
MIN_RENEWAL_DELAY = 1.0

Key = tuple[str, str]


class StatusWriter(Protocol):
    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None: ...

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None: ...

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None: ...


class AfterSync(Protocol):
    """The stage after a successful sync (runtime/rollout_stage.py): given the status's dataHash, whether
    the data calls for a rollout; returns the hash to record with the sync, if any."""

    def after_sync(
        self, ms: ManagedSecret, result: SyncResult, recorded: str | None, generation: int | None = None
    ) -> str | None: ...


@dataclass(frozen=True)
class ControllerSettings:
    workers: int = 32
    #: Retry of transient failures: base * 2**n, capped (also by the object's refresh interval), with full
    #: jitter.
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    #: Refreshes are spread over +/- this share of the interval.
    refresh_jitter: float = 0.1
    #: Repairs of a Secret someone else keeps changing: the first at once, then base * 2**n apart, capped.
    drift_repair_base: float = 1.0
    drift_repair_max: float = 300.0
    #: Most workers one namespace may hold at once; None: half of them (at least one).
    workers_per_namespace: int | None = None
    #: Liveness fails when work waited or ran this long without any reconcile finishing.
    stall_timeout: float = 120.0
    #: On stop, how long reconciles in flight may take to finish.
    stop_grace: float = 5.0
    #: ExpiresSoon=True (and a Warning event) this many seconds before a static value expires.
    expiry_warning: float = 14 * 86400.0

    @property
    def namespace_share(self) -> int:
        share = self.workers_per_namespace or max(1, self.workers // 2)
        return max(1, min(share, self.workers))

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_base, self.backoff_max)


@dataclass(frozen=True)
class Liveness:
    alive: bool
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    ref: ManagedSecretRef
    body: Mapping[str, Any]
    #: As last read or written: the base of the next status computed.
    status: ManagedSecretStatus
    trigger: tuple[int, str | None]
    generation: int
    failures: int = 0
    #: A run of it is in a worker (the queue's view, kept here for whoever inspects a state).
    running: bool = False
    force: bool = False
    deleting: bool = False
    backend: tuple[BackendKind, str | None, str] | None = None
    ready: bool | None = None
    #: When this object last synced, on the read cache's clock (None: not since the operator started).
    last_refresh: float | None = None
    #: When its last failure was reported (same clock): a retry needs values read after it.
    last_failure: float | None = None
    #: Rollouts that ended and are not yet in its status (added in the event loop, taken by its next run).
    reports: list[RolloutReport] = field(default_factory=list)


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        writer: StatusWriter,
        settings: ControllerSettings | None = None,
        *,
        rollouts: AfterSync | None = None,
        on_deleted: Callable[[ManagedSecretRef], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reconciler = reconciler
        self._writer = writer
        self._settings = settings or ControllerSettings()
        self._backoff_policy = self._settings.backoff
        self._rollouts = rollouts
        #: Called when an object is deleted or its deletion starts: work in flight for it may stop.
        self._on_deleted = on_deleted
        self._clock = clock
        self._states: dict[Key, _State] = {}
        self._queue: WorkQueue[Key] = WorkQueue(
            lambda key: key[0], self._settings.namespace_share, clock=clock
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._threads = DaemonThreadPool(self._settings.workers, "reconcile")
        #: Set by ``start``: rollout reports reach the queue through it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reconciles = 0
        self._drift = DriftLimiter(
            base=self._settings.drift_repair_base, cap=self._settings.drift_repair_max, clock=clock
        )
        #: Objects whose next reconcile is a drift repair (added in the event loop, taken by a worker).
        self._drift_pending: set[Key] = set()
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self._settings.workers)
        ]
        self._tasks.append(asyncio.create_task(self._queue.run_timers(), name="refresh-timers"))
        self._tasks.append(asyncio.create_task(self._gauge_loop(), name="gauges"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._threads.shutdown()
        running = [asyncio.wrap_future(future) for future in self._threads.running()]
        if running:
            _, stuck = await asyncio.wait(running, timeout=self._settings.stop_grace)
            if stuck:
                log.warning(
                    "%d reconciles still running after %g s; stopping without them",
                    len(stuck),
                    self._settings.stop_grace,
                )

    def liveness(self) -> Liveness:
        """Stalled: work waiting or running, and no reconcile finished for ``stall_timeout``."""
        queued, running = len(self._queue), self._queue.running
        idle = self._clock() - self._queue.progress_at
        details = {"queued": queued, "running": running, "secondsSinceProgress": round(idle, 1)}
        if (queued or running) and idle > self._settings.stall_timeout:
            return Liveness(
                alive=False,
                message=f"no reconcile finished for {idle:.0f} s (limit {self._settings.stall_timeout:g} s) "
                f"with {running} running and {queued} waiting",
                details=details,
            )
        return Liveness(alive=True, message="reconciles progress", details=details)

    # -- inputs ------------------------------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> None:
        """A watch event of a ManagedSecret (also the initial listing after a start)."""
        meta = body.get("metadata") or {}
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        annotations = meta.get("annotations") or {}
        generation = int(meta.get("generation") or 0)
        trigger = (generation, annotations.get(FORCE_SYNC_ANNOTATION))
        state = self._states.get(key)
        if state is None:
            state = _State(
                ref=ManagedSecretRef(namespace=key[0], name=key[1], uid=meta.get("uid", "")),
                body=body,
                status=status_model.parse_status(body.get("status")),
                trigger=trigger,
                generation=generation,
            )
            self._states[key] = state
            state.deleting = bool(meta.get("deletionTimestamp"))
            if not state.deleting or FINALIZER in _finalizers(body):
                self._enqueue(key)
            return
        state.body = body
        state.status = status_model.parse_status(body.get("status"))
        was_deleting, state.deleting = state.deleting, bool(meta.get("deletionTimestamp"))
        if state.deleting and not was_deleting and self._queue.is_running(key) and self._on_deleted:
            self._on_deleted(state.ref)
        if state.deleting:
            if FINALIZER in _finalizers(body):
                self._enqueue(key)
            return
        if trigger == state.trigger:
            return  # our own status echo or a metadata-only edit
        state.force = state.force or trigger[1] != state.trigger[1]
        state.trigger = trigger
        state.generation = generation
        self._enqueue(key)

    def forget(self, namespace: str, name: str) -> None:
        state = self._states.pop((namespace, name), None)
        if state is not None and self._queue.is_running((namespace, name)) and self._on_deleted is not None:
            self._on_deleted(state.ref)
        self._queue.forget((namespace, name))
        self._drift.forget((namespace, name))
        _forget_expiry(namespace, name)
        self._drift_pending.discard((namespace, name))

    def secret_drifted(self, namespace: str, name: str, secret_name: str, *, deleted: bool) -> None:
        """Someone else changed or deleted the Secret of ManagedSecret namespace/name (from the Secret
        watch, in the event loop): repair it now from cached reads, more slowly if it keeps drifting."""
        key: Key = (namespace, name)
        state = self._states.get(key)
        if state is None or state.deleting or _target_name(state.body) != secret_name:
            return  # not this object's target (a stale or copied label), or the object is going away
        metrics.DRIFT_EVENTS.labels("deleted" if deleted else "modified").inc()
        delay = self._drift.admit(key)
        if delay is None:
            return  # a repair is already due; it will see this change too
        if delay > 0:
            metrics.DRIFT_REPAIRS.labels("delayed").inc()
            log.info("%s: Secret %s keeps changing; repairing in %.0f s", state.ref, secret_name, delay)
            asyncio.get_running_loop().call_later(delay, self._repair_drift, key)
        else:
            self._repair_drift(key)

    def _repair_drift(self, key: Key) -> None:
        if key in self._states:
            self._drift_pending.add(key)
            self._enqueue(key)

    def backend_changed(self, kind: BackendKind, name: str, namespace: str | None) -> None:
        """Reconcile every ManagedSecret that uses this backend now, not at its next refresh."""
        wanted = (kind, namespace, name)
        for key, state in self._states.items():
            if state.backend == wanted or (state.backend is None and state.ready is False):
                state.failures = 0  # a changed backend is a new start: its retries begin short again
                self._enqueue(key)

    def work_in(self, namespace: str) -> tuple[int, int]:
        """(waiting, running) reconciles of one namespace."""
        return self._queue.waiting_in(namespace), self._queue.running_in(namespace)

    def state_of(self, namespace: str, name: str) -> _State | None:
        return self._states.get((namespace, name))

    def due_of(self, namespace: str, name: str) -> float | None:
        """When the object's next timed run (refresh or retry) is due, on the controller's clock."""
        return self._queue.due((namespace, name))

    def rollout_finished(self, report: RolloutReport) -> None:
        """A rollout of one ManagedSecret ended (from a rollout thread): its next run records it."""
        loop = self._loop
        if loop is None:
            return  # not started: nothing to record into; the rollout is due again at the next sync
        with contextlib.suppress(RuntimeError):  # the loop is closing: likewise
            loop.call_soon_threadsafe(self._rollout_ended, report)

    def _rollout_ended(self, report: RolloutReport) -> None:
        key: Key = (report.ms.namespace, report.ms.name)
        state = self._states.get(key)
        if state is None or state.ref.uid != report.ms.uid or state.deleting:
            return  # another incarnation of the name, or going away: nothing to record
        state.reports.append(report)
        self._queue.add(key, sync=False)

    # -- the queue's workers (event loop) ----------------------------------------------------------------

    def _enqueue(self, key: Key) -> None:
        if key in self._states:
            self._queue.add(key)

    async def _worker(self) -> None:
        while True:
            work = await self._queue.take()
            try:
                await self._process(work)
            finally:
                self._queue.done(work.key)

    async def _process(self, work: Work[Key]) -> None:
        key = work.key
        state = self._states.get(key)
        if state is None:
            return
        if state.deleting and FINALIZER not in _finalizers(state.body):
            return
        # Taken here, in the event loop that adds them; what the run did not write goes back.
        reports, state.reports = state.reports, []
        job: Callable[[], float | None]
        if state.deleting:
            job = functools.partial(self._cleanup, state)
        elif work.sync:
            force, state.force = state.force, False
            job = functools.partial(self._reconcile, state, force, reports)
        elif reports:
            job = functools.partial(self._record_rollouts, state, reports)
        else:
            return  # a sync that ran meanwhile recorded them
        state.running = True
        try:
            delay = await asyncio.wrap_future(self._threads.submit(job))
        except Exception as error:
            # The kind only: a foreign exception's text or traceback locals could hold a value.
            log.error("%s: reconcile crashed (%s); retrying later", state.ref, type(error).__name__)  # noqa: TRY400
            delay = self._backoff(state)
        finally:
            state.running = False
            state.reports[:0] = reports  # emptied by the run once written
        if key in self._states and delay is not None:
            self._queue.add_after(key, delay)

    # -- one reconcile (in a worker thread) --------------------------------------------------------------

    def _reconcile(
        self, state: _State, force: bool, reports: list[RolloutReport] | None = None
    ) -> float | None:
        """Sync one object, then the rollout stage; write status (with the rollouts that ended, ``reports``)
        if it changed. Returns the delay before the next run (None: none)."""
        self.reconciles += 1
        started = time.perf_counter()
        reports = reports if reports is not None else []
        # What the rollouts that ended recorded comes first: the rollout stage decides on that dataHash.
        observed = state.status
        current = status_model.after_rollouts(observed, reports)
        generation = state.generation
        # A drift repair reads what the last sync read (the read cache, no store read while it is recent)
        # and leaves the refresh schedule as it is.
        drift = self._take_drift(state)
        ms: ManagedSecret | None = None
        try:
            ms = parse_managed_secret(state.body)
            ref = ms.spec.backend_ref
            state.backend = (
                ref.kind,
                state.ref.namespace if ref.kind is BackendKind.SECRET_BACKEND else None,
                ref.name,
            )
            self._ensure_finalizer(state, needed=needs_finalizer(ms))
            # A retry after a failure takes only values read after it (the cached value may be what failed,
            # a missing property), but shares them: objects recovering together cost one read per key.
            result = self._reconciler.sync(
                ms,
                force=force,
                last_refresh=None if drift else _latest(state.last_refresh, state.last_failure),
                target_known_absent=state.last_refresh is None and not current.secret_name,
            )
        except SyncError as error:
            metrics.SYNCS.labels("error", error.reason.value).inc()
            _count_drift_repair(drift, "failed")
            self._report_failure(state, observed, current, error, generation=generation, reports=reports)
            interval = ms.refresh_seconds if ms is not None else 0
            if error.transient:
                return self._backoff(state, interval)
            return self._jittered(interval) if interval > 0 else None
        except Exception as error:
            # Unexpected: report the kind only; the text of a foreign exception could hold a value.
            log.error("%s: unexpected %s during reconcile", state.ref, type(error).__name__)  # noqa: TRY400
            internal = SyncError(f"internal error ({type(error).__name__}); see the operator log")
            metrics.SYNCS.labels("error", Reason.INTERNAL_ERROR.value).inc()
            _count_drift_repair(drift, "failed")
            self._report_failure(state, observed, current, internal, generation=generation, reports=reports)
            return self._backoff(state, ms.refresh_seconds if ms is not None else 0)
        finally:
            metrics.SYNC_SECONDS.observe(time.perf_counter() - started)
        metrics.SYNCS.labels("success", Reason.SYNCED.value).inc()
        if result.expires_at is not None:
            metrics.EXPIRES.labels(state.ref.namespace, state.ref.name).set(result.expires_at)
        elif not result.unread:  # unread (CreatedOnce): the expiry last read still holds
            _forget_expiry(state.ref.namespace, state.ref.name)
        if result.action is not WriteAction.UNCHANGED:
            metrics.SECRET_WRITES.labels(result.action.value.lower()).inc()
        state.failures = 0
        refresh_in = self._mark_refreshed(state, drift=drift)
        was_ready = state.ready
        state.ready = True
        self._write_status(state, observed, self._after_sync(ms, result, current, generation), reports)
        self._report_change(state, result, observed, drift=drift, force=force, was_ready=was_ready)
        return self._next_run(ms, result, refresh_in)

    def _report_change(
        self,
        state: _State,
        result: SyncResult,
        observed: ManagedSecretStatus,
        *,
        drift: bool,
        force: bool,
        was_ready: bool | None,
    ) -> None:
        """The audit line of a data change, events for what a person needs to see (a change, a recovery,
        a revocation); a first creation shows in status, a lease renewal in the log (the operator's own
        routine, thousands an hour at scale)."""
        why = _why(drift=drift, force=force, spec_changed=state.generation != observed.observed_generation)
        record = change_record(
            result, [SourceVersion(s.key, s.version) for s in observed.sources], why=_with_cause(why, result)
        )
        if record is not None:
            audit_log.info("%s: %s", state.ref, record.message, extra={"audit": dict(record.fields)})
        for lease in result.revoked:
            audit_log.info(
                "%s: revoked replaced lease %s", state.ref, lease, extra={"audit": {"revoked": lease}}
            )
            self._event(state, "Normal", "LeaseRevoked", f"revoked replaced lease {lease}")
        renewal_only = result.cause is ChangeCause.RENEWAL and not result.data_changed
        if drift:
            self._drift_repaired(state, result)
        elif (result.action is WriteAction.UPDATED and not renewal_only) or was_ready is False:
            if record is not None and result.action is WriteAction.UPDATED:
                message = record.message
            else:
                message = (
                    f"Secret {result.secret_name}: {len(result.keys)} keys "
                    f"({'data changed' if result.data_changed else result.action.value.lower()})"
                )
            self._event(
                state,
                "Normal",
                "Synced" if result.action is WriteAction.UNCHANGED else result.action.value,
                message,
            )

    def _next_run(self, ms: ManagedSecret, result: SyncResult, refresh_in: float) -> float | None:
        """The delay to the next run after a success; None: none until something changes."""
        if refresh_in > 0:
            delay: float | None = refresh_in  # the refresh (or retry) already due stays where it was
        else:
            interval = ms.refresh_seconds
            delay = self._jittered(interval) if interval > 0 else None
        # A certificate or lease: the run that renews it is due then at the latest.
        due = result.run_at if result.run_at is not None else result.renew_at
        if due is not None:
            until = max(due - time.time(), MIN_RENEWAL_DELAY)
            delay = until if delay is None else min(delay, until)
        return delay

    def _after_sync(
        self, ms: ManagedSecret, result: SyncResult, current: ManagedSecretStatus, generation: int
    ) -> ManagedSecretStatus:
        """The rollout stage, then the status after the sync (with the dataHash a first sync records)."""
        record_hash = None
        if self._rollouts is not None:
            try:
                record_hash = self._rollouts.after_sync(ms, result, current.data_hash, generation)
            except Exception as error:  # no rollout this time; the sync itself succeeded
                log.error("%s: rollout stage failed: %s", ms.ref, type(error).__name__)  # noqa: TRY400
        return status_model.after_sync(current, generation, result, data_hash=record_hash)

    def _mark_refreshed(self, state: _State, *, drift: bool) -> float:
        """A drift repair before the object's next timer leaves that timer (and ``last_refresh``) as it
        was and returns the time left; any other successful run counts as the refresh (returns 0)."""
        due = self._queue.due((state.ref.namespace, state.ref.name))
        left = due - self._clock() if drift and due is not None else 0.0
        if left <= 0:
            state.last_refresh = self._clock()
        return max(left, 0.0)

    def _drift_repaired(self, state: _State, result: SyncResult) -> None:
        if result.action is WriteAction.UNCHANGED:
            _count_drift_repair(drift=True, result="in_sync")
            return
        _count_drift_repair(drift=True, result="repaired")
        message = (
            f"Secret {result.secret_name} was changed or deleted outside the operator; "
            f"restored ({len(result.keys)} keys)"
        )
        self._event(state, "Normal", "DriftRepaired", message)

    def _take_drift(self, state: _State) -> bool:
        try:
            self._drift_pending.remove((state.ref.namespace, state.ref.name))
        except KeyError:
            return False
        return True

    def _ensure_finalizer(self, state: _State, *, needed: bool) -> None:
        finalizers = _finalizers(state.body)
        if needed == (FINALIZER in finalizers):
            return
        wanted = [*finalizers, FINALIZER] if needed else [f for f in finalizers if f != FINALIZER]
        version = (state.body.get("metadata") or {}).get("resourceVersion", "")
        self._writer.set_finalizers(state.ref, wanted, version)

    def _cleanup(self, state: _State) -> float | None:
        """The ManagedSecret is being deleted and holds our finalizer: clean up, then release it."""
        try:
            self._reconciler.cleanup(parse_managed_secret(state.body))
        except InvalidSpec:
            pass  # nothing we created can be found from an invalid spec
        except SyncError as error:
            log.warning("%s: cleanup failed: %s: %s", state.ref, error.reason.value, error.message)
            state.failures += 1
            return self._backoff(state)
        version = (state.body.get("metadata") or {}).get("resourceVersion", "")
        try:
            self._writer.set_finalizers(
                state.ref, [f for f in _finalizers(state.body) if f != FINALIZER], version
            )
        except SyncError as error:
            log.info("%s: releasing the finalizer: %s; will retry", state.ref, error.message)
            return self._backoff(state)
        return None

    def _report_failure(
        self,
        state: _State,
        observed: ManagedSecretStatus,
        current: ManagedSecretStatus,
        error: SyncError,
        *,
        generation: int,
        reports: list[RolloutReport],
    ) -> None:
        state.failures += 1
        state.last_failure = self._clock()
        gone = self._states.get((state.ref.namespace, state.ref.name)) is not state or state.deleting
        if self._stopping or gone:
            # The failure is likely the stop's or the deletion's (a render cancelled): nothing to report.
            log.info("%s: not synced (%s) while stopping or deleting", state.ref, error.reason.value)
            return
        previous_reason = status_model.ready_reason(current)
        state.ready = False
        log.warning("%s: not synced: %s: %s", state.ref, error.reason.value, error.message)
        self._write_status(state, observed, status_model.after_failure(current, generation, error), reports)
        if previous_reason != error.reason.value:
            self._event(state, "Warning", error.reason.value, error.message)
        if isinstance(error, InvalidSpec):
            state.backend = None

    def _record_rollouts(self, state: _State, reports: list[RolloutReport]) -> None:
        """A run without a sync: record the rollouts that ended. The refresh timer stays as it was."""
        observed = state.status
        self._write_status(state, observed, status_model.after_rollouts(observed, reports), reports)

    def _write_status(
        self,
        state: _State,
        observed: ManagedSecretStatus,
        new: ManagedSecretStatus,
        reports: list[RolloutReport],
    ) -> None:
        """The one status write: a merge patch of what changed, nothing when nothing did. ``reports`` are
        in ``new``; emptied once it is written, so a failed write leaves them for the next run.

        The patch is taken against ``observed``, the status this run started from, not ``state.status``:
        a watch event may have replaced that meanwhile (in the event loop), and a diff against it would
        null the fields someone else just wrote."""
        new = status_model.with_expiry(new, now=time.time(), window=self._settings.expiry_warning)
        warning = status_model.expiry_warning(observed, new)
        if warning is not None:
            self._event(state, "Warning", warning.reason, warning.message)
        patch = status_model.status_patch(observed, new)
        if patch is not None:
            self._writer.patch_status(state.ref, patch)
            metrics.STATUS_WRITES.inc()
        if state.status is observed or state.status == observed:
            state.status = new
        # else a newer status was observed during the run; the echo of this patch follows it.
        reports.clear()

    def _event(self, state: _State, type_: str, reason: str, message: str) -> None:
        involved = {
            "apiVersion": API_VERSION,
            "kind": MANAGED_SECRET_KIND,
            "name": state.ref.name,
            "namespace": state.ref.namespace,
            "uid": state.ref.uid,
        }
        self._writer.post_event(involved, reason=reason, message=message, type_=type_)

    def _backoff(self, state: _State, interval: float = 0.0) -> float:
        return self._backoff_policy.delay(state.failures, interval)

    def _jittered(self, interval: float) -> float:
        return jittered(interval, self._settings.refresh_jitter)

    async def _gauge_loop(self) -> None:
        for tick in itertools.count():  # in the event loop, so the states are not changing while counted
            if tick % 12 == 0:  # every minute
                release_free_memory()
            states = list(self._states.values())
            metrics.MANAGED.labels("true").set(sum(1 for s in states if s.ready))
            metrics.MANAGED.labels("false").set(sum(1 for s in states if s.ready is False))
            metrics.MANAGED.labels("unknown").set(sum(1 for s in states if s.ready is None))
            await asyncio.sleep(5)


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _count_drift_repair(drift: bool, result: str) -> None:
    if drift:
        metrics.DRIFT_REPAIRS.labels(result).inc()


def _target_name(body: Mapping[str, Any]) -> str:
    target = (body.get("spec") or {}).get("target") or {}
    return str(target.get("name") or (body.get("metadata") or {}).get("name", ""))


def _forget_expiry(namespace: str, name: str) -> None:
    with contextlib.suppress(KeyError):  # never set
        metrics.EXPIRES.remove(namespace, name)


def _why(*, drift: bool, force: bool, spec_changed: bool) -> str:
    if drift:
        return "drift repair"
    if force:
        return "force-sync"
    return "spec change" if spec_changed else "refresh"


def _with_cause(why: str, result: SyncResult) -> str:
    return f"{why}, {result.cause.value}" if result.cause is not None else why


def _finalizers(body: Mapping[str, Any]) -> list[str]:
    return list((body.get("metadata") or {}).get("finalizers") or [])
