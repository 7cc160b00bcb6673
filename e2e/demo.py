"""`make demo`: a local control plane and OpenBao, the operator as a process, a Secret synced and rotated.

Everything runs on 127.0.0.1 and stops at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness.controlplane import DEFAULT_CRD_DIR, ControlPlane  # noqa: E402
from harness.openbao import OpenBao  # noqa: E402

NAMESPACE = "demo"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def masked(value: str) -> str:
    return f"{value[:2]}{'*' * max(len(value) - 2, 3)}"


def show_secret(cp: ControlPlane, name: str) -> dict[str, str]:
    secret = json.loads(cp.kubectl("-n", NAMESPACE, "get", "secret", name, "-o", "json").stdout)
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    print(
        f"Secret {NAMESPACE}/{name} (type {secret['type']}, resourceVersion {secret['metadata']['resourceVersion']}):"
    )
    for key, value in sorted(data.items()):
        print(f"  {key}: {masked(value)}")
    return data


def wait(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise SystemExit(f"demo failed: timed out waiting for {what}")


def secret_data(cp: ControlPlane, name: str) -> dict[str, str] | None:
    result = cp.kubectl("-n", NAMESPACE, "get", "secret", name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    secret = json.loads(result.stdout)
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def replica_sets(cp: ControlPlane, deployment: str) -> list[str]:
    items = json.loads(cp.kubectl("-n", NAMESPACE, "get", "replicasets", "-o", "json").stdout)["items"]
    return sorted(
        rs["metadata"]["name"]
        for rs in items
        if any(o["name"] == deployment for o in rs["metadata"].get("ownerReferences", []))
    )


def main() -> int:
    step("Starting a local control plane (etcd, kube-apiserver, kube-controller-manager) and OpenBao")
    with ControlPlane(crd_dir=DEFAULT_CRD_DIR) as cp, OpenBao() as bao:
        cp.apply_operator_rbac()
        print(f"kube-apiserver {cp.url}, OpenBao {bao.addr}")
        bao.client().secrets.kv.v2.create_or_update_secret(
            path="app/db", secret={"username": "app", "password": "first-password"}, mount_point="secret"
        )
        print("wrote secret/app/db in OpenBao: username, password")

        step("Applying examples/ (a SecretBackend, a ManagedSecret, a Deployment that uses the Secret)")
        cp.kubectl("create", "namespace", NAMESPACE)
        for name in ("vault-token-backend.yaml", "managedsecret-basic.yaml", "deployment.yaml"):
            text = (REPO / "examples" / name).read_text().replace("http://127.0.0.1:8200", bao.addr)
            print(cp.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=text).stdout.strip())

        step("Running the operator: managed-secrets run (as its own ServiceAccount, not admin)")
        log_path = Path(cp.workdir) / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(cp.operator_kubeconfig)}
        with log_path.open("w") as log_file:
            operator = subprocess.Popen(
                [
                    *(sys.executable, "-m", "managed_secrets", "run", "--log-level", "INFO"),
                    # OpenBao is the one store endpoint the operator may send the token to.
                    f"--allowed-store-endpoint={bao.addr}",
                ],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                return run_demo(cp, bao)
            finally:
                operator.terminate()
                try:
                    operator.wait(15)
                except subprocess.TimeoutExpired:
                    operator.kill()
                print(f"\noperator log: {log_path} (last lines below)")
                print("".join(log_path.read_text().splitlines(keepends=True)[-8:]))


def backend_ready(cp: ControlPlane) -> bool:
    items = json.loads(cp.kubectl("-n", NAMESPACE, "get", "secretbackends", "-o", "json").stdout)["items"]
    return bool(items) and all(
        any(c.get("type") == "Ready" for c in (item.get("status") or {}).get("conditions") or [])
        for item in items
    )


def run_demo(cp: ControlPlane, bao: OpenBao) -> int:
    wait("the Secret", lambda: secret_data(cp, "app-db"))
    step("The operator created the Secret (values masked)")
    show_secret(cp, "app-db")
    print(cp.kubectl("-n", NAMESPACE, "get", "managedsecret", "app-db").stdout)
    # The backend reports its own Ready condition: its credentials were proven with one cheap call.
    wait("the backend's Ready condition", lambda: backend_ready(cp))
    print(cp.kubectl("-n", NAMESPACE, "get", "secretbackends").stdout)
    before = replica_sets(cp, "web")
    print(f"Deployment web has ReplicaSets: {before}")

    step("Rotating the password in OpenBao")
    bao.client().secrets.kv.v2.create_or_update_secret(
        path="app/db", secret={"username": "app", "password": "second-password"}, mount_point="secret"
    )
    cp.kubectl(
        "-n",
        NAMESPACE,
        "annotate",
        "managedsecret",
        "app-db",
        f"managedsecrets.io/force-sync={time.time_ns()}",
        "--overwrite",
    )
    print("annotated the ManagedSecret with managedsecrets.io/force-sync (else it refreshes within 30s)")
    wait("the rotated value", lambda: (secret_data(cp, "app-db") or {}).get("password") == "second-password")
    step("The Secret now holds the new value")
    show_secret(cp, "app-db")
    print(cp.kubectl("-n", NAMESPACE, "get", "managedsecret", "app-db").stdout)
    after = wait("the rollout", lambda: (rs := replica_sets(cp, "web")) != before and rs, timeout=30)
    step("The Deployment rolled once")
    print(f"Deployment web ReplicaSets: {before} -> {after}")
    step("Done; stopping everything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
