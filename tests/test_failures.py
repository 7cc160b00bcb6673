"""Every failure keeps the Secret exactly as it was, says why with a stable reason, and heals by itself."""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, allowed_for

pytestmark = [pytest.mark.cluster, pytest.mark.vault]


def put(openbao: OpenBao, path: str, data: dict[str, Any]) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def synced(kube: Kube, openbao: OpenBao, namespace: str, **spec_extra: Any) -> str:
    """A ManagedSecret `app` in sync with secret/<ns>/app; returns the Secret's resourceVersion."""
    put(openbao, f"{namespace}/app", {"user": "u", "pass": "p1"})
    spec: dict[str, Any] = {
        "backendRef": {"name": "vault"},
        "refreshInterval": "1h",
        "data": [
            {"secretKey": "user", "remoteRef": {"key": f"{namespace}/app", "property": "user"}},
            {"secretKey": "pass", "remoteRef": {"key": f"{namespace}/app", "property": "pass"}},
        ],
    }
    spec.update(spec_extra)
    kube.create_ms(namespace, "app", spec)
    kube.wait_secret_data(namespace, "app", {"user": "u", "pass": "p1"})
    kube.wait_ready(namespace, "app")
    return str(kube.existing_secret(namespace, "app").metadata.resource_version)


def assert_unchanged(kube: Kube, namespace: str, version: str) -> None:
    secret = kube.secret(namespace, "app")
    assert secret is not None
    assert secret.metadata.resource_version == version
    assert kube.secret_data(namespace, "app") == {"user": "u", "pass": "p1"}


