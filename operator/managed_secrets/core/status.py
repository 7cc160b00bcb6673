"""The ManagedSecret status, the one place it is computed: after a sync, a failure or a rollout.

Typed end to end: the controller parses the object's status at the boundary (``parse_status``), each step
here returns a new ``ManagedSecretStatus``, and ``status_patch`` says what to write, or that nothing
changed. A refresh that finds the same data leaves the status untouched (no churn, no watch events), so
``lastSyncTime`` is the last time the Secret's content was written or first verified, and a condition's
``lastTransitionTime`` the last time its status changed (``set_condition``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from managed_secrets.api import EXPIRY_CONDITION, READY_CONDITION, ROLLOUT_CONDITION
from managed_secrets.core.certificates import rfc3339
from managed_secrets.core.leases import LeaseState
from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.core.restarts import (
    MAX_RESTARTS,
    Outcome,
    RestartResult,
    RolloutReason,
    RolloutReport,
)
from managed_secrets.errors import Reason, SyncError
from managed_secrets.models.status import (
    Condition,
    ConditionStatus,
    LeaseStatus,
    ManagedSecretStatus,
    RestartRecord,
    SourceStatus,
    find_condition,
    now_rfc3339,
    set_condition,
)

log = logging.getLogger(__name__)

#: The longest condition message the schema takes (metav1.Condition).
MAX_MESSAGE = 32768


# -- the boundary ------------------------------------------------------------------------------------------


def parse_status(raw: object) -> ManagedSecretStatus:
    """The status of a ManagedSecret as read from the API server.

    Lenient: a field (or one condition, one restart) that does not fit the model, e.g. written before the
    status had a schema, is left out, so the object keeps working instead of failing for good; each field a
    later write changes is written valid again.
    """
    if not isinstance(raw, Mapping):
        return ManagedSecretStatus()
    try:
        return ManagedSecretStatus.model_validate(raw)
    except ValidationError:
        pass
    kept: dict[str, Any] = {}
    for name, info in ManagedSecretStatus.model_fields.items():
        alias = info.alias or name
        if alias not in raw:
            continue
        value = raw[alias]
        if isinstance(value, list):
            value = [item for item in value if _fits(alias, [item])]
        if _fits(alias, value):
            kept[alias] = value
    log.debug("status fields left out as malformed: %s", ", ".join(sorted(set(raw) - set(kept))) or "parts")
    return ManagedSecretStatus.model_validate(kept)


def _fits(alias: str, value: object) -> bool:
    try:
        ManagedSecretStatus.model_validate({alias: value})
    except ValidationError:
        return False
    return True


def status_dict(status: ManagedSecretStatus) -> dict[str, Any]:
    """The status as written: unset fields and empty lists left out (``restarts`` appears with the first
    restart, as before the status had a schema)."""
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: value for key, value in dumped.items() if value != []}


def status_patch(current: ManagedSecretStatus, new: ManagedSecretStatus) -> dict[str, Any] | None:
    """A merge patch turning ``current`` into ``new`` (fields that vanished set to null); None when nothing
    a person would read changed, so nothing is written."""
    if current == new:  # the common case (a refresh that found nothing new), without serialising
        return None
    before, after = status_dict(current), status_dict(new)
    if before == after:
        return None
    patch: dict[str, Any] = {key: value for key, value in after.items() if before.get(key) != value}
    patch.update({key: None for key in before if key not in after})
    return patch


# -- after a sync ------------------------------------------------------------------------------------------


def after_sync(
    current: ManagedSecretStatus,
    generation: int,
    result: SyncResult,
    *,
    data_hash: str | None = None,
    now: str | None = None,
) -> ManagedSecretStatus:
    """Ready after a successful sync; ``data_hash`` is recorded along (a first sync: see core/restarts)."""
    now = now or now_rfc3339()
    wrote = result.action is not WriteAction.UNCHANGED
    conditions = set_condition(
        current.conditions,
        READY_CONDITION,
        ConditionStatus.TRUE,
        Reason.SYNCED.value,
        f"Secret {result.secret_name} is in sync ({len(result.keys)} keys)",
        observed_generation=generation,
        now=now,
    )
    return current.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions,
            "secret_name": result.secret_name,
            "synced_keys": list(result.keys),
            "last_sync_time": now if wrote or not current.last_sync_time else current.last_sync_time,
            "data_hash": data_hash if data_hash is not None else current.data_hash,
            "expires_at": current.expires_at
            if result.unread
            else (rfc3339(result.expires_at) if result.expires_at is not None else None),
            "renew_at": rfc3339(result.renew_at) if result.renew_at is not None else None,
            "lease": _lease_status(result.lease) if result.lease is not None else None,
            "sources": current.sources
            if result.unread
            else [SourceStatus(key=v.key, version=v.version) for v in result.sources],
        }
    )


def _lease_status(lease: LeaseState) -> LeaseStatus:
    return LeaseStatus(
        id=lease.reference,
        issued_at=rfc3339(lease.issued_at),
        renewed_at=rfc3339(lease.renewed_at) if lease.renewed_at is not None else None,
        expires_at=rfc3339(lease.expires_at),
        renewable=lease.renewable,
        pending_revocations=len(lease.pending),
    )


#: A renewal this late (the operator retries failures within its backoff) is overdue.
RENEWAL_OVERDUE_AFTER = 60.0


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def _expiry_state(status: ManagedSecretStatus, now: float, window: float) -> tuple[ConditionStatus, str, str]:
    assert status.expires_at is not None  # noqa: S101 - the caller checked
    expires = status.expires_at
    if status.renew_at is not None:
        if now >= _epoch(status.renew_at) + RENEWAL_OVERDUE_AFTER:
            message = (
                f"the renewal due at {status.renew_at} has not happened; the Secret's content expires at"
            )
            return ConditionStatus.TRUE, "RenewalOverdue", f"{message} {expires} (see the Ready condition)"
        return (
            ConditionStatus.FALSE,
            "RenewedAhead",
            f"renewed at {status.renew_at}, before it expires at {expires}",
        )
    remaining = _epoch(expires) - now
    if remaining <= 0:
        return ConditionStatus.TRUE, "Expired", f"a value the Secret holds expired at {expires}"
    if remaining <= window:
        message = f"a value the Secret holds expires at {expires}; the store's owner must replace it"
        return ConditionStatus.TRUE, "ExpiresSoon", message
    return ConditionStatus.FALSE, "NotExpiringSoon", f"the earliest expiry is {expires}"


def with_expiry(status: ManagedSecretStatus, *, now: float, window: float) -> ManagedSecretStatus:
    """The ExpiresSoon condition from status.expiresAt: a static value within ``window`` of its expiry
    (or past it); a certificate or lease whose renewal (renewAt) is overdue. No expiry: no condition."""
    if status.expires_at is None:
        kept = [c for c in status.conditions if c.type != EXPIRY_CONDITION]
        return (
            status if len(kept) == len(status.conditions) else status.model_copy(update={"conditions": kept})
        )
    flag, reason, message = _expiry_state(status, now, window)
    updated = set_condition(status.conditions, EXPIRY_CONDITION, flag, reason, message)
    return status if updated == status.conditions else status.model_copy(update={"conditions": updated})


def expiry_warning(before: ManagedSecretStatus, after: ManagedSecretStatus) -> Condition | None:
    """The ExpiresSoon condition when it has just become true (or changed its reason while true)."""
    new = find_condition(after.conditions, EXPIRY_CONDITION)
    if new is None or new.status != ConditionStatus.TRUE:
        return None
    old = find_condition(before.conditions, EXPIRY_CONDITION)
    if old is not None and old.status == ConditionStatus.TRUE and old.reason == new.reason:
        return None
    return new


def after_failure(
    current: ManagedSecretStatus, generation: int, error: SyncError, *, now: str | None = None
) -> ManagedSecretStatus:
    """Not Ready, with the error's stable reason; the rest (the last good sync) stays as it was."""
    conditions = set_condition(
        current.conditions,
        READY_CONDITION,
        ConditionStatus.FALSE,
        error.reason.value,
        _bounded(error.message),
        observed_generation=generation,
        now=now,
    )
    return current.model_copy(update={"observed_generation": generation, "conditions": conditions})


