"""The work queue takes namespaces in turn and caps how many items of one namespace are out at once."""

from __future__ import annotations

import random

import pytest

from managed_secrets.runtime.fairqueue import FairQueue

Key = tuple[str, str]


def queue(per_namespace: int | None = None) -> FairQueue[Key]:
    return FairQueue(lambda key: key[0], per_namespace)


def drain(q: FairQueue[Key]) -> list[Key]:
    taken = []
    while (item := q.get()) is not None:
        taken.append(item)
        q.done(item)
    return taken


def test_fifo_within_a_namespace() -> None:
    q = queue()
    for name in "abc":
        q.put(("ns", name))
    assert drain(q) == [("ns", "a"), ("ns", "b"), ("ns", "c")]
    assert len(q) == 0
    assert q.get() is None


def test_round_robin_across_namespaces_whatever_the_backlog() -> None:
    """A hostile namespace with 1000 items queued first: the other namespaces' items come every other turn."""
    q = queue()
    for i in range(1000):
        q.put(("hostile", str(i)))
    q.put(("b", "x"))
    q.put(("c", "y"))
    first = [q.get() for _ in range(4)]
    assert first == [("hostile", "0"), ("b", "x"), ("c", "y"), ("hostile", "1")]


def test_a_namespace_at_its_cap_waits_while_others_go() -> None:
    q = queue(per_namespace=2)
    for i in range(5):
        q.put(("a", str(i)))
    q.put(("b", "0"))
    taken = [q.get(), q.get(), q.get()]
    assert taken == [("a", "0"), ("b", "0"), ("a", "1")]
    assert q.get() is None, "a holds its 2 workers; nothing else is eligible"
    assert q.taken_in("a") == 2
    assert q.waiting_in("a") == 3
    q.done(("a", "0"))
    assert q.get() == ("a", "2")
    assert q.get() is None


def test_done_puts_the_namespace_at_the_back_of_the_line() -> None:
    q = queue(per_namespace=1)
    q.put(("a", "1"))
    q.put(("a", "2"))
    assert q.get() == ("a", "1")
    q.put(("b", "1"))
    q.put(("c", "1"))
    q.done(("a", "1"))
    assert [q.get(), q.get(), q.get()] == [("b", "1"), ("c", "1"), ("a", "2")]


def test_counts() -> None:
    q = queue(per_namespace=3)
    for i in range(4):
        q.put(("a", str(i)))
    item = q.get()
    assert item is not None
    assert (len(q), q.taken) == (3, 1)
    q.done(item)
    assert (len(q), q.taken) == (3, 0)


def test_bad_cap() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        queue(per_namespace=0)


def test_random_operations_keep_the_invariants() -> None:
    """Nothing is lost or duplicated and no namespace ever exceeds its cap."""
    rng = random.Random(7)
    q = queue(per_namespace=2)
    put: list[Key] = []
    out: list[Key] = []
    finished: list[Key] = []
    for step in range(5000):
        if rng.random() < 0.5:
            item = (rng.choice("abcd"), str(step))
            q.put(item)
            put.append(item)
        elif rng.random() < 0.5 and (taken := q.get()) is not None:
            out.append(taken)
            assert q.taken_in(taken[0]) <= 2
        elif out:
            item = out.pop(rng.randrange(len(out)))
            q.done(item)
            finished.append(item)
    out_count = len(out)
    for item in out:
        q.done(item)
    finished += out
    finished += drain(q)
    assert sorted(finished) == sorted(put)
    assert out_count <= 8


def test_a_namespace_that_just_got_work_goes_before_a_busy_one() -> None:
    """Least recently served first: b arrives after a's backlog and after a was served, and goes next."""
    q = queue()
    q.put(("a", "0"))
    assert q.get() == ("a", "0")
    for i in range(1, 5):
        q.put(("a", str(i)))
    q.put(("b", "0"))
    assert q.get() == ("b", "0")
    assert q.get() == ("a", "1")


def test_memory_of_served_namespaces_is_bounded() -> None:
    q = queue()
    for i in range(1000):
        q.put((f"ns-{i}", "x"))
        item = q.get()
        assert item is not None
        q.done(item)
    assert not q._served
