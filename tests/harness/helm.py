"""helm, built from its Go module by hack/build-helm.sh (cached by version), and a renderer for the chart."""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .controlplane import REPO_ROOT, HarnessError, log_tail

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-helm.sh"
CHART_DIR = REPO_ROOT / "charts" / "managed-secrets"

_HELM: Path | HarnessError | None = None


def build_helm() -> Path:
    """The helm binary (MANAGED_SECRETS_HELM overrides). A cold build takes a minute or two; the result
    (or failure) is remembered for the rest of the process."""
    global _HELM  # noqa: PLW0603 - one build per process
    override = os.environ.get("MANAGED_SECRETS_HELM")
    if override:
        return Path(override)
    if _HELM is None:
        _HELM = _run_build_script()
    if isinstance(_HELM, HarnessError):
        raise _HELM
    return _HELM


def _run_build_script() -> Path | HarnessError:
    tmp = Path(tempfile.gettempdir())
    log_path = tmp / "managed-secrets-build-helm.log"
    with (tmp / "managed-secrets-build-helm.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with log_path.open("w") as log:
            result = subprocess.run(
                ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=log, text=True, check=False
            )
    if result.returncode != 0:
        return HarnessError(f"{BUILD_SCRIPT} failed; last lines of {log_path}:\n{log_tail(log_path)}")
    path = Path(result.stdout.strip().splitlines()[-1])
    if not path.is_file():
        return HarnessError(f"{BUILD_SCRIPT} printed {str(path)!r}, which does not exist")
    return path


class Helm:
    def __init__(self, binary: Path, chart: Path = CHART_DIR) -> None:
        self.binary = binary
        self.chart = chart
        self._home = Path(tempfile.mkdtemp(prefix="managed-secrets-helm-"))

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A private HOME: helm reads and writes its config, cache and repositories there.
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self._home / "cache"),
            "HELM_CONFIG_HOME": str(self._home / "config"),
            "HELM_DATA_HOME": str(self._home / "data"),
        }
        env.pop("KUBECONFIG", None)
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, check=False, timeout=120
        )
        if check and result.returncode != 0:
            raise HarnessError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def template_args(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "managed-secrets",
        namespace: str = "managed-secrets-system",
        extra: Sequence[str] = (),
    ) -> list[str]:
        args = ["template", release, str(self.chart), "--namespace", namespace, *extra]
        if values:
            values_file = self._home / f"values-{len(list(self._home.glob('values-*')))}.yaml"
            values_file.write_text(yaml.safe_dump(dict(values)))
            args += ["--values", str(values_file)]
        return args

    def render(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "managed-secrets",
        namespace: str = "managed-secrets-system",
        extra: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """The chart's manifests (templates only; CRDs with include_crds in extra)."""
        out = self.run(*self.template_args(values, release=release, namespace=namespace, extra=extra)).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def render_error(self, values: Mapping[str, Any] | None = None, *, extra: Sequence[str] = ()) -> str:
        """Render expecting failure; returns helm's error output."""
        result = self.run(*self.template_args(values, extra=extra), check=False)
        if result.returncode == 0:
            raise AssertionError(f"helm template succeeded with values {values!r}")
        return result.stderr + result.stdout
