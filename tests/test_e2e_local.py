"""The e2e cases (e2e/cases.py) on the local control plane, with the operator in-process.

The kind suite (e2e/test_kind.py) runs the same cases against the container image installed with the Helm
chart; it needs Docker and kind. Here they run in `make test` on every machine: the session operator
(its RBAC is the chart's rules file) and the session OpenBao, a fresh namespace per case.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from harness.controlplane import ControlPlane
from harness.openbao import OpenBao
from harness.operator import OperatorRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for the e2e package
from e2e import cases


class LocalCluster:
    """The Cluster adapter of e2e/cases.py for the session control plane and OpenBao."""

    timeout = 30.0

    def __init__(self, controlplane: ControlPlane, openbao: OpenBao) -> None:
        self._cp = controlplane
        self._bao = openbao
        self.vault_server = openbao.addr

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self._cp.kubectl(*args, input=stdin, check=check)

    def vault_put(self, path: str, data: Mapping[str, str]) -> None:
        self._bao.client().secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), mount_point="secret"
        )


@pytest.mark.cluster
@pytest.mark.vault
@pytest.mark.parametrize("case", cases.CASES, ids=[c.__name__ for c in cases.CASES])
def test_e2e_case(
    case: Callable[[cases.Cluster, str], None],
    controlplane: ControlPlane,
    openbao: OpenBao,
    operator: OperatorRunner,
    namespace: str,
) -> None:
    case(LocalCluster(controlplane, openbao), namespace)
