"""The controller's work queue on an injected clock: dedup, one run at a time per object, sync vs record
entries, due times, fairness, liveness bookkeeping; and the delays (backoff and refresh jitter)."""

from __future__ import annotations

import asyncio

import pytest

from managed_secrets.runtime.workqueue import Backoff, Work, WorkQueue, jittered

Key = tuple[str, str]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queue(clock: Clock | None = None, per_namespace: int | None = None) -> WorkQueue[Key]:
    return WorkQueue(lambda key: key[0], per_namespace, clock=clock or Clock())


def drain(q: WorkQueue[Key]) -> list[Work[Key]]:
    taken = []
    while (work := q.get()) is not None:
        taken.append(work)
    return taken


A, B, C = ("ns", "a"), ("ns", "b"), ("other", "c")


# -- entries -----------------------------------------------------------------------------------------------


def test_an_object_waits_once_however_often_it_is_added() -> None:
    q = queue()
    for _ in range(5):
        q.add(A)
    q.add(B)
    assert len(q) == 2
    assert [w.key for w in drain(q)] == [A, B]
    assert len(q) == 0


def test_one_run_at_a_time_and_adds_during_a_run_give_one_more() -> None:
    q = queue()
    q.add(A)
    work = q.get()
    assert work == Work(A, sync=True)
    for _ in range(3):
        q.add(A)
    assert q.get() is None, "not while it runs"
    assert q.is_running(A)
    q.done(A)
    assert not q.is_running(A)
    assert drain(q) == [Work(A, sync=True)], "one more run for all the adds"
    q.done(A)
    assert q.get() is None


def test_a_record_entry_merges_with_a_sync_and_the_sync_wins() -> None:
    q = queue()
    q.add(A, sync=False)
    assert drain(q) == [Work(A, sync=False)]
    q.done(A)
    q.add(A, sync=False)
    q.add(A)
    assert drain(q) == [Work(A, sync=True)]
    q.add(A, sync=False)  # while running: a record-only rerun
    q.done(A)
    assert drain(q) == [Work(A, sync=False)]
    q.add(A, sync=False)
    q.add(A, sync=True)
    q.done(A)
    assert drain(q) == [Work(A, sync=True)]


def test_forget_drops_the_rerun_and_the_timer() -> None:
    clock = Clock()
    q = queue(clock)
    q.add(A)
    assert q.get() is not None
    q.add(A)
    q.add_after(A, 10)
    q.forget(A)
    q.done(A)
    assert q.get() is None
    clock.now += 20
    assert q.release_due() is None
    assert q.get() is None


def test_namespaces_take_turns_and_hold_at_most_their_share() -> None:
    q = queue(per_namespace=2)
    for i in range(5):
        q.add(("busy", f"o{i}"))
    q.add(C)
    first = [q.get(), q.get(), q.get()]
    assert [w.key[0] for w in first if w] == ["busy", "other", "busy"]
    assert q.get() is None, "busy holds its two, other has nothing waiting"
    assert (q.waiting_in("busy"), q.running_in("busy")) == (3, 2)
    q.done(("busy", "o0"))
    work = q.get()
    assert work is not None
    assert work.key == ("busy", "o2")


def test_a_namespace_that_just_got_work_comes_before_the_others_backlog() -> None:
    q = queue()
    for i in range(10):
        q.add(("busy", f"o{i}"))
    assert q.get() is not None
    q.add(C)
    work = q.get()
    assert work is not None
    assert work.key == C


# -- timers ------------------------------------------------------------------------------------------------


def test_timers_release_objects_when_due_and_a_later_timer_replaces_an_earlier() -> None:
    clock = Clock()
    q = queue(clock)
    q.add_after(A, 10)
    q.add_after(B, 5)
    q.add_after(A, 30)  # replaces A's 10 s
    assert q.due(A) == 1030
    assert q.release_due() == 5
    clock.now += 5
    assert q.release_due() == 25, "the replaced timer of A is skipped; A's next is 25 s away"
    assert drain(q) == [Work(B)]
    assert q.due(B) is None, "fired"
    clock.now += 25
    assert q.release_due() is None
    assert drain(q) == [Work(A)]


def test_a_due_object_that_is_running_runs_once_more_after() -> None:
    clock = Clock()
    q = queue(clock)
    q.add(A)
    assert q.get() is not None
    q.add_after(A, 1)
    clock.now += 1
    q.release_due()
    assert q.get() is None
    q.done(A)
    assert drain(q) == [Work(A)]


def test_progress_counts_from_work_arriving_at_an_idle_queue_and_from_each_run_ending() -> None:
    clock = Clock()
    q = queue(clock)
    clock.now += 100
    q.add(A)
    assert q.progress_at == 1100
    clock.now += 50
    q.add(B)
    assert q.progress_at == 1100, "the queue was not idle"
    assert q.get() is not None
    clock.now += 10
    q.done(A)
    assert q.progress_at == 1160


def test_take_waits_for_an_add_and_timers_wake_it() -> None:
    async def scenario() -> list[Work[Key]]:
        q = queue(Clock())
        timers = asyncio.create_task(q.run_timers())
        try:
            waiting = asyncio.create_task(q.take())
            await asyncio.sleep(0)
            assert not waiting.done()
            q.add(A)
            first = await asyncio.wait_for(waiting, 1)
            q.done(A)
            q.add_after(B, 0)  # due now: the timer task releases it
            second = await asyncio.wait_for(q.take(), 1)
            return [first, second]
        finally:
            timers.cancel()

    assert asyncio.run(scenario()) == [Work(A), Work(B)]


# -- delays ------------------------------------------------------------------------------------------------


def lowest(a: float, _b: float) -> float:
    return a


def highest(_a: float, b: float) -> float:
    return b


def test_backoff_doubles_up_to_the_cap_and_the_refresh_interval() -> None:
    backoff = Backoff(base=5, cap=300)
    ceilings = [backoff.delay(n, uniform=highest) for n in range(1, 10)]
    assert ceilings == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert backoff.delay(12, interval=7, uniform=highest) == 7, "a 7 s object retries within 7 s"
    assert backoff.delay(1, interval=3600, uniform=highest) == 5, "a long interval lengthens nothing"
    assert backoff.delay(0, uniform=highest) == 5
    assert backoff.delay(10**9, uniform=highest) == 300, "no overflow after days of failures"
    assert backoff.delay(10**9, uniform=lowest) == 0, "full jitter: from zero"


@pytest.mark.parametrize("interval", [1.0, 60.0, 3600.0])
def test_refresh_jitter_stays_within_its_share(interval: float) -> None:
    assert jittered(interval, 0.1, uniform=lowest) == pytest.approx(interval * 0.9)
    assert jittered(interval, 0.1, uniform=highest) == pytest.approx(interval * 1.1)
    for _ in range(200):
        assert interval * 0.9 <= jittered(interval, 0.1) <= interval * 1.1
