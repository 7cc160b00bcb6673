"""The provider contract: a small Protocol every backend implements.

A provider turns a remote key (and optional version) into the raw bytes stored there. Property picking,
extraction of JSON fields, templating, caching and batching are done once, outside the providers, so
each backend module stays small and behaves the same way.

Providers translate their SDK's exceptions into ``managed_secrets.errors`` at this edge, with messages
that name keys but never contain values. They are synchronous (the SDKs are); the runtime calls them in
worker threads so they never block the operator's event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, Field, ValidationError

from managed_secrets.errors import InvalidBackend, SyncError
from managed_secrets.models.base import CamelModel
from managed_secrets.models.parse import describe_validation_error


@dataclass(frozen=True, slots=True)
class RemoteKey:
    """One readable thing in a store: a key, optionally pinned to a version."""

    key: str
    version: str | None = None

    def __str__(self) -> str:
        return self.key if self.version is None else f"{self.key}@{self.version}"


class CredentialSource(Protocol):
    """What a provider may ask of the cluster while it builds a client (implemented by the kube layer)."""

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes:
        """One key of a Kubernetes Secret; raises AuthFailed / InvalidBackend when it is missing."""
        ...

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        """A short-lived service-account token from the TokenRequest API."""
        ...


class SecretKeyRef(CamelModel):
    """A key of a Kubernetes Secret holding a credential (the same shape in every provider block)."""

    name: str
    key: str
    namespace: str | None = None


class ServiceAccountRef(CamelModel):
    """A ServiceAccount whose TokenRequest token proves the operator's identity to a store."""

    name: str
    namespace: str | None = None
    audiences: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class ProviderContext:
    credentials: CredentialSource
    #: Namespace of the SecretBackend; None for a ClusterSecretBackend (references must name one).
    default_namespace: str | None
    #: Label for messages, like ``SecretBackend team-a/vault``.
    backend_label: str
    #: Extra knobs for tests and tuning (timeouts), never credentials.
    options: Mapping[str, Any] = field(default_factory=dict)

    def namespace_for(self, explicit: str | None, what: str) -> str:
        if explicit and self.default_namespace and explicit != self.default_namespace:
            # A SecretBackend must not point the operator at credentials of another namespace.
            raise InvalidBackend(f"{self.backend_label}: {what} may only use its own namespace")
        namespace = explicit or self.default_namespace
        if not namespace:
            raise InvalidBackend(
                f"{self.backend_label}: {what} must name a namespace in a ClusterSecretBackend"
            )
        return namespace

    def read_secret(self, ref: SecretKeyRef, what: str) -> bytes:
        """The credential ``ref`` points at; ``what`` names the field for messages."""
        return self.credentials.read_secret_key(self.namespace_for(ref.namespace, what), ref.name, ref.key)

    def service_account_token(
        self, ref: ServiceAccountRef, what: str, default_audiences: Sequence[str] = ()
    ) -> str:
        namespace = self.namespace_for(ref.namespace, what)
        return self.credentials.request_token(namespace, ref.name, ref.audiences or list(default_audiences))


@runtime_checkable
class SecretProvider(Protocol):
    """A client of one configured backend. Built once per backend configuration and reused."""

    def fetch(self, ref: RemoteKey) -> bytes:
        """The value at ``ref``: raw bytes, or JSON for stores whose values are maps (Vault KV)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BatchingProvider(SecretProvider, Protocol):
    """A provider whose API reads several keys in one call (AWS BatchGetSecretValue)."""

    max_batch: int

    def fetch_many(self, refs: Sequence[RemoteKey]) -> Mapping[RemoteKey, bytes | SyncError]: ...


@runtime_checkable
class CanonicalizingProvider(SecretProvider, Protocol):
    """A provider that knows how its store resolves keys (every built-in provider is one).

    Optional: for a provider without ``canonical_ref`` the operator applies the strict generic rule of
    ``managed_secrets.providers.keys`` (no dot or empty segments, no escapes). A provider whose store
    compares names case-insensitively also sets ``case_insensitive_keys = True`` and returns lower-case
    keys, so ClusterSecretBackend patterns are compared case-insensitively too.
    """

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        """``ref`` as the store will resolve it; ``fetch`` reads exactly this ref.

        Raises ``KeyNotAllowed`` when the key is ambiguous (a layer on the way could resolve it to another
        object than it appears to name), ``InvalidSpec`` / ``VersionNotFound`` when it is merely malformed
        for this store. Idempotent: the canonical form of a canonical ref is itself.
        """
        ...


class ProviderFactory(Protocol):
    def __call__(self, config: Mapping[str, Any], context: ProviderContext) -> SecretProvider: ...


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_config(model: type[ModelT], config: Mapping[str, Any], context: ProviderContext) -> ModelT:
    """Validate a provider block; the error names fields, not values."""
    try:
        return model.model_validate(config)
    except ValidationError as error:
        raise InvalidBackend(f"{context.backend_label}: {describe_validation_error(error)}") from None
