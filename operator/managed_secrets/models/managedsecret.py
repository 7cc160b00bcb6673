"""Typed view of a ManagedSecret: parsed once at the boundary, the core never indexes raw dicts."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from managed_secrets.api import CLUSTER_SECRET_BACKEND_KIND, SECRET_BACKEND_KIND
from managed_secrets.models.base import CamelModel
from managed_secrets.models.duration import MAX_DURATION, format_duration, parse_duration


class BackendKind(StrEnum):
    SECRET_BACKEND = SECRET_BACKEND_KIND
    CLUSTER_SECRET_BACKEND = CLUSTER_SECRET_BACKEND_KIND


class CreationPolicy(StrEnum):
    OWNER = "Owner"
    ORPHAN = "Orphan"
    MERGE = "Merge"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


#: Shortest refresh interval: more often would turn one object into a stream of store reads. 0 (fetch
#: once) is allowed. The CRD's CEL rule says the same.
MIN_REFRESH_INTERVAL = timedelta(seconds=1)
MAX_REFRESH_INTERVAL = MAX_DURATION
#: A restart waits at most this long after a change (the CRD's CEL rule says the same).
MAX_ROLLOUT_DEBOUNCE = timedelta(hours=1)


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):  # a bare number would be read as seconds: the CRD says string
        raise ValueError("must be a duration string like 30s, 5m or 1h30m")  # noqa: TRY004 - pydantic wants ValueError
    return parse_duration(value)


def _refresh_interval_bounds(value: timedelta) -> timedelta:
    if value and not MIN_REFRESH_INTERVAL <= value <= MAX_REFRESH_INTERVAL:
        raise ValueError(
            f"must be 0 (fetch once) or from {format_duration(MIN_REFRESH_INTERVAL)}"
            f" to {format_duration(MAX_REFRESH_INTERVAL)}"
        )
    return value


def _debounce_bounds(value: timedelta) -> timedelta:
    if value > MAX_ROLLOUT_DEBOUNCE:
        raise ValueError(f"must be at most {format_duration(MAX_ROLLOUT_DEBOUNCE)}")
    return value


RefreshInterval = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_refresh_interval_bounds)]
Debounce = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_debounce_bounds)]


class BackendRef(CamelModel):
    name: str
    kind: BackendKind = BackendKind.SECRET_BACKEND


class RemoteRef(CamelModel):
    key: str = Field(min_length=1)
    property: str | None = None
    version: str | None = None


class DataItem(CamelModel):
    secret_key: str = Field(min_length=1)
    remote_ref: RemoteRef


class ExtractRef(CamelModel):
    key: str = Field(min_length=1)
    version: str | None = None


class DataFromItem(CamelModel):
    extract: ExtractRef


class TargetTemplate(CamelModel):
    #: Secret key -> template of its text (written as UTF-8).
    data: dict[str, str] = Field(default_factory=dict)
    #: Secret key -> template that renders base64, decoded into the Secret: any bytes.
    binary_data: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_once(self) -> TargetTemplate:
        both = sorted(set(self.data) & set(self.binary_data))
        if both:
            raise ValueError(f"key {both[0]!r} is in both data and binaryData; keep it in one")
        return self


class Target(CamelModel):
    name: str | None = None
    type: str = "Opaque"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_policy: CreationPolicy = CreationPolicy.OWNER
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    template: TargetTemplate | None = None


class RolloutKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"
    ROLLOUT = "Rollout"  # Argo Rollouts, restarted through spec.restartAt


class RolloutTarget(CamelModel):
    kind: RolloutKind
    name: str = Field(min_length=1)


class Rollout(CamelModel):
    targets: list[RolloutTarget] = Field(default_factory=list)
    auto: bool = False
    debounce: Debounce = timedelta(seconds=10)


class ManagedSecretSpec(CamelModel):
    backend_ref: BackendRef
    refresh_interval: RefreshInterval = timedelta(hours=1)
    target: Target = Field(default_factory=Target)
    data: list[DataItem] = Field(default_factory=list)
    data_from: list[DataFromItem] = Field(default_factory=list)
    rollout: Rollout | None = None

    @field_validator("data")
    @classmethod
    def _unique_secret_keys(cls, items: list[DataItem]) -> list[DataItem]:
        seen: set[str] = set()
        for item in items:
            if item.secret_key in seen:
                raise ValueError(f"secretKey {item.secret_key!r} appears twice")
            seen.add(item.secret_key)
        return items

    @model_validator(mode="after")
    def _has_source(self) -> ManagedSecretSpec:
        if not self.data and not self.data_from:
            raise ValueError("set at least one of data or dataFrom")
        return self


class ManagedSecretRef(CamelModel):
    """Identity of a ManagedSecret, for logs, keys and owner references."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ManagedSecret(CamelModel):
    """What the reconcile core needs of a ManagedSecret object."""

    ref: ManagedSecretRef
    generation: int = 0
    spec: ManagedSecretSpec
    force_sync_token: str | None = None
    #: status.secretName: the Secret the operator last synced this ManagedSecret into (written only by it).
    synced_secret_name: str | None = None

    @property
    def target_name(self) -> str:
        return self.spec.target.name or self.ref.name
