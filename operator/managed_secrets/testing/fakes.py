"""A fake cluster for the core's ports, so the Reconciler (and the runtime around it) runs without a
control plane.

``FakeCluster`` implements ``core.ports.Cluster`` (Secrets, backend and namespace lookups, ManagedSecret
lookups, credentials) and, structurally, the runtime's status and event ports; ``workload_api()`` is the
workload port. It keeps the API
server's rules where the core depends on them:

- every write gets a new ``resourceVersion`` from one counter (like etcd's revision) and each object a
  ``uid`` when created;
- ``create`` of an existing name is a 409 (TargetExists); ``replace`` and ``delete`` with a
  ``resource_version`` or ``uid`` that is not the stored one are a 409 (WriteFailed), as preconditions are;
- ``replace`` of a missing Secret is a 404 (WriteFailed), ``delete`` of one succeeds quietly (the real
  client treats 404 as done);
- the type of a Secret and the data of an immutable one cannot change, and ``immutable`` cannot be unset
  (422, TargetRejected); data the built-in validation refuses is a 422 too (core/secret_rules.py);
- reads return what was stored; objects are frozen, so a caller cannot change the store behind its back.

Failures can be injected per verb (``fail_next``), and every write is recorded in ``writes``.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from managed_secrets import errors
from managed_secrets.api import RESTARTED_FOR_ANNOTATION
from managed_secrets.core.ports import ManagedSecretInfo, SecretObject
from managed_secrets.core.restarts import DISCOVERED_KINDS, Workload, WorkloadNotFound, WorkloadRef
from managed_secrets.core.secret_rules import secret_problems
from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind, ManagedSecretRef, RolloutKind
from managed_secrets.models.parse import parse_backend
from managed_secrets.providers.base import CredentialSource, CredentialValue, ProviderContext
from managed_secrets.providers.guard import BackendName, CredentialPolicy, EndpointAllowlist

SecretKey = tuple[str, str]
BackendKey = tuple[BackendKind, str | None, str]
#: Verbs ``fail_next`` can make fail.
VERBS = frozenset(
    {"get", "create", "replace", "delete", "check_create", "get_backend", "list", "restart", "patch_status"}
)


@dataclass(frozen=True)
class Write:
    """One write the fake accepted: ``verb`` is create, replace or delete."""

    verb: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Event:
    involved: Mapping[str, str]
    reason: str
    message: str
    type: str = "Normal"


@dataclass(frozen=True)
class Restart:
    ref: WorkloadRef
    key: str
    at: str


@dataclass
class _ManagedSecret:
    info: ManagedSecretInfo
    resource_version: str
    status: dict[str, Any] = field(default_factory=dict)
    finalizers: list[str] = field(default_factory=list)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: maps merge, ``None`` deletes, anything else replaces."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


class FakeCluster:
    """An in-memory API server for the core's ports (thread-safe: the controller calls from workers)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._revision = itertools.count(1)
        self._uids = itertools.count(1)
        self.secrets: dict[SecretKey, SecretObject] = {}
        self.backends: dict[BackendKey, Backend | errors.SyncError] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.managed_secrets: dict[SecretKey, _ManagedSecret] = {}
        self.service_accounts: dict[SecretKey, dict[str, str]] = {}
        self.workloads: dict[WorkloadRef, Workload] = {}
        self.writes: list[Write] = []
        self.events: list[Event] = []
        self.restarts: list[Restart] = []
        self.token_requests: list[tuple[str, str, tuple[str, ...]]] = []
        self._failures: dict[str, list[Exception]] = defaultdict(list)

    # -- seeding -----------------------------------------------------------------------------------------

    def _stamp(self, secret: SecretObject, uid: str | None = None) -> SecretObject:
        return replace(
            secret,
            uid=uid or f"00000000-0000-4000-8000-{next(self._uids):012d}",
            resource_version=str(next(self._revision)),
        )

    def add_secret(self, secret: SecretObject) -> SecretObject:
        """Store a Secret as someone else created it (not recorded in ``writes``); returns it as stored."""
        with self._lock:
            stored = self._stamp(secret)
            self.secrets[(secret.namespace, secret.name)] = stored
            return stored

    def add_backend(self, body: Mapping[str, Any]) -> Backend | None:
        """A SecretBackend or ClusterSecretBackend manifest; a malformed one makes lookups raise its error."""
        meta = body.get("metadata") or {}
        kind = BackendKind(body.get("kind", BackendKind.SECRET_BACKEND.value))
        namespace = meta.get("namespace") if kind is BackendKind.SECRET_BACKEND else None
        body = {**body, "metadata": {"uid": f"backend-{next(self._uids)}", "generation": 1, **meta}}
        parsed: Backend | errors.SyncError
        try:
            parsed = parse_backend(body)
        except errors.SyncError as error:
            parsed = error
        with self._lock:
            self.backends[(kind, namespace, meta.get("name", ""))] = parsed
        return parsed if isinstance(parsed, Backend) else None

    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str]) -> None:
        with self._lock:
            self.namespaces[namespace] = dict(labels)

    def add_managed_secret(
        self,
        namespace: str,
        name: str,
        uid: str,
        *,
        secret_name: str | None = None,
        creation_policy: str = "Owner",
    ) -> str:
        """Make a ManagedSecret known to ``managed_secret_info`` (merge claims check that it still exists),
        to status patches and to finalizer updates; returns its resourceVersion."""
        with self._lock:
            version = str(next(self._revision))
            self.managed_secrets[(namespace, name)] = _ManagedSecret(
                ManagedSecretInfo(uid=uid, secret_name=secret_name or name, creation_policy=creation_policy),
                version,
            )
            return version

    def add_service_account(
        self, namespace: str, name: str, annotations: Mapping[str, str] | None = None
    ) -> None:
        with self._lock:
            self.service_accounts[(namespace, name)] = dict(annotations or {})

    def add_workload(self, workload: Workload) -> None:
        with self._lock:
            self.workloads[workload.ref] = workload

    def fail_next(self, verb: str, error: Exception, times: int = 1) -> None:
        """The next ``times`` calls of ``verb`` raise ``error`` (before doing anything)."""
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}; one of {sorted(VERBS)}")
        with self._lock:
            self._failures[verb].extend([error] * times)

    def _maybe_fail(self, verb: str) -> None:
        pending = self._failures.get(verb)
        if pending:
            raise pending.pop(0)

    def writes_of(self, namespace: str, name: str) -> list[str]:
        return [w.verb for w in self.writes if (w.namespace, w.name) == (namespace, name)]

    # -- SecretStore -------------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> SecretObject | None:
        with self._lock:
            self._maybe_fail("get")
            return self.secrets.get((namespace, name))

    @staticmethod
    def _validate(secret: SecretObject, what: str) -> None:
        problems = secret_problems(secret)
        if problems:
            raise errors.TargetRejected(f"{what}: the apiserver rejected it: {'; '.join(problems)}")

    def create(self, secret: SecretObject) -> SecretObject:
        with self._lock:
            self._maybe_fail("create")
            if (secret.namespace, secret.name) in self.secrets:
                raise errors.TargetExists(f"Secret {secret.name} appeared while it was being created")
            self._validate(secret, f"creating Secret {secret.name}")
            stored = self._stamp(secret)
            self.secrets[(secret.namespace, secret.name)] = stored
            self.writes.append(Write("create", secret.namespace, secret.name))
            return stored

    def replace(self, secret: SecretObject) -> SecretObject:
        what = f"updating Secret {secret.name}"
        with self._lock:
            self._maybe_fail("replace")
            current = self.secrets.get((secret.namespace, secret.name))
            if current is None:
                raise errors.WriteFailed(f"{what}: 404 NotFound")
            if secret.resource_version is not None and secret.resource_version != current.resource_version:
                raise errors.WriteFailed(
                    f"{what}: 409 Conflict: the object has been modified; please apply your changes to the"
                    " latest version and try again"
                )
            if secret.uid is not None and secret.uid != current.uid:
                raise errors.WriteFailed(f"{what}: 409 Conflict: Precondition failed: UID in precondition")
            refusals = []
            if secret.type != current.type:
                refusals.append("type: field is immutable")
            if current.immutable and not secret.immutable:
                refusals.append("immutable: field is immutable when `immutable` is set")
            if current.immutable and dict(secret.data) != dict(current.data):
                refusals.append("data: field is immutable when `immutable` is set")
            if refusals:
                raise errors.TargetRejected(f"{what}: the apiserver rejected it: {'; '.join(refusals)}")
            self._validate(secret, what)
            stored = self._stamp(secret, uid=current.uid)
            self.secrets[(secret.namespace, secret.name)] = stored
            self.writes.append(Write("replace", secret.namespace, secret.name))
            return stored

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        with self._lock:
            self._maybe_fail("delete")
            current = self.secrets.get((namespace, name))
            if current is None:
                return
            if (uid is not None and uid != current.uid) or (
                resource_version is not None and resource_version != current.resource_version
            ):
                raise errors.WriteFailed(
                    f"deleting Secret {namespace}/{name}: 409 Conflict: Precondition failed"
                )
            del self.secrets[(namespace, name)]
            self.writes.append(Write("delete", namespace, name))

    def check_create(self, secret: SecretObject) -> None:
        with self._lock:
            self._maybe_fail("check_create")
        problems = secret_problems(secret)
        if problems:
            raise errors.TargetRejected(
                f"the API server would refuse Secret {secret.name} (type {secret.type}): {'; '.join(problems)}"
            )

    # -- ClusterReader -----------------------------------------------------------------------------------

    def get_backend(self, kind: BackendKind, name: str, namespace: str | None) -> Backend | None:
        with self._lock:
            self._maybe_fail("get_backend")
            found = self.backends.get((kind, namespace if kind is BackendKind.SECRET_BACKEND else None, name))
        if isinstance(found, errors.SyncError):
            raise found
        return found

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        with self._lock:
            return dict(self.namespaces.get(namespace, {}))

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        with self._lock:
            found = self.managed_secrets.get((namespace, name))
            return found.info if found else None

    # -- CredentialSource --------------------------------------------------------------------------------

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        with self._lock:
            secret = self.secrets.get((namespace, name))
        if secret is None:
            raise errors.AuthFailed(f"credentials Secret {namespace}/{name} not found")
        return CredentialValue(dict(secret.annotations), secret.data.get(key))

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        with self._lock:
            annotations = self.service_accounts.get((namespace, name))
        if annotations is None:
            raise errors.AuthFailed(f"ServiceAccount {namespace}/{name} not found")
        return dict(annotations)

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        """A made-up token naming the account and audiences (no store accepts it but a fake one)."""
        with self._lock:
            if (namespace, service_account) not in self.service_accounts:
                raise errors.AuthFailed(f"ServiceAccount {namespace}/{service_account} not found")
            self.token_requests.append((namespace, service_account, tuple(audiences)))
        return f"fake-token.{namespace}.{service_account}.{','.join(audiences)}"

    # -- workloads (runtime.rollout_stage.WorkloadAPI) --------------------------------------------------------

    def list_workloads(self, namespace: str) -> list[Workload]:
        with self._lock:
            self._maybe_fail("list")
            return sorted(
                (
                    w
                    for w in self.workloads.values()
                    if w.ref.namespace == namespace and w.ref.kind in DISCOVERED_KINDS
                ),
                key=lambda w: w.ref,
            )

    def get_workload(self, ref: WorkloadRef) -> Workload:
        with self._lock:
            found = self.workloads.get(ref)
        if found is None:
            raise WorkloadNotFound(f"{ref} in {ref.namespace} not found")
        return found

    def restart_workload(self, workload: Workload, key: str, now: str) -> None:
        """The restart annotation on the pod template (on an Argo Rollout: on the Rollout itself)."""
        with self._lock:
            self._maybe_fail("restart")
            current = self.workloads.get(workload.ref)
            if current is None:
                raise WorkloadNotFound(f"patching {workload.ref} in {workload.ref.namespace}: not found")
            if workload.ref.kind is RolloutKind.ROLLOUT:
                changed = replace(current, annotations={**current.annotations, RESTARTED_FOR_ANNOTATION: key})
            else:
                changed = replace(
                    current,
                    template_annotations={**current.template_annotations, RESTARTED_FOR_ANNOTATION: key},
                )
            self.workloads[workload.ref] = changed
            self.restarts.append(Restart(workload.ref, key, now))

    def workload_api(self) -> FakeWorkloads:
        """The workload port (``list``, ``get``, ``restart``); apart, as its ``get`` is not the Secrets'."""
        return FakeWorkloads(self)

    # -- status and events (runtime ports) ---------------------------------------------------------------

    def _managed(self, ref: ManagedSecretRef) -> _ManagedSecret | None:
        return self.managed_secrets.get((ref.namespace, ref.name))

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        with self._lock:
            self._maybe_fail("patch_status")
            found = self._managed(ref)
            if found is not None:  # deleted meanwhile: a 404, ignored like the real writer does
                found.status = merge_patch(found.status, patch)
                found.resource_version = str(next(self._revision))

    def status_of(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            found = self.managed_secrets.get((namespace, name))
            return dict(found.status) if found else {}

    def finalizers_of(self, namespace: str, name: str) -> list[str]:
        with self._lock:
            found = self.managed_secrets.get((namespace, name))
            return list(found.finalizers) if found else []

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None:
        with self._lock:
            found = self._managed(ref)
            if found is None:
                return  # deleted meanwhile (a 404), as the real writer treats it
            if resource_version != found.resource_version:
                raise errors.WriteFailed(
                    f"updating finalizers of {ref}: 409 Conflict: the object has been modified"
                )
            found.finalizers = list(finalizers)
            found.resource_version = str(next(self._revision))

    def post_event(
        self, involved: Mapping[str, str], *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        with self._lock:
            self.events.append(Event(dict(involved), reason, message[:1024], type_))


class FakeWorkloads:
    """``FakeCluster``'s workloads behind the ``list`` / ``get`` / ``restart`` names of the workload port."""

    def __init__(self, cluster: FakeCluster) -> None:
        self._cluster = cluster

    def list(self, namespace: str) -> list[Workload]:
        return self._cluster.list_workloads(namespace)

    def get(self, ref: WorkloadRef) -> Workload:
        return self._cluster.get_workload(ref)

    def restart(self, workload: Workload, key: str, now: str) -> None:
        self._cluster.restart_workload(workload, key, now)


def provider_context(
    credentials: CredentialSource | None = None,
    *,
    backend: str = "test",
    namespace: str | None = "team-a",
    options: Mapping[str, Any] | None = None,
    allowed_endpoints: Sequence[str] = (),
) -> ProviderContext:
    """The context the operator hands a provider factory, for the SecretBackend ``namespace/backend`` (a
    ClusterSecretBackend when ``namespace`` is None). Credentials come from ``credentials`` (a
    FakeCluster, say) under the same guards as in the operator; ``allowed_endpoints`` are the store
    endpoints (``scheme://host[:port]`` patterns) the administrator would allow."""
    kind = BackendKind.SECRET_BACKEND if namespace else BackendKind.CLUSTER_SECRET_BACKEND
    return ProviderContext(
        credentials=credentials or FakeCluster(),
        default_namespace=namespace,
        backend_label=f"{kind.value} {namespace + '/' if namespace else ''}{backend}",
        options=dict(options or {}),
        backend=BackendName(kind, backend),
        policy=CredentialPolicy(endpoints=EndpointAllowlist.from_patterns(allowed_endpoints)),
    )
