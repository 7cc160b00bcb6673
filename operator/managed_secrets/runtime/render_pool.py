"""Templates rendered in a small pool of separate processes, with limits that hold whatever they do.

A Python thread cannot be stopped, so a template that loops or allocates without end would hold a worker
thread (and memory) for good. Here each render runs in a child process that imports only Jinja2 and
core/render.py (not the Kubernetes client, no credentials in its environment), and:

- the caller waits at most ``timeout`` seconds (wall clock) for the answer, then kills the process; a
  new one is started for the next render. A per-render CPU limit (RLIMIT_CPU) ends a runaway child even
  if the operator itself is gone;
- RLIMIT_AS bounds the child's memory (``memory_mib``), and its OOM score makes the kernel pick it
  before the operator;
- the answer is read up to the output limit only.

Waiting for a free process is fair across namespaces (round-robin, runtime/fairqueue.py), so a tenant
whose renders all run into the limit delays another tenant's render by one render at most.
Requests and answers are length-prefixed JSON frames over the child's stdin and stdout: no pickle, so a
child that a template took over still cannot run code in the operator.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import managed_secrets
from managed_secrets.core.render import RenderLimits, check_templates, render_templates
from managed_secrets.errors import SyncError, TemplateError
from managed_secrets.runtime.fairqueue import FairQueue

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: The child's request frames: far above any real Secret's values, below what would hurt.
_MAX_REQUEST = 64 << 20
_CHECKED_CACHE = 4096
#: Owners whose renders were cancelled, remembered so a render that starts later is refused too.
_CANCELLED_CACHE = 4096


class RendererUnavailable(SyncError):
    """No render process could be started or the pool is closed: retried later (InternalError)."""

    transient = True


class RenderCancelled(SyncError):
    """The render was stopped because its ManagedSecret is going away."""

    transient = True


class _ProcessGone(Exception):
    pass


class _Timeout(Exception):
    pass


class _TooLarge(Exception):
    pass


class _Process:
    """One render process, used by one thread at a time."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        assert popen.stdin is not None  # noqa: S101 - created with PIPE
        assert popen.stdout is not None  # noqa: S101
        self._to_child = popen.stdin.fileno()
        self._from_child = popen.stdout.fileno()
        os.set_blocking(self._to_child, False)
        os.set_blocking(self._from_child, False)
        self.cancelled = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exchange(self, payload: bytes, deadline: float, max_reply: int) -> dict[str, Any]:
        self._write(_HEADER.pack(len(payload)) + payload, deadline)
        return self.read_frame(deadline, max_reply)

    def read_frame(self, deadline: float, max_size: int = 65536) -> dict[str, Any]:
        (length,) = _HEADER.unpack(self._read(_HEADER.size, deadline))
        if length > max_size:
            raise _TooLarge
        reply = json.loads(self._read(length, deadline))
        if not isinstance(reply, dict):
            raise _ProcessGone
        return reply

    def _wait(self, fd: int, events: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout
        poller = select.poll()
        poller.register(fd, events)
        if not poller.poll(max(1, int(remaining * 1000))):
            raise _Timeout

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(self._to_child, select.POLLOUT, deadline)
            try:
                written = os.write(self._to_child, view)
            except BlockingIOError:
                continue
            except OSError:  # EPIPE: the child is gone
                raise _ProcessGone from None
            view = view[written:]

    def _read(self, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        left = size
        while left:
            self._wait(self._from_child, select.POLLIN, deadline)
            try:
                chunk = os.read(self._from_child, min(left, 1 << 20))
            except BlockingIOError:
                continue
            except OSError:
                raise _ProcessGone from None
            if not chunk:
                raise _ProcessGone
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.kill()

    def reap(self, timeout: float = 5.0) -> int | None:
        """Wait for the process to end; its return code (negative: the signal), None if it did not."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return code


@dataclass(eq=False)
class _Ticket:
    """A thread waiting for a free process."""

    owner: str
    event: threading.Event = field(default_factory=threading.Event)
    process: _Process | None = None
    may_start: bool = False


class RenderPool:
    """A core.render.Renderer that renders in separate processes with hard limits."""

    def __init__(
        self,
        limits: RenderLimits,
        processes: int = 2,
        *,
        start_timeout: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.limits = limits
        self._size = processes
        self._start_timeout = start_timeout
        self._python = python
        self._lock = threading.Lock()
        self._idle: list[_Process] = []
        self._busy: dict[_Process, str] = {}
        self._started = 0  # processes running or being started
        self._waiting: FairQueue[_Ticket] = FairQueue(lambda ticket: ticket.owner.partition("/")[0])
        self._checked: OrderedDict[str, None] = OrderedDict()
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._closed = False
        #: For metrics and tests: processes started, and killed for a limit.
        self.processes_started = 0
        self.processes_killed = 0

    # -- the Renderer interface ------------------------------------------------------------------------

    def check(self, templates: Mapping[str, str], binary_templates: Mapping[str, str]) -> None:
        if not templates and not binary_templates:
            return
        digest = _digest(templates, binary_templates)
        with self._lock:
            if digest in self._checked:
                self._checked.move_to_end(digest)
                return
        request = {"op": "check", "data": dict(templates), "binaryData": dict(binary_templates)}
        self._call(request, owner="", keys=0)
        with self._lock:
            self._checked[digest] = None
            while len(self._checked) > _CHECKED_CACHE:
                self._checked.popitem(last=False)

    def render(
        self,
        templates: Mapping[str, str],
        binary_templates: Mapping[str, str],
        values: Mapping[str, bytes],
        *,
        owner: str = "",
    ) -> dict[str, bytes]:
        request = {
            "op": "render",
            "data": dict(templates),
            "binaryData": dict(binary_templates),
            "values": {name: base64.b64encode(value).decode() for name, value in values.items()},
        }
        reply = self._call(request, owner=owner, keys=len(templates) + len(binary_templates))
        return {name: base64.b64decode(text) for name, text in reply.get("data", {}).items()}

    # -- lifecycle -------------------------------------------------------------------------------------

    def cancel(self, owner: str) -> None:
        """Stop the render running for ``owner`` (core.render.render_owner), and refuse later ones: the
        object's reconcile may be about to render (fetching, or waiting for a process)."""
        if not owner:
            return
        with self._lock:
            self._cancelled[owner] = None
            while len(self._cancelled) > _CANCELLED_CACHE:
                self._cancelled.popitem(last=False)
            for process, rendering_for in self._busy.items():
                if rendering_for == owner:
                    process.cancelled = True
                    process.kill()

    def close(self) -> None:
        """Kill every render process; renders in progress and waiting fail with RendererUnavailable."""
        with self._lock:
            self._closed = True
            processes = [*self._idle, *self._busy]
            self._idle.clear()
            while (ticket := self._waiting.get()) is not None:
                ticket.event.set()
        for process in processes:
            process.kill()
        for process in processes:
            process.reap(2.0)

    @property
    def closed(self) -> bool:
        return self._closed

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in (*self._idle, *self._busy)]

    # -- one call --------------------------------------------------------------------------------------

    def _call(self, request: Mapping[str, Any], *, owner: str, keys: int) -> dict[str, Any]:
        payload = json.dumps(request, separators=(",", ":")).encode()
        if len(payload) > _MAX_REQUEST:
            raise TemplateError(f"the values and templates are over {_MAX_REQUEST >> 20} MiB")
        if self._is_cancelled(owner):
            raise RenderCancelled("rendering cancelled: the ManagedSecret is being deleted")
        ticket = _Ticket(owner)
        process = self._acquire(ticket)
        healthy = False
        try:
            if self._is_cancelled(owner):
                healthy = True
                raise RenderCancelled("rendering cancelled: the ManagedSecret is being deleted")
            max_reply = self.limits.max_output * 4 // 3 + 65536 + 512 * keys
            deadline = time.monotonic() + self.limits.timeout
            try:
                reply = process.exchange(payload, deadline, max_reply)
            except _Timeout:
                self._count_kill()
                raise TemplateError(
                    f"rendering took longer than {self.limits.timeout:g} s, the limit (--template-timeout)"
                ) from None
            except _TooLarge:
                self._count_kill()
                raise TemplateError(
                    f"the rendered data is over the limit of {self.limits.max_output} bytes per Secret "
                    "(--template-max-output)"
                ) from None
            except (_ProcessGone, ValueError):
                raise self._gone(process) from None
            healthy = not reply.get("recycle")
        finally:
            self._release(process, ticket, healthy=healthy)
        if "error" in reply:
            raise TemplateError(str(reply["error"]))
        return dict(reply)

    def _is_cancelled(self, owner: str) -> bool:
        with self._lock:
            return bool(owner) and owner in self._cancelled

    def _gone(self, process: _Process) -> SyncError:
        if process.cancelled:
            return RenderCancelled("rendering cancelled: the ManagedSecret is being deleted")
        if self._closed:
            return RendererUnavailable("rendering stopped: the operator is shutting down")
        code = process.reap(2.0)
        self._count_kill()
        if code == -signal.SIGXCPU:
            return TemplateError(
                f"rendering took longer than {self.limits.timeout:g} s, the limit (--template-timeout)"
            )
        how = f"exit code {code}"
        if code is not None and code < 0:
            how = (
                f"signal {signal.Signals(-code).name}"
                if -code in signal.valid_signals()
                else f"signal {-code}"
            )
        return TemplateError(
            f"the render process ended ({how}); the template probably needs more than "
            f"{self.limits.memory_mib} MiB (--template-memory-mib)"
        )

    def _count_kill(self) -> None:
        with self._lock:
            self.processes_killed += 1

    def _acquire(self, ticket: _Ticket) -> _Process:
        """Wait for a process, in the namespace's turn: every render goes through the fair queue."""
        with self._lock:
            if self._closed:
                raise RendererUnavailable("rendering stopped: the operator is shutting down")
            self._waiting.put(ticket)
            self._dispatch_locked()
        ticket.event.wait()
        process = ticket.process
        if process is None:
            if not ticket.may_start:  # closed while waiting
                raise RendererUnavailable("rendering stopped: the operator is shutting down")
            try:
                process = self._start()
            except BaseException:
                with self._lock:
                    self._started -= 1
                    self._waiting.done(ticket)
                    self._dispatch_locked()
                raise
        with self._lock:
            closed = self.closed
            if not closed:
                self._busy[process] = ticket.owner
        if closed:
            process.kill()
            process.reap(2.0)
            raise RendererUnavailable("rendering stopped: the operator is shutting down")
        return process

    def _release(self, process: _Process, ticket: _Ticket, *, healthy: bool) -> None:
        with self._lock:
            self._busy.pop(process, None)
            self._waiting.done(ticket)
            keep = healthy and not self._closed
            if keep:
                self._idle.append(process)
            else:
                self._started -= 1
            if not self._closed:
                self._dispatch_locked()
        if not keep:
            process.kill()
            process.reap(2.0)

    def _dispatch_locked(self) -> None:
        """Give free processes (or room to start one) to the waiters, namespace by namespace in turn."""
        while self._idle or self._started < self._size:
            ticket = self._waiting.get()
            if ticket is None:
                return
            if self._idle:
                ticket.process = self._idle.pop()
            else:
                self._started += 1
                ticket.may_start = True
            ticket.event.set()

    def _start(self) -> _Process:
        package_root = str(Path(managed_secrets.__file__).resolve().parent.parent)
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        env = {
            "PATH": os.defpath,
            "LC_ALL": "C.UTF-8",
            "PYTHONPATH": python_path,
            "PYTHONDONTWRITEBYTECODE": "1",
            "MALLOC_ARENA_MAX": "1",
        }
        argv = [self._python, "-s", "-B", "-m", __name__, json.dumps(asdict(self.limits))]
        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
            )
        except OSError as error:
            raise RendererUnavailable(f"cannot start a render process ({type(error).__name__})") from None
        process = _Process(popen)
        try:
            ready = process.read_frame(time.monotonic() + self._start_timeout).get("ready")
        except (_ProcessGone, _Timeout, _TooLarge, ValueError):
            ready = False
        if not ready:
            process.kill()
            process.reap(2.0)
            raise RendererUnavailable("a render process did not start (is Jinja2 importable?)")
        with self._lock:
            self.processes_started += 1
        log.debug("render process %d started", process.pid)
        return process