def test_remote_key_missing_then_back(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    version = synced(kube, openbao, namespace)
    openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(
        path=f"{namespace}/app", mount_point="secret"
    )
    kube.force_sync(namespace, "app")
    cond = kube.wait_ready(namespace, "app", "False", "RemoteKeyNotFound")
    assert f"{namespace}/app" in cond["message"]
    assert_unchanged(kube, namespace, version)
    put(openbao, f"{namespace}/app", {"user": "u", "pass": "p2"})
    kube.wait_ready(namespace, "app", "True", timeout=20)  # retried with backoff, no nudge
    kube.wait_secret_data(namespace, "app", {"user": "u", "pass": "p2"})


def test_deleted_newest_version_keeps_the_secret(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    version = synced(kube, openbao, namespace)
    openbao.client().secrets.kv.v2.delete_latest_version_of_secret(
        path=f"{namespace}/app", mount_point="secret"
    )
    kube.force_sync(namespace, "app")
    kube.wait_ready(namespace, "app", "False", "RemoteKeyNotFound")
    assert_unchanged(kube, namespace, version)


def test_property_missing(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    version = synced(kube, openbao, namespace)
    put(openbao, f"{namespace}/app", {"user": "u2"})
    kube.force_sync(namespace, "app")
    cond = kube.wait_ready(namespace, "app", "False", "PropertyNotFound")
    assert "'pass'" in cond["message"]
    assert "u2" not in cond["message"]
    assert_unchanged(kube, namespace, version)
    put(openbao, f"{namespace}/app", {"user": "u", "pass": "p1"})
    kube.wait_ready(namespace, "app", "True", timeout=20)


def test_template_error(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    version = synced(kube, openbao, namespace)
    kube.patch_ms(
        namespace, "app", {"spec": {"target": {"template": {"data": {"url": "{{ user }}:{{ nope }}"}}}}}
    )
    cond = kube.wait_ready(namespace, "app", "False", "TemplateError")
    assert "nope" in cond["message"]
    assert_unchanged(kube, namespace, version)
    ms = kube.get_ms(namespace, "app")
    assert ms["status"]["observedGeneration"] == ms["metadata"]["generation"]


def test_auth_failed_then_fixed(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    version = synced(kube, openbao, namespace)
    kube.core.patch_namespaced_secret("vault-token", namespace, {"stringData": {"token": "wrong-token"}})
    # A new backend generation makes the operator build a new client, which reads the bad token.
    kube.custom.patch_namespaced_custom_object(
        "managedsecrets.io",
        "v1alpha1",
        namespace,
        "secretbackends",
        "vault",
        {"spec": {"vault": {"path": "secret/"}}},
    )
    cond = kube.wait_ready(namespace, "app", "False", "AuthFailed")
    assert "wrong-token" not in cond["message"]
    assert_unchanged(kube, namespace, version)
    kube.core.patch_namespaced_secret("vault-token", namespace, {"stringData": {"token": openbao.root_token}})
    kube.wait_ready(namespace, "app", "True", timeout=20)


def test_backend_not_found_then_created(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str
) -> None:
    put(openbao, f"{namespace}/app", {"user": "u", "pass": "p1"})
    kube.create_ms(
        namespace,
        "app",
        {
            "backendRef": {"name": "later"},
            "data": [{"secretKey": "user", "remoteRef": {"key": f"{namespace}/app", "property": "user"}}],
        },
    )
    cond = kube.wait_ready(namespace, "app", "False", "BackendNotFound")
    assert "later" in cond["message"]
    kube.create_secret(namespace, "tok", {"token": openbao.root_token}, annotations=allowed_for("later"))
    kube.create_backend(
        namespace,
        "later",
        {
            "vault": {
                "server": openbao.addr,
                "auth": {"token": {"secretRef": {"name": "tok", "key": "token"}}},
            }
        },
    )
    kube.wait_secret_data(namespace, "app", {"user": "u"}, timeout=20)


def test_invalid_extracted_key_name_is_invalid_spec(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    put(openbao, f"{namespace}/bad", {"not a valid key": "x"})
    kube.create_ms(
        namespace,
        "app",
        {"backendRef": {"name": "vault"}, "dataFrom": [{"extract": {"key": f"{namespace}/bad"}}]},
    )
    cond = kube.wait_ready(namespace, "app", "False", "InvalidSpec")
    assert "not a valid key" in cond["message"]
    assert kube.secret(namespace, "app") is None


def test_backend_down_then_back(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    version = synced(kube, openbao, namespace)
    openbao.stop()
    try:
        kube.force_sync(namespace, "app")
        cond = kube.wait_ready(namespace, "app", "False", "BackendUnavailable", timeout=30)
        assert f"SecretBackend {namespace}/vault" in cond["message"]
        time.sleep(2)  # several retries while down
        assert_unchanged(kube, namespace, version)
    finally:
        openbao.start()
    put(openbao, f"{namespace}/app", {"user": "u", "pass": "p1"})  # dev mode forgets data on restart
    kube.wait_ready(namespace, "app", "True", timeout=30)
    assert_unchanged(kube, namespace, version)  # same data: healed without a write


def test_cluster_backend_admits_only_listed_namespaces(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str
) -> None:
    name = f"shared-{namespace}"
    kube.create_cluster_vault_token_backend(
        name,
        namespace,
        openbao.addr,
        openbao.root_token,
        [
            {"namespaces": ["somewhere-else"]},
            {
                "namespaceSelector": {"matchLabels": {"team": "blue"}},
                "remoteKeys": ["{namespace}/allowed/*"],
            },
        ],
        secret="tok",
    )
    try:
        put(openbao, f"{namespace}/allowed/a", {"v": "1"})
        put(openbao, f"{namespace}/other", {"v": "2"})
        ref = {"name": name, "kind": "ClusterSecretBackend"}
        kube.create_ms(
            namespace,
            "a",
            {
                "backendRef": ref,
                "data": [{"secretKey": "v", "remoteRef": {"key": f"{namespace}/allowed/a", "property": "v"}}],
            },
        )
        cond = kube.wait_ready(namespace, "a", "False", "BackendNotAllowed")
        assert namespace in cond["message"]
        assert kube.secret(namespace, "a") is None
        kube.core.patch_namespace(namespace, {"metadata": {"labels": {"team": "blue"}}})
        kube.wait_secret_data(namespace, "a", {"v": "1"}, timeout=30)
        kube.create_ms(
            namespace,
            "b",
            {
                "backendRef": ref,
                "data": [{"secretKey": "v", "remoteRef": {"key": f"{namespace}/other", "property": "v"}}],
            },
        )
        cond = kube.wait_ready(namespace, "b", "False", "KeyNotAllowed")
        assert f"{namespace}/other" in cond["message"]
        assert kube.secret(namespace, "b") is None
    finally:
        kube.delete_cluster_backend(name)


def test_secret_backend_of_another_namespace_cannot_be_used(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    other = f"{namespace}-x"[:60]
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        put(openbao, f"{namespace}/app", {"user": "u"})
        kube.create_ms(
            other,
            "app",
            {
                "backendRef": {"name": "vault"},
                "data": [{"secretKey": "user", "remoteRef": {"key": f"{namespace}/app", "property": "user"}}],
            },
        )
        cond = kube.wait_ready(other, "app", "False", "BackendNotFound")
        assert f"{other}/vault" in cond["message"]
        assert kube.secret(other, "app") is None
    finally:
        kube.core.delete_namespace(other)
