"""Shared reads: one fetch per (backend, key, version) per refresh window, however many resources ask.

A refresh reuses a cached value only if it was fetched after that resource's previous refresh: no
resource ever sees data older than its own interval, and within one refresh cycle each key is fetched
once, whichever resource asks first. Concurrent askers of the same key wait for the
one fetch in flight. Keys missed together are fetched in batches where the provider can batch.
Errors are shared only with the askers waiting on that same fetch, never cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from managed_secrets.errors import SyncError
from managed_secrets.providers.base import BatchingProvider, RemoteKey, SecretProvider

FetchObserver = Callable[[str, int], None]  # (operation, number of keys) for metrics


@dataclass(slots=True)
class _Entry:
    value: bytes
    fetched_at: float


class ReadCache:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_age_cap: float = 3600.0) -> None:
        self._clock = clock
        self._max_age_cap = max_age_cap
        self._lock = threading.Lock()
        self._entries: dict[tuple[Hashable, RemoteKey], _Entry] = {}
        self._in_flight: dict[tuple[Hashable, RemoteKey], Future[bytes]] = {}
        self._last_purge = clock()

    def get_many(
        self,
        backend: Hashable,
        provider: SecretProvider,
        refs: Sequence[RemoteKey],
        *,
        max_age: float,
        fetched_after: float | None = None,
        observe: FetchObserver | None = None,
    ) -> dict[RemoteKey, bytes | SyncError]:
        """Values for ``refs`` fetched less than ``max_age`` ago and after ``fetched_after`` (this
        clock); ``max_age=0`` forces fresh reads (force-sync) and refreshes the cache."""
        now = self._clock()
        results: dict[RemoteKey, bytes | SyncError] = {}
        waiting: dict[RemoteKey, Future[bytes]] = {}
        mine: dict[RemoteKey, Future[bytes]] = {}
        with self._lock:
            self._purge(now)
            for ref in dict.fromkeys(refs):
                slot = (backend, ref)
                entry = self._entries.get(slot)
                if (
                    entry is not None
                    and now - entry.fetched_at < min(max_age, self._max_age_cap)
                    and (fetched_after is None or entry.fetched_at > fetched_after)
                ):
                    results[ref] = entry.value
                elif slot in self._in_flight:
                    waiting[ref] = self._in_flight[slot]
                else:
                    future: Future[bytes] = Future()
                    self._in_flight[slot] = future
                    mine[ref] = future
        if mine:
            self._fetch(backend, provider, mine, observe)
        for ref, future in {**mine, **waiting}.items():
            error = future.exception()
            results[ref] = error if isinstance(error, SyncError) else future.result()
        return results

    def _fetch(
        self,
        backend: Hashable,
        provider: SecretProvider,
        futures: Mapping[RemoteKey, Future[bytes]],
        observe: FetchObserver | None,
    ) -> None:
        refs = list(futures)
        try:
            outcomes = _call_provider(provider, refs, observe)
        except BaseException:
            # Never strand other askers waiting on these futures.
            outcomes = {ref: SyncError(f"fetching {ref} failed unexpectedly") for ref in refs}
            self._settle(backend, futures, outcomes)
            raise
        self._settle(backend, futures, outcomes)

    def _settle(
        self,
        backend: Hashable,
        futures: Mapping[RemoteKey, Future[bytes]],
        outcomes: Mapping[RemoteKey, bytes | SyncError],
    ) -> None:
        fetched_at = self._clock()
        missing = SyncError("the provider returned no value")
        with self._lock:
            for ref in futures:
                slot = (backend, ref)
                self._in_flight.pop(slot, None)
                outcome = outcomes.get(ref, missing)
                if isinstance(outcome, bytes):
                    self._entries[slot] = _Entry(outcome, fetched_at)
                else:
                    self._entries.pop(slot, None)
        for ref, future in futures.items():
            outcome = outcomes.get(ref, missing)
            if isinstance(outcome, bytes):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

    def _purge(self, now: float) -> None:
        if now - self._last_purge < 60:
            return
        self._last_purge = now
        for slot in [
            slot for slot, entry in self._entries.items() if now - entry.fetched_at > self._max_age_cap
        ]:
            del self._entries[slot]


def _call_provider(
    provider: SecretProvider, refs: Sequence[RemoteKey], observe: FetchObserver | None
) -> dict[RemoteKey, bytes | SyncError]:
    outcomes: dict[RemoteKey, bytes | SyncError] = {}
    if isinstance(provider, BatchingProvider) and len(refs) > 1:
        for start in range(0, len(refs), provider.max_batch):
            chunk = refs[start : start + provider.max_batch]
            if observe:
                observe("fetch_many", len(chunk))
            try:
                outcomes.update(provider.fetch_many(chunk))
            except SyncError as error:
                outcomes.update(dict.fromkeys(chunk, error))
        return outcomes
    for ref in refs:
        if observe:
            observe("fetch", 1)
        try:
            outcomes[ref] = provider.fetch(ref)
        except SyncError as error:
            outcomes[ref] = error
    return outcomes
