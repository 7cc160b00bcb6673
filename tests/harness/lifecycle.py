"""The plumbing every test server's harness shares: a context manager over start() and close(), and for
the servers that are one process, launching it until ready, stopping it, and removing its folder."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .controlplane import ServerProcess, wait_until


class ServerHarness:
    """Subclasses set ``_server`` (a running process or server object) and implement start() and close()."""

    _server: Any

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._server is not None and bool(self._server.running)

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def remove_workdir(workdir: Path) -> None:
    """Remove a harness's temp folder, unless MANAGED_SECRETS_KEEP_TESTDIR asks to keep it."""
    if os.environ.get("MANAGED_SECRETS_KEEP_TESTDIR", "") in ("", "0"):
        shutil.rmtree(workdir, ignore_errors=True)


class ProcessHarness(ServerHarness):
    """A server that is one ``ServerProcess``: stop() is SIGTERM (SIGKILL after a few seconds) and also
    runs at exit; start() again brings it back; close() stops it and removes ``workdir``."""

    _server: ServerProcess | None
    workdir: Path

    def _launch(
        self,
        server: ServerProcess,
        ready: Callable[[], bool],
        *,
        what: str,
        timeout: float,
        interval: float = 0.2,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Start ``server``, wait until ``ready`` (then run ``then``); on any failure print its log's
        tail, stop it and raise."""
        self._server = server
        atexit.register(self.stop)
        server.start()
        try:
            wait_until(ready, timeout=timeout, interval=interval, what=what, alive=server.exit_problem)
            if then is not None:
                then()
        except BaseException:
            print(f"{what} failed to start:\n{server.tail()}", file=sys.stderr)
            self.stop()
            raise

    def stop(self) -> None:
        if self._server is None:
            return
        atexit.unregister(self.stop)
        self._server.stop()
        self._server = None

    def close(self) -> None:
        self.stop()
        remove_workdir(self.workdir)
