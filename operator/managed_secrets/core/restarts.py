"""Rolling restarts when Secret data changes: what to restart and whether, without any Kubernetes call.

Named for what it decides (which workloads restart, with which key); the rollout stage that schedules and
carries out the restarts is runtime/rollout_stage.py, and the status they lead to is core/status.py.

- Which workloads a change concerns: explicit ``spec.rollout.targets``; with ``auto``, every workload whose
  pod template uses the Secret; workloads that opt in with ``managedsecrets.io/reload: "true"``; minus
  those that opt out with ``"false"``.
- The restart key: an HMAC (operator key) over the names and data of every managed Secret a workload
  consumes, written as one pod-template annotation. Same data, same value: patching again changes nothing.
- Whether a sync calls for a rollout: ``status.dataHash`` is a keyed hash of the data the workloads last
  ran with. Absent: a first sync, record it. Different: a rollout is due, and the new hash is recorded only
  after it ran, so a crash in between still restarts after the operator comes back. Equal: nothing.
- What a rollout reports back: its outcomes (``RolloutReport``), which the controller records in status.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from managed_secrets.api import (
    MANAGED_LABEL,
    MERGED_BY_ANNOTATION,
    RELOAD_ANNOTATION,
    RESTARTED_FOR_ANNOTATION,
)
from managed_secrets.core.ports import SecretObject
from managed_secrets.models.managedsecret import ManagedSecretRef, Rollout, RolloutKind

#: Entries kept in status.restarts.
MAX_RESTARTS = 5
#: Hex characters of the HMAC kept (128 bits).
HASH_LENGTH = 32
#: Kinds found by ``auto`` and by the opt-in annotation (Argo Rollouts only as explicit targets).
DISCOVERED_KINDS = (RolloutKind.DEPLOYMENT, RolloutKind.STATEFUL_SET, RolloutKind.DAEMON_SET)
ARGO_GROUP = "argoproj.io"
ARGO_VERSION = "v1alpha1"
API_VERSIONS = {
    RolloutKind.DEPLOYMENT: "apps/v1",
    RolloutKind.STATEFUL_SET: "apps/v1",
    RolloutKind.DAEMON_SET: "apps/v1",
    RolloutKind.ROLLOUT: f"{ARGO_GROUP}/{ARGO_VERSION}",
}


class RolloutReason(StrEnum):
    RESTARTED = "Restarted"
    UP_TO_DATE = "UpToDate"
    WORKLOAD_NOT_FOUND = "WorkloadNotFound"
    ROLLOUT_FORBIDDEN = "RolloutForbidden"
    ROLLOUT_FAILED = "RolloutFailed"


class RestartResult(StrEnum):
    """Outcome of one workload's restart; also the ``result`` label of the restarts metric."""

    RESTARTED = "restarted"
    UNCHANGED = "unchanged"  # already annotated for this data: nothing to do
    SKIPPED = "skipped"  # opted out
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    FAILED = "failed"


_FAILURE_REASONS = {
    RestartResult.NOT_FOUND: RolloutReason.WORKLOAD_NOT_FOUND,
    RestartResult.FORBIDDEN: RolloutReason.ROLLOUT_FORBIDDEN,
    RestartResult.FAILED: RolloutReason.ROLLOUT_FAILED,
}


class RolloutError(Exception):
    """A workload could not be read or patched. Messages carry names and HTTP codes only."""

    result: RestartResult = RestartResult.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WorkloadNotFound(RolloutError):
    result = RestartResult.NOT_FOUND


class RolloutForbidden(RolloutError):
    result = RestartResult.FORBIDDEN


class RolloutFailed(RolloutError):
    """Anything else (a 5xx, a timeout): retried with backoff a few times."""

    result = RestartResult.FAILED


# -- workloads ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class WorkloadRef:
    kind: RolloutKind
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name}"


@dataclass(frozen=True)
class Workload:
    """A workload as the rollout logic sees it."""

    ref: WorkloadRef
    uid: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    template_annotations: Mapping[str, str] = field(default_factory=dict)
    #: Secrets its pod template uses.
    secrets: frozenset[str] = frozenset()
    #: Its controller reports the rollout of its current template complete: every pod runs it, none of
    #: an older template is left. None when the kind's status cannot say (an Argo Rollout).
    rollout_complete: bool | None = None

    @property
    def reload(self) -> bool | None:
        """The workload's own choice: True (opt in), False (opt out) or None (not annotated)."""
        value = self.annotations.get(RELOAD_ANNOTATION, "").strip().lower()
        return {"true": True, "false": False}.get(value)

    @property
    def restarted_for(self) -> str | None:
        """The restart key it carries: on the pod template, or on an Argo Rollout itself."""
        where = self.annotations if self.ref.kind is RolloutKind.ROLLOUT else self.template_annotations
        return where.get(RESTARTED_FOR_ANNOTATION)


