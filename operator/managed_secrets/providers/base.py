"""The provider contract: a small Protocol every backend implements.

A provider turns a remote key (and optional version) into the raw bytes stored there. Property picking,
extraction of JSON fields, templating, caching and batching are done once, outside the providers, so
each backend module stays small and behaves the same way.

Providers translate their SDK's exceptions into ``managed_secrets.errors`` at this edge, with messages
that name keys but never contain values. They are synchronous (the SDKs are); the runtime calls them in
worker threads so they never block the operator's event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from managed_secrets.api import ALLOWED_BACKENDS_ANNOTATION, CLUSTER_SECRET_BACKEND_KIND, SECRET_BACKEND_KIND
from managed_secrets.errors import (
    AuthFailed,
    CredentialNotAllowed,
    EndpointNotAllowed,
    InvalidBackend,
    SyncError,
)
from managed_secrets.models.base import CamelModel
from managed_secrets.models.parse import describe_validation_error
from managed_secrets.models.schema import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    SECRET_KEY,
    JsonDict,
    merged,
    per_kind,
    rule,
    rules,
)
from managed_secrets.providers.guard import (
    TOKEN_EXPIRATION_SECONDS,
    BackendName,
    CredentialPolicy,
    Endpoint,
    EndpointError,
    audience_refusal,
    opt_in_refusal,
    parse_endpoint,
)


@dataclass(frozen=True, slots=True)
class RemoteKey:
    """One readable thing in a store: a key, optionally pinned to a version."""

    key: str
    version: str | None = None

    def __str__(self) -> str:
        return self.key if self.version is None else f"{self.key}@{self.version}"


@dataclass(frozen=True)
class CredentialValue:
    """One key of a Kubernetes Secret (None when the Secret lacks it) and the Secret's annotations."""

    annotations: Mapping[str, str]
    value: bytes | None = field(default=None, repr=False)


class CredentialSource(Protocol):
    """What a provider may ask of the cluster while it builds a client (implemented by the kube layer).

    Providers do not call it directly: ``ProviderContext`` applies the guards of ``providers.guard`` first.
    """

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        """One key of a Kubernetes Secret; raises AuthFailed when the Secret is missing."""
        ...

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        """The annotations of a ServiceAccount; raises AuthFailed when it is missing."""
        ...

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        """A TokenRequest token for exactly ``audiences``, valid for TOKEN_EXPIRATION_SECONDS.

        Implementations verify the issued token (its audiences, its lifetime, and that the API server
        itself refuses it) and raise instead of returning one that fails.
        """
        ...


def _namespace_rules(what: str) -> JsonDict:
    """The CRD's texts and rule for a credential reference's namespace, by backend kind (what
    ``ProviderContext.namespace_for`` enforces when the operator reads the credential)."""
    return per_kind(
        **{
            SECRET_BACKEND_KIND: rules(
                rule(
                    "!has(self.namespace)",
                    "a SecretBackend can only use credentials in its own namespace: remove namespace (use a"
                    " ClusterSecretBackend to read credentials from another namespace)",
                ),
                properties={
                    "namespace": {
                        "description": f"Must be omitted in a SecretBackend: the {what} is always looked up"
                        " in the SecretBackend's own namespace, so that nobody who may create a"
                        " SecretBackend can use credentials from another namespace. Required in a"
                        " ClusterSecretBackend."
                    }
                },
            ),
            CLUSTER_SECRET_BACKEND_KIND: rules(
                rule(
                    "has(self.namespace)",
                    "namespace is required: a ClusterSecretBackend has no namespace of its own to default to",
                ),
                properties={
                    "namespace": {
                        "description": f"Namespace of the {what}. Required in a ClusterSecretBackend, which"
                        " has no namespace of its own."
                    }
                },
            ),
        }
    )


Namespace = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]


