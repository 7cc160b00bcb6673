"""An attacker's store: an HTTP server on 127.0.0.1 that records every byte it receives.

The confused-deputy tests point SecretBackends at it and then look at what arrived: nothing at all when
a guard holds, or only what the guard allows (a token for the store's audience, never one the API server
accepts). It answers every request with ``status`` (403 unless told), and ``redirect_to`` turns the
answer into a 307 to another URL, as a Vault standby (or an open redirect) would.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass
from typing import Self

from .lifecycle import ServerHarness


@dataclass(frozen=True)
class Received:
    """One request: its request line, headers and body, as raw bytes."""

    raw: bytes

    def header(self, name: str) -> str | None:
        for line in self.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode(errors="replace")
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        head = f"{self.requestline}\r\n{self.headers}".replace("\n", "\r\n").encode()
        self.server.owner.record(Received(head + b"\r\n" + body))
        target = self.server.owner.redirect_to
        if target is not None:
            self.send_response(307)
            self.send_header("Location", target + self.path)
        else:
            self.send_response(self.server.owner.status)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass  # the test reads `received`, not stderr


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: RecordingListener) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class RecordingListener(ServerHarness):
    def __init__(self, *, status: int = 403, redirect_to: str | None = None) -> None:
        self.status = status
        self.redirect_to = redirect_to
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._received: list[Received] = []

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def raw(self) -> bytes:
        return b"\n".join(r.raw for r in self.received)

    def start(self) -> Self:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="listener", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
