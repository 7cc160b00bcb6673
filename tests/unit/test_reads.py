"""The shared read cache: one fetch per key per window, single flight, batching, no cached errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from managed_secrets.errors import BackendUnavailable, RemoteKeyNotFound, SyncError
from managed_secrets.providers.base import RemoteKey


class CountingProvider:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[RemoteKey] = []
        self.values: dict[str, bytes] = {}
        self.delay = delay
        self.lock = threading.Lock()

    def fetch(self, ref: RemoteKey) -> bytes:
        with self.lock:
            self.calls.append(ref)
        time.sleep(self.delay)
        if ref.key not in self.values:
            raise RemoteKeyNotFound(f"key {ref.key} not found")
        return self.values[ref.key]

    def close(self) -> None:
        pass


class BatchProvider(CountingProvider):
    max_batch = 20

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def fetch_many(self, refs: Sequence[RemoteKey]) -> Mapping[RemoteKey, bytes | SyncError]:
        self.batches.append(len(refs))
        return {ref: self.values.get(ref.key, RemoteKeyNotFound("missing")) for ref in refs}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_values_are_reused_within_the_window_and_refetched_after() -> None:
    from managed_secrets.core.reads import ReadCache

    clock = Clock()
    cache = ReadCache(clock=clock)
    provider = CountingProvider()
    provider.values["a"] = b"1"
    ref = RemoteKey("a")
    for _ in range(100):
        assert cache.get_many("backend", provider, [ref], max_age=30) == {ref: b"1"}
    assert len(provider.calls) == 1
    clock.now += 31
    cache.get_many("backend", provider, [ref], max_age=30)
    assert len(provider.calls) == 2
    cache.get_many("backend", provider, [ref], max_age=0)  # force-sync
    assert len(provider.calls) == 3
    cache.get_many("other-backend", provider, [ref], max_age=30)
    assert len(provider.calls) == 4


def test_concurrent_askers_share_one_fetch() -> None:
    from managed_secrets.core.reads import ReadCache

    cache = ReadCache()
    provider = CountingProvider(delay=0.2)
    provider.values["a"] = b"1"
    results: list[object] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(cache.get_many("b", provider, [RemoteKey("a")], max_age=60))
        )
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(provider.calls) == 1
    assert all(result == {RemoteKey("a"): b"1"} for result in results)


def test_errors_are_not_cached() -> None:
    from managed_secrets.core.reads import ReadCache

    cache = ReadCache()
    provider = CountingProvider()
    ref = RemoteKey("a")
    assert isinstance(cache.get_many("b", provider, [ref], max_age=60)[ref], RemoteKeyNotFound)
    provider.values["a"] = b"now here"
    assert cache.get_many("b", provider, [ref], max_age=60)[ref] == b"now here"


def test_batching_provider_is_called_in_chunks() -> None:
    from managed_secrets.core.reads import ReadCache

    cache = ReadCache()
    provider = BatchProvider()
    refs = [RemoteKey(f"k{i}") for i in range(45)]
    for ref in refs[:44]:
        provider.values[ref.key] = ref.key.encode()
    observed: list[tuple[str, int]] = []
    results = cache.get_many("b", provider, refs, max_age=60, observe=lambda op, n: observed.append((op, n)))
    assert provider.batches == [20, 20, 5]
    assert observed == [("fetch_many", 20), ("fetch_many", 20), ("fetch_many", 5)]
    assert results[refs[0]] == b"k0"
    assert isinstance(results[refs[44]], RemoteKeyNotFound)


def test_a_failing_batch_fails_only_its_keys() -> None:
    from managed_secrets.core.reads import ReadCache

    class Down(BatchProvider):
        def fetch_many(self, refs: Sequence[RemoteKey]) -> Mapping[RemoteKey, bytes | SyncError]:
            raise BackendUnavailable("down")

    cache = ReadCache()
    results = cache.get_many("b", Down(), [RemoteKey("a"), RemoteKey("b")], max_age=60)
    assert all(isinstance(v, BackendUnavailable) for v in results.values())