class SecretKeyRef(CamelModel):
    """A key of a Kubernetes Secret holding a credential (the same shape in every provider block)."""

    model_config = ConfigDict(json_schema_extra=_namespace_rules("Secret"))

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the Kubernetes Secret. Its owner opts it in with the annotation"
        f" {ALLOWED_BACKENDS_ANNOTATION} listing this backend (SecretBackend/<name> or"
        " ClusterSecretBackend/<name>).",
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY,
        description="Key in the Secret's data that holds the value.",
    )
    namespace: Namespace | None = None


class ServiceAccountRef(CamelModel):
    """A ServiceAccount whose TokenRequest token proves the operator's identity to a store."""

    model_config = ConfigDict(json_schema_extra=_namespace_rules("ServiceAccount"))

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the ServiceAccount. The operator requests a short-lived token for it through"
        " the TokenRequest API (the ServiceAccount must exist and be opted in with the annotation"
        f" {ALLOWED_BACKENDS_ANNOTATION} listing this backend).",
    )
    namespace: Namespace | None = None
    audiences: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra=merged({"items": {"description": "One audience."}}),
    )


def audiences_doc(default: str) -> Callable[[JsonDict], None]:
    """``json_schema_extra`` for a ``ServiceAccountRef`` field: the text of its audiences, naming the
    audience the provider asks for when none is set."""
    return merged(
        {
            "properties": {
                "audiences": {
                    "description": "Audiences of the requested token (valid"
                    f" {TOKEN_EXPIRATION_SECONDS} s), which the store must accept. Empty: {default}. An"
                    " audience the Kubernetes API server accepts is refused, so the token never works"
                    " against the Kubernetes API."
                }
            }
        }
    )


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider gets from the operator; its only way to credentials.

    Before it reads any credential a provider names every endpoint it will send credentials to
    (``check_endpoint``); credentials then come only from Secrets and ServiceAccounts whose owner opted
    them in for this backend, and tokens only for the store's audience (see ``providers.guard``).
    """

    credentials: CredentialSource
    #: Namespace of the SecretBackend; None for a ClusterSecretBackend (references must name one).
    default_namespace: str | None
    #: Label for messages, like ``SecretBackend team-a/vault``.
    backend_label: str
    #: Extra knobs for tests and tuning (timeouts), never credentials.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The backend this context serves, as a credential's ``allowed-backends`` annotation names it.
    backend: BackendName | None = None
    policy: CredentialPolicy = field(default_factory=CredentialPolicy)
    #: Endpoints the provider declared (and the allowlist admitted); none: no credential is handed out.
    _endpoints: set[Endpoint] = field(default_factory=set, init=False, repr=False, compare=False)

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

    def check_endpoint(self, url: str, what: str) -> None:
        """Declare an endpoint the provider sends credentials to; EndpointNotAllowed if the allowlist
        does not admit it. Call it for every such endpoint before reading any credential."""
        try:
            endpoint = parse_endpoint(url)
        except EndpointError as error:
            raise EndpointNotAllowed(f"{self.backend_label}: {what}: {error}") from None
        if not self.policy.endpoints.allows(endpoint):
            raise EndpointNotAllowed(
                f"{self.backend_label}: {what} {endpoint} is not an allowed store endpoint: the operator"
                " sends credentials only to the public cloud endpoints and to those its administrator"
                " allowed (--allowed-store-endpoint, chart value security.allowedStoreEndpoints)"
            )
        self._endpoints.add(endpoint)

    def _require_endpoint(self, what: str) -> None:
        if not self._endpoints:
            raise EndpointNotAllowed(
                f"{self.backend_label}: {what}: the provider asked for a credential before naming the"
                " endpoint it sends it to (ProviderContext.check_endpoint): refused"
            )

    def _require_opt_in(
        self, annotations: Mapping[str, str], object_kind: str, namespace: str, name: str
    ) -> None:
        if self.backend is None:
            raise CredentialNotAllowed(
                f"{self.backend_label}: no backend identity to check {object_kind} {namespace}/{name} against"
            )
        refusal = opt_in_refusal(
            annotations, self.backend, object_kind=object_kind, namespace=namespace, name=name
        )
        if refusal is not None:
            raise CredentialNotAllowed(f"{self.backend_label}: {refusal}")

    def read_secret(self, ref: SecretKeyRef, what: str) -> bytes:
        """The credential ``ref`` points at; ``what`` names the field for messages."""
        self._require_endpoint(what)
        namespace = self.namespace_for(ref.namespace, what)
        found = self.credentials.read_secret_key(namespace, ref.name, ref.key)
        self._require_opt_in(found.annotations, "Secret", namespace, ref.name)
        if found.value is None:
            raise AuthFailed(
                f"{self.backend_label}: credentials Secret {namespace}/{ref.name} has no key {ref.key!r}"
            )
        return found.value

    def service_account_token(
        self, ref: ServiceAccountRef, what: str, default_audiences: Sequence[str] = ()
    ) -> str:
        """A 600 s token of ``ref`` for the store's audience: ``ref.audiences``, else the provider's."""
        self._require_endpoint(what)
        namespace = self.namespace_for(ref.namespace, what)
        audiences = list(ref.audiences or default_audiences)
        refusal = audience_refusal(audiences, self.policy.api_audiences)
        if refusal is not None:
            raise InvalidBackend(f"{self.backend_label}: {what}.audiences: {refusal}")
        annotations = self.credentials.service_account_annotations(namespace, ref.name)
        self._require_opt_in(annotations, "ServiceAccount", namespace, ref.name)
        return self.credentials.request_token(namespace, ref.name, audiences)

    def use_operator_identity(self, what: str) -> None:
        """Called by a provider before it falls back to the operator pod's own identity (a default
        credential chain, a managed identity): only ClusterSecretBackends may, unless the administrator
        allowed it for every SecretBackend."""
        self._require_endpoint(what)
        if self.default_namespace is None or self.policy.operator_identity_for_secretbackends:
            return
        raise CredentialNotAllowed(
            f"{self.backend_label}: {what}: a SecretBackend cannot use the operator's own identity; give it"
            " credentials from its namespace, or use a ClusterSecretBackend (created by a cluster"
            " administrator, who may also allow it for every SecretBackend with"
            " --allow-operator-identity-for-secretbackends)"
        )


@runtime_checkable
class SecretProvider(Protocol):
    """A client of one configured backend. Built once per backend configuration and reused."""

    def fetch(self, ref: RemoteKey) -> bytes:
        """The value at ``ref``: raw bytes, or JSON for stores whose values are maps (Vault KV)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ValidatingProvider(SecretProvider, Protocol):
    """A provider that proves its credentials work with one cheap call (every built-in provider is one).

    Used for the Ready condition of SecretBackends and ClusterSecretBackends (runtime/backend_status.py),
    like External Secrets Operator's store validation. Optional, so that plugins written before it keep
    working: the backend of a provider without ``validate`` reports Ready=Unknown (NotValidated).
    """

    def validate(self) -> None:
        """Log in if needed and make the cheapest call the store authenticates; read no secret value.

        Raises what ``fetch`` raises for the same failures: AuthFailed for refused credentials,
        BackendUnavailable for a store that cannot be reached, InvalidBackend for a configuration the
        store refuses. An identity that is authenticated but may not make the call (AWS AccessDenied, GCP
        PermissionDenied, Key Vault 403 on a list) counts as proven: reads need other permissions.
        """
        ...


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


