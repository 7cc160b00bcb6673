"""Resolve ManagedSecret manifests into the Secrets the operator would write, with the operator's own core.

Each ManagedSecret goes through ``core.reconcile.Reconciler.sync`` (the same providers, properties,
extract, templates in the same sandbox and render limits, ClusterSecretBackend conditions and key scoping)
against a ``LocalCluster``. What differs from the cluster is only where credentials come from (the caller's,
``credentials``) and where the result goes (memory). Reads are shared: each remote key is read once.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from managed_secrets.api import CLUSTER_SECRET_BACKEND_KIND, GROUP, MANAGED_SECRET_KIND, SECRET_BACKEND_KIND
from managed_secrets.check import Problem, SourceDocument, read_manifests
from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.ports import ManagedSecretInfo, SecretObject
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.reconcile import Reconciler
from managed_secrets.core.render import DEFAULT_LIMITS
from managed_secrets.errors import SyncError
from managed_secrets.local.cluster import LocalCluster
from managed_secrets.local.credentials import CALLER_TOKEN_KEY, CallerCredentials
from managed_secrets.local.overrides import NO_OVERRIDES, BackendOverride, Overrides, merge_patch
from managed_secrets.models.backend import Backend, BackendId
from managed_secrets.models.managedsecret import BackendKind, CreationPolicy, ManagedSecret
from managed_secrets.models.parse import parse_backend, parse_managed_secret
from managed_secrets.providers.guard import BackendName, CredentialPolicy, EndpointAllowlist, EndpointError
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.runtime.render_pool import RenderPool

DEFAULT_NAMESPACE = "default"
#: A developer's own servers: credentials may always go to loopback (besides the public cloud endpoints).
LOOPBACK_ENDPOINTS = (
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://localhost:*",
    "https://localhost:*",
)
#: The field a sandboxed backend's values without property are read from.
SANDBOX_VALUE_FIELD = "value"
_BACKEND_KINDS = (SECRET_BACKEND_KIND, CLUSTER_SECRET_BACKEND_KIND)
#: Reserved metadata of the operator (ownership proofs, markers): not part of what an application reads.
_OPERATOR_PREFIX = f"{GROUP}/"


@dataclass(frozen=True)
class ResolvedSecret:
    source: str  # file:line of the ManagedSecret
    managed_secret: str  # namespace/name
    secret: SecretObject

    @property
    def data(self) -> Mapping[str, bytes]:
        return self.secret.data

    @property
    def labels(self) -> dict[str, str]:
        return {k: v for k, v in self.secret.labels.items() if not k.startswith(_OPERATOR_PREFIX)}

    @property
    def annotations(self) -> dict[str, str]:
        return {k: v for k, v in self.secret.annotations.items() if not k.startswith(_OPERATOR_PREFIX)}


@dataclass(frozen=True)
class Failure:
    """One resource that could not be resolved: its manifest's place, the operator's stable reason."""

    source: str
    what: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.what}: {self.reason}: {self.message}"


@dataclass
class Resolution:
    secrets: list[ResolvedSecret] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: What `managed-secrets check` refuses in the manifests; nothing is resolved then.
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems

    def errors(self) -> list[str]:
        return [str(p) for p in self.problems] + [str(f) for f in self.failures]


@dataclass(frozen=True)
class Manifests:
    """The resources of interest in a set of manifest files, namespaces defaulted."""

    managed_secrets: list[SourceDocument]
    backends: list[SourceDocument]
    namespace_labels: dict[str, dict[str, str]]
    problems: list[Problem]


def _group(body: Mapping[str, Any]) -> str:
    return str(body.get("apiVersion") or "").rpartition("/")[0]


def _with_namespace(document: SourceDocument, namespace: str) -> SourceDocument:
    body = copy.deepcopy(document.body)
    meta = body.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    # The reconcile core keys ownership proofs by uid: a stable one per resource.
    meta.setdefault(
        "uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"managed-secrets:{meta['namespace']}/{meta.get('name')}"))
    )
    return SourceDocument(document.file, document.line, body)


def load(paths: Sequence[str], default_namespace: str = DEFAULT_NAMESPACE) -> Manifests:
    documents, problems = read_manifests(paths)
    managed: list[SourceDocument] = []
    backends: list[SourceDocument] = []
    labels: dict[str, dict[str, str]] = {}
    for document in documents:
        body, kind = document.body, document.body.get("kind")
        if kind == "Namespace" and body.get("apiVersion") == "v1":
            meta = body.get("metadata") or {}
            labels[str(meta.get("name"))] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        elif _group(body) != GROUP:
            continue
        elif kind == MANAGED_SECRET_KIND:
            managed.append(_with_namespace(document, default_namespace))
        elif kind == SECRET_BACKEND_KIND:
            backends.append(_with_namespace(document, default_namespace))
        elif kind == CLUSTER_SECRET_BACKEND_KIND:
            backends.append(document)
    return Manifests(managed, backends, labels, problems)


class _LocalBackends:
    """The manifests' backends as the local run uses them: overrides applied, the caller's credentials."""

    def __init__(self, overrides: Overrides, credentials: CallerCredentials) -> None:
        self.overrides = overrides
        self.credentials = credentials
        self.backends: list[Backend] = []
        self.options: dict[str, dict[str, Any]] = {}
        #: str(backend id) of the backends a sandbox's Vault KV stands in for (another store's)
        self.sandboxed: set[str] = set()

    def add(self, document: SourceDocument) -> None:
        original = parse_backend(document.body)
        entry = self.overrides.for_backend(original)
        body = copy.deepcopy(document.body)
        if entry is not None and entry.patch:
            body["spec"] = merge_patch(body.get("spec") or {}, entry.patch)
        backend = parse_backend(body)
        if entry is not None:
            self.options[str(backend.id)] = dict(entry.options)
            if entry.sandboxed and original.provider != "vault":
                self.sandboxed.add(str(backend.id))
        # After the overrides' options: they tune a connection, they never bring back the manifest's auth.
        self.backends.append(self._with_caller_credentials(backend, entry))

    def _with_caller_credentials(self, backend: Backend, entry: BackendOverride | None) -> Backend:
        config = dict(backend.config)
        name = str(BackendName(backend.id.kind, backend.id.name))
        if backend.provider == "vault":
            ref: dict[str, Any] = {
                "name": self.credentials.token_secret(name, entry.vault_token if entry else None),
                "key": CALLER_TOKEN_KEY,
            }
            if backend.id.kind is BackendKind.CLUSTER_SECRET_BACKEND:
                ref["namespace"] = "local"
            config["auth"] = {"token": {"secretRef": ref}}
        elif backend.provider in ("aws", "gcp"):
            config.pop("auth", None)  # the SDK's default chain / application default credentials
        elif backend.provider == "azure":
            self.options.setdefault(str(backend.id), {})["azure_caller_credential"] = True
        return backend.model_copy(update={"config": config})


def _sandboxed_spec(body: dict[str, Any]) -> dict[str, Any]:
    """A ManagedSecret as read from a Vault KV standing in for a store of plain values: a remoteRef without
    property reads the field ``value``; versions are that store's, so the latest is read."""
    body = copy.deepcopy(body)
    spec = body.get("spec") or {}
    for entry in spec.get("data") or []:
        ref = entry.get("remoteRef") or {}
        ref.pop("version", None)
        ref.setdefault("property", SANDBOX_VALUE_FIELD)
    for entry in spec.get("dataFrom") or []:
        (entry.get("extract") or {}).pop("version", None)
    return body


