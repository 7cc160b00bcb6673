"""Render processes: hard limits on time, memory and output that hold whatever the template does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from managed_secrets.core.render import RenderLimits
from managed_secrets.errors import TemplateError
from managed_secrets.runtime.render_pool import RenderCancelled, RendererUnavailable, RenderPool

CANARY = "canary-9b2f44-value"
VALUES = {"user": b"app", "password": CANARY.encode()}
#: Escapes every cheap guard: 10**10 empty iterations over strings the '*' guard allows.
ENDLESS = "{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}"
#: A string doubled in a namespace: memory grows without any guarded operator.
DOUBLING = "{% set ns = namespace(a='x') %}{% for i in range(60) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}"


@pytest.fixture
def pool() -> Iterator[RenderPool]:
    pool = RenderPool(RenderLimits(timeout=1.0, memory_mib=128), processes=2)
    yield pool
    pool.close()


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_renders_like_in_process(pool: RenderPool) -> None:
    out = pool.render(
        {"url": "{{ user }}:{{ values['password'] }}"},
        {"bin": "{{ user | b64encode }}"},
        VALUES,
        owner="ns/a",
    )
    assert out == {"url": f"app:{CANARY}".encode(), "bin": b"app"}


def test_an_endless_loop_is_killed_at_the_timeout_and_the_next_render_works(pool: RenderPool) -> None:
    pool.render({"k": "{{ user }}"}, {}, VALUES)
    first = set(pool.pids())
    started = time.monotonic()
    with pytest.raises(
        TemplateError, match=r"rendering took longer than 1 s, the limit \(--template-timeout\)"
    ):
        pool.render({"k": ENDLESS}, {}, VALUES, owner="ns/hostile")
    assert time.monotonic() - started < 10
    assert pool.processes_killed == 1
    assert pool.render({"k": "{{ user }}"}, {}, VALUES) == {"k": b"app"}
    assert len(first - set(pool.pids())) == 1, "the stuck process was replaced"


def test_memory_is_capped_in_the_child(pool: RenderPool) -> None:
    pool.render({"k": "{{ user }}"}, {}, VALUES)
    pid = pool.pids()[0]
    limits = Path(f"/proc/{pid}/limits").read_text()
    address_space = next(line for line in limits.splitlines() if line.startswith("Max address space"))
    assert str(128 << 20) in address_space
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "1000"
    with pytest.raises(TemplateError) as info:
        pool.render({"k": DOUBLING}, {}, VALUES, owner="ns/hostile")
    assert "128 MiB" in info.value.message
    assert CANARY not in info.value.message
    assert pool.render({"k": "{{ user }}"}, {}, VALUES) == {"k": b"app"}
    for pid in pool.pids():
        assert vm_kib(pid, "VmHWM") < 128 << 10  # no render process ever held more than its limit


def test_the_parent_does_not_grow(pool: RenderPool) -> None:
    """The attacks of the issue, through the pool: the operator's own peak RSS stays where it was."""
    pool.render({"k": "{{ user }}"}, {}, VALUES)
    before = vm_kib(os.getpid(), "VmHWM")
    for template in (
        "{{ 'x' * 10**9 }}",
        DOUBLING,
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    ):
        with pytest.raises(TemplateError):
            pool.render({"k": template}, {}, VALUES, owner="ns/hostile")
    assert vm_kib(os.getpid(), "VmHWM") - before < 64 << 10


def test_output_is_capped() -> None:
    pool = RenderPool(RenderLimits(max_output=1000), processes=1)
    try:
        with pytest.raises(TemplateError, match="over the limit of 1000 bytes"):
            pool.render({"k": "{% for i in range(200) %}{{ 'x' * 10 }}{% endfor %}"}, {}, VALUES)
    finally:
        pool.close()


def test_errors_come_back_without_values(pool: RenderPool) -> None:
    with pytest.raises(TemplateError) as info:
        pool.render({"k": "{{ values[password] }}"}, {}, VALUES)
    assert "(a computed name)" in info.value.message
    assert CANARY not in info.value.message


def test_check_reports_syntax_and_remembers_good_templates(pool: RenderPool) -> None:
    with pytest.raises(TemplateError, match="template for key 'k': line 1"):
        pool.check({"k": "{{ user "}, {})
    pool.check({"k": "{{ user }}"}, {})
    pool.close()
    pool.check({"k": "{{ user }}"}, {})  # known good: no process needed


