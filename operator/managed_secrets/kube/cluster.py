"""All the operator's Kubernetes ports on one API client: the adapters of this package, composed.

Each port has its adapter (``secrets``, ``reader``, ``credentials``, ``managedsecret_status``, ``events``)
and every adapter calls through ``kube.edge``, the one translation of the client's failures. The core's
``Reconciler`` needs several ports of one cluster at once, hence this facade; it only delegates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client

from managed_secrets.core.ports import ManagedSecretInfo, SecretObject
from managed_secrets.kube.credentials import KubeCredentials
from managed_secrets.kube.edge import describe_api_error
from managed_secrets.kube.events import KubeEvents
from managed_secrets.kube.managedsecret_status import KubeManagedSecretStatus
from managed_secrets.kube.reader import NAMESPACE_CACHE_SECONDS, KubeReader
from managed_secrets.kube.secrets import KubeSecrets
from managed_secrets.kube.secretwatch import OwnWrites
from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind, ManagedSecretRef
from managed_secrets.providers.base import CredentialValue

# Importable from here as before this module was split.
__all__ = ["NAMESPACE_CACHE_SECONDS", "KubeCluster", "describe_api_error"]


class KubeCluster:
    """Implements ``core.ports.Cluster``, the controller's ``StatusWriter`` and the rollouts' ``EventWriter``."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        own_writes: OwnWrites | None = None,
        instance: str = "managed-secrets",
    ) -> None:
        self.secrets = KubeSecrets(api_client, own_writes=own_writes)
        self.reader = KubeReader(api_client, clock=clock)
        self.credentials = KubeCredentials(api_client)
        self.status = KubeManagedSecretStatus(api_client)
        self.events = KubeEvents(api_client, instance=instance)

    @property
    def secret_writes(self) -> dict[str, int]:
        """Writes to Secrets, by verb; the tests and the benchmark count them."""
        return self.secrets.writes

    @property
    def own_writes(self) -> OwnWrites:
        """Versions the writes returned, so the Secret watch ignores their echo."""
        return self.secrets.own_writes

    # -- SecretStore -------------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> SecretObject | None:
        return self.secrets.get(namespace, name)

    def create(self, secret: SecretObject) -> SecretObject:
        return self.secrets.create(secret)

    def replace(self, secret: SecretObject) -> SecretObject:
        return self.secrets.replace(secret)

    def check_create(self, secret: SecretObject) -> None:
        self.secrets.check_create(secret)

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        self.secrets.delete(namespace, name, uid=uid, resource_version=resource_version)

    # -- ClusterReader -----------------------------------------------------------------------------------

    def remember_backend(self, body: Mapping[str, Any]) -> None:
        self.reader.remember_backend(body)

    def forget_backend(self, kind: BackendKind, name: str, namespace: str | None) -> None:
        self.reader.forget_backend(kind, name, namespace)

    def get_backend(self, kind: BackendKind, name: str, namespace: str | None) -> Backend | None:
        return self.reader.get_backend(kind, name, namespace)

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        return self.reader.managed_secret_info(namespace, name)

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.reader.namespace_labels(namespace)

    # -- CredentialSource --------------------------------------------------------------------------------

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        return self.credentials.read_secret_key(namespace, name, key)

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        return self.credentials.service_account_annotations(namespace, name)

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        return self.credentials.request_token(namespace, service_account, audiences)

    # -- ManagedSecret status, finalizers, events --------------------------------------------------------

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        self.status.patch_status(ref, patch)

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None:
        self.status.set_finalizers(ref, finalizers, resource_version)

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self.events.post_event(involved, reason=reason, message=message, type_=type_)
