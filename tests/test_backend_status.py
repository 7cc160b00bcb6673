"""SecretBackends and ClusterSecretBackends report their own Ready condition, on the real control plane
with OpenBao and moto: validated when created or changed, and periodically; written only on change;
columns in ``kubectl get``; no credential in status, events or logs; no hint about another namespace.

The operator here is this module's own (a short validation interval), watching only this module's
namespaces, so it never competes with the session operator for other tests' objects.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from conftest import TEST_STORE_ENDPOINTS, DebugLogCapture
from harness.controlplane import ControlPlane
from harness.moto_server import MotoServer
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, allowed_for, wait_for
from leaks import assert_absent
from managed_secrets.api import GROUP, READY_CONDITION, VERSION
from managed_secrets.config import OperatorConfig
from managed_secrets.models.backend import BackendId
from managed_secrets.models.managedsecret import BackendKind

#: Seconds between validations of an unchanged backend in this module's operator.
INTERVAL = 1.5
BOUND = 30.0
#: The module's operator, by name in its Events: the session's operator watches the whole cluster and
#: validates these backends too, and its Events are not what these tests count.
INSTANCE = f"backend-status-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def namespaces(admin_api: k8s.ApiClient) -> Iterator[dict[str, str]]:
    suffix = secrets.token_hex(3)
    names = {role: f"bs-{role}-{suffix}" for role in ("tenant", "victim", "aws")}
    core = k8s.CoreV1Api(admin_api)
    for name in names.values():
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield names
    for name in names.values():
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def status_operator(
    controlplane: ControlPlane, namespaces: dict[str, str], debug_log: DebugLogCapture
) -> Iterator[OperatorRunner]:
    runner = OperatorRunner(
        OperatorConfig(
            kubeconfig=str(controlplane.operator_kubeconfig),
            namespaces=tuple(namespaces.values()),
            workers=4,
            backoff_base=0.3,
            backoff_max=2.0,
            backend_validation_interval=INTERVAL,
            instance=INSTANCE,
            provider_options={"timeout_seconds": 3, "max_attempts": 1},
            log_level="DEBUG",
            allowed_store_endpoints=TEST_STORE_ENDPOINTS,
        )
    ).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def tenant(namespaces: dict[str, str]) -> str:
    return namespaces["tenant"]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def backend(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "secretbackends", name)  # type: ignore[no-any-return]


def cluster_backend(kube: Kube, name: str) -> dict[str, Any]:
    return kube.custom.get_cluster_custom_object(GROUP, VERSION, "clustersecretbackends", name)  # type: ignore[no-any-return]


def ready_of(body: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == READY_CONDITION), None)


def wait_backend(
    kube: Kube,
    namespace: str | None,
    name: str,
    status: str,
    reason: str | None = None,
    generation: int | None = None,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = backend(kube, namespace, name) if namespace else cluster_backend(kube, name)
        ready = ready_of(body)
        if ready is None or ready["status"] != status or (reason is not None and ready["reason"] != reason):
            return None
        if generation is not None and body["status"].get("observedGeneration") != generation:
            return None
        return body

    return wait_for(check, BOUND, what=f"backend {namespace}/{name} Ready={status} {reason or ''}")


def token_backend_spec(server: str, secret: str, secret_namespace: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": "token"}
    if secret_namespace:
        ref["namespace"] = secret_namespace
    return {"vault": {"server": server, "path": "secret", "auth": {"token": {"secretRef": ref}}}}


def make_vault_backend(kube: Kube, namespace: str, name: str, server: str, token: str) -> None:
    kube.create_secret(namespace, f"{name}-token", {"token": token}, annotations=allowed_for(name))
    kube.create_backend(namespace, name, token_backend_spec(server, f"{name}-token"))


def patch_backend(kube: Kube, namespace: str, name: str, spec: dict[str, Any]) -> None:
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "secretbackends", name, {"spec": spec}
    )


def set_token(kube: Kube, namespace: str, secret: str, token: str) -> None:
    kube.core.patch_namespaced_secret(
        secret, namespace, {"data": {"token": base64.b64encode(token.encode()).decode()}}
    )


def child_token(openbao: OpenBao) -> str:
    created = openbao.client().auth.token.create(policies=["default"], ttl="1h")
    return str(created["auth"]["client_token"])


def validations(runner: OperatorRunner, key: BackendId) -> int:
    return runner.runtime.backend_status.validations_of.get(key, 0)


def key_of(namespace: str, name: str) -> BackendId:
    return BackendId(kind=BackendKind.SECRET_BACKEND, name=name, namespace=namespace)


def events_for(kube: Kube, namespace: str, name: str) -> list[k8s.CoreV1Event]:
    return [
        e
        for e in kube.events(namespace)
        if e.involved_object.name == name and e.reporting_instance == INSTANCE
    ]


# -- Vault ---------------------------------------------------------------------------------------------


def test_valid_backend_becomes_ready_and_periodic_checks_write_nothing(
    status_operator: OperatorRunner, openbao: OpenBao, kube: Kube, tenant: str
) -> None:
    name = unique("vault")
    make_vault_backend(kube, tenant, name, openbao.addr, child_token(openbao))
    body = wait_backend(kube, tenant, name, "True", "Valid", generation=1)
    status = body["status"]
    assert status["lastValidatedTime"]
    assert ready_of(body)["observedGeneration"] == 1  # type: ignore[index]
    events = wait_for(lambda: events_for(kube, tenant, name), BOUND, what="a Valid event")
    assert [(e.type, e.reason) for e in events] == [("Normal", "Valid")]

    version = body["metadata"]["resourceVersion"]
    seen = validations(status_operator, key_of(tenant, name))
    wait_for(
        lambda: validations(status_operator, key_of(tenant, name)) >= seen + 3,
        BOUND,
        what="three periodic validations",
    )
    assert backend(kube, tenant, name)["metadata"]["resourceVersion"] == version
    assert len(events_for(kube, tenant, name)) == 1


def test_wrong_token_is_auth_failed_and_fixing_it_flips_back(
    status_operator: OperatorRunner, openbao: OpenBao, kube: Kube, tenant: str
) -> None:
    name = unique("wrong")
    make_vault_backend(kube, tenant, name, openbao.addr, f"canary-{secrets.token_hex(8)}")
    body = wait_backend(kube, tenant, name, "False", "AuthFailed")
    assert "permission denied" in ready_of(body)["message"]  # type: ignore[index]
    assert "lastValidatedTime" not in body["status"]
    # The Secret fixed: the next periodic validation (a retry with backoff) sees it.
    set_token(kube, tenant, f"{name}-token", child_token(openbao))
    wait_backend(kube, tenant, name, "True", "Valid")
    # One Event per transition (the API lists them in name order, not in time order).
    wanted = [("Normal", "Valid"), ("Warning", "AuthFailed")]
    wait_for(
        lambda: sorted((e.type, e.reason) for e in events_for(kube, tenant, name)) == wanted,
        BOUND,
        what="one event per transition",
    )


def test_unreachable_store_and_a_spec_change_revalidated_at_once(
    status_operator: OperatorRunner, openbao: OpenBao, kube: Kube, tenant: str
) -> None:
    name = unique("unreach")
    token = child_token(openbao)
    kube.create_secret(tenant, f"{name}-token", {"token": token}, annotations=allowed_for(name))
    # Nothing listens on port 1 of 127.0.0.1 (an allowed endpoint): connection refused.
    kube.create_backend(tenant, name, token_backend_spec("http://127.0.0.1:1", f"{name}-token"))
    body = wait_backend(kube, tenant, name, "False", "BackendUnavailable", generation=1)
    assert body["status"]["observedGeneration"] == 1
    # A spec change is validated on its watch event, not at the next periodic check.
    patch_backend(kube, tenant, name, token_backend_spec(openbao.addr, f"{name}-token"))
    started = time.monotonic()
    body = wait_backend(kube, tenant, name, "True", "Valid", generation=2)
    assert time.monotonic() - started < BOUND
    assert ready_of(body)["observedGeneration"] == 2  # type: ignore[index]
    # An endpoint outside the allowlist is refused before any credential is read.
    patch_backend(kube, tenant, name, token_backend_spec("http://10.255.255.1:8200", f"{name}-token"))
    wait_backend(kube, tenant, name, "False", "EndpointNotAllowed", generation=3)


def test_revoked_credentials_are_noticed_by_the_periodic_check(
    status_operator: OperatorRunner, openbao: OpenBao, kube: Kube, tenant: str
) -> None:
    name = unique("revoked")
    token = child_token(openbao)
    make_vault_backend(kube, tenant, name, openbao.addr, token)
    wait_backend(kube, tenant, name, "True", "Valid")
    openbao.client().auth.token.revoke(token)
    body = wait_backend(kube, tenant, name, "False", "AuthFailed")
    assert body["metadata"]["generation"] == 1  # nothing changed in the spec


def test_kubectl_shows_ready_and_reason_columns(
    status_operator: OperatorRunner, controlplane: ControlPlane, openbao: OpenBao, kube: Kube, tenant: str
) -> None:
    good, bad = unique("cols-good"), unique("cols-bad")
    make_vault_backend(kube, tenant, good, openbao.addr, child_token(openbao))
    make_vault_backend(kube, tenant, bad, openbao.addr, "not-a-token")
    wait_backend(kube, tenant, good, "True", "Valid")
    wait_backend(kube, tenant, bad, "False", "AuthFailed")
    kubectl = Path(sys.executable).parent / "kubectl"
    output = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(controlplane.admin_kubeconfig),
            "get",
            "secretbackends",
            "-n",
            tenant,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    lines = output.splitlines()
    assert lines[0].split() == ["NAME", "READY", "REASON", "AGE"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows[good] == ["True", "Valid"]
    assert rows[bad] == ["False", "AuthFailed"]


def test_no_credential_in_status_events_or_log(
    status_operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    tenant: str,
    debug_log: DebugLogCapture,
) -> None:
    canary = f"canary-{secrets.token_hex(12)}"
    good_token = child_token(openbao)
    refused, valid = unique("canary-bad"), unique("canary-good")
    make_vault_backend(kube, tenant, refused, openbao.addr, canary)
    make_vault_backend(kube, tenant, valid, openbao.addr, good_token)
    wait_backend(kube, tenant, refused, "False", "AuthFailed")
    wait_backend(kube, tenant, valid, "True", "Valid")
    texts = [
        str(backend(kube, tenant, refused)["status"]),
        str(backend(kube, tenant, valid)["status"]),
        "\n".join(f"{e.reason} {e.message}" for e in kube.events(tenant)),
        debug_log.text(),
    ]
    for where, text in zip(("status", "status", "events", "operator log"), texts, strict=True):
        assert_absent(canary, text, where)
        assert_absent(good_token, text, where)


def test_secretbackend_pointing_at_another_namespace_learns_nothing(
    status_operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespaces: dict[str, str]
) -> None:
    tenant, victim = namespaces["tenant"], namespaces["victim"]
    canary = child_token(openbao)
    kube.create_secret(victim, "victim-creds", {"token": canary}, annotations=allowed_for("thief"))
    # Another namespace's Secret: refused by the API server, the same for a Secret that exists and one
    # that does not (the operator refuses it too, before reading: tests/unit/test_backend_status_logic.py).
    refusals = []
    for name, secret in (("thief", "victim-creds"), ("prober", "no-such-secret")):
        with pytest.raises(k8s.ApiException) as refused:
            kube.create_backend(tenant, name, token_backend_spec(openbao.addr, secret, victim))
        assert refused.value.status == 422
        refusals.append(str(refused.value.body).replace(name, "X").replace(secret, "S"))
    assert refusals[0] == refusals[1]
    assert_absent(canary, refusals[0], "the refusal")
    # The tenant's own Secret copied from elsewhere but not opted in for this backend: refused by the
    # operator before the token reaches the store; the condition names only the tenant's own Secret.
    kube.create_secret(tenant, "copied", {"token": canary}, annotations=allowed_for("someone-else"))
    kube.create_backend(tenant, "thief", token_backend_spec(openbao.addr, "copied"))
    cond = ready_of(wait_backend(kube, tenant, "thief", "False", "CredentialNotAllowed"))
    assert cond is not None
    assert f"{tenant}/copied" in cond["message"]
    for text in (cond["message"], "\n".join(str(e.message) for e in kube.events(tenant))):
        assert victim not in text
        assert "victim-creds" not in text
        assert_absent(canary, text, "condition and events")


# -- ClusterSecretBackend and AWS ----------------------------------------------------------------------


def test_cluster_secret_backend_reports_ready(
    status_operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespaces: dict[str, str]
) -> None:
    name = unique("csb")
    namespace = namespaces["victim"]
    kube.create_secret(
        namespace,
        f"{name}-token",
        {"token": child_token(openbao)},
        annotations=allowed_for(f"ClusterSecretBackend/{name}"),
    )
    kube.create_cluster_backend(name, token_backend_spec(openbao.addr, f"{name}-token", namespace))
    try:
        body = wait_backend(kube, None, name, "True", "Valid", generation=1)
        assert body["status"]["lastValidatedTime"]
        # A server outside the allowed store endpoints: refused before the token is read.
        kube.custom.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "clustersecretbackends",
            name,
            {"spec": {"vault": {"server": "http://10.255.255.1:8200"}}},
        )
        body = wait_backend(kube, None, name, "False", "EndpointNotAllowed", generation=2)
        assert "not an allowed store endpoint" in ready_of(body)["message"]  # type: ignore[index]
        # Events of a cluster-scoped object go to the default namespace, where kubectl describe looks.
        events = wait_for(
            lambda: [
                e
                for e in kube.events("default")
                if e.involved_object.name == name and e.reason == "EndpointNotAllowed"
            ],
            BOUND,
            what="the EndpointNotAllowed event in default",
        )
        assert events[0].involved_object.kind == "ClusterSecretBackend"
    finally:
        kube.delete_cluster_backend(name)


def test_aws_backend_ready_and_refused_keys(
    status_operator: OperatorRunner, moto: MotoServer, kube: Kube, namespaces: dict[str, str]
) -> None:
    namespace = namespaces["aws"]
    assert moto.reader is not None

    def spec(secret: str, service: str = "SecretsManager") -> dict[str, Any]:
        return {
            "aws": {
                "service": service,
                "region": moto.region,
                "endpoint": moto.endpoint,
                "auth": {
                    "secretRef": {
                        "accessKeyID": {"name": secret, "key": "id"},
                        "secretAccessKey": {"name": secret, "key": "secret"},
                    }
                },
            }
        }

    kube.create_secret(
        namespace,
        "good",
        {"id": moto.reader.access_key_id, "secret": moto.reader.secret_access_key},
        annotations=allowed_for("sm", "ssm", "bad"),
    )
    kube.create_secret(
        namespace, "bad", {"id": "AKIAUNKNOWN000000000", "secret": "x" * 40}, annotations=allowed_for("bad")
    )
    kube.create_backend(namespace, "sm", spec("good"))
    kube.create_backend(namespace, "ssm", spec("good", "ParameterStore"))
    kube.create_backend(namespace, "bad", spec("bad"))
    wait_backend(kube, namespace, "sm", "True", "Valid")
    wait_backend(kube, namespace, "ssm", "True", "Valid")
    body = wait_backend(kube, namespace, "bad", "False", "AuthFailed")
    assert_absent("x" * 40, str(body["status"]), "status")
