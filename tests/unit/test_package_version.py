"""The version is written once, in pyproject.toml; the chart follows it and nothing else spells it out."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import managed_secrets

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT_VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
#: Where the version may be written: its source, the chart (checked below), the history.
ALLOWED = {"pyproject.toml", "charts/managed-secrets/Chart.yaml", "CHANGELOG.md"}


def test_the_package_reports_pyprojects_version() -> None:
    assert version("managed-secrets") == PYPROJECT_VERSION, "installed metadata is stale: `make install`"
    assert managed_secrets.__version__ == PYPROJECT_VERSION


def test_the_chart_follows_pyproject() -> None:
    chart = yaml.safe_load((ROOT / "charts/managed-secrets/Chart.yaml").read_text())
    assert str(chart["version"]) == PYPROJECT_VERSION, "Chart.yaml version"
    assert str(chart["appVersion"]) == PYPROJECT_VERSION, "Chart.yaml appVersion (the default image tag)"


def test_no_other_file_hard_codes_the_version() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True)
        .stdout.decode()
        .split("\0")
    )
    spelled = re.compile(rf"(?<![\w.]){re.escape(PYPROJECT_VERSION)}(?![\w.])")
    found = []
    for name in tracked:
        path = ROOT / name
        if not name or name in ALLOWED or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # not text
        found += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if spelled.search(line)]
    assert not found, f"version {PYPROJECT_VERSION} written outside pyproject.toml and the chart: {found}"
