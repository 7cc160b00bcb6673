"""The controller's writes to ManagedSecrets: status (the one writer) and finalizers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

from managed_secrets import errors
from managed_secrets.api import GROUP, MANAGED_SECRETS_PLURAL, VERSION
from managed_secrets.kube.edge import Translation, send
from managed_secrets.models.managedsecret import ManagedSecretRef

UPDATE = Translation(errors.WriteFailed)


class KubeManagedSecretStatus:
    """Status and finalizer patches; a ManagedSecret deleted meanwhile is not an error."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        send(
            f"updating status of {ref}",
            UPDATE,
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            ref.namespace,
            MANAGED_SECRETS_PLURAL,
            ref.name,
            {"status": dict(patch)},
            missing_ok=True,
        )

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None:
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        send(
            f"updating finalizers of {ref}",
            UPDATE,
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            ref.namespace,
            MANAGED_SECRETS_PLURAL,
            ref.name,
            patch,
            missing_ok=True,
        )