def _digest(templates: Mapping[str, str], binary_templates: Mapping[str, str]) -> str:
    text = json.dumps([templates, binary_templates], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# -- the child process -----------------------------------------------------------------------------------


def _confine(limits: RenderLimits) -> None:
    """Limits of the render process itself (Linux); the parent's wall-clock limit holds without them."""
    import resource  # noqa: PLC0415 - POSIX only, and only in the child

    memory = limits.memory_mib << 20
    for which, value in (
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, 0),  # no files written
        (resource.RLIMIT_NPROC, 0),  # no processes or threads started
    ):
        with contextlib.suppress(ValueError, OSError):
            _soft, hard = resource.getrlimit(which)
            bound = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (bound, bound))
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:  # noqa: PTH123
        adj.write("1000")  # under memory pressure the kernel kills a render, not the operator


def _arm_cpu_limit(timeout: float) -> None:
    """SIGXCPU after this render's share of CPU: a runaway child ends even if nobody kills it."""
    import resource  # noqa: PLC0415

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + timeout) + 2
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(
            resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
        )


def _read_frame(fd: int) -> bytes | None:
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > _MAX_REQUEST:
        return None
    return _read_exact(fd, length)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_frame(fd: int, reply: Mapping[str, Any]) -> None:
    payload = json.dumps(reply, separators=(",", ":")).encode()
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def _answer(request: Mapping[str, Any], limits: RenderLimits) -> dict[str, Any]:
    templates = request.get("data") or {}
    binary = request.get("binaryData") or {}
    try:
        if request.get("op") == "check":
            check_templates(templates, binary)
            return {"ok": True}
        values = {name: base64.b64decode(text) for name, text in (request.get("values") or {}).items()}
        data = render_templates(templates, values, binary_templates=binary, limits=limits)
        return {"data": {name: base64.b64encode(value).decode() for name, value in data.items()}}
    except TemplateError as error:
        return {"error": error.message}
    except MemoryError:
        return {
            "error": f"out of memory (a render may use {limits.memory_mib} MiB, --template-memory-mib)",
            "recycle": True,
        }


def child_main(argv: list[str]) -> int:
    limits = RenderLimits(**json.loads(argv[1]))
    requests = sys.stdin.fileno()
    replies = os.dup(sys.stdout.fileno())
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a stray print must not corrupt the protocol
    _confine(limits)
    _write_frame(replies, {"ready": True})
    while (frame := _read_frame(requests)) is not None:
        _arm_cpu_limit(limits.timeout)
        try:
            reply = _answer(json.loads(frame), limits)
        except MemoryError:
            reply = {"error": "out of memory", "recycle": True}
        except Exception as error:  # a broken request: the kind only
            reply = {"error": f"render process failed ({type(error).__name__})", "recycle": True}
        _write_frame(replies, reply)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv))
