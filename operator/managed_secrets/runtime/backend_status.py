"""The Ready condition of SecretBackends and ClusterSecretBackends, like External Secrets Operator's store
validation: a backend is validated when it appears or its spec changes (a new generation), then every
``interval`` (jittered) and, after a failure, sooner with a backoff up to that interval.

Validation takes the same path as a sync: the backend is parsed, its client comes from the shared
``ProviderPool`` (the credential guards, the allowed store endpoints, a cached login), then the provider's
``validate`` makes its cheapest authenticated call. Status is written only when it changed; an Event is
posted when Ready's status or reason changes.

Bounded: validations run on ``workers`` threads, taken from a queue fair across namespaces with one
validation per namespace at a time, so a tenant creating many broken SecretBackends delays only itself.
Messages are the domain errors' (names, never values); a SecretBackend pointing at another namespace's
Secret is refused before anything is read, so its condition says nothing about that Secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from managed_secrets.api import READY_CONDITION
from managed_secrets.errors import Reason, SyncError
from managed_secrets.models.backend import Backend, BackendId
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.models.parse import parse_backend
from managed_secrets.models.status import (
    BackendStatus,
    ConditionStatus,
    find_condition,
    now_rfc3339,
    set_condition,
)
from managed_secrets.providers.base import SecretProvider, ValidatingProvider
from managed_secrets.runtime.fairqueue import FairQueue
from managed_secrets.runtime.threads import DaemonThreadPool

log = logging.getLogger(__name__)

#: Ready=True: the store accepted the backend's credentials.
VALID_REASON = "Valid"
#: Ready=Unknown: the provider (a plugin) has no ``validate``.
NOT_VALIDATED_REASON = "NotValidated"

#: A backend as the reporter and its writer name it (hashable: the model is frozen).
BackendKey = BackendId


@dataclass(frozen=True)
class BackendStatusSettings:
    #: False: track backends (to tell spec changes from status echoes) but validate and write nothing,
    #: for an operator that must leave backend status to another one.
    enabled: bool = True
    #: Seconds between validations of an unchanged backend; 0: only when it changes.
    interval: float = 300.0
    #: Each interval is drawn from interval * (1 ± jitter), so backends created together spread out.
    jitter: float = 0.2
    #: Threads validating at once (each waits on one store call at most its provider's timeout).
    workers: int = 4
    #: First retry after a failed validation; doubles up to ``interval`` (or ``backoff_max`` if none).
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    #: An unchanged success rewrites ``lastValidatedTime`` only once it is this old, so the periodic
    #: checks of a healthy backend write nothing.
    refresh_validated_after: float = 3600.0


class BackendStatusWriter(Protocol):
    """Implemented by kube/backend_status.py."""

    def patch_backend_status(self, key: BackendKey, patch: Mapping[str, Any]) -> None: ...

    def post_backend_event(
        self, key: BackendKey, uid: str, *, reason: str, message: str, type_: str
    ) -> None: ...


class ProviderSource(Protocol):
    """The ProviderPool: one client per backend configuration, built through the credential guards."""

    def get(self, backend: Backend) -> SecretProvider: ...


@dataclass(frozen=True)
class Outcome:
    status: ConditionStatus
    reason: str
    message: str


def validate_backend(body: Mapping[str, Any], providers: ProviderSource) -> Outcome:
    """Parse the backend, get its client through the guards and let it prove its credentials."""
    try:
        backend = parse_backend(body)
        label = str(backend.id)
        provider = providers.get(backend)
        if not isinstance(provider, ValidatingProvider):
            return Outcome(
                ConditionStatus.UNKNOWN,
                NOT_VALIDATED_REASON,
                f"{label}: provider {backend.provider!r} has no validate(); its credentials are proven by"
                " the first sync only",
            )
        provider.validate()
    except SyncError as error:
        return Outcome(ConditionStatus.FALSE, error.reason.value, error.message)
    except Exception as error:  # a provider's bug: the kind only, its text could hold anything
        kind = type(error).__name__
        log.error("validating a backend crashed (%s)", kind)  # noqa: TRY400 - no traceback: locals
        return Outcome(ConditionStatus.FALSE, Reason.INTERNAL_ERROR.value, f"validation failed ({kind})")
    return Outcome(ConditionStatus.TRUE, VALID_REASON, f"{label}: the store accepted its credentials")


def _age_seconds(timestamp: str | None, now: str) -> float | None:
    if timestamp is None:
        return None
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        current = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (current - then).total_seconds()


def next_status(
    current: BackendStatus,
    generation: int,
    outcome: Outcome,
    *,
    now: str,
    refresh_validated_after: float = 3600.0,
) -> BackendStatus:
    """The status after a validation of ``generation`` with ``outcome``.

    ``lastValidatedTime`` moves on a success that is news (a new generation, Ready not True before) or
    when it is older than ``refresh_validated_after``; otherwise the status stays equal, so nothing is
    written.
    """
    previous = find_condition(current.conditions, READY_CONDITION)
    conditions = set_condition(
        current.conditions,
        READY_CONDITION,
        outcome.status,
        outcome.reason,
        outcome.message,
        observed_generation=generation,
        now=now,
    )
    validated = current.last_validated_time
    if outcome.status is ConditionStatus.TRUE:
        age = _age_seconds(validated, now)
        if (
            previous is None
            or previous.status is not ConditionStatus.TRUE
            or current.observed_generation != generation
            or age is None
            or age >= refresh_validated_after
        ):
            validated = now
    return BackendStatus(observed_generation=generation, conditions=conditions, last_validated_time=validated)


def status_fields(status: BackendStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def status_patch(current: BackendStatus, new: BackendStatus) -> dict[str, Any] | None:
    """A merge patch of ``status`` from ``current`` to ``new``; None when they are equal."""
    before, after = status_fields(current), status_fields(new)
    if before == after:
        return None
    patch = {key: value for key, value in after.items() if before.get(key) != value}
    patch.update({key: None for key in before if key not in after})
    return patch


def parse_status(raw: Any) -> BackendStatus:
    """The status as found on the object; anything malformed (an edit by hand) counts as none."""
    try:
        return BackendStatus.model_validate(raw or {})
    except ValidationError:
        return BackendStatus()


def transition_event(previous: BackendStatus, new: BackendStatus) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a change of Ready's status or reason; None otherwise."""
    before = find_condition(previous.conditions, READY_CONDITION)
    after = find_condition(new.conditions, READY_CONDITION)
    if after is None or (
        before is not None and before.status == after.status and before.reason == after.reason
    ):
        return None
    type_ = "Normal" if after.status is ConditionStatus.TRUE else "Warning"
    return type_, after.reason, after.message


