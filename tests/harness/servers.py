"""Getting the third-party test servers (the GCP Secret Manager emulator, lowkey-vault) through hack/.

Each hack script tries an installed artifact, the upstream one from the package registries, then the
source build in ../shared/servers, and prints the artifact's path as its last line. It runs at most once
per test process; a failure is remembered as a ServerUnavailable naming the step that failed, which the
fixtures turn into a skip and tests/conftest.py repeats in the terminal summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .controlplane import REPO_ROOT, HarnessError, run_build_script

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
    returncode, stdout, log_path = run_build_script(script, "building a test server", on_slow)
    if returncode != 0:
        # The script's last stderr lines list each step and why it failed.
        lines = log_path.read_text(errors="replace").strip().splitlines()
        start = max((i for i, line in enumerate(lines) if "no way to get it worked" in line), default=-1)
        detail = "\n".join(lines[start:] if start >= 0 else lines[-8:])
        error = ServerUnavailable(f"{script.name} failed (code {returncode}; log {log_path}):\n{detail}")
        UNAVAILABLE[script.name] = str(error)
        return error
    lines = re.sub(r"\x1b\[[0-9;]*m", "", stdout).strip().splitlines()
    artifact = Path(lines[-1]) if lines else Path()
    if not artifact.is_file():
        error = ServerUnavailable(f"{script.name} printed {str(artifact)!r}, which is not a file")
        UNAVAILABLE[script.name] = str(error)
        return error
    return artifact