def ready_reason(status: ManagedSecretStatus) -> str | None:
    condition = find_condition(status.conditions, READY_CONDITION)
    return condition.reason if condition is not None else None


# -- after a rollout ---------------------------------------------------------------------------------------


def after_rollouts(current: ManagedSecretStatus, reports: Iterable[RolloutReport]) -> ManagedSecretStatus:
    """``current`` with the rollouts that ended recorded, in the order they ended."""
    for report in reports:
        current = rollout_status(
            current,
            report.outcomes,
            report.data_hash,
            report.finished_at,
            generation=report.generation,
        )
    return current


def rollout_status(
    current: ManagedSecretStatus,
    outcomes: Sequence[Outcome],
    recorded_hash: str | None,
    now: str,
    *,
    generation: int | None = None,
) -> ManagedSecretStatus:
    """Status after a rollout: dataHash (only when every workload was handled), restarts, condition."""
    update: dict[str, Any] = {}
    if recorded_hash is not None and all(o.ok for o in outcomes):
        update["data_hash"] = recorded_hash
    restarted = [o.workload for o in outcomes if o.result is RestartResult.RESTARTED and o.workload]
    if restarted:
        entries = [RestartRecord(kind=w.kind.value, name=w.name, time=now) for w in restarted]
        update["restarts"] = [*current.restarts, *entries][-MAX_RESTARTS:]
    conditions = _rollout_condition(current.conditions, outcomes, now, generation)
    if conditions is not None:
        update["conditions"] = conditions
    return current.model_copy(update=update)


def _rollout_condition(
    conditions: Sequence[Condition], outcomes: Sequence[Outcome], now: str, generation: int | None
) -> list[Condition] | None:
    """The conditions with Rollout set after a rollout ran; None leaves the present one (or its absence)
    alone: a rollout that restarted nothing after a good one has nothing new to say."""
    previous = find_condition(conditions, ROLLOUT_CONDITION)
    failures = [o for o in outcomes if not o.ok]
    restarted = [o for o in outcomes if o.result is RestartResult.RESTARTED]
    if failures:
        status, reason = ConditionStatus.FALSE, failures[0].reason or RolloutReason.ROLLOUT_FAILED
        message = "; ".join(o.message or f"{o.workload}: {o.result.value}" for o in failures)
    elif restarted:
        status, reason = ConditionStatus.TRUE, RolloutReason.RESTARTED
        message = "restarted " + ", ".join(str(o.workload) for o in restarted)
    elif previous is not None and previous.status is not ConditionStatus.TRUE:
        status, reason = ConditionStatus.TRUE, RolloutReason.UP_TO_DATE
        message = "the workloads run with the current data"
    else:
        return None
    # Rollout comes after Ready, as it always has been written.
    others = [c for c in conditions if c.type != ROLLOUT_CONDITION]
    return [
        *others,
        *set_condition(
            [previous] if previous is not None else [],
            ROLLOUT_CONDITION,
            status,
            reason.value,
            _bounded(message),
            observed_generation=generation,
            now=now,
        ),
    ]


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