class Fetched(bytes):
    """A fetched value with what the store says about it: the version read, when it expires (epoch
    seconds). It is the bytes it holds everywhere bytes go; its repr shows neither value nor length."""

    version: str | None
    expires_at: float | None

    def __new__(cls, value: bytes, *, version: str | None = None, expires_at: float | None = None) -> Self:
        fetched = super().__new__(cls, value)
        fetched.version = version
        fetched.expires_at = expires_at
        return fetched

    def __repr__(self) -> str:
        return f"Fetched(version={self.version!r}, expires_at={self.expires_at!r})"

    __str__ = __repr__


class ExpiryCache:
    """Expiry dates a store keeps apart from the value (AWS's next rotation date, GCP's expireTime), asked
    once per key and version and kept for ``ttl`` seconds: they change with a new version or, rarely, by
    hand. At most ``entries`` are kept (the oldest go first)."""

    def __init__(self, ttl: float = 3600.0, entries: int = 10_000) -> None:
        self._ttl = ttl
        self._entries = entries
        self._known: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    def with_expiry(self, key: str, value: Fetched, load: Callable[[], float | None]) -> Fetched:
        """``value`` with the expiry ``load`` gives (None: it has none); unversioned values are left."""
        if value.version is None:
            return value
        cache_key = (key, value.version)
        now = time.monotonic()
        with self._lock:
            known = self._known.get(cache_key)
        if known is None or now - known[0] >= self._ttl:
            known = (now, load())
            with self._lock:
                if len(self._known) >= self._entries:
                    del self._known[next(iter(self._known))]
                self._known[cache_key] = known
        if known[1] is None:
            return value
        return Fetched(bytes(value), version=value.version, expires_at=known[1])


