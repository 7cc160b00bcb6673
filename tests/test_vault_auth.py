"""Vault auth methods against OpenBao and the real apiserver, KV v1, version pinning, token reuse."""

from __future__ import annotations

import pytest

from harness.controlplane import ControlPlane
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, allowed_for

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

READ_POLICY = 'path "secret/data/*" { capabilities = ["read"] }\npath "kv1/*" { capabilities = ["read"] }'


def provider_logins(operator: OperatorRunner, backend: str) -> int:
    clients = operator.runtime.providers._clients
    return sum(client.logins for label, (_, client) in clients.items() if label.endswith(backend))  # type: ignore[attr-defined]


def test_kubernetes_auth_with_token_request_and_token_reuse(
    operator: OperatorRunner, openbao: OpenBao, controlplane: ControlPlane, kube: Kube, namespace: str
) -> None:
    openbao.write_policy("ms-read", READ_POLICY)
    openbao.enable_kubernetes_auth(
        controlplane,
        mount="kubernetes",
        role=f"r-{namespace}"[:60],
        bound_sa_names=["vault-reader"],
        bound_sa_namespaces=[namespace],
        policies=["ms-read"],
        audience="vault",  # the operator's default audience for Vault; never the API server's
    )
    kube.create_service_account(namespace, "vault-reader", annotations=allowed_for("k8s-auth"))
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{namespace}/k8s", secret={"v": "via-k8s"}, mount_point="secret"
    )
    kube.create_backend(
        namespace,
        "k8s-auth",
        {
            "vault": {
                "server": openbao.addr,
                "auth": {
                    "kubernetes": {
                        "role": f"r-{namespace}"[:60],
                        "serviceAccountRef": {"name": "vault-reader"},
                    }
                },
            }
        },
    )
    for i in range(5):
        kube.create_ms(
            namespace,
            f"m{i}",
            {
                "backendRef": {"name": "k8s-auth"},
                "refreshInterval": "1s",
                "data": [{"secretKey": "v", "remoteRef": {"key": f"{namespace}/k8s", "property": "v"}}],
            },
        )
    for i in range(5):
        kube.wait_secret_data(namespace, f"m{i}", {"v": "via-k8s"})
    import time

    time.sleep(3)  # several refreshes of five resources
    assert provider_logins(operator, f"{namespace}/k8s-auth") == 1, (
        "one login, reused across resources and refreshes"
    )


def test_kubernetes_auth_refused_for_an_unbound_service_account(
    operator: OperatorRunner, openbao: OpenBao, controlplane: ControlPlane, kube: Kube, namespace: str
) -> None:
    openbao.write_policy("ms-read", READ_POLICY)
    openbao.enable_kubernetes_auth(
        controlplane,
        mount="kubernetes",
        role=f"x-{namespace}"[:60],
        bound_sa_names=["someone-else"],
        bound_sa_namespaces=[namespace],
        policies=["ms-read"],
        audience="vault",
    )
    kube.create_service_account(namespace, "intruder", annotations=allowed_for("k8s-auth"))
    kube.create_backend(
        namespace,
        "k8s-auth",
        {
            "vault": {
                "server": openbao.addr,
                "auth": {
                    "kubernetes": {"role": f"x-{namespace}"[:60], "serviceAccountRef": {"name": "intruder"}}
                },
            }
        },
    )
    kube.create_ms(
        namespace,
        "m",
        {
            "backendRef": {"name": "k8s-auth"},
            "data": [{"secretKey": "v", "remoteRef": {"key": f"{namespace}/k8s", "property": "v"}}],
        },
    )
    cond = kube.wait_ready(namespace, "m", "False", "AuthFailed")
    assert "kubernetes login" in cond["message"]


def test_approle_auth(operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str) -> None:
    openbao.write_policy("ms-read", READ_POLICY)
    role_id, secret_id = openbao.enable_approle(mount="approle", role="ms", policies=["ms-read"])
    kube.create_secret(namespace, "approle", {"secret-id": secret_id}, annotations=allowed_for("ar"))
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{namespace}/ar", secret={"v": "via-approle"}, mount_point="secret"
    )
    kube.create_backend(
        namespace,
        "ar",
        {
            "vault": {
                "server": openbao.addr,
                "auth": {
                    "appRole": {"roleId": role_id, "secretRef": {"name": "approle", "key": "secret-id"}}
                },
            }
        },
    )
    kube.create_ms(
        namespace,
        "m",
        {
            "backendRef": {"name": "ar"},
            "data": [{"secretKey": "v", "remoteRef": {"key": f"{namespace}/ar", "property": "v"}}],
        },
    )
    kube.wait_secret_data(namespace, "m", {"v": "via-approle"})


def test_kv_v1_and_version_pinning(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    openbao.enable_kv_v1("kv1")
    kube.annotate("Secret", namespace, "vault-token", allowed_for("vault", "v1"))  # shared by two backends
    openbao.client().secrets.kv.v1.create_or_update_secret(
        path=f"{namespace}/one", secret={"v": "kv1-value"}, mount_point="kv1"
    )
    kube.create_backend(
        namespace,
        "v1",
        {
            "vault": {
                "server": openbao.addr,
                "path": "kv1",
                "version": "v1",
                "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
            }
        },
    )
    kube.create_ms(
        namespace,
        "one",
        {
            "backendRef": {"name": "v1"},
            "data": [{"secretKey": "v", "remoteRef": {"key": f"{namespace}/one", "property": "v"}}],
        },
    )
    kube.wait_secret_data(namespace, "one", {"v": "kv1-value"})

    kv2 = openbao.client().secrets.kv.v2
    kv2.create_or_update_secret(path=f"{namespace}/ver", secret={"v": "first"}, mount_point="secret")
    kv2.create_or_update_secret(path=f"{namespace}/ver", secret={"v": "second"}, mount_point="secret")
    kube.create_ms(
        namespace,
        "pinned",
        {
            "backendRef": {"name": "vault"},
            "data": [
                {"secretKey": "v", "remoteRef": {"key": f"{namespace}/ver", "property": "v", "version": "1"}},
                {"secretKey": "latest", "remoteRef": {"key": f"{namespace}/ver", "property": "v"}},
            ],
        },
    )
    kube.wait_secret_data(namespace, "pinned", {"v": "first", "latest": "second"})
    kube.create_ms(
        namespace,
        "nover",
        {
            "backendRef": {"name": "vault"},
            "data": [
                {"secretKey": "v", "remoteRef": {"key": f"{namespace}/ver", "property": "v", "version": "9"}}
            ],
        },
    )
    kube.wait_ready(namespace, "nover", "False", "VersionNotFound")
