"""An in-memory cluster for the reconcile core: backends and namespaces from the manifests, Secrets written
to memory only, and the caller's credentials in place of the cluster's."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace

from managed_secrets import errors
from managed_secrets.core.ports import ManagedSecretInfo, SecretObject
from managed_secrets.local.credentials import CallerCredentials
from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.providers.base import CredentialValue


class LocalCluster:
    def __init__(
        self,
        backends: Sequence[Backend],
        namespace_labels: Mapping[str, Mapping[str, str]],
        managed_secrets: Mapping[tuple[str, str], ManagedSecretInfo],
        credentials: CallerCredentials,
    ) -> None:
        self._backends = {(b.id.kind, b.id.name, b.id.namespace): b for b in backends}
        self._namespace_labels = {name: dict(labels) for name, labels in namespace_labels.items()}
        self._managed_secrets = dict(managed_secrets)
        self._credentials = credentials
        self._secrets: dict[tuple[str, str], SecretObject] = {}
        self._versions = itertools.count(1)

    # -- SecretStore: memory only -------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> SecretObject | None:
        return self._secrets.get((namespace, name))

    def create(self, secret: SecretObject) -> SecretObject:
        slot = (secret.namespace, secret.name)
        if slot in self._secrets:
            raise errors.TargetExists(f"Secret {secret.name} is written by another ManagedSecret here")
        return self._store(secret)

    def replace(self, secret: SecretObject) -> SecretObject:
        current = self._secrets.get((secret.namespace, secret.name))
        if current is None or current.resource_version != secret.resource_version:
            raise errors.WriteFailed(f"Secret {secret.name} changed meanwhile")
        return self._store(secret)

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        current = self._secrets.get((namespace, name))
        if (
            current is not None
            and uid in (None, current.uid)
            and resource_version in (None, current.resource_version)
        ):
            del self._secrets[(namespace, name)]

    def check_create(self, secret: SecretObject) -> None:
        """No API server to ask: the core's own Secret rules (check_secret) have run already."""

    def _store(self, secret: SecretObject) -> SecretObject:
        stored = replace(
            secret, resource_version=str(next(self._versions)), uid=secret.uid or f"local-{secret.name}"
        )
        self._secrets[(secret.namespace, secret.name)] = stored
        return stored

    def put_existing(self, secret: SecretObject) -> None:
        """A Secret that exists before the operator writes (a creationPolicy Merge target)."""
        self._store(secret)

    # -- ClusterReader: from the manifests ----------------------------------------------------------

    def get_backend(self, kind: BackendKind, name: str, namespace: str | None) -> Backend | None:
        return self._backends.get((kind, name, namespace if kind is BackendKind.SECRET_BACKEND else None))

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return {"kubernetes.io/metadata.name": namespace, **self._namespace_labels.get(namespace, {})}

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        return self._managed_secrets.get((namespace, name))

    # -- CredentialSource: the caller's -------------------------------------------------------------

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        return self._credentials.read_secret_key(namespace, name, key)

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        return self._credentials.service_account_annotations(namespace, name)

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        return self._credentials.request_token(namespace, service_account, audiences)
