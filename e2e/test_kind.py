"""The e2e cases (e2e/cases.py) on a kind cluster: the real image, installed with the Helm chart.

What it does, once per session: create a kind cluster (or reuse the one named by E2E_KIND_CLUSTER), build
the image from the Dockerfile and load it into kind, run an OpenBao dev server in the cluster, `helm
install` the chart with that image, then run every case in a fresh namespace; at the end uninstall the
chart and delete the cluster (unless it was reused, or E2E_KEEP_CLUSTER=1).

Needs docker (with a running engine), kind and kubectl; helm is taken from PATH or built by
hack/build-helm.sh. Without them every case is skipped with a message that says what is missing. The same
cases run on the local control plane in `make test` (tests/test_e2e_local.py).

    pytest e2e -q            # about 3-5 minutes on a laptop, most of it the image build and pulls
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from e2e import cases

REPO = Path(__file__).resolve().parents[1]
CLUSTER_NAME = os.environ.get("E2E_KIND_CLUSTER", "")
IMAGE_REPOSITORY, IMAGE_TAG = "managed-secrets", "e2e"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
OPENBAO_IMAGE = os.environ.get("E2E_OPENBAO_IMAGE", "docker.io/openbao/openbao:2.4.1")
RELEASE = "managed-secrets"
OPERATOR_NAMESPACE = "managed-secrets-system"
VAULT_NAMESPACE = "openbao"

OPENBAO_MANIFEST = f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: openbao
  namespace: {VAULT_NAMESPACE}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: openbao}}
  template:
    metadata:
      labels: {{app: openbao}}
    spec:
      containers:
        - name: openbao
          image: {OPENBAO_IMAGE}
          args: ["server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=0.0.0.0:8200"]
          ports:
            - containerPort: 8200
          readinessProbe:
            httpGet: {{path: /v1/sys/health, port: 8200}}
---
apiVersion: v1
kind: Service
metadata:
  name: openbao
  namespace: {VAULT_NAMESPACE}
spec:
  selector: {{app: openbao}}
  ports:
    - port: 8200
      targetPort: 8200
"""


def missing_tools() -> str | None:
    """Why the kind suite cannot run here (everything that is missing), or None."""
    missing = [f"{tool} not found on PATH" for tool in ("docker", "kind") if shutil.which(tool) is None]
    if shutil.which("kubectl") is None and not (Path(sys.executable).parent / "kubectl").exists():
        missing.append("kubectl not found on PATH")
    if shutil.which("docker") is not None:
        try:
            subprocess.run(["docker", "info"], capture_output=True, check=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            missing.append("the Docker engine is not running (docker info failed)")
    return "; ".join(missing) or None


def run(
    *argv: str,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def find_helm() -> str:
    found = shutil.which("helm")
    if found:
        return found
    sys.path.insert(0, str(REPO / "tests"))
    from harness.helm import build_helm  # noqa: PLC0415

    return str(build_helm())


class KindCluster:
    """The Cluster adapter of e2e/cases.py for a kind cluster with the chart installed."""

    timeout = 120.0
    vault_server = f"http://openbao.{VAULT_NAMESPACE}.svc:8200"

    def __init__(self, name: str, kubeconfig: Path) -> None:
        self.name = name
        self.kubeconfig = kubeconfig
        self.kubectl_path = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args, stdin=stdin, check=check, timeout=300
        )

    def vault_put(self, path: str, data: Mapping[str, str]) -> None:
        pairs = [f"{key}={value}" for key, value in data.items()]
        self.kubectl(
            "-n", VAULT_NAMESPACE, "exec", "deploy/openbao", "--",
            "env", "BAO_ADDR=http://127.0.0.1:8200", "BAO_TOKEN=root", "bao", "kv", "put", f"secret/{path}", *pairs,
        )  # fmt: skip


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    reason = missing_tools()
    if reason is not None:
        pytest.skip(
            f"kind e2e skipped: {reason} (the same cases run on the local control plane in tests/test_e2e_local.py)"
        )
    reuse = bool(CLUSTER_NAME)
    name = CLUSTER_NAME or f"managed-secrets-e2e-{secrets.token_hex(3)}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    if not reuse:
        run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "180s")
    else:
        kubeconfig.write_text(run("kind", "get", "kubeconfig", "--name", name).stdout)
    cluster = KindCluster(name, kubeconfig)
    helm = find_helm()
    try:
        run("docker", "build", "--tag", IMAGE, str(REPO))
        run("kind", "load", "docker-image", IMAGE, "--name", name)
        cluster.kubectl("create", "namespace", VAULT_NAMESPACE, check=False)
        cluster.kubectl("apply", "-f", "-", stdin=OPENBAO_MANIFEST)
        cluster.kubectl("-n", VAULT_NAMESPACE, "rollout", "status", "deployment/openbao", "--timeout=300s")
        run(
            helm, "upgrade", "--install", RELEASE, str(REPO / "charts" / "managed-secrets"),
            "--kubeconfig", str(kubeconfig), "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
            "--set", f"image.repository={IMAGE_REPOSITORY}", "--set", f"image.tag={IMAGE_TAG}",
            "--set", "image.pullPolicy=Never", "--set", "logLevel=DEBUG",
            "--set", f"security.allowedStoreEndpoints[0]={cluster.vault_server}",
            "--wait", "--timeout", "300s",
        )  # fmt: skip
        yield cluster
    finally:
        logs = cluster.kubectl(
            "-n", OPERATOR_NAMESPACE, "logs", f"deployment/{RELEASE}", "--tail=200", check=False
        )
        (kubeconfig.parent / "operator.log").write_text(logs.stdout + logs.stderr)
        run(
            helm,
            "uninstall",
            RELEASE,
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            OPERATOR_NAMESPACE,
            check=False,
        )
        if not reuse and os.environ.get("E2E_KEEP_CLUSTER", "") in ("", "0"):
            run("kind", "delete", "cluster", "--name", name, check=False)


@pytest.fixture
def kind_namespace(kind_cluster: KindCluster) -> Iterator[str]:
    name = f"e2e-{secrets.token_hex(4)}"
    kind_cluster.kubectl("create", "namespace", name)
    yield name
    kind_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.kind
@pytest.mark.parametrize("case", cases.CASES, ids=[c.__name__ for c in cases.CASES])
def test_kind_case(
    case: Callable[[cases.Cluster, str], None], kind_cluster: KindCluster, kind_namespace: str
) -> None:
    case(kind_cluster, kind_namespace)


@pytest.mark.kind
def test_operator_survives_a_restart(kind_cluster: KindCluster, kind_namespace: str) -> None:
    """The chart's Deployment (Recreate, probes on /healthz) brings the operator back, and a Secret synced
    before the restart stays as it was."""
    cases.sync_basic_example(kind_cluster, kind_namespace)
    before = cases.secret_data(kind_cluster, kind_namespace, "app-db")
    kind_cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "restart", f"deployment/{RELEASE}")
    kind_cluster.kubectl(
        "-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{RELEASE}", "--timeout=180s"
    )
    time.sleep(5)
    assert cases.secret_data(kind_cluster, kind_namespace, "app-db") == before
    cases.wait_ready(kind_cluster, kind_namespace, "app-db")
