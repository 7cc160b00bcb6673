"""How soon to repair a managed Secret someone else changed: at once, then slower while it keeps changing.

A tenant who deletes or edits its Secret in a loop gets a repair after each change, but the repairs of one
object space out exponentially (base, 2*base, 4*base, ... up to a cap), so the loop cannot make the
operator hammer the API server or the store, nor crowd other namespaces out of the work queue. After a
quiet period without drift the object starts again from an immediate repair.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Streak:
    repairs: int
    #: When the latest repair of this streak was (or is) due.
    last_due: float
    #: The earliest time the next repair may run.
    next_allowed: float


class DriftLimiter:
    def __init__(
        self,
        *,
        base: float = 1.0,
        cap: float = 300.0,
        quiet: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base
        self._cap = cap
        #: A streak ends after this long without a repair (default: twice the cap).
        self._quiet = quiet if quiet is not None else 2 * cap
        self._clock = clock
        self._streaks: dict[Hashable, _Streak] = {}
        self._last_sweep = clock()

    def admit(self, key: Hashable) -> float | None:
        """Delay before repairing ``key`` after a drift seen now; None when a repair is already due
        later (it will see this drift too)."""
        now = self._clock()
        self._sweep(now)
        streak = self._streaks.get(key)
        if streak is None or now - streak.last_due >= self._quiet:
            self._streaks[key] = _Streak(repairs=1, last_due=now, next_allowed=now + self._base)
            return 0.0
        if streak.last_due > now:
            return None
        due = max(now, streak.next_allowed)
        streak.repairs += 1
        streak.last_due = due
        streak.next_allowed = due + min(self._cap, self._base * 2 ** (streak.repairs - 1))
        return due - now

    def forget(self, key: Hashable) -> None:
        self._streaks.pop(key, None)

    def __len__(self) -> int:
        return len(self._streaks)

    def _sweep(self, now: float) -> None:
        """Drop ended streaks now and then, so memory follows the objects that drift, not all that ever did."""
        if now - self._last_sweep < self._quiet:
            return
        self._last_sweep = now
        for key in [k for k, s in self._streaks.items() if now - s.last_due >= self._quiet]:
            del self._streaks[key]