def secrets_used(pod_spec: Mapping[str, Any]) -> frozenset[str]:
    """Names of the Secrets a pod spec reads: env valueFrom, envFrom, secret and projected volumes."""
    names: set[str] = set()
    for container in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]:
        for env in container.get("env") or []:
            names.add(((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") or "")
        for source in container.get("envFrom") or []:
            names.add((source.get("secretRef") or {}).get("name") or "")
    for volume in pod_spec.get("volumes") or []:
        names.add((volume.get("secret") or {}).get("secretName") or "")
        for source in (volume.get("projected") or {}).get("sources") or []:
            names.add((source.get("secret") or {}).get("name") or "")
    names.discard("")
    return frozenset(names)


def select_workloads(
    rollout: Rollout | None, namespace: str, secret_name: str, listed: Iterable[Workload]
) -> list[WorkloadRef]:
    """The workloads to restart when the Secret ``secret_name`` changed, in a stable order.

    ``listed`` are the namespace's Deployments, StatefulSets and DaemonSets. Explicit targets that are not
    among them (missing ones, Argo Rollouts) are kept: their restart reports what it finds.
    """
    auto = rollout is not None and rollout.auto
    wanted = [WorkloadRef(t.kind, namespace, t.name) for t in (rollout.targets if rollout else [])]
    opted_out: set[WorkloadRef] = set()
    for workload in listed:
        if workload.reload is False:
            opted_out.add(workload.ref)
        elif secret_name in workload.secrets and (auto or workload.reload is True):
            wanted.append(workload.ref)
    return sorted(ref for ref in dict.fromkeys(wanted) if ref not in opted_out)


class WorkloadReader(Protocol):
    def list(self, namespace: str) -> list[Workload]:
        """The namespace's Deployments, StatefulSets and DaemonSets; raises RolloutError."""
        ...

    def get(self, ref: WorkloadRef) -> Workload:
        """Raises WorkloadNotFound, RolloutForbidden, RolloutFailed."""
        ...


class Settlement(StrEnum):
    """How far the rollouts for a Secret's data have got (for revoking the credentials they replaced)."""

    #: every workload rolled for it runs no pod of an older template
    COMPLETE = "Complete"
    IN_PROGRESS = "InProgress"
    #: no workload is rolled for it, or one whose progress cannot be read: time is all there is
    UNKNOWN = "Unknown"


def settlement(
    rollout: Rollout | None, namespace: str, secret_name: str, reader: WorkloadReader
) -> Settlement:
    """Whether the workloads rolled for Secret ``secret_name`` finished their rollout (their restarts for
    the current data have been made: the caller checks status.dataHash first)."""
    listed = {w.ref: w for w in reader.list(namespace)}
    refs = select_workloads(rollout, namespace, secret_name, listed.values())
    if not refs:
        return Settlement.UNKNOWN
    progress = set()
    for ref in refs:
        workload = listed.get(ref) or reader.get(ref)
        progress.add(workload.rollout_complete)
    if False in progress:
        return Settlement.IN_PROGRESS
    return Settlement.UNKNOWN if None in progress else Settlement.COMPLETE


def is_managed(secret: SecretObject) -> bool:
    """Written by the operator: labelled as managed, or holding keys merged in by a ManagedSecret."""
    return secret.labels.get(MANAGED_LABEL) == "true" or MERGED_BY_ANNOTATION in secret.annotations


# -- keyed hashes ------------------------------------------------------------------------------------------


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(8, "big") + value


def _encode_data(data: Mapping[str, bytes]) -> bytes:
    return _field(b"".join(_field(k.encode()) + _field(bytes(data[k])) for k in sorted(data)))


def data_hash(key: bytes, data: Mapping[str, bytes]) -> str:
    """Keyed hash of one Secret's data (for status.dataHash): stable, and says nothing about the values."""
    return hmac.new(key, b"data\0" + _encode_data(data), hashlib.sha256).hexdigest()[:HASH_LENGTH]


def restart_key(key: bytes, secrets: Mapping[str, Mapping[str, bytes]]) -> str:
    """The restart annotation of a workload: over the names and data of the Secrets it consumes."""
    message = b"restart\0" + b"".join(_field(n.encode()) + _encode_data(secrets[n]) for n in sorted(secrets))
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:HASH_LENGTH]


class Decision(StrEnum):
    FIRST_SYNC = "FirstSync"  # record the hash, restart nothing
    CHANGED = "Changed"  # a rollout is due; record the hash once it ran
    UNCHANGED = "Unchanged"


def decide(recorded: str | None, current: str) -> Decision:
    if not recorded:
        return Decision.FIRST_SYNC
    return Decision.UNCHANGED if hmac.compare_digest(recorded, current) else Decision.CHANGED


# -- outcomes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one workload; without workload: the workloads could not even be listed."""

    workload: WorkloadRef | None
    result: RestartResult
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.result not in _FAILURE_REASONS

    @property
    def reason(self) -> RolloutReason | None:
        return _FAILURE_REASONS.get(self.result)


@dataclass(frozen=True)
class RolloutReport:
    """A ManagedSecret's rollout ended: what happened, for the controller to record in its status."""

    ms: ManagedSecretRef
    #: The hash of the data the rollout was for; recorded as status.dataHash when every outcome is ok.
    data_hash: str
    outcomes: tuple[Outcome, ...]
    #: The generation of the sync that made the rollout due.
    generation: int | None
    #: When it ended (RFC 3339): the time of its restarts in status.
    finished_at: str

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)
