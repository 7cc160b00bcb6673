"""A real PostgreSQL for the dynamic-secrets tests: Debian's server binaries (hack/install-postgres.sh),
a temporary data directory, TCP on 127.0.0.1 only, the socket in that directory, password logins only.

PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user the package creates.
``login`` checks credentials the way an application would: psql connecting over TCP with that password.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from .controlplane import HarnessError, ServerProcess, free_port
from .lifecycle import ProcessHarness
from .servers import ServerUnavailable


def _bindir() -> Path:
    found = shutil.which("postgres")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not candidates:
        raise ServerUnavailable("no PostgreSQL server binaries (run hack/install-postgres.sh as root)")
    return Path(candidates[-1]).parent


class PostgresServer(ProcessHarness):
    ADMIN = "admin"

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self.admin_password = secrets.token_hex(16)
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-pg-"))
        self.data = self.workdir / "data"
        self._runas: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable(
                    "running as root and there is no postgres user to run it as"
                ) from None
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
            self._runas = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        self._server: ServerProcess | None = None

    def _as_server_user(self, *argv: str | Path) -> list[str]:
        return [*self._runas, *(str(a) for a in argv)]

    def start(self) -> Self:
        if self.running:
            raise HarnessError("PostgreSQL already running")
        if not (self.data / "PG_VERSION").exists():
            password_file = self.workdir / "admin-password"
            password_file.write_text(self.admin_password)
            if self._runas:
                user = pwd.getpwnam("postgres")
                os.chown(password_file, user.pw_uid, user.pw_gid)
            password_file.chmod(0o600)
            subprocess.run(
                self._as_server_user(
                    self.bindir / "initdb",
                    "-D",
                    self.data,
                    "-U",
                    self.ADMIN,
                    f"--pwfile={password_file}",
                    "-A",
                    "scram-sha-256",
                    "--no-sync",
                    "--no-instructions",
                ),
                check=True,
                capture_output=True,
                cwd=self.workdir,
            )
            password_file.unlink()
        server = ServerProcess(
            "postgres",
            self._as_server_user(
                self.bindir / "postgres",
                "-D",
                self.data,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.workdir}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ),
            self.workdir / "postgres.log",
        )
        self._launch(server, self._ready, what=f"PostgreSQL on port {self.port}", timeout=self.start_timeout)
        return self

    def _ready(self) -> bool:
        done = subprocess.run(
            [self.bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False
        )
        return done.returncode == 0

    @property
    def connection_url(self) -> str:
        """For OpenBao's database engine: it fills in the username and password."""
        return (
            f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{self.port}/postgres?sslmode=disable"
        )

    def login(self, username: str, password: str) -> bool:
        """Whether these credentials log in (over TCP, as an application does)."""
        done = subprocess.run(
            [self.bindir / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", username, "-d", "postgres",
             "-w", "-tAc", "select 1"],
            env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        return done.returncode == 0 and done.stdout.strip() == "1"

    def query(self, sql: str) -> str:
        """Run ``sql`` as the admin; its output unaligned, without headers."""
        done = subprocess.run(
            [self.bindir / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.ADMIN, "-d", "postgres",
             "-w", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            env={**os.environ, "PGPASSWORD": self.admin_password},
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise HarnessError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def roles(self) -> set[str]:
        """The login roles that exist (OpenBao's users come and go)."""
        return set(self.query("select rolname from pg_roles where rolcanlogin").split())
