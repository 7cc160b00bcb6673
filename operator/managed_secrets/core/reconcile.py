"""One level-based reconcile for create, update, resume, timer and force-sync alike.

Fetch -> render -> compare -> write only on difference. Any failure raises before the first write,
so the target Secret is either fully updated or left exactly as it was.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from managed_secrets import errors
from managed_secrets.api import (
    API_VERSION,
    CERTIFICATE_REQUEST_ANNOTATION,
    LEASE_ANNOTATION,
    LEASE_PROOF_ANNOTATION,
    MANAGED_LABEL,
    MERGE_PROOF_ANNOTATION,
    MERGED_BY_ANNOTATION,
    MERGED_KEYS_ANNOTATION,
    OWNER_ANNOTATION,
    OWNER_PROOF_ANNOTATION,
)
from managed_secrets.core import leases, restarts
from managed_secrets.core.certificates import (
    leaf_info,
    request_hash,
    request_of,
    rfc3339,
    secret_data,
    still_good,
)
from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.ownership import (
    KIND,
    MERGE_CLAIM_ANNOTATIONS,
    MERGED_LABEL_VALUE,
    MergeClaim,
    lease_data_proof,
    lease_state_proof,
    legacy_owned,
    merge_claim,
    merge_proof,
    not_owned_message,
    owner_marker,
    owner_proof,
    proves_owner,
    unreserved,
)
from managed_secrets.core.ports import Cluster, OperatorKey, OwnerReference, SecretObject
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.render import InProcessRenderer, Renderer
from managed_secrets.core.secret_rules import check_secret
from managed_secrets.core.values import decode, extract_fields, pick_property
from managed_secrets.models.backend import Backend, NamespaceCondition
from managed_secrets.models.managedsecret import (
    BackendKind,
    CreationPolicy,
    DeletionPolicy,
    DynamicSource,
    ManagedSecret,
    ManagedSecretRef,
    RefreshPolicy,
)
from managed_secrets.providers.base import (
    CertificateIssuer,
    IssuedLease,
    LeaseIssuer,
    LeaseRequest,
    RemoteKey,
    SecretProvider,
    expiry_of,
    version_of,
)
from managed_secrets.providers.keys import canonicalizer, case_insensitive_keys

log = logging.getLogger(__name__)
T = TypeVar("T")

#: (backend type, operation, number of keys), once per provider call; for metrics.
FetchObserver = Callable[[str, str, int], None]
#: (operation: issue / renew / revoke, result: ok / error), once per lease call; for metrics.
LeaseObserver = Callable[[str, str], None]
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
#: Reads for a resource that fetches once (refreshInterval 0) may be reused for this long.
FETCH_ONCE_MAX_AGE = 300.0


class WriteAction(StrEnum):
    CREATED = "Created"
    UPDATED = "Updated"
    UNCHANGED = "Unchanged"


@dataclass(frozen=True)
class SourceVersion:
    """What a Secret holds of one remote key: the version read, a certificate's serial, a lease's hash
    (never the lease id), or None where the store has no versions (KV v1)."""

    key: str
    version: str | None


class ChangeCause(StrEnum):
    """Why the reconciler changed a Secret's data beyond a plain read (the controller knows the rest)."""

    ISSUE = "issue"
    REISSUE = "re-issue"
    RENEWAL = "renewal"


@dataclass(frozen=True)
class SyncResult:
    secret_name: str
    keys: tuple[str, ...]
    action: WriteAction
    #: The Secret's data differs from what it held before (never true for a first sync).
    data_changed: bool
    data: Mapping[str, bytes] = field(repr=False)
    #: A certificate's notAfter and when it is to be issued anew (epoch seconds); None for other data.
    expires_at: float | None = None
    renew_at: float | None = None
    #: When to run again at the latest, if earlier than ``renew_at`` (a revocation, or a look at the
    #: rollout one waits for); not shown in status.
    run_at: float | None = None
    #: A dynamic Secret's lease as it now is.
    lease: leases.LeaseState | None = None
    #: Per remote key (spec order), what the Secret holds now.
    sources: tuple[SourceVersion, ...] = ()
    #: The keys whose values were added, changed or removed by this run.
    changed_keys: tuple[str, ...] = ()
    cause: ChangeCause | None = None
    #: Hashes of the replaced leases revoked in this run.
    revoked: tuple[str, ...] = ()
    #: The store was not read (refreshPolicy CreatedOnce): what status says of the sources still holds.
    unread: bool = False


def owner_reference(ms: ManagedSecret) -> OwnerReference:
    return OwnerReference(api_version=API_VERSION, kind=KIND, name=ms.ref.name, uid=ms.ref.uid)


def render_owner(ref: ManagedSecretRef) -> str:
    """Whose render it is, for the renderer: ``namespace/name/uid`` (fair by namespace, cancelled by all)."""
    return f"{ref.namespace}/{ref.name}/{ref.uid}"


