"""The controller's work queue: one entry per object, one run at a time per object, timers, backoff.

Every trigger (a watch event, a refresh timer, a backend change, a retry, a rollout's outcome) becomes
``add(key)``. An object already waiting is not queued twice; an object running is queued once more when
its run ends (``done``), however often it was added meanwhile, so no two runs of one object overlap. Each
entry says whether it asks for a sync or only for results to be recorded (``sync=False``: a rollout ended);
entries of one object merge, and a sync wins.

Fairness comes from runtime/fairqueue.py: namespaces take turns and one namespace holds at most
``per_namespace`` runs, so one tenant's slow or hostile objects cannot starve the others.

Timers (``add_after``) add the object when due; a later ``add_after`` replaces an earlier one. Time comes
from ``clock`` (injected in tests), so the queue's logic runs without sleeping; only ``run_timers`` and
``take`` wait, on the event loop. Not thread-safe: used from the event loop only.

``Backoff`` and ``jittered`` give the delays: retries of transient failures and refreshes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from managed_secrets.runtime.fairqueue import FairQueue

K = TypeVar("K", bound=Hashable)

#: A uniform random number in [a, b]; random.uniform unless a test pins it.
Uniform = Callable[[float, float], float]


@dataclass(frozen=True)
class Work(Generic[K]):
    key: K
    #: False: only results to record (a rollout's outcome), no sync.
    sync: bool = True


class WorkQueue(Generic[K]):
    def __init__(
        self,
        namespace_of: Callable[[K], str],
        per_namespace: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fair: FairQueue[K] = FairQueue(namespace_of, per_namespace)
        self._clock = clock
        #: Waiting objects, with whether their entry asks for a sync.
        self._waiting: dict[K, bool] = {}
        self._running: set[K] = set()
        #: Added while running: queued again, with this sync flag, when the run ends.
        self._again: dict[K, bool] = {}
        self._due: dict[K, float] = {}
        self._timers: list[tuple[float, int, K]] = []
        self._sequence = itertools.count()
        self._idle_takers: deque[asyncio.Future[None]] = deque()
        self._timer_wakeup = asyncio.Event()
        #: When a run last ended, or work arrived at an idle queue: liveness counts a stall from here.
        self.progress_at = clock()

    # -- entries -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Objects waiting (not counting the running ones)."""
        return len(self._fair)

    @property
    def running(self) -> int:
        return self._fair.taken

    def waiting_in(self, namespace: str) -> int:
        return self._fair.waiting_in(namespace)

    def running_in(self, namespace: str) -> int:
        return self._fair.taken_in(namespace)

    def is_running(self, key: K) -> bool:
        return key in self._running

    def add(self, key: K, *, sync: bool = True) -> None:
        if key in self._running:
            self._again[key] = self._again.get(key, False) or sync
            return
        if key in self._waiting:
            self._waiting[key] = self._waiting[key] or sync
            return
        if not self._waiting and not self._running:
            self.progress_at = self._clock()  # a stall counts from when work arrives
        self._waiting[key] = sync
        self._fair.put(key)
        self._wake_taker()

    def get(self) -> Work[K] | None:
        """The next object to run (now running until ``done``); None when none may run now."""
        key = self._fair.get()
        if key is None:
            return None
        sync = self._waiting.pop(key)
        self._running.add(key)
        return Work(key, sync)

    def done(self, key: K) -> None:
        """The run of ``key`` ended: it is queued again if it was added meanwhile."""
        self._running.discard(key)
        self._fair.done(key)
        self.progress_at = self._clock()
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, sync=again)
        self._wake_taker()  # its namespace may have room again

    def forget(self, key: K) -> None:
        """The object is gone: no timer, no run after the current one. An entry still waiting is handed out
        once more; whoever takes it finds the object gone."""
        self._again.pop(key, None)
        self._due.pop(key, None)

    # -- timers --------------------------------------------------------------------------------------------

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` (for a sync) in ``delay`` seconds, replacing its earlier timer."""
        due = self._clock() + delay
        self._due[key] = due
        heapq.heappush(self._timers, (due, next(self._sequence), key))
        self._timer_wakeup.set()

    def due(self, key: K) -> float | None:
        """When its timer fires (on ``clock``); None without one. One dict lookup: a worker thread may ask."""
        return self._due.get(key)

    def release_due(self) -> float | None:
        """Add the objects whose timers are due; returns the seconds until the next timer (None: none)."""
        now = self._clock()
        while self._timers:
            due, _, key = self._timers[0]
            current = self._due.get(key) == due  # else replaced by a later add_after, or forgotten
            if current and due > now:
                return due - now
            heapq.heappop(self._timers)
            if current:
                del self._due[key]
                self.add(key)
        return None

    # -- waiting on the event loop -------------------------------------------------------------------------

    async def take(self) -> Work[K]:
        """The next object to run, waiting until there is one."""
        loop = asyncio.get_running_loop()
        while (work := self.get()) is None:
            waiter: asyncio.Future[None] = loop.create_future()
            self._idle_takers.append(waiter)
            await waiter
        return work

    async def run_timers(self) -> None:
        """Release timers as they fall due, until cancelled."""
        while True:
            timeout = self.release_due()
            self._timer_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wakeup.wait(), timeout)

    def _wake_taker(self) -> None:
        while self._idle_takers:
            waiter = self._idle_takers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


# -- delays ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Retries of transient failures: ``base * 2**(failures-1)`` up to ``cap``, with full jitter."""

    base: float = 5.0
    cap: float = 300.0

    def delay(self, failures: int, interval: float = 0.0, *, uniform: Uniform | None = None) -> float:
        """Delay before retry number ``failures``: up to ``cap`` and, for an object that refreshes
        (``interval`` > 0), up to its refresh interval, so it recovers within one interval of the store
        coming back. Full jitter (anywhere from 0 to that ceiling) spreads the retries of objects that
        failed together, so a store coming back sees no thundering herd.
        """
        # Bounded: 2.0**1024 overflows a float, and an object failing for days must not crash its worker.
        exponent = min(max(failures - 1, 0), 64)
        ceiling = min(self.cap, self.base * 2.0**exponent)
        if interval > 0:
            ceiling = min(ceiling, interval)
        return (uniform or random.uniform)(0, ceiling)


def jittered(interval: float, spread: float, *, uniform: Uniform | None = None) -> float:
    """A refresh interval spread over +/- ``spread`` of itself, so objects created together drift apart."""
    return interval * (uniform or random.uniform)(1 - spread, 1 + spread)
