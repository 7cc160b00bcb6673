"""End-to-end cases, shared by the kind suite (e2e/test_kind.py: the image, the Helm chart, OpenBao in the
cluster) and the local control plane (tests/test_e2e_local.py: the operator in-process, OpenBao on
127.0.0.1). A case talks to the cluster only through kubectl and writes Vault only through the adapter, so
the same code runs against both.

Each case gets a fresh namespace and applies the repository's examples/ as a user would (the Vault address
and the remote key paths are rewritten: the address to where this cluster reaches OpenBao, the paths to
a prefix of the case's own, so cases never share a remote key).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
EXAMPLE_VAULT = "http://127.0.0.1:8200"
T = TypeVar("T")


class Cluster(Protocol):
    """What a case needs of a cluster with a running operator and a Vault-API server."""

    #: Where the operator reaches the Vault-API server (a SecretBackend's spec.vault.server).
    vault_server: str
    #: Seconds to wait for the operator to converge (kind pulls images and schedules pods: slower).
    timeout: float

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl as the cluster's admin."""
        ...

    def vault_put(self, path: str, data: Mapping[str, str]) -> None:
        """Write a new version of a KV v2 key below the mount ``secret/``."""
        ...


def wait(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# -- helpers ---------------------------------------------------------------------------------------------


def apply_example(cluster: Cluster, namespace: str, name: str, prefix: str) -> None:
    text = (EXAMPLES / name).read_text()
    text = text.replace(EXAMPLE_VAULT, cluster.vault_server).replace("key: app/", f"key: {prefix}/app/")
    cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=text)


def secret_data(cluster: Cluster, namespace: str, name: str) -> dict[str, str] | None:
    result = cluster.kubectl("-n", namespace, "get", "secret", name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("-n", namespace, "get", "managedsecret", name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    status = json.loads(result.stdout).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def wait_ready(
    cluster: Cluster, namespace: str, name: str, status: str = "True", reason: str | None = None
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        condition = ready(cluster, namespace, name)
        if (
            condition
            and condition["status"] == status
            and (reason is None or condition.get("reason") == reason)
        ):
            return condition
        return None

    return wait(check, cluster.timeout, f"{namespace}/{name} Ready={status} reason={reason}")


def replica_sets(cluster: Cluster, namespace: str, deployment: str) -> list[str]:
    items = json.loads(cluster.kubectl("-n", namespace, "get", "replicasets", "-o", "json").stdout)["items"]
    return sorted(
        rs["metadata"]["name"]
        for rs in items
        if any(
            o["kind"] == "Deployment" and o["name"] == deployment
            for o in rs["metadata"].get("ownerReferences", [])
        )
    )


def force_sync(cluster: Cluster, namespace: str, name: str) -> None:
    cluster.kubectl(
        "-n",
        namespace,
        "annotate",
        "managedsecret",
        name,
        f"managedsecrets.io/force-sync={time.time_ns()}",
        "--overwrite",
    )


# -- the cases -------------------------------------------------------------------------------------------


def sync_basic_example(cluster: Cluster, namespace: str) -> None:
    """examples/vault-token-backend.yaml + managedsecret-basic.yaml: the Secret appears with both keys."""
    cluster.vault_put(f"{namespace}/app/db", {"username": "app", "password": "first"})
    apply_example(cluster, namespace, "vault-token-backend.yaml", namespace)
    apply_example(cluster, namespace, "managedsecret-basic.yaml", namespace)
    wait(
        lambda: secret_data(cluster, namespace, "app-db") == {"username": "app", "password": "first"},
        cluster.timeout,
        "the Secret app-db",
    )
    condition = wait_ready(cluster, namespace, "app-db")
    assert condition["reason"] == "Synced"
    secret = json.loads(cluster.kubectl("-n", namespace, "get", "secret", "app-db", "-o", "json").stdout)
    assert secret["metadata"]["labels"]["managedsecrets.io/managed"] == "true"


def rotation_rolls_the_deployment(cluster: Cluster, namespace: str) -> None:
    """A new value in Vault reaches the Secret, and the Deployment that uses it (examples/deployment.yaml)
    rolls: a new ReplicaSet with the restart annotation on its pod template."""
    cluster.vault_put(f"{namespace}/app/db", {"username": "app", "password": "first"})
    apply_example(cluster, namespace, "vault-token-backend.yaml", namespace)
    apply_example(cluster, namespace, "deployment.yaml", namespace)
    apply_example(cluster, namespace, "managedsecret-basic.yaml", namespace)
    wait_ready(cluster, namespace, "app-db")
    before = wait(
        lambda: replica_sets(cluster, namespace, "web"), cluster.timeout, "the first ReplicaSet of web"
    )

    cluster.vault_put(f"{namespace}/app/db", {"username": "app", "password": "second"})
    force_sync(cluster, namespace, "app-db")
    wait(
        lambda: (secret_data(cluster, namespace, "app-db") or {}).get("password") == "second",
        cluster.timeout,
        "the rotated password in the Secret",
    )
    # The example debounces restarts for 10 s.
    after = wait(
        lambda: rs if (rs := replica_sets(cluster, namespace, "web")) != before else None,
        cluster.timeout + 15,
        "a rollout of Deployment web",
    )
    assert len(after) == len(before) + 1, f"one rollout, not several: {before} -> {after}"
    template = json.loads(cluster.kubectl("-n", namespace, "get", "deployment", "web", "-o", "json").stdout)
    annotations = template["spec"]["template"]["metadata"].get("annotations") or {}
    assert any(key.startswith("managedsecrets.io/") for key in annotations), annotations


def template_example(cluster: Cluster, namespace: str) -> None:
    """examples/managedsecret-template.yaml: every field of a key rendered into one DATABASE_URL."""
    cluster.vault_put(
        f"{namespace}/app/db",
        {"host": "db.example", "port": "5432", "database": "app", "username": "app", "password": "p@ss word"},
    )
    apply_example(cluster, namespace, "vault-token-backend.yaml", namespace)
    apply_example(cluster, namespace, "managedsecret-template.yaml", namespace)
    data = wait(
        lambda: secret_data(cluster, namespace, "app-db-url"), cluster.timeout, "the Secret app-db-url"
    )
    assert data == {"DATABASE_URL": "postgresql://app:p%40ss%20word@db.example:5432/app?sslmode=require"}


def missing_key_is_reported(cluster: Cluster, namespace: str) -> None:
    """A remote key that does not exist: Ready=False with the stable reason, and no Secret."""
    apply_example(cluster, namespace, "vault-token-backend.yaml", namespace)
    apply_example(cluster, namespace, "managedsecret-basic.yaml", namespace)  # nothing written at that key
    condition = wait_ready(cluster, namespace, "app-db", status="False", reason="RemoteKeyNotFound")
    assert "app/db" in condition["message"]
    assert secret_data(cluster, namespace, "app-db") is None


def deletion_removes_the_secret(cluster: Cluster, namespace: str) -> None:
    """Deleting the ManagedSecret deletes its Secret (deletionPolicy Delete, the default)."""
    sync_basic_example(cluster, namespace)
    cluster.kubectl("-n", namespace, "delete", "managedsecret", "app-db", "--wait=true")
    wait(
        lambda: secret_data(cluster, namespace, "app-db") is None, cluster.timeout, "the Secret to be deleted"
    )


CASES: list[Callable[[Cluster, str], None]] = [
    sync_basic_example,
    rotation_rolls_the_deployment,
    template_example,
    missing_key_is_reported,
    deletion_removes_the_secret,
]
