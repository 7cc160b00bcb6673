"""The rollout stage after a sync: restarts debounced per workload, their outcome reported per ManagedSecret.

A successful sync whose data differs from ``status.dataHash`` makes a rollout due (core.restarts.decide).
Each workload it concerns gets one delayed restart: triggers for that workload within the debounce window
(counted from the first) share it. When it fires, the restart key is computed from the current data of
every managed Secret the workload consumes, so patching again with the same data changes nothing. Once
every workload a ManagedSecret feeds has been handled, its ``RolloutReport`` goes to ``report`` (the
controller, which records it in the object's status: this stage writes no status). The new dataHash is
recorded only then: after a crash in between, the next sync finds the old hash and the rollout is due again.

Timers live on the operator's event loop; Kubernetes calls run in a small thread pool of their own, so
neither the loop nor the reconcile workers wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from managed_secrets import errors, metrics
from managed_secrets.api import API_VERSION
from managed_secrets.core.ownership import KIND
from managed_secrets.core.ports import SecretObject, SecretStore
from managed_secrets.core.reconcile import SyncResult
from managed_secrets.core.restarts import (
    API_VERSIONS,
    Decision,
    Outcome,
    RestartResult,
    RolloutError,
    RolloutReport,
    Workload,
    WorkloadReader,
    WorkloadRef,
    data_hash,
    decide,
    is_managed,
    restart_key,
    select_workloads,
)
from managed_secrets.models.managedsecret import ManagedSecret, ManagedSecretRef, Rollout
from managed_secrets.models.status import now_rfc3339

log = logging.getLogger(__name__)

#: Field of the HMAC key Secret.
KEY_FIELD = "key"
MSKey = tuple[str, str]


class WorkloadAPI(WorkloadReader, Protocol):
    def restart(self, workload: Workload, key: str, now: str) -> None: ...


class EventWriter(Protocol):
    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None: ...


#: Where a ManagedSecret's rollout outcome goes, from a rollout thread (the controller's queue).
ReportSink = Callable[[RolloutReport], None]


def ensure_hmac_key(store: SecretStore, namespace: str, name: str) -> bytes:
    """The operator's HMAC key, from its Secret; created with random bytes when absent.

    Stable across operator restarts and shared by replicas (a 409 on create: another one made it first).
    """
    existing = store.get(namespace, name)
    if existing is None:
        key = secrets.token_bytes(32)
        labels = {"app.kubernetes.io/name": "managed-secrets", "app.kubernetes.io/component": "hmac-key"}
        try:
            store.create(SecretObject(namespace=namespace, name=name, data={KEY_FIELD: key}, labels=labels))
        except errors.TargetExists:
            existing = store.get(namespace, name)
        else:
            log.info("created the HMAC key Secret %s/%s", namespace, name)
            return key
    if existing is None or not existing.data.get(KEY_FIELD):
        raise errors.WriteFailed(
            f"Secret {namespace}/{name} holds no {KEY_FIELD!r}; delete it to get a new key"
        )
    return bytes(existing.data[KEY_FIELD])


@dataclass(frozen=True)
class _Contribution:
    """A ManagedSecret asking for a restart: its Secret changed to data with this hash."""

    ms: ManagedSecretRef
    secret: str
    data_hash: str
    #: The generation of the sync that asked.
    generation: int | None = None


@dataclass(eq=False)
class _Restart:
    """One debounced restart of one workload, for every ManagedSecret that asked within the window."""

    ref: WorkloadRef
    contributors: dict[MSKey, _Contribution] = field(default_factory=dict)
    attempts: int = 0
    handle: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Job:
    """A ManagedSecret's due rollout: done when its workloads are resolved and none is left waiting."""

    contribution: _Contribution
    resolving: bool = True
    waiting: set[_Restart] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)