def _selected(ms: ManagedSecret, namespace: str | None, only: Sequence[str]) -> bool:
    if namespace is not None and ms.ref.namespace != namespace:
        return False
    return not only or ms.ref.name in only or str(ms.ref) in only


@contextmanager
def resolver(
    overrides: Overrides = NO_OVERRIDES,
    *,
    allowed_endpoints: Sequence[str] = (),
    provider_options: Mapping[str, Any] | None = None,
) -> Iterator[Resolver]:
    pool = RenderPool(DEFAULT_LIMITS, processes=1)
    opened = Resolver(overrides, allowed_endpoints, provider_options or {}, pool)
    try:
        yield opened
    finally:
        opened.close()
        pool.close()


class Resolver:
    def __init__(
        self,
        overrides: Overrides,
        allowed_endpoints: Sequence[str],
        provider_options: Mapping[str, Any],
        renderer: RenderPool,
    ) -> None:
        self._overrides = overrides
        patterns = (*LOOPBACK_ENDPOINTS, *overrides.allowed_endpoints, *allowed_endpoints)
        try:
            self._endpoints = EndpointAllowlist.from_patterns(patterns)
        except EndpointError as error:
            raise ValueError(f"allowed endpoint: {error}") from None
        self._provider_options = provider_options
        self._renderer = renderer
        #: Each resolve()'s reconciler and providers, kept open for revoke_leases(); closed by close().
        self._runs: list[tuple[Reconciler, ProviderPool, list[ManagedSecret]]] = []

    def revoke_leases(self) -> list[str]:
        """Revoke the leases of the dynamic ManagedSecrets resolved (``revokeOnDelete``), as deleting them
        in the cluster would: for exec, the credentials live as long as the process. Returns problems."""
        problems: list[str] = []
        for reconciler, _providers, resolved in self._runs:
            for ms in resolved:
                if ms.spec.dynamic is None or not ms.spec.dynamic.revoke_on_delete:
                    continue
                try:
                    reconciler.cleanup(ms)
                except SyncError as error:
                    problems.append(
                        f"ManagedSecret {ms.ref}: lease not revoked: {error.reason}: {error.message}"
                    )
        return problems

    def close(self) -> None:
        for _reconciler, providers, _resolved in self._runs:
            providers.close()
        self._runs.clear()

    def resolve(
        self,
        paths: Sequence[str],
        *,
        namespace: str | None = None,
        only: Sequence[str] = (),
    ) -> Resolution:
        manifests = load(paths, namespace or DEFAULT_NAMESPACE)
        result = Resolution(problems=list(manifests.problems))
        if result.problems:
            return result
        credentials = CallerCredentials()
        local = _LocalBackends(self._overrides, credentials)
        for document in manifests.backends:
            try:
                local.add(document)
            except SyncError as error:
                result.failures.append(
                    Failure(document.where, _label(document.body), error.reason, error.message)
                )
        chosen: list[tuple[SourceDocument, ManagedSecret]] = []
        for document in manifests.managed_secrets:
            try:
                ms = parse_managed_secret(document.body)
                if _selected(ms, namespace, only) and self._is_sandboxed(ms, local):
                    ms = parse_managed_secret(_sandboxed_spec(document.body))
            except SyncError as error:
                result.failures.append(
                    Failure(document.where, _label(document.body), error.reason, error.message)
                )
                continue
            if _selected(ms, namespace, only):
                chosen.append((document, ms))
        missing = set(only) - {n for _, ms in chosen for n in (ms.ref.name, str(ms.ref))}
        for name in sorted(missing):
            result.failures.append(
                Failure("-", f"ManagedSecret {name}", "NotFound", "not in the manifests given")
            )
        infos = {
            (ms.ref.namespace, ms.ref.name): ManagedSecretInfo(
                ms.ref.uid, ms.target_name, ms.spec.target.creation_policy.value
            )
            for _, ms in chosen
        }
        cluster = LocalCluster(local.backends, manifests.namespace_labels, infos, credentials)
        policy = CredentialPolicy(endpoints=self._endpoints, operator_identity_for_secretbackends=True)
        providers = ProviderPool(
            ProviderRegistry(),
            cluster,
            options=self._provider_options,
            policy=policy,
            backend_options=local.options,
        )
        reconciler = Reconciler(cluster, providers, ReadCache(), renderer=self._renderer)
        self._runs.append((reconciler, providers, [ms for _, ms in chosen]))
        for document, ms in chosen:
            self._resolve_one(reconciler, cluster, document, ms, result)
        return result

    @staticmethod
    def _is_sandboxed(ms: ManagedSecret, local: _LocalBackends) -> bool:
        ref = ms.spec.backend_ref
        namespace = ms.ref.namespace if ref.kind is BackendKind.SECRET_BACKEND else None
        return str(BackendId(kind=ref.kind, name=ref.name, namespace=namespace)) in local.sandboxed

    @staticmethod
    def _resolve_one(
        reconciler: Reconciler,
        cluster: LocalCluster,
        document: SourceDocument,
        ms: ManagedSecret,
        result: Resolution,
    ) -> None:
        if ms.spec.target.creation_policy is CreationPolicy.MERGE:
            # Merge adds keys to a Secret someone else made; locally that Secret is empty.
            cluster.put_existing(SecretObject(ms.ref.namespace, ms.target_name))
        try:
            reconciler.sync(ms)
        except SyncError as error:
            result.failures.append(
                Failure(document.where, f"ManagedSecret {ms.ref}", error.reason, error.message)
            )
            return
        secret = cluster.get(ms.ref.namespace, ms.target_name)
        if secret is not None:
            result.secrets.append(ResolvedSecret(document.where, str(ms.ref), secret))


def _label(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{body.get('kind')} {namespace + '/' if namespace else ''}{meta.get('name')}"


def resolve(
    paths: Sequence[str],
    *,
    namespace: str | None = None,
    only: Sequence[str] = (),
    overrides: Overrides = NO_OVERRIDES,
    allowed_endpoints: Sequence[str] = (),
    provider_options: Mapping[str, Any] | None = None,
) -> Resolution:
    """The Secrets the operator would write for the ManagedSecrets in ``paths`` (files or folders)."""
    with resolver(overrides, allowed_endpoints=allowed_endpoints, provider_options=provider_options) as r:
        return r.resolve(paths, namespace=namespace, only=only)
