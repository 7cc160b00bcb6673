"""The Helm chart: `helm lint`, `helm template` with defaults and overrides, values.schema.json, CRD drift,
and the rendered chart on a real control plane, where the operator runs with the chart's ServiceAccount
identity (not admin) and completes a full sync: the chart's RBAC is enough, and no more than it needs.

The identity tests run on a control plane of their own (about 5 s to start), with the CRDs from the
chart's crds/ folder: the session operator (clusterwide, on the session control plane) never sees their
objects, so the two operators cannot fight over them.
"""

from __future__ import annotations

import base64
import contextlib
import filecmp
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.controlplane import REPO_ROOT, ControlPlane, KubectlError, free_ports, wait_until
from harness.helm import CHART_DIR, Helm, build_helm
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from managed_secrets import __version__
from managed_secrets.api import ALLOWED_BACKENDS_ANNOTATION as ALLOWED_BACKENDS
from managed_secrets.cli import _parser
from managed_secrets.config import OperatorConfig

RBAC_RULES = yaml.safe_load((CHART_DIR / "files" / "rbac-rules.yaml").read_text())
CLUSTER_SCOPED = {"namespaces", "clustersecretbackends", "customresourcedefinitions", "tokenreviews"}
RESTRICTED = "restricted"


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(build_helm())


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def flatten(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a list of PolicyRules grants."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


# -- lint and render ---------------------------------------------------------------------------------------


def test_helm_lint(helm: Helm) -> None:
    for args in (
        [],
        ["--set", "watchNamespaces={team-a,team-b}", "--set", "metrics.serviceMonitor.enabled=true"],
    ):
        result = helm.run("lint", "--strict", str(CHART_DIR), *args)
        assert "0 chart(s) failed" in result.stdout, result.stdout


def test_defaults(helm: Helm) -> None:
    docs = helm.render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "a standalone operator must never overlap itself"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"] == "managed-secrets"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    assert c["image"] == f"managed-secrets:{__version__}"  # the chart's appVersion
    security = c["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], "a writable /tmp on a read-only root"  # noqa: S108
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, kind
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["args"] == [
        "--log-level=INFO",
        "--log-format=json",
        "--workers=32",
        "--health-port=8080",
        "--metrics-port=9090",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_cluster_role_is_the_rbac_rules_file(helm: Helm) -> None:
    docs = helm.render(namespace="ops")
    assert one(docs, "ClusterRole")["rules"] == RBAC_RULES
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "managed-secrets", "namespace": "ops"}]


def test_namespaced_mode_uses_roles(helm: Helm) -> None:
    docs = helm.render({"watchNamespaces": ["team-a", "team-b"]}, namespace="ops")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ops", "team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == [
        "ops",
        "team-a",
        "team-b",
    ]
    cluster_rules = one(docs, "ClusterRole")["rules"]
    # The ClusterRole keeps only what a Role cannot grant: reads of cluster-scoped resources, TokenReviews
    # (a question to the API server, which writes nothing) and the ClusterSecretBackends' Ready condition.
    writes = {"tokenreviews", "clustersecretbackends/status"}
    assert {resource for _, resource, _ in flatten(cluster_rules)} <= CLUSTER_SCOPED | writes
    assert {verb for _, resource, verb in flatten(cluster_rules) if resource not in writes} <= {
        "get",
        "list",
        "watch",
    }
    assert {(g, r, v) for g, r, v in flatten(cluster_rules) if r == "clustersecretbackends/status"} == {
        ("managedsecrets.io", "clustersecretbackends/status", "patch")
    }
    assert {(g, r, v) for g, r, v in flatten(cluster_rules) if r == "tokenreviews"} == {
        ("authentication.k8s.io", "tokenreviews", "create")
    }
    for role in roles:
        assert not {resource.split("/")[0] for _, resource, _ in flatten(role["rules"])} & CLUSTER_SCOPED
        # Together they grant exactly the rules file, no more and no less.
        assert flatten(role["rules"]) | flatten(cluster_rules) == flatten(RBAC_RULES)
    args = container(docs)["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args


def test_overrides(helm: Helm) -> None:
    digest = "sha256:" + "a" * 64
    docs = helm.render(
        {
            "image": {"repository": "registry.example/ms", "digest": digest},
            "replicaCount": 0,
            "logLevel": "DEBUG",
            "logFormat": "text",
            "metrics": {"enabled": False},
            "resources": {
                "requests": {"cpu": "10m", "memory": "64Mi"},
                "limits": {"cpu": None, "memory": "256Mi"},
            },  # null removes a default
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
            "extraArgs": ["--workers=4"],
        }
    )
    assert not by_kind(docs, "Service")
    assert not by_kind(docs, "ServiceMonitor")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 0
    c = container(docs)
    assert c["image"] == f"registry.example/ms@{digest}"
    assert "--log-level=DEBUG" in c["args"]
    assert "--log-format=text" in c["args"]
    assert "--workers=4" in c["args"]
    assert not any(a.startswith("--metrics-port") for a in c["args"])
    assert [p["name"] for p in c["ports"]] == ["health"]
    assert c["resources"]["limits"] == {"memory": "256Mi"}
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}


def test_security_values_become_flags(helm: Helm) -> None:
    assert not any(
        a.startswith(("--allowed-store", "--api-audience", "--allow-operator"))
        for a in container(helm.render())["args"]
    )
    docs = helm.render(
        {
            "security": {
                "allowedStoreEndpoints": ["https://vault.example.com:8200", "https://*.vault.example.com"],
                "apiAudiences": ["https://kubernetes.example"],
                "allowOperatorIdentityForSecretBackends": True,
            }
        }
    )
    args = container(docs)["args"]
    assert "--allowed-store-endpoint=https://vault.example.com:8200" in args
    assert "--allowed-store-endpoint=https://*.vault.example.com" in args
    assert "--api-audience=https://kubernetes.example" in args
    assert "--allow-operator-identity-for-secretbackends" in args


def test_template_limits_fairness_and_stall_values_become_flags(helm: Helm) -> None:
    docs = helm.render(
        {
            "workersPerNamespace": 8,
            "stallTimeoutSeconds": 300,
            "templates": {"timeoutSeconds": 0.5, "maxOutputBytes": 4194304, "memoryMiB": 256, "processes": 4},
        }
    )
    args = container(docs)["args"]
    for flag in (
        "--workers-per-namespace=8",
        "--stall-timeout=300",
        "--template-timeout=0.5",
        "--template-max-output=4194304",
        "--template-memory-mib=256",
        "--template-processes=4",
    ):
        assert flag in args
    # Every flag the chart passes is one `managed-secrets run` accepts.
    _parser().parse_args(["run", *args])
    assert "timeout" in helm.render_error({"templates": {"timeout": 2}})  # the schema refuses unknown keys


def test_backend_validation_interval_becomes_a_flag(helm: Helm) -> None:
    assert not [a for a in container(helm.render())["args"] if a.startswith("--backend-validation")]
    for value, flag in ((600, "--backend-validation-interval=600"), (0, "--backend-validation-interval=0")):
        args = container(helm.render({"backendValidationIntervalSeconds": value}))["args"]
        assert flag in args
        assert _parser().parse_args(["run", *args]).backend_validation_interval == value
    assert "backendValidationIntervalSeconds" in helm.render_error({"backendValidationIntervalSeconds": -1})


def test_service_monitor_toggle(helm: Helm) -> None:
    assert not by_kind(helm.render(), "ServiceMonitor")
    docs = helm.render(
        {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}}}
    )
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics"
    assert endpoint["interval"] == "15s"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= one(docs, "Service")["metadata"]["labels"].items()
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "/replicaCount"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"logLevel": "verbose"}, "/logLevel"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"watchNamespace": ["team-a"]}, "watchNamespace"),  # a typo is an error, not ignored
        ({"health": {"port": 0}}, "/health/port"),
        ({"metrics": {"port": "9090"}}, "/metrics/port"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "/metrics/serviceMonitor/interval"),
        ({"security": {"allowedStoreEndpoints": ["vault.example.com"]}}, "/security/allowedStoreEndpoints/0"),
        (
            {"security": {"allowedStoreEndpoints": ["https://user@vault.example.com/"]}},
            "/security/allowedStoreEndpoints/0",
        ),
        ({"security": {"allowOperatorIdentityForSecretBackends": "yes"}}, "/security/allowOperatorIdentity"),
        ({"security": {"allowedEndpoints": []}}, "allowedEndpoints"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_values_schema_rejects_bad_values(helm: Helm, values: dict[str, Any], message: str) -> None:
    error = helm.render_error(values)
    assert "values don't meet the specifications of the schema" in error or "schema" in error, error
    assert message in error, error


# -- CRDs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("copy_dir", ["charts/managed-secrets/crds", "operator/managed_secrets/crds"])
def test_crd_copies_match_crds_dir(copy_dir: str) -> None:
    source = REPO_ROOT / "crds"
    copy = REPO_ROOT / copy_dir
    names = sorted(p.name for p in source.glob("*.yaml"))
    assert sorted(p.name for p in copy.glob("*.yaml")) == names, f"{copy_dir} drifted: run make crds"
    match, mismatch, errors = filecmp.cmpfiles(source, copy, names, shallow=False)
    assert mismatch + errors == [], f"{copy_dir} differs in {mismatch + errors}: run make crds"
    assert match == names


def test_crds_survive_uninstall() -> None:
    """Helm never deletes CRDs from a chart's crds/ folder; the annotation also keeps them if someone moves
    them to templates/. Deleting a CRD deletes every ManagedSecret, and through owner references their
    Secrets."""
    for path in sorted((CHART_DIR / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", path.name


# -- the chart on a real control plane ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart_controlplane() -> Iterator[ControlPlane]:
    """A control plane of this module's own, with the CRDs as the chart installs them."""
    with ControlPlane(crd_dir=CHART_DIR / "crds") as cp:
        yield cp


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def forbidden(self) -> list[str]:
        lines = []
        for record in self.records:
            text = f"{record.msg} {record.args or ''}"  # unformatted: never fails
            if "forbidden" in text.lower() or " 403" in text:
                lines.append(f"{record.name}: {text[:300]}")
        return lines


@contextlib.contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Every log record while the operator runs, at every level, to look for refused requests."""
    handler = LogCapture()
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def _namespace(cp: ControlPlane, name: str, labels: dict[str, str] | None = None) -> None:
    cp.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})


def _secret_data(cp: ControlPlane, namespace: str, name: str) -> dict[str, str] | None:
    result = cp.kubectl("-n", namespace, "get", "secret", name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _ready(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    status = cp.get_json("-n", namespace, "managedsecret", name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def _install(
    cp: ControlPlane, helm: Helm, release: str, namespace: str, values: dict[str, Any]
) -> list[dict[str, Any]]:
    """`helm template` + apply as admin into a namespace that enforces the restricted Pod Security Standard
    (what `helm install` would create; helm itself is not given the cluster)."""
    _namespace(cp, namespace, {"pod-security.kubernetes.io/enforce": RESTRICTED})
    docs = helm.render(values, release=release, namespace=namespace)
    cp.apply(docs)
    return docs


def _chart_identity(cp: ControlPlane, docs: list[dict[str, Any]], namespace: str, path: Path) -> Path:
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    token = cp.create_token(sa, namespace)
    return cp.write_kubeconfig(path, f"system:serviceaccount:{namespace}:{sa}", token)


def _assert_pod_admitted(cp: ControlPlane, namespace: str) -> None:
    """The ReplicaSet controller created the operator's pod: Pod Security admission (restricted) let it in.
    No kubelet runs here, so the pod stays Pending."""

    def pods() -> list[Any] | None:
        items = cp.get_json("-n", namespace, "pods")["items"]
        return items or None

    try:
        wait_until(pods, timeout=30, what=f"the operator's pod in {namespace}")
    except Exception as error:
        events = cp.kubectl(
            "-n", namespace, "get", "events", "-o", "custom-columns=REASON:.reason,MSG:.message"
        ).stdout
        raise AssertionError(f"no pod was admitted: {error}\n{events}") from error


def _sync_with_chart_identity(
    cp: ControlPlane, openbao: OpenBao, kubeconfig: Path, *, app_ns: str, namespaces: tuple[str, ...]
) -> None:
    """A SecretBackend and a ManagedSecret in app_ns; the operator, as the chart's ServiceAccount, creates
    the Secret, writes status, and updates the Secret after a rotation."""
    path = f"chart-{uuid.uuid4().hex[:8]}/db"
    kv = openbao.client().secrets.kv.v2
    kv.create_or_update_secret(path=path, secret={"username": "app", "password": "one"}, mount_point="secret")
    token = base64.b64encode(openbao.root_token.encode()).decode()
    cp.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "vault-token",
                    "namespace": app_ns,
                    "annotations": {ALLOWED_BACKENDS: "SecretBackend/vault"},
                },
                "data": {"token": token},
            },
            {
                "apiVersion": "managedsecrets.io/v1alpha1",
                "kind": "SecretBackend",
                "metadata": {"name": "vault", "namespace": app_ns},
                "spec": {
                    "vault": {
                        "server": openbao.addr,
                        "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
                    }
                },
            },
            {
                "apiVersion": "managedsecrets.io/v1alpha1",
                "kind": "ManagedSecret",
                "metadata": {"name": "app-db", "namespace": app_ns},
                "spec": {
                    "backendRef": {"name": "vault"},
                    "refreshInterval": "1h",
                    "data": [
                        {"secretKey": "username", "remoteRef": {"key": path, "property": "username"}},
                        {"secretKey": "password", "remoteRef": {"key": path, "property": "password"}},
                    ],
                },
            },
        ]
    )
    config = OperatorConfig(
        kubeconfig=str(kubeconfig),
        namespaces=namespaces,
        workers=4,
        backoff_base=0.3,
        backoff_max=2.0,
        log_level="DEBUG",
        allowed_store_endpoints=(openbao.addr,),
    )
    runner = OperatorRunner(config).start()
    try:
        wait_until(
            lambda: _secret_data(cp, app_ns, "app-db") == {"username": "app", "password": "one"},
            timeout=30,
            what="the Secret written with the chart's identity",
        )
        wait_until(
            lambda: (c := _ready(cp, app_ns, "app-db")) is not None and c["status"] == "True",
            timeout=30,
            what="Ready=True written with the chart's identity",
        )
        kv.create_or_update_secret(
            path=path, secret={"username": "app", "password": "two"}, mount_point="secret"
        )
        cp.kubectl(
            "-n",
            app_ns,
            "annotate",
            "managedsecret",
            "app-db",
            f"managedsecrets.io/force-sync={time.time_ns()}",
            "--overwrite",
        )
        wait_until(
            lambda: (_secret_data(cp, app_ns, "app-db") or {}).get("password") == "two",
            timeout=30,
            what="the rotated value written with the chart's identity",
        )
    finally:
        runner.stop()


def _assert_forbidden(cp: ControlPlane, kubeconfig: Path, *args: str) -> None:
    with pytest.raises(KubectlError) as refused:
        cp.kubectl(*args, kubeconfig=kubeconfig)
    assert "forbidden" in refused.value.stderr.lower(), refused.value.stderr


@pytest.mark.cluster
@pytest.mark.vault
def test_chart_identity_clusterwide(
    chart_controlplane: ControlPlane,
    helm: Helm,
    openbao: OpenBao,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp = chart_controlplane
    release_ns, app_ns = "ms-clusterwide", "apps-clusterwide"
    monkeypatch.setenv("POD_NAMESPACE", release_ns)  # as the Deployment sets it from the Downward API
    docs = _install(cp, helm, "ms", release_ns, {})
    _assert_pod_admitted(cp, release_ns)
    _namespace(cp, app_ns)
    kubeconfig = _chart_identity(cp, docs, release_ns, tmp_path / "chart.kubeconfig")
    with capture_logs() as logs:
        _sync_with_chart_identity(cp, openbao, kubeconfig, app_ns=app_ns, namespaces=())
    assert logs.records, "no log records captured"
    assert not logs.forbidden(), "the chart's RBAC is not enough:\n" + "\n".join(logs.forbidden())
    # ... and no more than it needs: what the rules file does not grant is refused.
    _assert_forbidden(cp, kubeconfig, "-n", app_ns, "create", "configmap", "x", "--from-literal=a=b")
    _assert_forbidden(cp, kubeconfig, "-n", app_ns, "delete", "managedsecret", "app-db")
    _assert_forbidden(cp, kubeconfig, "-n", app_ns, "create", "deployment", "x", "--image=busybox")
    _assert_forbidden(cp, kubeconfig, "get", "clusterroles")
    _assert_forbidden(
        cp, kubeconfig, "-n", app_ns, "create", "rolebinding", "x", "--clusterrole=admin", "--user=x"
    )


@pytest.mark.cluster
@pytest.mark.vault
def test_chart_identity_namespaced(
    chart_controlplane: ControlPlane,
    helm: Helm,
    openbao: OpenBao,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp = chart_controlplane
    release_ns, app_ns, other_ns = "ms-namespaced", "apps-namespaced", "not-watched"
    monkeypatch.setenv("POD_NAMESPACE", release_ns)  # as the Deployment sets it from the Downward API
    for ns in (app_ns, other_ns):
        _namespace(cp, ns)
    docs = _install(cp, helm, "msn", release_ns, {"watchNamespaces": [app_ns]})
    assert by_kind(docs, "Role"), "namespaced mode renders Roles"
    _assert_pod_admitted(cp, release_ns)
    kubeconfig = _chart_identity(cp, docs, release_ns, tmp_path / "chart.kubeconfig")
    with capture_logs() as logs:
        _sync_with_chart_identity(cp, openbao, kubeconfig, app_ns=app_ns, namespaces=(app_ns,))
    assert logs.records, "no log records captured"
    assert not logs.forbidden(), "the chart's RBAC is not enough:\n" + "\n".join(logs.forbidden())
    # Outside the watched namespaces the identity has nothing.
    _assert_forbidden(cp, kubeconfig, "-n", other_ns, "get", "secret", "anything")
    _assert_forbidden(cp, kubeconfig, "-n", other_ns, "get", "managedsecrets")
    _assert_forbidden(cp, kubeconfig, "-n", other_ns, "create", "serviceaccount", "x")
    _assert_forbidden(cp, kubeconfig, "get", "managedsecrets", "--all-namespaces")


@pytest.mark.cluster
def test_chart_args_start_the_operator_with_probes_and_metrics(
    chart_controlplane: ControlPlane, helm: Helm, tmp_path: Path
) -> None:
    """The container's args from the chart start `managed-secrets run` (the image's entrypoint), and the
    probes' /healthz and the metrics Service's port answer. Bound to 127.0.0.1 here, not the pod's 0.0.0.0."""
    cp = chart_controlplane
    release_ns = "ms-probes"
    docs = _install(cp, helm, "msp", release_ns, {})
    kubeconfig = _chart_identity(cp, docs, release_ns, tmp_path / "chart.kubeconfig")
    health, metrics = free_ports(2)
    args = [
        a.replace("--health-port=8080", f"--health-port={health}").replace(
            "--metrics-port=9090", f"--metrics-port={metrics}"
        )
        for a in container(docs)["args"]
    ]
    env = {**os.environ, "POD_NAMESPACE": release_ns, "KUBECONFIG": str(kubeconfig)}
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "managed_secrets",
                "run",
                *args,
                "--health-address=127.0.0.1",
                "--metrics-address=127.0.0.1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: _http_get(f"http://127.0.0.1:{health}/healthz") is not None,
                timeout=30,
                what="/healthz",
                alive=lambda: None if process.poll() is None else f"exited with {process.returncode}",
            )
            body = _http_get(f"http://127.0.0.1:{metrics}/metrics") or ""
            assert "managedsecrets_syncs_total" in body
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    lines = log_path.read_text().splitlines()
    assert lines, "no log output"
    assert json.loads(lines[0]), "the chart asks for JSON logs"  # logFormat: json


def _http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a local URL built above
            return str(response.read().decode()) if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None
