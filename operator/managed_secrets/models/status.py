"""Typed status of ManagedSecrets and backends, and the one helper that sets a condition.

These models are the schema of ``status`` in the CRDs (hack/gen-crds.py) and what the controller
writes; nothing builds status as a raw dict. A condition's ``lastTransitionTime`` moves only when its
status changes, so a refresh that finds everything as it was writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from managed_secrets.models.base import CamelModel
from managed_secrets.models.schema import JsonDict, merged

#: RFC 3339 times and metadata.generation, typed for the CRD as Kubernetes types them.
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Generation = Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})]
#: Conditions of one object, at most one per type (a list-map keyed by type in the CRD).
MAX_CONDITIONS = 32
_CONDITION_LIST: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def now_rfc3339() -> str:
    """The time as Kubernetes writes it in status: RFC 3339, whole seconds, UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(CamelModel):
    """A condition as in ``metav1.Condition``: reasons are stable CamelCase words, messages never hold
    a value."""

    model_config = ConfigDict(json_schema_extra={"description": "One condition."})

    type: str = Field(min_length=1, max_length=316, description="Type of the condition, like Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        description="Machine-readable, CamelCase reason of the last transition (Synced, BackendNotFound,"
        " AuthFailed, RemoteKeyNotFound, ...).",
    )
    message: str = Field(
        default="", max_length=32768, description="Human-readable details; never contains a secret value."
    )
    observed_generation: Generation | None = Field(
        default=None, description="The metadata.generation this condition was computed for."
    )
    last_transition_time: Timestamp = Field(description="When the status of this condition last changed.")


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """``conditions`` with the one of ``type_`` set; its transition time kept unless the status changed.
    Other conditions keep their order; a new type is appended."""
    previous = next((c for c in conditions if c.type == type_), None)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == status
        else (now or now_rfc3339())
    )
    condition = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=observed_generation,
        last_transition_time=transition,
    )
    if previous is None:
        return [*conditions, condition]
    return [condition if c.type == type_ else c for c in conditions]


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


class RestartRecord(CamelModel):
    """One workload restarted because the data it consumes changed."""

    model_config = ConfigDict(json_schema_extra={"description": "One restart."})

    kind: str = Field(min_length=1, max_length=63, description="Kind of the workload.")
    name: str = Field(min_length=1, max_length=253, description="Name of the workload.")
    time: Timestamp = Field(description="When the operator restarted it.")


class SourceStatus(CamelModel):
    """What the Secret holds of one remote key, for the audit trail (never a value, never a lease id)."""

    key: str = Field(max_length=2048, description="The remote key (a certificate's or lease's path).")
    version: str | None = Field(
        default=None,
        max_length=256,
        description="The version read (store version id), a certificate's serial (serial:<hex>), or a"
        " lease's hash (sha256:<hex>); absent where the store has no versions.",
    )


class LeaseStatus(CamelModel):
    """A dynamic Secret's lease, without its id (the id can act on the lease; it is kept with the Secret)."""

    id: str = Field(max_length=64, description="sha256 of the lease id (its first 16 hex digits).")
    issued_at: Timestamp = Field(description="When the credentials were issued.")
    renewed_at: Timestamp | None = Field(default=None, description="When the lease was last renewed.")
    expires_at: Timestamp = Field(description="When the lease expires unless renewed.")
    renewable: bool = Field(description="Whether the store renews the lease.")
    pending_revocations: int = Field(
        default=0, ge=0, description="Replaced leases still to be revoked after their grace period."
    )


class ManagedSecretStatus(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "Observed state, written by the operator. Never contains a secret value."
        }
    )

    observed_generation: Generation | None = Field(
        default=None, description="The metadata.generation the status was computed for."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        json_schema_extra=_CONDITION_LIST,
        description="Observations of the ManagedSecret's state. The Ready condition tells whether the last"
        " reconcile succeeded; its reason is stable and machine-readable, its message names keys and"
        " resources but never a secret value.",
    )
    #: The Secret this ManagedSecret was last synced into (written only by the operator).
    secret_name: str | None = Field(default=None, description="Name of the Secret written.")
    #: Names of the keys written, never their values.
    synced_keys: list[str] = Field(
        default_factory=list,
        max_length=10000,
        json_schema_extra=merged({"items": {"description": "A Secret key."}}),
        description="Keys the operator wrote to the Secret (names only).",
    )
    #: When the Secret's content was last written or first verified.
    last_sync_time: Timestamp | None = Field(
        default=None,
        description="When the Secret's content was last written or first verified in sync (a refresh that"
        " finds the same data does not change it).",
    )
    #: Keyed hash of the data the workloads last restarted for (says nothing about the values).
    data_hash: str | None = Field(
        default=None,
        max_length=256,
        description="Keyed hash of the Secret data the workloads last restarted for (reveals nothing about"
        " the values), so the same data never restarts a workload twice.",
    )
    #: When the Secret's content stops being valid: a certificate's notAfter, a lease's expiry.
    expires_at: Timestamp | None = Field(
        default=None,
        description="When the Secret's content expires: the certificate's notAfter, or the lease's expiry"
        " (moved on by each renewal).",
    )
    renew_at: Timestamp | None = Field(
        default=None,
        description="When the operator renews or issues anew what the Secret holds (certificates and leases).",
    )
    lease: LeaseStatus | None = Field(
        default=None, description="The lease of a dynamic ManagedSecret's credentials."
    )
    sources: list[SourceStatus] = Field(
        default_factory=list,
        max_length=1100,
        description="Per remote key, the version the Secret holds now (spec order).",
    )
    #: The most recent restarts, oldest first.
    restarts: list[RestartRecord] = Field(
        default_factory=list, max_length=100, description="The most recent restarts, oldest first."
    )


class BackendStatus(CamelModel):
    """Status of a SecretBackend or ClusterSecretBackend: whether its configuration and credentials work."""

    model_config = ConfigDict(
        json_schema_extra={"description": "Observed state of the backend, written by the operator."}
    )

    observed_generation: Generation | None = Field(
        default=None, description="The metadata.generation the status was computed for."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        json_schema_extra=_CONDITION_LIST,
        description="Observations of the backend's state. The Ready condition tells whether its"
        " configuration is valid and its credentials work against the store; its reason is stable and"
        " machine-readable, its message never contains a secret value.",
    )
    #: When the credentials were last proven to work against the store.
    last_validated_time: Timestamp | None = Field(
        default=None, description="When the credentials were last proven to work against the store."
    )
