"""A thread pool whose threads never keep the process alive.

ThreadPoolExecutor joins its threads when the interpreter exits, so one call stuck without a timeout
(a render before the render processes, a socket that never answers) made SIGTERM hang for good. Here the
threads are daemons: ``shutdown`` drops the calls not started, and whoever stops the pool decides how long
to wait for the running ones (``running``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class DaemonThreadPool:
    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._running: set[Future[Any]] = set()
        self._shut_down = False

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("the pool is shut down")
            self._calls.put((future, function, args))
            # Threads start as needed, as ThreadPoolExecutor's do: an idle one takes the call if there is one.
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def running(self) -> list[Future[Any]]:
        with self._lock:
            return list(self._running)

    def shutdown(self) -> None:
        """Cancel the calls not started and let the threads end after their current call."""
        with self._lock:
            self._shut_down = True
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    call[0].cancel()
            for _ in self._threads:
                self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, function, args = call
            del call
            if future.set_running_or_notify_cancel():
                with self._lock:
                    self._running.add(future)
                try:
                    result = function(*args)
                except BaseException as error:
                    future.set_exception(error)
                else:
                    future.set_result(result)
                finally:
                    with self._lock:
                        self._running.discard(future)
            del future, function, args
            self._idle.release()