def needs_finalizer(ms: ManagedSecret) -> bool:
    """Cleanup the garbage collector cannot do: Orphan or Merge targets under deletionPolicy Delete, and
    a dynamic Secret's lease to revoke."""
    target = ms.spec.target
    if ms.spec.dynamic is not None and ms.spec.dynamic.revoke_on_delete:
        return True
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
        observe_lease: LeaseObserver | None = None,
        operator_key: OperatorKey | None = None,
        renderer: Renderer | None = None,
        clock: Callable[[], float] = time.time,
        workloads: restarts.WorkloadReader | None = None,
    ) -> None:
        self._cluster = cluster
        # Read only while a replaced lease waits for the rollout of its replacement (revokeAfter).
        self._workloads = workloads
        self._clock = clock  # wall clock: certificates expire by it
        self._providers = providers
        self._reads = reads
        self._observe_fetch = observe_fetch
        self._observe_lease = observe_lease
        # The operator passes its stable key; a key of this instance's own is for tests only.
        self._operator_key = operator_key or _ephemeral_key()
        self._renderer = renderer or InProcessRenderer()

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
        if ms.spec.certificate is not None:
            return self._sync_certificate(
                ms, backend, conditions, force=force, target_known_absent=target_known_absent
            )
        if ms.spec.dynamic is not None:
            return self._sync_dynamic(
                ms, backend, conditions, force=force, target_known_absent=target_known_absent
            )
        if ms.spec.refresh_policy is RefreshPolicy.CREATED_ONCE and not force:
            kept = self._created_once(ms, target_known_absent=target_known_absent)
            if kept is not None:
                return kept
        template = ms.spec.target.template
        if template is not None:
            self._renderer.check(template.data, template.binary_data)
        provider = self._providers.get(backend)
        canonical = self._canonical_refs(provider, backend, self._remote_refs(ms))
        self._check_key_scope(ms, provider, backend, conditions, canonical)
        refs = list(dict.fromkeys(canonical.values()))
        fetched = self._fetch(ms, provider, backend, refs, force=force, last_refresh=last_refresh)
        data = self._build_data(ms, {ref: fetched[key] for ref, key in canonical.items()})
        result = self._write(ms, data, target_known_absent=target_known_absent)
        expiries = [at for key in refs if (at := expiry_of(fetched[key])) is not None]
        return replace(
            result,
            sources=tuple(
                SourceVersion(ref.key, version_of(fetched[key]) or key.version)
                for ref, key in canonical.items()
            ),
            expires_at=min(expiries) if expiries else None,
        )

    def _created_once(self, ms: ManagedSecret, *, target_known_absent: bool) -> SyncResult | None:
        """refreshPolicy CreatedOnce: the Secret as it is, unread from the store, when it holds what this
        ManagedSecret wrote (status.dataHash is a keyed hash of that data); None: write it from a read."""
        if target_known_absent or not ms.rolled_out_hash or ms.synced_secret_name != ms.target_name:
            return None
        existing = self._cluster.get(ms.ref.namespace, ms.target_name)
        if existing is None or not proves_owner(self._key(), existing, ms.ref.uid):
            return None
        if not hmac.compare_digest(ms.rolled_out_hash, restarts.data_hash(self._key(), existing.data)):
            log.info(
                "%s: Secret %s was changed by hand; writing it again (CreatedOnce)", ms.ref, existing.name
            )
            return None
        log.debug("%s: CreatedOnce: Secret %s kept as written, the store is not read", ms.ref, existing.name)
        return SyncResult(
            secret_name=existing.name,
            keys=tuple(sorted(existing.data)),
            action=WriteAction.UNCHANGED,
            data_changed=False,
            data=existing.data,
            unread=True,
        )

    def _sync_certificate(
        self,
        ms: ManagedSecret,
        backend: Backend,
        conditions: Sequence[NamespaceCondition],
        *,
        force: bool,
        target_known_absent: bool,
    ) -> SyncResult:
        """Keep the certificate in the Secret while it is good for this request; else issue one.

        Decided from the Secret itself (its tls.crt, the request hash annotation), so an operator restart
        or a refresh issues nothing; force-sync issues anew. ClusterSecretBackend remoteKeys patterns apply
        to ``<mount>/issue/<role>``.
        """
        source = ms.spec.certificate
        assert source is not None  # noqa: S101 - the caller checked
        provider = self._providers.get(backend)
        if not isinstance(provider, CertificateIssuer):
            raise errors.InvalidSpec(
                f"{backend.id} ({backend.provider}) does not issue certificates; use a Vault or OpenBao backend"
            )
        request = request_of(source)
        issue_path = RemoteKey(f"{request.mount}/issue/{request.role}")
        canonical = self._canonical_refs(provider, backend, [issue_path])
        self._check_key_scope(ms, provider, backend, conditions, canonical)
        wanted = request_hash(str(backend.id), request)
        annotations = {CERTIFICATE_REQUEST_ANNOTATION: wanted}
        existing = self._issuing_target(ms, target_known_absent=target_known_absent)
        if existing is not None:
            info = leaf_info(existing.data)
            recorded = existing.annotations.get(CERTIFICATE_REQUEST_ANNOTATION)
            if (
                info is not None
                and not force
                and still_good(info, source, recorded_hash=recorded, wanted_hash=wanted, now=self._clock())
            ):
                result = self._update_owned(ms, existing, existing.data, annotations)
                return replace(
                    result,
                    expires_at=info.not_after,
                    renew_at=info.renew_at(source),
                    sources=(SourceVersion(issue_path.key, f"serial:{info.serial}"),),
                )
        reissue = existing is not None and leaf_info(existing.data) is not None
        issued = provider.issue_certificate(request)
        data = secret_data(issued)
        info = leaf_info(data)
        if info is None:
            raise errors.IssueFailed(f"{backend.id}: the issued certificate does not parse")
        log.info(
            "%s: issued certificate (serial %s, expires %s) from %s",
            ms.ref,
            info.serial,
            rfc3339(info.not_after),
            issue_path.key,
        )
        if existing is None:
            result = self._write(ms, data, target_known_absent=target_known_absent, annotations=annotations)
        else:
            result = self._update_owned(ms, existing, data, annotations)
        return replace(
            result,
            expires_at=info.not_after,
            renew_at=info.renew_at(source),
            sources=(SourceVersion(issue_path.key, f"serial:{info.serial}"),),
            cause=ChangeCause.REISSUE if reissue else ChangeCause.ISSUE,
        )

    def _issuing_target(self, ms: ManagedSecret, *, target_known_absent: bool) -> SecretObject | None:
        """The existing target of a certificate or lease, proven ours: checked before anything is issued."""
        existing = None if target_known_absent else self._cluster.get(ms.ref.namespace, ms.target_name)
        if existing is not None and not (
            proves_owner(self._key(), existing, ms.ref.uid) or legacy_owned(existing, ms)
        ):
            raise errors.TargetExists(not_owned_message(existing, ms))
        return existing

    def _lease_issuer(
        self, ms: ManagedSecret, backend: Backend, conditions: Sequence[NamespaceCondition]
    ) -> LeaseIssuer:
        source = ms.spec.dynamic
        assert source is not None  # noqa: S101 - the caller checked
        provider = self._providers.get(backend)
        if not isinstance(provider, LeaseIssuer):
            raise errors.InvalidSpec(
                f"{backend.id} ({backend.provider}) has no dynamic secrets engines; use a Vault or OpenBao backend"
            )
        path = RemoteKey(source.path.strip("/"))
        canonical = self._canonical_refs(provider, backend, [path])
        if (
            backend.id.kind is BackendKind.CLUSTER_SECRET_BACKEND
            and source.method.value == "POST"
            and (not conditions or any(not condition.remote_keys for condition in conditions))
        ):
            # A POST can write (a KV path, a role): on a shared backend only where its owner said so.
            raise errors.KeyNotAllowed(
                f"{backend.id}: a dynamic POST to {path.key!r} needs a conditions[].remoteKeys pattern of the"
                " ClusterSecretBackend that admits it"
            )
        self._check_key_scope(ms, provider, backend, conditions, canonical)
        return _ObservedLeases(provider, self._observe_lease) if self._observe_lease else provider

    def _sync_dynamic(
        self,
        ms: ManagedSecret,
        backend: Backend,
        conditions: Sequence[NamespaceCondition],
        *,
        force: bool,
        target_known_absent: bool,
    ) -> SyncResult:
        """Keep the credentials in the Secret while their lease is good: renew it when due, issue new ones
        when it cannot be renewed, revoke replaced leases after the grace period. Decided from the Secret's
        lease annotation, so a restart or a refresh issues nothing."""
        source = ms.spec.dynamic
        assert source is not None  # noqa: S101 - the caller checked
        provider = self._lease_issuer(ms, backend, conditions)
        request = leases.request_of(source)
        wanted = leases.request_hash(str(backend.id), request)
        existing = self._issuing_target(ms, target_known_absent=target_known_absent)
        state = self._lease_state(ms, existing) if existing is not None else None
        now = self._clock()
        intact = (
            state is not None
            and existing is not None
            and hmac.compare_digest(
                state.data_proof, lease_data_proof(self._key(), state.lease_id, existing.data)
            )
        )
        action = leases.decide(state, wanted_request=wanted, data_intact=intact, force=force, now=now)
        previous_valid = state is not None and now < state.expires_at
        if action is leases.LeaseAction.RENEW and state is not None and existing is not None:
            try:
                granted = provider.renew_lease(state.lease_id, state.duration)
            except errors.LeaseGone as gone:
                log.info(
                    "%s: lease %s is not renewed (%s); issuing new credentials",
                    ms.ref,
                    state.reference,
                    gone.message,
                )
                action, previous_valid = leases.LeaseAction.ISSUE, False
            else:
                state = leases.renewed_state(state, source, granted=granted, now=now)
                log.info("%s: renewed lease %s for %ss", ms.ref, state.reference, granted)
        if action is leases.LeaseAction.ISSUE or existing is None or state is None:
            return self._issue_lease(
                ms,
                provider,
                source=source,
                request=request,
                wanted=wanted,
                existing=existing,
                previous=state,
                previous_valid=previous_valid,
                target_known_absent=target_known_absent,
            )
        renewed = action is leases.LeaseAction.RENEW
        before = state.pending
        state, failed = self._revoke_due(ms, provider, state, existing, now)
        result = self._update_owned(ms, existing, existing.data, self._lease_annotations(ms, state))
        if failed is not None:
            raise failed  # the Secret is good and its lease recorded; the replaced one is retried
        revoked = tuple(leases.lease_reference(p.lease_id) for p in before if p not in state.pending)
        return replace(
            result,
            expires_at=state.expires_at,
            renew_at=state.due_at,
            run_at=state.next_run(now),
            lease=state,
            sources=(SourceVersion(request.path, state.reference),),
            cause=ChangeCause.RENEWAL if renewed else None,
            revoked=revoked,
        )

    def _issue_lease(
        self,
        ms: ManagedSecret,
        provider: LeaseIssuer,
        *,
        source: DynamicSource,
        request: LeaseRequest,
        wanted: str,
        existing: SecretObject | None,
        previous: leases.LeaseState | None,
        previous_valid: bool,
        target_known_absent: bool,
    ) -> SyncResult:
        template = ms.spec.target.template
        if template is not None:
            self._renderer.check(template.data, template.binary_data)
        issued = provider.issue_lease(request)
        now = self._clock()
        try:
            data = self._rendered(ms, dict(issued.data))
        except errors.SyncError:
            self._revoke_quietly(ms, provider, issued.lease_id)  # never leave credentials nobody holds
            raise
        pending = leases.replaced(previous, source, now=now, still_valid=previous_valid)
        proof = lease_data_proof(self._key(), issued.lease_id, data)
        state = leases.issued_state(
            issued, source, request=wanted, now=now, pending=pending, data_proof=proof
        )
        log.info(
            "%s: issued credentials under lease %s (%ss, renewable: %s) from %s",
            ms.ref,
            state.reference,
            issued.duration,
            issued.renewable,
            request.path,
        )
        annotations = self._lease_annotations(ms, state)
        try:
            if existing is None:
                result = self._write(
                    ms, data, target_known_absent=target_known_absent, annotations=annotations
                )
            else:
                result = self._update_owned(ms, existing, data, annotations)
        except errors.SyncError:
            self._revoke_quietly(ms, provider, issued.lease_id)
            raise
        return replace(
            result,
            expires_at=state.expires_at,
            renew_at=state.due_at,
            run_at=state.next_run(now),
            lease=state,
            sources=(SourceVersion(request.path, state.reference),),
            cause=ChangeCause.REISSUE if previous is not None else ChangeCause.ISSUE,
        )

    def _lease_annotations(self, ms: ManagedSecret, state: leases.LeaseState) -> dict[str, str]:
        text = state.to_annotation()
        proof = lease_state_proof(self._key(), ms.ref.namespace, ms.target_name, ms.ref.uid, text)
        return {LEASE_ANNOTATION: text, LEASE_PROOF_ANNOTATION: proof}

    def _lease_state(self, ms: ManagedSecret, existing: SecretObject) -> leases.LeaseState | None:
        """The lease the Secret's annotation records, if the operator wrote it for this Secret and
        resource; otherwise None (new credentials, and nothing of it renewed or revoked)."""
        text = existing.annotations.get(LEASE_ANNOTATION)
        if not text:
            return None
        wanted = lease_state_proof(self._key(), ms.ref.namespace, existing.name, ms.ref.uid, text)
        if not hmac.compare_digest(existing.annotations.get(LEASE_PROOF_ANNOTATION, ""), wanted):
            log.warning(
                "%s: the lease annotation of Secret %s was not written by the operator for it; ignored",
                ms.ref,
                existing.name,
            )
            return None
        return leases.LeaseState.from_annotation(text)

    @staticmethod
    def _revoke_quietly(ms: ManagedSecret, provider: LeaseIssuer, lease_id: str) -> None:
        try:
            provider.revoke_lease(lease_id)
        except errors.RevocationFailed as error:
            log.warning(
                "%s: revoking lease %s failed: %s (it expires by itself)",
                ms.ref,
                leases.lease_reference(lease_id),
                error.message,
            )

    def _revoke_due(
        self,
        ms: ManagedSecret,
        provider: LeaseIssuer,
        state: leases.LeaseState,
        secret: SecretObject,
        now: float,
    ) -> tuple[leases.LeaseState, errors.RevocationFailed | None]:
        """Revoke the replaced leases that are due; those that fail stay pending."""
        due, later = leases.due_revocations(state.pending, now, lambda: self._rollout_settlement(ms, secret))
        kept = list(later)
        failed: errors.RevocationFailed | None = None
        for pending in due:
            reference = leases.lease_reference(pending.lease_id)
            try:
                provider.revoke_lease(pending.lease_id)
            except errors.RevocationFailed as error:
                kept.append(pending)
                failed = errors.RevocationFailed(f"replaced lease {reference}: {error.message}")
            else:
                log.info("%s: revoked replaced lease %s", ms.ref, reference)
        return replace(state, pending=tuple(kept)), failed

    def _rollout_settlement(self, ms: ManagedSecret, secret: SecretObject) -> restarts.Settlement:
        """How far the rollout for the Secret's current data has got: its restarts are made once
        status.dataHash is that data's; then the workloads' own status says whether it completed."""
        if self._workloads is None:
            return restarts.Settlement.UNKNOWN
        current = restarts.data_hash(self._key(), secret.data)
        if not ms.rolled_out_hash or not hmac.compare_digest(ms.rolled_out_hash, current):
            return restarts.Settlement.IN_PROGRESS
        try:
            settled = restarts.settlement(ms.spec.rollout, ms.ref.namespace, secret.name, self._workloads)
        except restarts.RolloutError as error:
            log.warning("%s: the rollout a revocation waits for cannot be read: %s", ms.ref, error.message)
            return restarts.Settlement.IN_PROGRESS
        log.debug("%s: the rollout for Secret %s: %s", ms.ref, secret.name, settled.value)
        return settled

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

    @staticmethod
    def _canonical_refs(
        provider: SecretProvider, backend: Backend, refs: Sequence[RemoteKey]
    ) -> dict[RemoteKey, RemoteKey]:
        """Each ref -> the ref as the store resolves it (raises KeyNotAllowed for ambiguous keys): scoping
        checks, and the provider reads, the canonical form only."""
        canonical = canonicalizer(provider, str(backend.id))
        return {ref: canonical(ref) for ref in refs}

    @staticmethod
    def _check_key_scope(
        ms: ManagedSecret,
        provider: SecretProvider,
        backend: Backend,
        conditions: Sequence[NamespaceCondition],
        canonical: Mapping[RemoteKey, RemoteKey],
    ) -> None:
        if not conditions or any(not condition.remote_keys for condition in conditions):
            return
        namespace = ms.ref.namespace
        fold_case = case_insensitive_keys(provider)
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
        provider: SecretProvider,
        backend: Backend,
        refs: Sequence[RemoteKey],
        *,
        force: bool,
        last_refresh: float | None,
    ) -> dict[RemoteKey, bytes]:
        interval = ms.refresh_seconds
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

    def _build_data(self, ms: ManagedSecret, values: Mapping[RemoteKey, bytes]) -> dict[str, bytes]:
        data: dict[str, bytes] = {}
        for item in ms.spec.data_from:  # explicit `data` entries below win over extracted fields
            extract = item.extract
            fields = extract_fields(values[RemoteKey(extract.key, extract.version)], extract.key)
            data.update(
                (name, decode(value, extract.decoding_strategy, f"key {extract.key}: field {name!r}"))
                for name, value in fields.items()
            )
        for entry in ms.spec.data:
            remote = entry.remote_ref
            raw = values[RemoteKey(remote.key, remote.version)]
            value = bytes(raw) if remote.property is None else pick_property(raw, remote.key, remote.property)
            where = f"key {remote.key}" + (f": property {remote.property!r}" if remote.property else "")
            data[entry.secret_key] = decode(value, remote.decoding_strategy, where)
        return self._rendered(ms, data)

    def _rendered(self, ms: ManagedSecret, data: dict[str, bytes]) -> dict[str, bytes]:
        """The target's templates applied to ``data``; every key a valid Secret key."""
        template = ms.spec.target.template
        if template is not None and (template.data or template.binary_data):
            data = self._renderer.render(
                template.data, template.binary_data, data, owner=render_owner(ms.ref)
            )
        for name in data:
            if not _SECRET_KEY.match(name):
                raise errors.InvalidSpec(
                    f"{name!r} is not a valid Secret key (letters, digits, '-', '_' and '.' only)"
                )
        return data

    # -- writing the target ------------------------------------------------------------------------------

    def _key(self) -> bytes:
        try:
            return self._operator_key()
        except errors.SyncError as error:
            raise errors.WriteFailed(f"no key to prove ownership of Secrets: {error.message}") from None

    def _write(
        self,
        ms: ManagedSecret,
        data: dict[str, bytes],
        *,
        target_known_absent: bool,
        annotations: Mapping[str, str] | None = None,
    ) -> SyncResult:
        target = ms.spec.target
        name = ms.target_name
        skip_read = target_known_absent and target.creation_policy is not CreationPolicy.MERGE
        existing = None if skip_read else self._cluster.get(ms.ref.namespace, name)
        if target.creation_policy is CreationPolicy.MERGE:
            return self._merge(ms, existing, data)
        if existing is None:
            desired = self._desired(ms, data, None, annotations)
            check_secret(desired)
            try:
                self._cluster.create(desired)
            except errors.TargetExists:
                existing = self._cluster.get(ms.ref.namespace, name)
                if existing is None:
                    raise
                return self._update_owned(ms, existing, data, annotations)
            log.info("%s: created Secret %s with keys %s", ms.ref, name, sorted(data))
            keys = tuple(sorted(data))
            return SyncResult(
                name, keys, WriteAction.CREATED, data_changed=False, data=data, changed_keys=keys
            )
        return self._update_owned(ms, existing, data, annotations)

    def _update_owned(
        self,
        ms: ManagedSecret,
        existing: SecretObject,
        data: Mapping[str, bytes],
        annotations: Mapping[str, str] | None = None,
    ) -> SyncResult:
        if not proves_owner(self._key(), existing, ms.ref.uid):
            if not legacy_owned(existing, ms):
                raise errors.TargetExists(not_owned_message(existing, ms))
            log.info(
                "%s: Secret %s was written by an earlier version; adding its ownership proof",
                ms.ref,
                existing.name,
            )
        claim = merge_claim(existing)
        if claim is not None and self._claim_is_live(existing, claim):
            raise errors.TargetExists(
                f"Secret {existing.name} also receives merged keys from ManagedSecret {claim.name} "
                "(creationPolicy Merge); a Secret belongs to one ManagedSecret or receives merged keys, "
                "not both: delete that ManagedSecret or change its target"
            )
        desired = self._desired(ms, data, existing, annotations)  # a stale merge claim is dropped with it
        keys = tuple(sorted(desired.data))
        data_changed = dict(existing.data) != dict(desired.data)
        if not data_changed and _same_metadata(existing, desired) and existing.type == desired.type:
            return SyncResult(
                existing.name, keys, WriteAction.UNCHANGED, data_changed=False, data=desired.data
            )
        check_secret(desired)
        if existing.immutable and (data_changed or existing.type != desired.type):
            changes = [
                what
                for what, changed in (("data", data_changed), ("type", existing.type != desired.type))
                if changed
            ]
            raise errors.TargetImmutable(
                f"Secret {existing.name} is immutable (immutable: true) and its {' and '.join(changes)} "
                "would change; the operator leaves it as it is: delete it to let the operator create it again"
            )
        if existing.type != desired.type:
            self._replace_type(ms, existing, desired)
        else:
            self._cluster.replace(desired)
        log.info("%s: updated Secret %s (data changed: %s)", ms.ref, existing.name, data_changed)
        changed = tuple(
            sorted(k for k in {*existing.data, *desired.data} if existing.data.get(k) != desired.data.get(k))
        )
        return SyncResult(
            existing.name,
            keys,
            WriteAction.UPDATED,
            data_changed=data_changed,
            data=desired.data,
            changed_keys=changed,
        )

    def _replace_type(self, ms: ManagedSecret, existing: SecretObject, desired: SecretObject) -> None:
        """The type of a Secret is immutable: delete it and create it anew, without ever losing it.

        A dry run first: what the API server (or an admission webhook) would refuse stops here, with the old
        Secret in place. Should the create still fail after the delete, the old Secret is created back.
        """
        self._cluster.check_create(desired)
        self._cluster.delete(
            existing.namespace, existing.name, uid=existing.uid, resource_version=existing.resource_version
        )
        try:
            self._cluster.create(replace(desired, uid=None, resource_version=None))
        except errors.SyncError as error:
            outcome = self._restore(ms, existing, error)
            raise type(error)(f"{error.message}; {outcome}") from None

    def _restore(self, ms: ManagedSecret, previous: SecretObject, failure: errors.SyncError) -> str:
        """Create the deleted Secret back as it was; says what happened (or raises WriteFailed)."""
        try:
            self._cluster.create(replace(previous, uid=None, resource_version=None))
        except errors.TargetExists:
            log.warning(
                "%s: Secret %s was created by someone else meanwhile; left as it is", ms.ref, previous.name
            )
            return f"a Secret {previous.name} was created by someone else meanwhile"
        except errors.SyncError as error:
            log.error(  # noqa: TRY400 - the messages name the Secret and HTTP codes, the traceback adds nothing
                "%s: Secret %s was deleted to change its type; creating the new one failed (%s) and so did "
                "restoring the old one (%s): it is created at the next retry",
                ms.ref,
                previous.name,
                failure.reason.value,
                error.message,
            )
            raise errors.WriteFailed(
                f"Secret {previous.name} was deleted to change its type, and neither the new nor the old one "
                f"could be created ({failure.message}); retrying"
            ) from None
        log.warning(
            "%s: the Secret %s of the new type was refused (%s); the previous one was restored",
            ms.ref,
            previous.name,
            failure.reason.value,
        )
        return f"the previous Secret {previous.name} was restored"

    def _desired(
        self,
        ms: ManagedSecret,
        data: Mapping[str, bytes],
        existing: SecretObject | None,
        extra_annotations: Mapping[str, str] | None = None,
    ) -> SecretObject:
        """Our fields over whatever else is on the object, so labels other tools add survive."""
        target = ms.spec.target
        name = ms.target_name
        labels = {**(existing.labels if existing else {}), **unreserved(target.labels), MANAGED_LABEL: "true"}
        kept = {
            k: v
            for k, v in (existing.annotations if existing else {}).items()
            if k not in MERGE_CLAIM_ANNOTATIONS
        }
        annotations = {
            **kept,
            **unreserved(target.annotations),
            **(extra_annotations or {}),
            OWNER_ANNOTATION: ms.ref.name,
            OWNER_PROOF_ANNOTATION: owner_proof(self._key(), ms.ref.namespace, name, ms.ref.uid),
        }
        foreign_owners = tuple(
            o for o in (existing.owner_references if existing else ()) if o.uid != ms.ref.uid
        )
        owners = foreign_owners
        if target.creation_policy is CreationPolicy.OWNER and target.deletion_policy is DeletionPolicy.DELETE:
            owners = (*foreign_owners, owner_reference(ms))
        return SecretObject(
            namespace=ms.ref.namespace,
            name=name,
            type=ms.secret_type,
            data=dict(data),
            labels=labels,
            annotations=annotations,
            owner_references=owners,
            resource_version=existing.resource_version if existing else None,
            uid=existing.uid if existing else None,
            immutable=existing.immutable if existing else False,
        )

    def _claim_is_live(self, secret: SecretObject, claim: MergeClaim) -> bool:
        """The merge claim belongs to a ManagedSecret that exists, is that incarnation, and merges here.

        A claim left by a ManagedSecret deleted with deletionPolicy Retain (or recreated, or since moved to
        another target) is stale: it never blocks anyone.
        """
        info = self._cluster.managed_secret_info(secret.namespace, claim.name)
        if info is None or info.secret_name != secret.name or info.creation_policy != CreationPolicy.MERGE:
            return False
        return claim.uid is None or claim.uid == info.uid

    def _merge(self, ms: ManagedSecret, existing: SecretObject | None, data: dict[str, bytes]) -> SyncResult:
        name = ms.target_name
        if existing is None:
            raise errors.TargetNotFound(
                f"Secret {name} does not exist; creationPolicy Merge only adds keys to it"
            )
        owner = owner_marker(existing)
        if owner is not None:
            raise errors.TargetExists(
                f"Secret {name} is managed by "
                f"{f'ManagedSecret {owner}' if owner else 'a ManagedSecret'}; creationPolicy Merge only adds "
                "keys to Secrets no ManagedSecret owns: merge into another Secret, or read the keys "
                "into this one from the owning ManagedSecret"
            )
        key = self._key()
        claim = merge_claim(existing)
        ours = claim is not None and claim.name == ms.ref.name and claim.uid in (None, ms.ref.uid)
        if claim is not None and not ours:
            if claim.name != ms.ref.name and self._claim_is_live(existing, claim):
                raise errors.TargetExists(
                    f"Secret {name} already receives merged keys from ManagedSecret {claim.name}"
                )
            log.info(
                "%s: Secret %s: the merge claim of ManagedSecret %s is stale; replacing it",
                ms.ref,
                name,
                claim.name,
            )
        previous_keys = (
            claim.trusted_keys(key, existing, ms.ref.uid) if claim is not None and ours else frozenset()
        )
        new_data = {k: v for k, v in existing.data.items() if k not in previous_keys or k in data}
        new_data.update(data)
        annotations = {
            **existing.annotations,
            **unreserved(ms.spec.target.annotations),
            MERGED_BY_ANNOTATION: ms.ref.name,
            MERGED_KEYS_ANNOTATION: ",".join(sorted(data)),
            MERGE_PROOF_ANNOTATION: merge_proof(key, existing.namespace, name, ms.ref.uid, data),
        }
        labels = {**existing.labels, **unreserved(ms.spec.target.labels)}
        labels.setdefault(MANAGED_LABEL, MERGED_LABEL_VALUE)  # so the Secret watch sees it
        desired = replace(existing, data=new_data, annotations=annotations, labels=labels)
        keys = tuple(sorted(data))
        data_changed = dict(existing.data) != new_data
        if not data_changed and _same_metadata(existing, desired):
            return SyncResult(name, keys, WriteAction.UNCHANGED, data_changed=False, data=data)
        check_secret(desired)
        if existing.immutable and data_changed:
            raise errors.TargetImmutable(
                f"Secret {name} is immutable (immutable: true) and the merged keys would change it; "
                "the operator leaves it as it is"
            )
        self._cluster.replace(desired)
        log.info("%s: merged keys %s into Secret %s", ms.ref, list(keys), name)
        return SyncResult(name, keys, WriteAction.UPDATED, data_changed=data_changed and ours, data=data)

    # -- deletion ----------------------------------------------------------------------------------------

    def cleanup(self, ms: ManagedSecret) -> None:
        """Run when a ManagedSecret that needs a finalizer is deleted.

        Touches only what this ManagedSecret provably wrote: the target, and the Secret its status names
        (the previous target when target.name changed since the last sync).
        """
        if not needs_finalizer(ms):
            return
        dynamic = ms.spec.dynamic
        if dynamic is not None and dynamic.revoke_on_delete:
            self._revoke_on_delete(ms)
        target = ms.spec.target
        if (
            target.deletion_policy is not DeletionPolicy.DELETE
            or target.creation_policy is CreationPolicy.OWNER
        ):
            return  # the garbage collector (Owner) removes the Secret, or nobody (Retain)
        names = dict.fromkeys(name for name in (ms.target_name, ms.synced_secret_name) if name)
        for name in names:
            existing = self._cluster.get(ms.ref.namespace, name)
            if existing is None:
                continue
            if ms.spec.target.creation_policy is CreationPolicy.MERGE:
                self._unmerge(ms, existing)
            elif proves_owner(self._key(), existing, ms.ref.uid) or legacy_owned(existing, ms):
                self._cluster.delete(
                    existing.namespace,
                    existing.name,
                    uid=existing.uid,
                    resource_version=existing.resource_version,
                )
                log.info("%s: deleted Secret %s", ms.ref, existing.name)
            else:
                log.info(
                    "%s: Secret %s is not proven to be this ManagedSecret's; left as it is", ms.ref, name
                )

    def _revoke_on_delete(self, ms: ManagedSecret) -> None:
        """Revoke the lease in the Secret and the replaced ones still pending. A store that is down is
        waited for (the finalizer stays); a backend or credentials that are gone (a namespace being
        deleted takes them along) give up with a warning: the leases expire by themselves."""
        existing = self._cluster.get(ms.ref.namespace, ms.target_name)
        if existing is None or not (
            proves_owner(self._key(), existing, ms.ref.uid) or legacy_owned(existing, ms)
        ):
            return
        state = self._lease_state(ms, existing)
        if state is None:
            return
        try:
            backend, conditions = self.resolve_backend(ms)
            provider = self._lease_issuer(ms, backend, conditions)
            for lease_id in (state.lease_id, *(p.lease_id for p in state.pending)):
                provider.revoke_lease(lease_id)
                log.info(
                    "%s: revoked lease %s (the ManagedSecret is deleted)",
                    ms.ref,
                    leases.lease_reference(lease_id),
                )
        except errors.RevocationFailed as error:
            if error.cause is errors.Reason.BACKEND_UNAVAILABLE:
                raise
            log.warning("%s: the lease is not revoked (%s); it expires by itself", ms.ref, error.message)
        except errors.BackendUnavailable:
            raise
        except errors.SyncError as error:
            log.warning(
                "%s: the lease is not revoked (%s: %s); it expires by itself",
                ms.ref,
                error.reason.value,
                error.message,
            )

    def _unmerge(self, ms: ManagedSecret, existing: SecretObject) -> None:
        claim = merge_claim(existing)
        if claim is None or claim.name != ms.ref.name or claim.uid not in (None, ms.ref.uid):
            return  # another ManagedSecret's claim, or none: nothing of ours is in there
        if owner_marker(existing) is not None:
            log.warning(
                "%s: Secret %s is owned by a ManagedSecret; merged keys left as they are",
                ms.ref,
                existing.name,
            )
            return
        merged = claim.trusted_keys(self._key(), existing, ms.ref.uid)
        if existing.immutable and merged & set(existing.data):
            log.warning("%s: Secret %s is immutable; merged keys left as they are", ms.ref, existing.name)
            return
        annotations = {k: v for k, v in existing.annotations.items() if k not in MERGE_CLAIM_ANNOTATIONS}
        data = {k: v for k, v in existing.data.items() if k not in merged}
        labels = {
            k: v for k, v in existing.labels.items() if not (k == MANAGED_LABEL and v == MERGED_LABEL_VALUE)
        }
        self._cluster.replace(replace(existing, data=data, annotations=annotations, labels=labels))
        log.info("%s: removed merged keys %s from Secret %s", ms.ref, sorted(merged), existing.name)


