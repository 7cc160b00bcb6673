"""Typed status of ManagedSecrets and backends, and the one helper that sets a condition.

These models are the schema of ``status`` in the CRDs (hack/gen-crds.py) and what the controller
writes; nothing builds status as a raw dict. A condition's ``lastTransitionTime`` moves only when its
status changes, so a refresh that finds everything as it was writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import Field

from managed_secrets.models.base import CamelModel


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

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024)
    message: str = Field(default="", max_length=32768)
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: str


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

    kind: str
    name: str
    time: str


class ManagedSecretStatus(CamelModel):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    #: The Secret this ManagedSecret was last synced into (written only by the operator).
    secret_name: str | None = None
    #: Names of the keys written, never their values.
    synced_keys: list[str] = Field(default_factory=list)
    #: When the Secret's content was last written or first verified.
    last_sync_time: str | None = None
    #: Keyed hash of the data the workloads last restarted for (says nothing about the values).
    data_hash: str | None = None
    #: The most recent restarts, oldest first.
    restarts: list[RestartRecord] = Field(default_factory=list)


class BackendStatus(CamelModel):
    """Status of a SecretBackend or ClusterSecretBackend: whether its configuration and credentials work."""

    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    #: When the credentials were last proven to work against the store.
    last_validated_time: str | None = None