def test_cancel_stops_a_render_at_once() -> None:
    errors: list[BaseException] = []
    long_pool = RenderPool(RenderLimits(timeout=60), processes=1)

    def hostile() -> None:
        try:
            long_pool.render({"k": ENDLESS}, {}, VALUES, owner="ns/gone")
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=hostile)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not long_pool.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        started = time.monotonic()
        long_pool.cancel("ns/gone")
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5
        assert isinstance(errors[0], RenderCancelled)
    finally:
        long_pool.close()


def test_a_cancelled_owner_cannot_start_a_render_later(pool: RenderPool) -> None:
    """The delete can come while the object's reconcile is still fetching: its render must not start."""
    pool.cancel("ns/gone/uid-1")
    with pytest.raises(RenderCancelled):
        pool.render({"k": ENDLESS}, {}, VALUES, owner="ns/gone/uid-1")
    assert pool.render({"k": "{{ user }}"}, {}, VALUES, owner="ns/gone/uid-2") == {"k": b"app"}, "recreated"


def test_close_ends_renders_in_progress_and_waiting() -> None:
    pool = RenderPool(RenderLimits(timeout=60), processes=1)
    errors: list[BaseException] = []

    def hostile() -> None:
        try:
            pool.render({"k": ENDLESS}, {}, VALUES, owner="ns/h")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=hostile) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    pool.close()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert time.monotonic() - started < 10
    assert len(errors) == 3
    assert all(isinstance(error, RendererUnavailable) for error in errors)
    assert pool.pids() == []


def test_a_free_process_goes_to_the_next_namespace_in_turn() -> None:
    """Namespace a queues five endless renders for the only process; b's render comes right after the
    first of a's, not after all of them."""
    pool = RenderPool(RenderLimits(timeout=1.0), processes=1)
    finished: list[str] = []
    lock = threading.Lock()

    def render(owner: str, template: str) -> None:
        with contextlib.suppress(TemplateError):
            pool.render({"k": template}, {}, VALUES, owner=owner)
        with lock:
            finished.append(owner)

    try:
        pool.render({"k": "{{ user }}"}, {}, VALUES)  # the process is up
        hostile = [threading.Thread(target=render, args=(f"a/{i}", ENDLESS)) for i in range(5)]
        hostile[0].start()
        time.sleep(0.3)  # a/0 holds the process
        for thread in hostile[1:]:
            thread.start()
        time.sleep(0.3)
        good = threading.Thread(target=render, args=("b/good", "{{ user }}"))
        good.start()
        good.join(30)
        assert finished.index("b/good") <= 1
        for thread in hostile:
            thread.join(30)
    finally:
        pool.close()


def test_a_runaway_child_ends_by_itself_when_nobody_kills_it() -> None:
    """RLIMIT_CPU per render: the child ends even when its operator is gone (killed, not waiting)."""
    limits = RenderLimits(timeout=0.5)
    child = subprocess.Popen(
        [sys.executable, "-m", "managed_secrets.runtime.render_pool", json.dumps(asdict(limits))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None
    try:
        header = child.stdout.read(4) if child.stdout else b""
        assert header, "the child did not start"
        request = json.dumps({"op": "render", "data": {"k": ENDLESS}, "values": {}}).encode()
        child.stdin.write(struct.pack(">I", len(request)) + request)
        child.stdin.flush()
        code = child.wait(60)  # about 2.5 s of CPU; more wall time on a loaded machine
        assert code == -signal.SIGXCPU
    finally:
        child.kill()
        child.wait()


def test_the_child_imports_no_kubernetes_client_and_gets_no_credentials(pool: RenderPool) -> None:
    script = (
        "import sys; "
        "import managed_secrets.runtime.render_pool; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kubernetes', 'kopf', 'hvac', 'boto3', 'urllib3', 'pydantic'}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    os.environ["AWS_SECRET_ACCESS_KEY"] = CANARY
    try:
        pool.render({"k": "{{ user }}"}, {}, VALUES)
    finally:
        del os.environ["AWS_SECRET_ACCESS_KEY"]
    for pid in pool.pids():
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        assert CANARY.encode() not in environment
        assert b"AWS_" not in environment
