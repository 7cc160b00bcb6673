"""The plumbing every test server's harness shares: a context manager over start() and close()."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


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
