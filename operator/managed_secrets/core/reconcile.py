"""One level-based reconcile for create, update, resume, timer and force-sync alike.

Fetch -> render -> compare -> write only on difference. Any failure raises before the first write,
so the target Secret is either fully updated or left exactly as it was.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from managed_secrets import errors
from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.ports import Cluster, OwnerReference, SecretObject
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.render import check_templates, render_templates
from managed_secrets.core.values import extract_fields, pick_property
from managed_secrets.models.backend import Backend, NamespaceCondition
from managed_secrets.models.managedsecret import BackendKind, CreationPolicy, DeletionPolicy, ManagedSecret
from managed_secrets.providers.base import RemoteKey
from managed_secrets.providers.keys import canonicalizer, case_insensitive_keys

log = logging.getLogger(__name__)

API_VERSION = "managedsecrets.io/v1alpha1"
KIND = "ManagedSecret"
#: On every Secret the operator manages; the operator watches Secrets by this label only.
MANAGED_LABEL = "managedsecrets.io/managed"
#: Name of the ManagedSecret (same namespace) that created the Secret.
OWNER_ANNOTATION = "managedsecrets.io/owner"
#: With creationPolicy Merge: which ManagedSecret merged keys in, and which keys (names only).
MERGED_BY_ANNOTATION = "managedsecrets.io/merged-by"
MERGED_KEYS_ANNOTATION = "managedsecrets.io/merged-keys"
#: (backend type, operation, number of keys), once per provider call; for metrics.
FetchObserver = Callable[[str, str, int], None]
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
#: Reads for a resource that fetches once (refreshInterval 0) may be reused for this long.
FETCH_ONCE_MAX_AGE = 300.0


class WriteAction(StrEnum):
    CREATED = "Created"
    UPDATED = "Updated"
    UNCHANGED = "Unchanged"


@dataclass(frozen=True)
class SyncResult:
    secret_name: str
    keys: tuple[str, ...]
    action: WriteAction
    #: The Secret's data differs from what it held before (never true for a first sync).
    data_changed: bool
    data: Mapping[str, bytes] = field(repr=False)


def owner_reference(ms: ManagedSecret) -> OwnerReference:
    return OwnerReference(api_version=API_VERSION, kind=KIND, name=ms.ref.name, uid=ms.ref.uid)


def needs_finalizer(ms: ManagedSecret) -> bool:
    """Cleanup the garbage collector cannot do: Orphan or Merge targets under deletionPolicy Delete."""
    target = ms.spec.target
    return (
        target.deletion_policy is DeletionPolicy.DELETE and target.creation_policy is not CreationPolicy.OWNER
    )


class Reconciler:
    def __init__(
        self,
        cluster: Cluster,
        providers: ProviderPool,
        reads: ReadCache,
        *,
        observe_fetch: FetchObserver | None = None,
    ) -> None:
        self._cluster = cluster
        self._providers = providers
        self._reads = reads
        self._observe_fetch = observe_fetch

    # -- the reconcile ----------------------------------------------------------------------------------

    def sync(
        self,
        ms: ManagedSecret,
        *,
        force: bool = False,
        last_refresh: float | None = None,
        target_known_absent: bool = False,
    ) -> SyncResult:
        """Bring the target Secret in line with the store.

        ``last_refresh``: when this resource last synced (the read cache's clock); cached reads from
        before then are not reused. ``target_known_absent``: this resource never synced, so try to
        create the Secret without reading it first (a 409 falls back to the full check).
        """
        backend, conditions = self.resolve_backend(ms)
        template = ms.spec.target.template
        if template is not None:
            check_templates(template.data)
        canonical = self._canonical_refs(backend, self._remote_refs(ms))
        self._check_key_scope(ms, backend, conditions, canonical)
        refs = list(dict.fromkeys(canonical.values()))
        fetched = self._fetch(ms, backend, refs, force=force, last_refresh=last_refresh)
        data = self._build_data(ms, {ref: fetched[key] for ref, key in canonical.items()})
        return self._write(ms, data, target_known_absent=target_known_absent)

    def resolve_backend(self, ms: ManagedSecret) -> tuple[Backend, list[NamespaceCondition]]:
        ref = ms.spec.backend_ref
        namespace = ms.ref.namespace
        if ref.kind is BackendKind.SECRET_BACKEND:
            backend = self._cluster.get_backend(ref.kind, ref.name, namespace)
            if backend is None:
                raise errors.BackendNotFound(f"SecretBackend {namespace}/{ref.name} not found")
            return backend, []
        backend = self._cluster.get_backend(ref.kind, ref.name, None)
        if backend is None:
            raise errors.BackendNotFound(f"ClusterSecretBackend {ref.name} not found")
        if not backend.conditions:
            return backend, []
        labels = self._cluster.namespace_labels(namespace)
        admitting = [condition for condition in backend.conditions if condition.admits(namespace, labels)]
        if not admitting:
            raise errors.BackendNotAllowed(
                f"ClusterSecretBackend {ref.name} does not admit namespace {namespace} (see its spec.conditions)"
            )
        return backend, admitting

    @staticmethod
    def _remote_refs(ms: ManagedSecret) -> list[RemoteKey]:
        refs = [RemoteKey(item.extract.key, item.extract.version) for item in ms.spec.data_from]
        refs += [RemoteKey(item.remote_ref.key, item.remote_ref.version) for item in ms.spec.data]
        return list(dict.fromkeys(refs))

    def _canonical_refs(self, backend: Backend, refs: Sequence[RemoteKey]) -> dict[RemoteKey, RemoteKey]:
        """Each ref -> the ref as the store resolves it (raises KeyNotAllowed for ambiguous keys): scoping
        checks, and the provider reads, the canonical form only."""
        canonical = canonicalizer(self._providers.get(backend), str(backend.id))
        return {ref: canonical(ref) for ref in refs}

    def _check_key_scope(
        self,
        ms: ManagedSecret,
        backend: Backend,
        conditions: Sequence[NamespaceCondition],
        canonical: Mapping[RemoteKey, RemoteKey],
    ) -> None:
        if not conditions or any(not condition.remote_keys for condition in conditions):
            return
        namespace = ms.ref.namespace
        fold_case = case_insensitive_keys(self._providers.get(backend))
        for ref, key in canonical.items():
            if not any(
                condition.allows_key(namespace, key.key, fold_case=fold_case) for condition in conditions
            ):
                shown = repr(ref.key) if ref.key == key.key else f"{ref.key!r} (canonically {key.key!r})"
                raise errors.KeyNotAllowed(
                    f"{backend.id} does not let namespace {namespace} read key {shown}"
                )

    def _fetch(
        self,
        ms: ManagedSecret,
        backend: Backend,
        refs: Sequence[RemoteKey],
        *,
        force: bool,
        last_refresh: float | None,
    ) -> dict[RemoteKey, bytes]:
        provider = self._providers.get(backend)
        interval = ms.spec.refresh_interval.total_seconds()
        # A first sync may share a read up to half its interval old; later refreshes take any read
        # made after their previous one (``last_refresh``), so a cycle costs one read per key.
        if force:
            max_age = 0.0
        elif last_refresh is not None:
            max_age = interval * 2 if interval > 0 else FETCH_ONCE_MAX_AGE
        else:
            max_age = interval / 2 if interval > 0 else FETCH_ONCE_MAX_AGE
        observe = self._observe_fetch
        results = self._reads.get_many(
            backend.cache_identity,
            provider,
            refs,
            max_age=max_age,
            fetched_after=last_refresh,
            observe=(lambda operation, keys: observe(backend.provider, operation, keys)) if observe else None,
        )
        values: dict[RemoteKey, bytes] = {}
        for ref in refs:  # report the first failure in spec order, so the message is stable
            outcome = results[ref]
            if isinstance(outcome, errors.AuthFailed):
                self._providers.discard(backend)  # credentials are read again on the next try
            if isinstance(outcome, errors.SyncError):
                raise outcome
            values[ref] = outcome
        return values

    @staticmethod
    def _build_data(ms: ManagedSecret, values: Mapping[RemoteKey, bytes]) -> dict[str, bytes]:
        data: dict[str, bytes] = {}
        for item in ms.spec.data_from:  # explicit `data` entries below win over extracted fields
            ref = RemoteKey(item.extract.key, item.extract.version)
            data.update(extract_fields(values[ref], item.extract.key))
        for entry in ms.spec.data:
            remote = entry.remote_ref
            raw = values[RemoteKey(remote.key, remote.version)]
            data[entry.secret_key] = (
                raw if remote.property is None else pick_property(raw, remote.key, remote.property)
            )
        template = ms.spec.target.template
        if template is not None and template.data:
            data = render_templates(template.data, data)
        for name in data:
            if not _SECRET_KEY.match(name):
                raise errors.InvalidSpec(
                    f"{name!r} is not a valid Secret key (letters, digits, '-', '_' and '.' only)"
                )
        return data

    # -- writing the target ------------------------------------------------------------------------------

    def _write(self, ms: ManagedSecret, data: dict[str, bytes], *, target_known_absent: bool) -> SyncResult:
        target = ms.spec.target
        name = ms.target_name
        skip_read = target_known_absent and target.creation_policy is not CreationPolicy.MERGE
        existing = None if skip_read else self._cluster.get(ms.ref.namespace, name)
        if target.creation_policy is CreationPolicy.MERGE:
            return self._merge(ms, existing, data)
        desired = self._desired(ms, data, existing)
        if existing is None:
            try:
                self._cluster.create(desired)
            except errors.TargetExists:
                existing = self._cluster.get(ms.ref.namespace, name)
                if existing is None:
                    raise
                return self._update_owned(ms, existing, self._desired(ms, data, existing))
            log.info("%s: created Secret %s with keys %s", ms.ref, name, sorted(data))
            return SyncResult(name, tuple(sorted(data)), WriteAction.CREATED, data_changed=False, data=data)
        return self._update_owned(ms, existing, desired)

    def _update_owned(self, ms: ManagedSecret, existing: SecretObject, desired: SecretObject) -> SyncResult:
        if (
            existing.labels.get(MANAGED_LABEL) != "true"
            or existing.annotations.get(OWNER_ANNOTATION) != ms.ref.name
        ):
            raise errors.TargetExists(
                f"Secret {existing.name} exists and is not managed by this ManagedSecret; "
                "delete it, rename the target, or set creationPolicy: Merge"
            )
        keys = tuple(sorted(desired.data))
        data_changed = dict(existing.data) != dict(desired.data)
        if not data_changed and _same_metadata(existing, desired) and existing.type == desired.type:
            return SyncResult(
                existing.name, keys, WriteAction.UNCHANGED, data_changed=False, data=desired.data
            )
        if existing.type != desired.type:
            # The type of a Secret is immutable: replace the object.
            self._cluster.delete(existing.namespace, existing.name, uid=existing.uid)
            self._cluster.create(desired)
        else:
            self._cluster.replace(desired)
        log.info("%s: updated Secret %s (data changed: %s)", ms.ref, existing.name, data_changed)
        return SyncResult(
            existing.name, keys, WriteAction.UPDATED, data_changed=data_changed, data=desired.data
        )

    @staticmethod
    def _desired(ms: ManagedSecret, data: Mapping[str, bytes], existing: SecretObject | None) -> SecretObject:
        """Our fields over whatever else is on the object, so labels other tools add survive."""
        target = ms.spec.target
        labels = {**(existing.labels if existing else {}), **target.labels, MANAGED_LABEL: "true"}
        annotations = {
            **(existing.annotations if existing else {}),
            **target.annotations,
            OWNER_ANNOTATION: ms.ref.name,
        }
        foreign_owners = tuple(
            o for o in (existing.owner_references if existing else ()) if o.uid != ms.ref.uid
        )
        owners = foreign_owners
        if target.creation_policy is CreationPolicy.OWNER and target.deletion_policy is DeletionPolicy.DELETE:
            owners = (*foreign_owners, owner_reference(ms))
        return SecretObject(
            namespace=ms.ref.namespace,
            name=ms.target_name,
            type=target.type,
            data=dict(data),
            labels=labels,
            annotations=annotations,
            owner_references=owners,
            resource_version=existing.resource_version if existing else None,
            uid=existing.uid if existing else None,
        )

    def _merge(self, ms: ManagedSecret, existing: SecretObject | None, data: dict[str, bytes]) -> SyncResult:
        name = ms.target_name
        if existing is None:
            raise errors.TargetNotFound(
                f"Secret {name} does not exist; creationPolicy Merge only adds keys to it"
            )
        merged_by = existing.annotations.get(MERGED_BY_ANNOTATION)
        if merged_by not in (None, ms.ref.name):
            raise errors.TargetExists(
                f"Secret {name} already receives merged keys from ManagedSecret {merged_by}"
            )
        previous_keys = _split_keys(existing.annotations.get(MERGED_KEYS_ANNOTATION))
        new_data = {k: v for k, v in existing.data.items() if k not in previous_keys or k in data}
        new_data.update(data)
        annotations = {
            **existing.annotations,
            **ms.spec.target.annotations,
            MERGED_BY_ANNOTATION: ms.ref.name,
            MERGED_KEYS_ANNOTATION: ",".join(sorted(data)),
        }
        labels = {**existing.labels, **ms.spec.target.labels}
        desired = replace(existing, data=new_data, annotations=annotations, labels=labels)
        keys = tuple(sorted(data))
        data_changed = dict(existing.data) != new_data
        if not data_changed and _same_metadata(existing, desired):
            return SyncResult(name, keys, WriteAction.UNCHANGED, data_changed=False, data=data)
        self._cluster.replace(desired)
        log.info("%s: merged keys %s into Secret %s", ms.ref, list(keys), name)
        first_merge = merged_by is None
        return SyncResult(
            name, keys, WriteAction.UPDATED, data_changed=data_changed and not first_merge, data=data
        )

    # -- deletion ----------------------------------------------------------------------------------------

    def cleanup(self, ms: ManagedSecret) -> None:
        """Run when a ManagedSecret that needs a finalizer is deleted."""
        if not needs_finalizer(ms):
            return
        existing = self._cluster.get(ms.ref.namespace, ms.target_name)
        if existing is None:
            return
        if ms.spec.target.creation_policy is CreationPolicy.MERGE:
            if existing.annotations.get(MERGED_BY_ANNOTATION) != ms.ref.name:
                return
            merged = _split_keys(existing.annotations.get(MERGED_KEYS_ANNOTATION))
            annotations = {
                k: v
                for k, v in existing.annotations.items()
                if k not in (MERGED_BY_ANNOTATION, MERGED_KEYS_ANNOTATION)
            }
            data = {k: v for k, v in existing.data.items() if k not in merged}
            self._cluster.replace(replace(existing, data=data, annotations=annotations))
            log.info("%s: removed merged keys %s from Secret %s", ms.ref, sorted(merged), existing.name)
            return
        if (
            existing.labels.get(MANAGED_LABEL) == "true"
            and existing.annotations.get(OWNER_ANNOTATION) == ms.ref.name
        ):
            self._cluster.delete(existing.namespace, existing.name, uid=existing.uid)
            log.info("%s: deleted Secret %s", ms.ref, existing.name)


def _same_metadata(existing: SecretObject, desired: SecretObject) -> bool:
    return (
        dict(existing.labels) == dict(desired.labels)
        and dict(existing.annotations) == dict(desired.annotations)
        and set(existing.owner_references) == set(desired.owner_references)
    )


def _split_keys(text: str | None) -> set[str]:
    return {key for key in (text or "").split(",") if key}
