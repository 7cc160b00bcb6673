"""Small helpers the integration tests share: create resources, wait, read Secrets and conditions."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from managed_secrets.api import GROUP, VERSION

T = TypeVar("T")
#: The owner's opt-in of a credential Secret or ServiceAccount (managed_secrets.providers.guard).
ALLOWED_BACKENDS = "managedsecrets.io/allowed-backends"


def allowed_for(*backends: str) -> dict[str, str]:
    """Annotations opting a credential in for these backends (``name``: a SecretBackend of its namespace,
    ``ClusterSecretBackend/name``)."""
    return {ALLOWED_BACKENDS: ",".join(backends)}


def wait_for(
    check: Callable[[], T | None], timeout: float = 30, interval: float = 0.1, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Kube:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.apps = k8s.AppsV1Api(api)

    # -- custom resources ----------------------------------------------------------------------------------
    def create_ms(
        self, namespace: str, name: str, spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ManagedSecret",
            "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
            "spec": dict(spec),
        }
        return cast(
            "dict[str, Any]",
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "managedsecrets", body),
        )

    def get_ms(self, namespace: str, name: str) -> dict[str, Any]:
        return cast(
            "dict[str, Any]",
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "managedsecrets", name),
        )

    def patch_ms(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return cast(
            "dict[str, Any]",
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "managedsecrets", name, dict(patch)
            ),
        )

    def delete_ms(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "managedsecrets", name)

    def force_sync(self, namespace: str, name: str) -> None:
        self.patch_ms(
            namespace,
            name,
            {"metadata": {"annotations": {"managedsecrets.io/force-sync": str(time.time_ns())}}},
        )

    def create_backend(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SecretBackend",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        return cast(
            "dict[str, Any]",
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "secretbackends", body),
        )

    def create_cluster_backend(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterSecretBackend",
            "metadata": {"name": name},
            "spec": dict(spec),
        }
        return cast(
            "dict[str, Any]",
            self.custom.create_cluster_custom_object(GROUP, VERSION, "clustersecretbackends", body),
        )

    def delete_cluster_backend(self, name: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "clustersecretbackends", name)
        except ApiException as error:
            if error.status != 404:
                raise

    def ready(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Ready condition, or None."""
        status = self.get_ms(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)

    def ready_now(self, namespace: str, name: str) -> dict[str, Any]:
        """The Ready condition, failing the test when there is none yet."""
        cond = self.ready(namespace, name)
        assert cond is not None, f"{namespace}/{name} has no Ready condition"
        return cond

    def wait_ready(
        self, namespace: str, name: str, status: str = "True", reason: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = self.ready(namespace, name)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        return wait_for(check, timeout, what=f"{namespace}/{name} Ready={status} reason={reason}")

    # -- secrets -----------------------------------------------------------------------------------------------
    def create_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        labels: Mapping[str, str] | None = None,
        type_: str = "Opaque",
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        body = k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(
                name=name, namespace=namespace, labels=dict(labels or {}), annotations=dict(annotations or {})
            ),
            string_data=dict(data),
            type=type_,
        )
        self.core.create_namespaced_secret(namespace, body)

    def create_vault_token_backend(
        self, namespace: str, server: str, token: str, name: str = "vault"
    ) -> None:
        """A SecretBackend reading Vault KV v2 at ``secret`` with a token from Secret ``vault-token``, opted in."""
        self.create_secret(namespace, "vault-token", {"token": token}, annotations=allowed_for(name))
        self.create_backend(
            namespace,
            name,
            {
                "vault": {
                    "server": server,
                    "path": "secret",
                    "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
                }
            },
        )

    def create_cluster_vault_token_backend(
        self,
        name: str,
        token_namespace: str,
        server: str,
        token: str,
        conditions: list[dict[str, Any]],
        secret: str = "bao-token",  # noqa: S107 - the name of a Secret
    ) -> None:
        """A ClusterSecretBackend ``name`` on Vault with a token from Secret ``secret`` in
        ``token_namespace`` (opted in for it), admitting what ``conditions`` say."""
        self.create_secret(
            token_namespace, secret, {"token": token}, annotations=allowed_for(f"ClusterSecretBackend/{name}")
        )
        self.create_cluster_backend(
            name,
            {
                "vault": {
                    "server": server,
                    "auth": {
                        "token": {"secretRef": {"name": secret, "key": "token", "namespace": token_namespace}}
                    },
                },
                "conditions": conditions,
            },
        )

    def create_service_account(
        self, namespace: str, name: str, annotations: Mapping[str, str] | None = None
    ) -> None:
        self.core.create_namespaced_service_account(
            namespace, {"metadata": {"name": name, "annotations": dict(annotations or {})}}
        )

    def annotate(self, kind: str, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch annotations of a Secret or ServiceAccount (None removes one)."""
        patch = {"metadata": {"annotations": dict(annotations)}}
        if kind == "Secret":
            self.core.patch_namespaced_secret(name, namespace, patch)
        else:
            self.core.patch_namespaced_service_account(name, namespace, patch)

    def secret(self, namespace: str, name: str) -> k8s.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def existing_secret(self, namespace: str, name: str) -> k8s.V1Secret:
        """The Secret, failing the test when it is missing."""
        secret = self.secret(namespace, name)
        assert secret is not None, f"Secret {namespace}/{name} is missing"
        return secret

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = self.secret(namespace, name)
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def wait_secret_data(
        self, namespace: str, name: str, expected: Mapping[str, str], timeout: float = 30
    ) -> dict[str, str]:
        return wait_for(
            lambda: data if (data := self.secret_data(namespace, name)) == dict(expected) else None,
            timeout,
            what=f"Secret {namespace}/{name} to hold keys {sorted(expected)}",
        )

    def events(self, namespace: str) -> list[k8s.CoreV1Event]:
        return list(self.core.list_namespaced_event(namespace).items)
