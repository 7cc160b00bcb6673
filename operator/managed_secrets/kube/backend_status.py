"""Writes the status subresource of SecretBackends and ClusterSecretBackends, and their Events.

The writer half of runtime/backend_status.py; the operator's RBAC grants ``patch`` on
``secretbackends/status`` and ``clustersecretbackends/status`` only, never on the backends themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

from managed_secrets import errors
from managed_secrets.api import (
    API_VERSION,
    CLUSTER_SECRET_BACKENDS_PLURAL,
    GROUP,
    SECRET_BACKENDS_PLURAL,
    VERSION,
)
from managed_secrets.kube.edge import Translation, send
from managed_secrets.kube.events import KubeEvents
from managed_secrets.models.backend import BackendId
from managed_secrets.models.managedsecret import BackendKind

UPDATE = Translation(errors.WriteFailed)
#: Where Kubernetes tools look for the Events of cluster-scoped objects.
CLUSTER_EVENTS_NAMESPACE = "default"


class KubeBackendStatus:
    """Implements ``runtime.backend_status.BackendStatusWriter``; a backend deleted meanwhile is not an
    error."""

    def __init__(self, api_client: client.ApiClient, *, instance: str = "managed-secrets") -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._events = KubeEvents(api_client, instance=instance)

    def patch_backend_status(self, key: BackendId, patch: Mapping[str, Any]) -> None:
        body = {"status": dict(patch)}
        what = f"updating status of {key}"
        if key.kind is BackendKind.CLUSTER_SECRET_BACKEND:
            send(
                what,
                UPDATE,
                self._custom.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                CLUSTER_SECRET_BACKENDS_PLURAL,
                key.name,
                body,
                missing_ok=True,
            )
        else:
            send(
                what,
                UPDATE,
                self._custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                key.namespace or "",
                SECRET_BACKENDS_PLURAL,
                key.name,
                body,
                missing_ok=True,
            )

    def post_backend_event(self, key: BackendId, uid: str, *, reason: str, message: str, type_: str) -> None:
        """An Event on the backend; failures are logged, not raised (the status holds the same news)."""
        involved: dict[str, str] = {
            "apiVersion": API_VERSION,
            "kind": key.kind.value,
            "name": key.name,
            "uid": uid,
        }
        if key.namespace:
            involved["namespace"] = key.namespace
        self._events.post_event(
            involved,
            reason=reason,
            message=message,
            type_=type_,
            events_namespace=key.namespace or CLUSTER_EVENTS_NAMESPACE,
        )
