"""The operator under test, in-process in a background thread, with the operator's own identity."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from managed_secrets.config import OperatorConfig
from managed_secrets.handlers.operator import run_operator
from managed_secrets.runtime.factory import Runtime


@dataclass
class OperatorRunner:
    config: OperatorConfig
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        self.holder: dict[str, Runtime] = {}

    @property
    def runtime(self) -> Runtime:
        return self.holder["runtime"]

    def start(self, timeout: float = 30) -> OperatorRunner:
        ready = threading.Event()
        self.holder.clear()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stop = asyncio.Event()
            try:
                loop.run_until_complete(
                    run_operator(self.config, stop_flag=self._stop, ready_flag=ready, holder=self.holder)
                )
            except BaseException as error:  # surfaced by stop()
                self._error = error
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="operator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("operator did not become ready")
        if self._error is not None:
            raise RuntimeError("operator failed to start") from self._error
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._thread = None
        if alive:
            raise RuntimeError("operator did not stop in time")

    def restart(self, **changes: Any) -> OperatorRunner:
        self.stop()
        if changes:
            self.config = replace(self.config, **changes)
        return self.start()

    @property
    def secret_writes(self) -> int:
        return sum(self.runtime.cluster.secret_writes.values())


class AwsCalls:
    """Every AWS API call of the session's operator: when (time.monotonic, the read cache's clock), which
    operation, which secret or parameter names. Names only, never a value."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[float, str, tuple[str, ...]]] = []

    def _record(self, params: dict[str, Any], event_name: str, **_: Any) -> None:
        names = (
            params.get("SecretIdList")
            or params.get("Names")
            or [params.get("SecretId") or params.get("Name")]
        )
        with self._lock:
            self.calls.append(
                (time.monotonic(), event_name.rsplit(".", 1)[-1], tuple(str(n) for n in names if n))
            )

    def hooks(self) -> list[tuple[str, Callable[..., None]]]:
        return [("provide-client-params", self._record)]

    def reads(self, names: set[str], since: float = 0.0) -> dict[str, list[float]]:
        """Read times of each of ``names`` (value reads: GetSecretValue, BatchGetSecretValue, GetParameter(s))."""
        found: dict[str, list[float]] = {name: [] for name in names}
        with self._lock:
            calls = list(self.calls)
        for at, operation, called in calls:
            if at < since or not operation.startswith(
                ("GetSecretValue", "BatchGetSecretValue", "GetParameter")
            ):
                continue
            for name in called:
                if name in found:
                    found[name].append(at)
        return found