def version_of(value: bytes) -> str | None:
    return value.version if isinstance(value, Fetched) else None


def expiry_of(value: bytes) -> float | None:
    return value.expires_at if isinstance(value, Fetched) else None


@dataclass(frozen=True)
class CertificateRequest:
    """What to issue: the PKI engine's mount and role, the names, the lifetime (None: the role's)."""

    mount: str
    role: str
    common_name: str
    alt_names: tuple[str, ...] = ()
    ip_sans: tuple[str, ...] = ()
    ttl_seconds: int | None = None


@dataclass(frozen=True)
class IssuedCertificate:
    """PEM text as the store returned it; never printed (``repr`` hides every field)."""

    certificate: bytes = field(repr=False)
    chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    issuing_ca: bytes = field(repr=False)


@runtime_checkable
class CertificateIssuer(SecretProvider, Protocol):
    """A provider whose store issues certificates (Vault/OpenBao PKI)."""

    def issue_certificate(self, request: CertificateRequest) -> IssuedCertificate:
        """Issue one certificate. Raises IssueFailed when the store refuses the request (no such mount
        or role, a name the role does not allow), AuthFailed / BackendUnavailable as ``fetch`` does."""
        ...


@dataclass(frozen=True)
class LeaseRequest:
    """A read of a dynamic secrets engine: the path, GET or POST, the POST body."""

    path: str
    method: str = "GET"
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedLease:
    """Credentials under a lease. ``lease_id`` can act on the lease and ``data`` holds the credentials:
    neither is ever printed (``repr`` hides them)."""

    lease_id: str = field(repr=False)
    duration: int
    renewable: bool
    data: Mapping[str, bytes] = field(repr=False)


@runtime_checkable
class LeaseIssuer(SecretProvider, Protocol):
    """A provider whose store hands out credentials under leases (Vault/OpenBao dynamic secrets)."""

    def issue_lease(self, request: LeaseRequest) -> IssuedLease:
        """New credentials. Raises IssueFailed when the store refuses (no such engine or role, no lease in
        the answer), AuthFailed / BackendUnavailable as ``fetch`` does."""
        ...

    def renew_lease(self, lease_id: str, increment: int | None) -> int:
        """Extend the lease; returns its new duration in seconds (less than asked when its max TTL is
        near). Raises LeaseGone when the store no longer renews it (expired, revoked, not renewable)."""
        ...

    def revoke_lease(self, lease_id: str) -> None:
        """Revoke the lease now (a lease already gone is no error). Raises RevocationFailed."""
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