class _ObservedLeases:
    """A LeaseIssuer whose every call is counted (operation, ok / error)."""

    def __init__(self, provider: LeaseIssuer, observe: LeaseObserver) -> None:
        self._provider = provider
        self._observe = observe

    def _counted(self, operation: str, call: Callable[[], T]) -> T:
        try:
            result = call()
        except errors.SyncError:
            self._observe(operation, "error")
            raise
        self._observe(operation, "ok")
        return result

    def fetch(self, ref: RemoteKey) -> bytes:
        return self._provider.fetch(ref)

    def close(self) -> None:
        self._provider.close()

    def issue_lease(self, request: LeaseRequest) -> IssuedLease:
        return self._counted("issue", lambda: self._provider.issue_lease(request))

    def renew_lease(self, lease_id: str, increment: int | None) -> int:
        return self._counted("renew", lambda: self._provider.renew_lease(lease_id, increment))

    def revoke_lease(self, lease_id: str) -> None:
        self._counted("revoke", lambda: self._provider.revoke_lease(lease_id))


def _ephemeral_key() -> OperatorKey:
    key = secrets.token_bytes(32)
    return lambda: key


def _same_metadata(existing: SecretObject, desired: SecretObject) -> bool:
    return (
        dict(existing.labels) == dict(desired.labels)
        and dict(existing.annotations) == dict(desired.annotations)
        and set(existing.owner_references) == set(desired.owner_references)
    )
