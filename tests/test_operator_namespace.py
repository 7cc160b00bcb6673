"""The operator's own namespace (where its HMAC key Secret lives), as a process on the real control plane.

Without that Secret no workload is ever restarted; the operator used to log an ERROR on every sync while
ManagedSecrets showed Ready. Now it checks at start, and exits at once with one clear line when it can
neither read nor create the Secret.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.controlplane import OPERATOR_NAMESPACE, ControlPlane, free_port, wait_until
from harness.operator import OperatorRunner
from managed_secrets.config import OperatorConfig

pytestmark = [pytest.mark.cluster]

#: Environment of the process: nothing that could name a namespace for it, unless a test sets it.
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if k != "POD_NAMESPACE" and not k.startswith("MANAGED_SECRETS_")
}


def run_operator(
    controlplane: ControlPlane, watched: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "managed_secrets",
            "run",
            "--kubeconfig",
            str(controlplane.operator_kubeconfig),
            "--log-format",
            "text",
            "-n",
            watched,  # an empty namespace: this process does not compete with the session's operator
            *args,
        ],
        env={**CLEAN_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def missing_namespace() -> str:
    return f"no-such-namespace-{secrets.token_hex(4)}"


def assert_fails_clearly(process: subprocess.Popen[str], namespace: str) -> None:
    started = time.monotonic()
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, output
    assert time.monotonic() - started < 60
    errors = [line for line in output.splitlines() if "cannot start" in line]
    assert len(errors) == 1, output
    assert (
        f"HMAC key Secret {namespace}/managed-secrets-hmac-key: namespace {namespace} does not exist"
        in errors[0]
    )
    assert "--operator-namespace" in errors[0]
    assert "Traceback" not in output, output


def test_a_missing_operator_namespace_stops_the_process_at_start(
    controlplane: ControlPlane, namespace: str
) -> None:
    ghost = missing_namespace()
    assert_fails_clearly(run_operator(controlplane, namespace, "--operator-namespace", ghost), ghost)


def test_the_namespace_from_the_environment_is_checked_too(
    controlplane: ControlPlane, namespace: str
) -> None:
    ghost = missing_namespace()
    assert_fails_clearly(
        run_operator(controlplane, namespace, env={"MANAGED_SECRETS_OPERATOR_NAMESPACE": ghost}), ghost
    )
    ghost = missing_namespace()
    assert_fails_clearly(run_operator(controlplane, namespace, env={"POD_NAMESPACE": ghost}), ghost)


def test_an_existing_operator_namespace_starts(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    health = free_port()
    process = run_operator(
        controlplane,
        namespace,
        "--operator-namespace",
        OPERATOR_NAMESPACE,
        f"--health-port={health}",
        "--health-address=127.0.0.1",
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_until(
            healthy,
            timeout=60,
            what="/healthz of the operator",
            alive=lambda: None if process.poll() is None else f"exited with {process.returncode}",
        )
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "cannot start" not in output, output


def test_in_process_the_start_fails_with_the_reason(controlplane: ControlPlane, namespace: str) -> None:
    ghost = missing_namespace()
    runner = OperatorRunner(
        OperatorConfig(
            kubeconfig=str(controlplane.operator_kubeconfig),
            namespaces=(namespace,),
            operator_namespace=ghost,
        )
    )
    with pytest.raises(RuntimeError, match="failed to start") as caught:
        runner.start()
    assert f"{ghost}/managed-secrets-hmac-key" in str(caught.value.__cause__)
