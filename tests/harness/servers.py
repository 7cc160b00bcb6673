"""Getting the third-party test servers (the GCP Secret Manager emulator, lowkey-vault) through hack/.

Each hack script tries an installed artifact, the upstream one from the package registries, then the
source build in ../shared/servers, and prints the artifact's path as its last line. It runs at most once
per test process; a failure is remembered as a ServerUnavailable naming the step that failed, which the
fixtures turn into a skip and tests/conftest.py repeats in the terminal summary.
"""

from __future__ import annotations

import fcntl
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .controlplane import REPO_ROOT, HarnessError

GCP_EMULATOR_SCRIPT = REPO_ROOT / "hack" / "build-gcp-emulator.sh"
LOWKEY_VAULT_SCRIPT = REPO_ROOT / "hack" / "build-lowkey-vault.sh"

#: Why a server could not be had, by script, for the terminal summary.
UNAVAILABLE: dict[str, str] = {}
_RESULTS: dict[Path, Path | HarnessError] = {}


class ServerUnavailable(HarnessError):
    """None of a hack script's ways to get a server worked; the message names each step's failure."""


def build_server(script: Path, on_slow: Callable[[str], None] | None = None) -> Path:
    """The artifact path the script prints last; raises ServerUnavailable (remembered) when it fails."""
    if script not in _RESULTS:
        _RESULTS[script] = _run(script, on_slow)
    result = _RESULTS[script]
    if isinstance(result, HarnessError):
        raise result
    return result


def _run(script: Path, on_slow: Callable[[str], None] | None) -> Path | HarnessError:
    tmp = Path(tempfile.gettempdir())
    log_path = tmp / f"managed-secrets-{script.stem}.log"
    # One build per machine at a time: concurrent sessions wait, then find the cached artifact.
    with (tmp / f"managed-secrets-{script.stem}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                ["bash", str(script)], stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT
            )
            try:
                stdout, _ = proc.communicate(timeout=2)
            except subprocess.TimeoutExpired:
                if on_slow is not None:
                    on_slow(
                        f"building a test server with {script.name} (a first build takes minutes; log: {log_path})"
                    )
                stdout, _ = proc.communicate()
    if proc.returncode != 0:
        # The script's last stderr lines list each step and why it failed.
        lines = log_path.read_text(errors="replace").strip().splitlines()
        start = max((i for i, line in enumerate(lines) if "no way to get it worked" in line), default=-1)
        detail = "\n".join(lines[start:] if start >= 0 else lines[-8:])
        error = ServerUnavailable(f"{script.name} failed (code {proc.returncode}; log {log_path}):\n{detail}")
        UNAVAILABLE[script.name] = str(error)
        return error
    lines = re.sub(r"\x1b\[[0-9;]*m", "", stdout).strip().splitlines()
    artifact = Path(lines[-1]) if lines else Path()
    if not artifact.is_file():
        error = ServerUnavailable(f"{script.name} printed {str(artifact)!r}, which is not a file")
        UNAVAILABLE[script.name] = str(error)
        return error
    return artifact
