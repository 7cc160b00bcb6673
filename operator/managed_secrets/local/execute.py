"""``managed-secrets exec``: run a process with the resolved keys, for its lifetime only.

Environment variables go to the child alone (this process's own environment is not changed). File-shaped
keys go to a private directory (mode 0700, files 0600) on a memory file system where there is one
(``/dev/shm``, ``$XDG_RUNTIME_DIR``), so they never reach a disk; it is removed when the child ends, whether
it exits, fails or is stopped by a signal sent to this process. The exit status passes through; a child
killed by a signal kills this process with the same signal, so a shell or CI runner sees what happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from managed_secrets.local.output import DIR_VARIABLE, Split

#: Signals passed on to the child. SIGINT and SIGQUIT from the terminal already reach it (same process
#: group), so they are passed on only when this process is not in the terminal's foreground.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
_TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)


def _memory_dir() -> str | None:
    """A folder on a memory file system for the private directory, else None (the system's temp dir)."""
    for candidate in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR")):  # noqa: S108 - a tmpfs, for a 0700 dir
        if candidate and Path(candidate).is_dir() and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def private_files(files: Sequence[tuple[str, str, bytes]]) -> Iterator[Path | None]:
    """A private directory holding ``files`` (secret name/key), removed on exit; None when no files."""
    if not files:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="managed-secrets-", dir=_memory_dir()))
    try:
        root.chmod(0o700)
        for secret, key, value in files:
            folder = root / secret
            folder.mkdir(mode=0o700, exist_ok=True)
            handle = os.open(folder / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(handle, "wb") as file:
                file.write(value)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _from_terminal(signum: int) -> bool:
    if signum not in _TERMINAL_SIGNALS:
        return False
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def run(command: Sequence[str], parts: Split, base_environ: Mapping[str, str] | None = None) -> int:
    """Run ``command`` with the keys; return its exit status (128+N, after re-raising N, for a signal)."""
    environ = dict(os.environ if base_environ is None else base_environ)
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []  # signals that came before the child was there

    def forward(signum: int, _frame: FrameType | None) -> None:
        if _from_terminal(signum):
            return
        if child is None:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        with private_files(parts.files) as folder:
            child_env = {**environ, **parts.env}
            if folder is not None:
                child_env[DIR_VARIABLE] = str(folder)
            try:
                child = subprocess.Popen(list(command), env=child_env)
            except OSError as error:
                print(
                    f"managed-secrets exec: cannot run {command[0]}: {error.strerror or error}",
                    file=sys.stderr,
                )
                return 127 if isinstance(error, FileNotFoundError) else 126
            del child_env
            for signum in pending:
                forward(signum, None)
            status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if status < 0:
        _die_like_the_child(-status)
        return 128 - status
    return status


def _die_like_the_child(signum: int) -> None:
    """End this process by the signal that ended the child (the directory is gone by now)."""
    if signum in (signal.SIGKILL, signal.SIGSTOP):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
