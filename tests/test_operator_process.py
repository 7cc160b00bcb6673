"""`managed-secrets run` as a process under hostile templates: liveness fails when the workers make no
progress, SIGTERM ends the process within a bound while templates render, and the operator's memory
stays flat under the memory attacks.

On a control plane of this module's own (about 5 s to start): the session operator (clusterwide, in the
test process) must not reconcile these objects too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from harness.controlplane import DEFAULT_CRD_DIR, OPERATOR_NAMESPACE, ControlPlane, free_port
from harness.openbao import OpenBao
from kube import Kube, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

ENDLESS = "{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}"
MEMORY_ATTACKS = [
    "{{ 'x' * 10**9 }}",
    "{% set ns = namespace(a=pw) %}{% for i in range(60) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}",
    "{{ pw | center(10**9) }}",
    "{{ '{:>999999999}'.format(pw) }}",
    "{% for i in range(100000) %}{{ pw * 1000 }}{% endfor %}",
    "{{ (pw * 500000) | replace(pw, pw * 1000) }}",
]


@pytest.fixture(scope="module")
def own_controlplane() -> Iterator[ControlPlane]:
    with ControlPlane(crd_dir=DEFAULT_CRD_DIR) as cp:
        cp.apply_operator_rbac()
        yield cp


@pytest.fixture(scope="module")
def own_kube(own_controlplane: ControlPlane) -> Iterator[Kube]:
    api = k8s_config.new_client_from_config(config_file=str(own_controlplane.admin_kubeconfig))
    yield Kube(api)
    api.close()


@pytest.fixture
def tenant(own_kube: Kube, openbao: OpenBao) -> Iterator[str]:
    """A namespace with a SecretBackend `vault` and a value at secret/<ns>/x."""
    name = f"tenant-{secrets.token_hex(3)}"
    own_kube.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    own_kube.create_vault_token_backend(name, openbao.addr, openbao.root_token)
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{name}/x", secret={"pass": "p1"}, mount_point="secret"
    )
    yield name
    own_kube.core.delete_namespace(name, propagation_policy="Background")


class OperatorProcess:
    def __init__(self, cp: ControlPlane, log_path: Path, *flags: str) -> None:
        self.health_port = free_port()
        env = {**os.environ, "POD_NAMESPACE": OPERATOR_NAMESPACE}
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "managed_secrets",
                "run",
                f"--kubeconfig={cp.operator_kubeconfig}",
                f"--health-port={self.health_port}",
                "--health-address=127.0.0.1",
                "--log-format=text",
                "--allowed-store-endpoint=http://127.0.0.1:*",  # the test servers
                *flags,
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.health()[0] == 200, timeout=60, what="the operator's /healthz")

    def health(self) -> tuple[int, str]:
        assert self.process.poll() is None, f"the operator exited:\n{self.log()}"
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=5
            ) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return 0, ""

    def children(self) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(pid) for pid in (task / "children").read_text().split()]
        return found

    def kib(self, field: str, pid: int | None = None) -> int:
        for line in Path(f"/proc/{pid or self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def start_operator(own_controlplane: ControlPlane, tmp_path: Path) -> Iterator[Any]:
    started: list[OperatorProcess] = []

    def start(*flags: str) -> OperatorProcess:
        process = OperatorProcess(own_controlplane, tmp_path / f"operator-{len(started)}.log", *flags)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def hostile(kube: Kube, namespace: str, name: str, template: str, interval: str = "1s") -> None:
    kube.create_ms(
        namespace,
        name,
        {
            "backendRef": {"name": "vault"},
            "refreshInterval": interval,
            "data": [{"secretKey": "pw", "remoteRef": {"key": f"{namespace}/x", "property": "pass"}}],
            "target": {"template": {"data": {"out": template}}},
        },
    )


def test_liveness_fails_when_no_reconcile_finishes_and_deleting_frees_the_workers(
    start_operator: Any, own_kube: Kube, tenant: str
) -> None:
    """A long render limit (60 s) and a short stall bound (2 s): endless templates hold every worker the
    namespace may have; /healthz answers 500. Deleting them cancels their renders: 200 again."""
    operator = start_operator("--workers=4", "--template-timeout=60", "--stall-timeout=2")
    for i in range(6):
        hostile(own_kube, tenant, f"h{i}", ENDLESS)
    code, _body = wait_for(
        lambda: result if (result := operator.health())[0] == 500 else None,
        timeout=60,
        what="/healthz to fail",
    )
    assert code == 500
    assert "no reconcile finished for" in operator.log()
    for i in range(6):
        own_kube.delete_ms(tenant, f"h{i}")
    wait_for(lambda: operator.health()[0] == 200, timeout=30, what="/healthz to recover")
    wait_for(
        lambda: json.loads(operator.health()[1])["reconciles"]["running"] == 0,
        timeout=30,
        what="no reconcile running",
    )


def test_sigterm_ends_the_process_within_a_bound_while_templates_render(
    start_operator: Any, own_kube: Kube, tenant: str
) -> None:
    operator = start_operator("--workers=4", "--template-timeout=60")
    for i in range(6):
        hostile(own_kube, tenant, f"h{i}", ENDLESS)
    renders = wait_for(lambda: operator.children() or None, timeout=60, what="render processes")
    time.sleep(1)  # the renders are under way
    started = time.monotonic()
    operator.process.send_signal(signal.SIGTERM)
    code = operator.process.wait(20)  # raises TimeoutExpired when it hangs
    took = time.monotonic() - started
    assert code == 0, f"exited with {code} after {took:.1f}s:\n{operator.log()}"
    assert took < 20
    for pid in renders:
        assert not Path(f"/proc/{pid}").exists(), f"render process {pid} outlived the operator"


def test_memory_attacks_leave_the_operator_flat(start_operator: Any, own_kube: Kube, tenant: str) -> None:
    operator = start_operator("--workers=4")
    hostile(own_kube, tenant, "warm-up", "{{ pw }}", interval="1h")
    own_kube.wait_ready(tenant, "warm-up", timeout=60)
    baseline = operator.kib("VmHWM")
    for i, template in enumerate(MEMORY_ATTACKS):
        hostile(own_kube, tenant, f"m{i}", template)
    for i in range(len(MEMORY_ATTACKS)):
        condition = own_kube.wait_ready(tenant, f"m{i}", "False", "TemplateError", timeout=60)
        assert "limit" in condition["message"] or "MiB" in condition["message"], condition["message"]
    time.sleep(3)  # a few more rounds of every attack (refreshInterval 1s)
    peak = operator.kib("VmHWM")
    assert peak - baseline < 64 << 10, f"the operator's peak RSS grew from {baseline} to {peak} KiB"
    for pid in operator.children():
        with contextlib.suppress(FileNotFoundError):  # a render process may just have been replaced
            assert operator.kib("VmHWM", pid) < 128 << 10
