"""What the core needs from the cluster, as Protocols; the kube layer implements them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.providers.base import CredentialSource


@dataclass(frozen=True)
class OwnerReference:
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool = True


@dataclass(frozen=True)
class SecretObject:
    """A Kubernetes Secret as the core sees it. ``data`` holds decoded bytes."""

    namespace: str
    name: str
    type: str = "Opaque"
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # a repr must never show a value
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_references: tuple[OwnerReference, ...] = ()
    resource_version: str | None = None
    uid: str | None = None
    #: ``immutable: true``: the API server refuses any change of data (and the flag cannot be unset).
    immutable: bool = False


@dataclass(frozen=True)
class ManagedSecretInfo:
    """Another ManagedSecret as far as a claim on a Secret goes: which incarnation, writing which Secret."""

    uid: str
    secret_name: str
    creation_policy: str


class SecretStore(Protocol):
    def get(self, namespace: str, name: str) -> SecretObject | None: ...

    def create(self, secret: SecretObject) -> SecretObject:
        """Raises TargetExists when a Secret of that name appeared meanwhile."""
        ...

    def replace(self, secret: SecretObject) -> SecretObject:
        """Write with ``resource_version`` as precondition; a conflict raises WriteFailed."""
        ...

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        """Delete only that object (``uid``), unchanged since read (``resource_version``): else WriteFailed."""
        ...

    def check_create(self, secret: SecretObject) -> None:
        """Raises TargetRejected when the API server would refuse to create this Secret.

        A server-side dry run of the create under a generated name: the real validation and admission, and
        nothing stored.
        """
        ...


class ClusterReader(Protocol):
    def get_backend(self, kind: BackendKind, name: str, namespace: str | None) -> Backend | None:
        """The backend, parsed; None when it does not exist. Raises InvalidBackend when malformed."""
        ...

    def namespace_labels(self, namespace: str) -> Mapping[str, str]: ...

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        """The ManagedSecret of that name as it is now; None when it does not exist."""
        ...


class Cluster(SecretStore, ClusterReader, CredentialSource, Protocol):
    """Everything the core asks of Kubernetes."""


#: The operator's secret key (ownership proofs); raises a SyncError when it cannot be had.
OperatorKey = Callable[[], bytes]