class RolloutStage:
    def __init__(
        self,
        workloads: WorkloadAPI,
        secret_store: SecretStore,
        events: EventWriter,
        load_key: Callable[[], bytes],
        *,
        loop: asyncio.AbstractEventLoop,
        report: ReportSink,
        workers: int = 4,
        retry_base: float = 5.0,
        retry_max: float = 300.0,
        max_attempts: int = 5,
    ) -> None:
        self._workloads = workloads
        self._secrets = secret_store
        self._events = events
        self._load_key = load_key
        self._loop = loop
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._max_attempts = max_attempts
        self._report = report
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollout")
        self._lock = threading.Lock()
        #: Scheduled restarts, not yet firing.
        self._restarts: dict[WorkloadRef, _Restart] = {}
        self._jobs: dict[MSKey, _Job] = {}
        #: Last failure reported by an event, per ManagedSecret (one Warning per new failure, not per retry).
        self._reported: dict[MSKey, str] = {}
        self._key: bytes | None = None
        self._key_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Cancel what is scheduled and wait for restarts in flight. Call in the event loop's thread."""
        self._closed = True
        with self._lock:
            scheduled = list(self._restarts.values())
            self._restarts.clear()
            self._jobs.clear()
        for restart in scheduled:
            if restart.handle is not None:
                restart.handle.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- from the controller, after each successful sync (in a reconcile worker thread) --------------------

    def after_sync(
        self, ms: ManagedSecret, result: SyncResult, recorded: str | None, generation: int | None = None
    ) -> str | None:
        """Whether the sync calls for a rollout, given the status's dataHash (``recorded``): schedules it if
        so. Returns the data hash to record along with the sync (a first sync), else None."""
        current = data_hash(self._hmac_key(), result.data)
        decision = decide(recorded, current)
        if decision is Decision.FIRST_SYNC:
            return current
        if decision is Decision.UNCHANGED:
            return None
        key: MSKey = (ms.ref.namespace, ms.ref.name)
        contribution = _Contribution(ms.ref, result.secret_name, current, generation)
        with self._lock:
            previous = self._jobs.get(key)
            if previous is not None and previous.contribution.data_hash == current:
                return None  # already due for this data (a refresh within the debounce window)
            job = _Job(contribution)
            if previous is not None:
                # Changed again meanwhile: the restarts still scheduled now serve the new data.
                job.waiting = previous.waiting
                job.outcomes = [o for o in previous.outcomes if o.ok]
                for restart in job.waiting:
                    restart.contributors[key] = contribution
            self._jobs[key] = job
        log.info("%s: the data of Secret %s changed; a rollout is due", ms.ref, result.secret_name)
        self._submit(self._resolve, ms, job)
        return None

    def _hmac_key(self) -> bytes:
        with self._key_lock:
            if self._key is None:
                try:
                    self._key = self._load_key()
                except errors.SyncError as error:
                    log.error("no HMAC key, so no rollouts: %s", error.message)  # noqa: TRY400
                    raise
            return self._key

    # -- which workloads (rollout thread) -----------------------------------------------------------------

    def _resolve(self, ms: ManagedSecret, job: _Job) -> None:
        key: MSKey = (ms.ref.namespace, ms.ref.name)
        secret = job.contribution.secret
        rollout = ms.spec.rollout or Rollout()
        refs: list[WorkloadRef] = []
        failure: Outcome | None = None
        try:
            refs = select_workloads(
                ms.spec.rollout, ms.ref.namespace, secret, self._workloads.list(ms.ref.namespace)
            )
        except RolloutError as error:
            log.warning("%s: finding the workloads that use Secret %s: %s", ms.ref, secret, error.message)
            failure = Outcome(None, error.result, error.message)
        except Exception as error:  # whatever happens, the job must end, or it would block later triggers
            log.error("%s: listing workloads: unexpected %s", ms.ref, type(error).__name__)  # noqa: TRY400
            failure = Outcome(
                None, RestartResult.FAILED, f"listing workloads: internal error ({type(error).__name__})"
            )
        new: list[_Restart] = []
        with self._lock:
            if self._jobs.get(key) is not job:
                return  # superseded by a newer change, which resolves for itself
            if failure is not None:
                job.outcomes.append(failure)
            for ref in refs:
                restart = self._restarts.get(ref)
                if restart is None:
                    restart = self._restarts[ref] = _Restart(ref)
                    new.append(restart)
                restart.contributors[key] = job.contribution
                job.waiting.add(restart)
            job.resolving = False
            done = self._pop_if_done(key, job)
        log.debug("%s: workloads to restart: %s", ms.ref, ", ".join(map(str, refs)) or "none")
        for restart in new:
            self._arm(restart, rollout.debounce.total_seconds())
        if done is not None:
            self._finish(done)

    def _pop_if_done(self, key: MSKey, job: _Job) -> _Job | None:
        if job.resolving or job.waiting or self._jobs.get(key) is not job:
            return None
        return self._jobs.pop(key)

    # -- timers (event loop) ------------------------------------------------------------------------------

    def _arm(self, restart: _Restart, delay: float) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: the restart is due again after start
            self._loop.call_soon_threadsafe(self._start_timer, restart, delay)

    def _start_timer(self, restart: _Restart, delay: float) -> None:
        if not self._closed:
            restart.handle = self._loop.call_later(delay, self._submit, self._fire, restart)

    def _submit(self, work: Callable[..., None], *args: Any) -> None:
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # shut down meanwhile
            self._executor.submit(self._guarded, work, *args)

    @staticmethod
    def _guarded(work: Callable[..., None], *args: Any) -> None:
        try:
            work(*args)
        except Exception as error:
            log.error("rollout step %s failed: %s", work.__name__, type(error).__name__)  # noqa: TRY400

    # -- one restart (rollout thread) ---------------------------------------------------------------------

    def _fire(self, restart: _Restart) -> None:
        with self._lock:
            if self._restarts.get(restart.ref) is restart:
                del self._restarts[restart.ref]
            contributions = list(restart.contributors.values())
        outcome = self._restart(restart.ref, contributions)
        metrics.RESTARTS.labels(restart.ref.kind.value, outcome.result.value).inc()
        if outcome.result is RestartResult.FAILED and restart.attempts + 1 < self._max_attempts:
            self._retry(restart, outcome)
            return
        done: list[_Job] = []
        with self._lock:
            for key in list(restart.contributors):
                job = self._jobs.get(key)
                if job is None or restart not in job.waiting:
                    continue
                job.waiting.discard(restart)
                job.outcomes.append(outcome)
                if (finished := self._pop_if_done(key, job)) is not None:
                    done.append(finished)
        for job in done:
            self._finish(job)

    def _retry(self, restart: _Restart, outcome: Outcome) -> None:
        restart.attempts += 1
        delay = min(self._retry_max, self._retry_base * 2 ** (restart.attempts - 1))
        log.warning("%s; retrying in %.0fs", outcome.message, delay)
        with self._lock:
            newer = self._restarts.get(restart.ref)
            if newer is None:
                self._restarts[restart.ref] = restart
            else:  # a newer trigger is scheduled: it serves this one's ManagedSecrets too
                for key, contribution in restart.contributors.items():
                    newer.contributors.setdefault(key, contribution)
                    job = self._jobs.get(key)
                    if job is not None and restart in job.waiting:
                        job.waiting.discard(restart)
                        job.waiting.add(newer)
                return
        self._arm(restart, delay)

    def _restart(self, ref: WorkloadRef, contributions: list[_Contribution]) -> Outcome:
        try:
            workload = self._workloads.get(ref)
            if workload.reload is False:
                return Outcome(ref, RestartResult.SKIPPED)
            # What its pod template reads plus what changed: an explicit target may use the Secret in a way
            # the template does not show (the API, a CSI driver); it must still see a new key.
            consumed: dict[str, Mapping[str, bytes]] = {}
            for name in sorted(workload.secrets | {c.secret for c in contributions}):
                secret = self._secrets.get(ref.namespace, name)
                if secret is not None and is_managed(secret):
                    consumed[name] = secret.data
            key = restart_key(self._hmac_key(), consumed)
            if workload.restarted_for == key:
                return Outcome(ref, RestartResult.UNCHANGED)
            self._workloads.restart(workload, key, now_rfc3339())
        except RolloutError as error:
            return Outcome(ref, error.result, error.message)
        except errors.SyncError as error:  # reading a Secret or the key failed
            return Outcome(ref, RestartResult.FAILED, f"{ref}: {error.message}")
        except Exception as error:  # the outcome must be recorded whatever happens
            log.error("%s in %s: unexpected %s", ref, ref.namespace, type(error).__name__)  # noqa: TRY400
            return Outcome(ref, RestartResult.FAILED, f"{ref}: internal error ({type(error).__name__})")
        changed = sorted({c.secret for c in contributions})
        message = f"restarted {ref}: Secret{'s' if len(changed) > 1 else ''} {', '.join(changed)} changed"
        log.info("%s: %s", ref.namespace, message)
        involved = {
            "apiVersion": API_VERSIONS[ref.kind],
            "kind": ref.kind.value,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": workload.uid,
        }
        self._events.post_event(involved, reason="Restarted", message=message)
        for contribution in contributions:
            self._events.post_event(_involved(contribution.ms), reason="Restarted", message=message)
        return Outcome(ref, RestartResult.RESTARTED)

    # -- the outcome (rollout thread) -----------------------------------------------------------------------

    def _finish(self, job: _Job) -> None:
        ms = job.contribution.ms
        key: MSKey = (ms.namespace, ms.name)
        outcomes = list(job.outcomes)
        failures = [o for o in outcomes if not o.ok]
        message = "; ".join(o.message for o in failures)
        with self._lock:
            report = bool(failures) and self._reported.get(key) != message
            if failures:
                self._reported[key] = message
            else:
                self._reported.pop(key, None)
        if report:
            reason = failures[0].reason
            self._events.post_event(
                _involved(ms),
                reason=reason.value if reason else "RolloutFailed",
                message=message,
                type_="Warning",
            )
        if failures:
            log.warning("%s: rollout incomplete, due again at the next sync: %s", ms, message)
        contribution = job.contribution
        self._report(
            RolloutReport(ms, contribution.data_hash, tuple(outcomes), contribution.generation, now_rfc3339())
        )


def _involved(ms: ManagedSecretRef) -> dict[str, str]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ms.name,
        "namespace": ms.namespace,
        "uid": ms.uid,
    }