@dataclass
class _State:
    key: BackendKey
    body: Mapping[str, Any]
    generation: int
    status: BackendStatus
    uid: str = ""
    queued: bool = False
    running: bool = False
    rerun: bool = False
    failures: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class BackendStatusReporter:
    """Owns the status of every backend the operator watches; fed by the watch (handlers/operator.py)."""

    def __init__(
        self,
        providers: ProviderSource,
        writer: BackendStatusWriter,
        settings: BackendStatusSettings | None = None,
    ) -> None:
        self._providers = providers
        self._writer = writer
        self._settings = settings or BackendStatusSettings()
        self._states: dict[BackendKey, _State] = {}
        self._queue: FairQueue[BackendKey] = FairQueue(lambda key: key.namespace or "", per_namespace=1)
        self._threads = DaemonThreadPool(self._settings.workers, "backend-status")
        self._wakeup = asyncio.Event()  # binds to the running loop on first use
        self._tasks: list[asyncio.Task[None]] = []
        #: Validations finished, in all and per backend (tests wait on them).
        self.validations = 0
        self.validations_of: dict[BackendId, int] = {}
        #: Status writes made (tests prove an unchanged backend writes nothing).
        self.writes = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"backend-status-{i}")
            for i in range(self._settings.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for state in self._states.values():
            if state.timer is not None:
                state.timer.cancel()
        self._threads.shutdown()

    # -- inputs (from the event loop) ----------------------------------------------------------------

    def observe(self, kind: BackendKind, body: Mapping[str, Any]) -> bool:
        """A watch event of a backend (also the initial listing): validate it if it is new or changed.

        Returns whether it is new or its spec changed; False for an echo of a status write."""
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") if kind is BackendKind.SECRET_BACKEND else None
        key = BackendId(kind=kind, name=str(meta.get("name", "")), namespace=namespace)
        generation = int(meta.get("generation") or 0)
        body = {**body, "kind": kind.value}
        status = parse_status(body.get("status"))
        state = self._states.get(key)
        if state is None or state.uid != meta.get("uid", ""):
            if state is not None and state.timer is not None:
                state.timer.cancel()
            state = _State(key, body, generation, status, uid=str(meta.get("uid", "")))
            self._states[key] = state
            ready = find_condition(status.conditions, READY_CONDITION)
            proven = ready is not None and ready.status is ConditionStatus.TRUE
            if proven and status.observed_generation == generation and self._settings.interval > 0:
                # Validated before (by an earlier run): the next periodic check is soon enough, but
                # spread out so a restart does not validate every backend at once.
                self._schedule(state, random.uniform(0, self._settings.interval))  # noqa: S311
            else:
                self._enqueue(key)
            return True
        state.body, state.status = body, status
        if generation == state.generation:
            return False
        state.generation = generation
        state.failures = 0
        self._enqueue(key)
        return True

    def forget(self, kind: BackendKind, name: str, namespace: str | None) -> None:
        key = BackendId(kind=kind, name=name, namespace=namespace)
        self.validations_of.pop(key, None)
        state = self._states.pop(key, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()

    # -- scheduling -------------------------------------------------------------------------------------

    def _enqueue(self, key: BackendKey) -> None:
        state = self._states.get(key)
        if state is None or not self._settings.enabled:
            return
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if state.running:
            state.rerun = True
        elif not state.queued:
            state.queued = True
            self._queue.put(key)
            self._wakeup.set()

    def _schedule(self, state: _State, delay: float) -> None:
        if not self._settings.enabled:
            return
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(delay, self._enqueue, state.key)

    def _next_delay(self, state: _State, outcome: Outcome) -> float | None:
        settings = self._settings
        interval = settings.interval * random.uniform(1 - settings.jitter, 1 + settings.jitter)  # noqa: S311
        if outcome.status is ConditionStatus.TRUE or state.failures == 0:
            return interval if settings.interval > 0 else None
        ceiling = settings.interval if settings.interval > 0 else settings.backoff_max
        exponent = min(state.failures - 1, 32)
        return min(ceiling, settings.backoff_base * 2.0**exponent) * random.uniform(0.8, 1.0)  # noqa: S311

    async def _worker(self) -> None:
        while True:
            key = self._queue.get()
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._process(key)
            finally:
                self._queue.done(key)
                self._wakeup.set()  # its namespace may have room again

    async def _process(self, key: BackendKey) -> None:
        state = self._states.get(key)
        if state is None:
            return
        state.queued, state.running = False, True
        try:
            future = self._threads.submit(
                self._validate_and_write, key, state.body, state.generation, state.status
            )
            new, outcome = await asyncio.wrap_future(future)
        except Exception as error:
            log.error("%s: validation crashed (%s); retrying later", key, type(error).__name__)  # noqa: TRY400
            new, outcome = None, Outcome(ConditionStatus.FALSE, Reason.INTERNAL_ERROR.value, "")
        finally:
            state.running = False
            self.validations += 1
            self.validations_of[key] = self.validations_of.get(key, 0) + 1
        if self._states.get(key) is not state:
            return  # deleted (or replaced) meanwhile
        if new is not None:
            state.status = new
        state.failures = 0 if outcome.status is ConditionStatus.TRUE else state.failures + 1
        if state.rerun:
            state.rerun = False
            self._enqueue(key)
            return
        delay = self._next_delay(state, outcome)
        if delay is not None:
            self._schedule(state, delay)

    # -- in a worker thread -------------------------------------------------------------------------------

    def _validate_and_write(
        self, key: BackendKey, body: Mapping[str, Any], generation: int, current: BackendStatus
    ) -> tuple[BackendStatus, Outcome]:
        started = time.perf_counter()
        outcome = validate_backend(body, self._providers)
        new = next_status(
            current,
            generation,
            outcome,
            now=now_rfc3339(),
            refresh_validated_after=self._settings.refresh_validated_after,
        )
        log.debug("%s: validated in %.3f s: %s", key, time.perf_counter() - started, outcome.reason)
        patch = status_patch(current, new)
        if patch is None:
            return new, outcome
        if outcome.status is not ConditionStatus.TRUE:
            log.warning("%s: not ready: %s: %s", key, outcome.reason, outcome.message)
        try:
            self._writer.patch_backend_status(key, patch)
        except SyncError as error:
            log.warning("%s: status not written: %s", key, error.message)
            # The status stays as it was known, so the retry (with backoff) writes it.
            return current, Outcome(ConditionStatus.FALSE, error.reason.value, error.message)
        self.writes += 1
        event = transition_event(current, new)
        if event is not None:
            type_, reason, message = event
            self._writer.post_backend_event(
                key,
                str((body.get("metadata") or {}).get("uid", "")),
                reason=reason,
                message=message,
                type_=type_,
            )
        return new, outcome
