"""A work queue fair across namespaces: one tenant's backlog must not starve the others.

Items wait in one FIFO per namespace. ``get`` serves the namespace served least recently (one that was
not served since it last had nothing to do counts as never served): with every namespace busy that is
round-robin, and a namespace that just got work comes next, whatever the others' backlog. A namespace with
``per_namespace`` items out (taken, not yet ``done``) waits for one of them to finish.
Not thread-safe: the controller uses it from its event loop, the render pool under its lock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self, namespace_of: Callable[[T], str], per_namespace: int | None = None) -> None:
        if per_namespace is not None and per_namespace < 1:
            raise ValueError("per_namespace must be at least 1")
        self._namespace_of = namespace_of
        self._per_namespace = per_namespace
        self._queues: dict[str, deque[T]] = {}
        self._out: Counter[str] = Counter()
        #: When each namespace with work (waiting or out) was last served: a number from _clock.
        self._served: dict[str, int] = {}
        self._clock = itertools.count(1)
        #: Namespaces with waiting items and room to take one: (last served, arrival, namespace).
        self._turns: list[tuple[int, int, str]] = []
        self._has_turn: set[str] = set()
        self._size = 0
        self._taken = 0

    def __len__(self) -> int:
        """Items waiting (not counting the ones taken)."""
        return self._size

    @property
    def taken(self) -> int:
        """Items taken and not yet done."""
        return self._taken

    def taken_in(self, namespace: str) -> int:
        return self._out.get(namespace, 0)

    def waiting_in(self, namespace: str) -> int:
        return len(self._queues.get(namespace, ()))

    def put(self, item: T) -> None:
        namespace = self._namespace_of(item)
        self._queues.setdefault(namespace, deque()).append(item)
        self._size += 1
        self._offer_turn(namespace)

    def get(self) -> T | None:
        """The next item, or None when no namespace with waiting items has room."""
        while self._turns:
            _, _, namespace = heapq.heappop(self._turns)
            self._has_turn.discard(namespace)
            waiting = self._queues.get(namespace)
            if not waiting or not self._has_room(namespace):
                continue
            item = waiting.popleft()
            if not waiting:
                del self._queues[namespace]
            self._size -= 1
            self._out[namespace] += 1
            self._taken += 1
            self._served[namespace] = next(self._clock)
            self._offer_turn(namespace)  # its next item waits for the others' turns
            return item
        return None

    def done(self, item: T) -> None:
        """An item from ``get`` is finished: its namespace may take another."""
        namespace = self._namespace_of(item)
        self._out[namespace] -= 1
        self._taken -= 1
        if self._out[namespace] <= 0:
            del self._out[namespace]
            if namespace not in self._queues:
                del self._served[namespace]  # nothing to do: forgotten, so the memory stays bounded
        self._offer_turn(namespace)

    def _has_room(self, namespace: str) -> bool:
        return self._per_namespace is None or self._out.get(namespace, 0) < self._per_namespace

    def _offer_turn(self, namespace: str) -> None:
        if namespace not in self._has_turn and self._queues.get(namespace) and self._has_room(namespace):
            heapq.heappush(self._turns, (self._served.get(namespace, 0), next(self._clock), namespace))
            self._has_turn.add(namespace)
