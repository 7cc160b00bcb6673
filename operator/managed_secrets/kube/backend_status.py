"""Writes the status subresource of SecretBackends and ClusterSecretBackends, and their Events.

The writer half of runtime/backend_status.py; the operator's RBAC grants ``patch`` on
``secretbackends/status`` and ``clustersecretbackends/status`` only, never on the backends themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets import errors
from managed_secrets.api import (
    API_VERSION,
    CLUSTER_SECRET_BACKENDS_PLURAL,
    GROUP,
    SECRET_BACKENDS_PLURAL,
    VERSION,
)
from managed_secrets.kube.raw import release
from managed_secrets.models.backend import BackendId
from managed_secrets.models.managedsecret import BackendKind

log = logging.getLogger(__name__)

#: Where Kubernetes tools look for the Events of cluster-scoped objects.
CLUSTER_EVENTS_NAMESPACE = "default"


class KubeBackendStatus:
    """Implements ``runtime.backend_status.BackendStatusWriter``."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    def patch_backend_status(self, key: BackendId, patch: Mapping[str, Any]) -> None:
        kind, namespace, name = key.kind, key.namespace, key.name
        body = {"status": dict(patch)}
        try:
            if kind is BackendKind.CLUSTER_SECRET_BACKEND:
                response = self._custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, CLUSTER_SECRET_BACKENDS_PLURAL, name, body, _preload_content=False
                )
            else:
                response = self._custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace or "",
                    SECRET_BACKENDS_PLURAL,
                    name,
                    body,
                    _preload_content=False,
                )
            release(response)
        except ApiException as error:
            if error.status == 404:
                return  # deleted meanwhile
            # The status code only: the server's text may quote the patch.
            raise errors.WriteFailed(f"updating status of {key}: HTTP {error.status}") from None
        except urllib3.exceptions.HTTPError as error:
            raise errors.WriteFailed(f"updating status of {key}: {type(error).__name__}") from None

    def post_backend_event(self, key: BackendId, uid: str, *, reason: str, message: str, type_: str) -> None:
        """An Event on the backend; failures are logged, not raised (the status holds the same news)."""
        kind, namespace, name = key.kind, key.namespace, key.name
        events_namespace = namespace or CLUSTER_EVENTS_NAMESPACE
        involved: dict[str, str] = {"apiVersion": API_VERSION, "kind": kind.value, "name": name, "uid": uid}
        if namespace:
            involved["namespace"] = namespace
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": events_namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "managed-secrets"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "managed-secrets",
            "reportingInstance": "managed-secrets",
        }
        try:
            release(self._core.create_namespaced_event(events_namespace, body, _preload_content=False))
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            log.warning("could not post event %s on %s: %s", reason, key, type(error).__name__)
