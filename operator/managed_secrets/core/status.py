"""The ManagedSecret status: written only when something a person would read has changed.

A refresh that finds the same data leaves the status untouched (no churn, no watch events), so
``lastSyncTime`` is the last time the Secret's content was written or first verified, and the
Ready condition's ``lastTransitionTime`` the last time readiness changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from managed_secrets.api import READY_CONDITION
from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.errors import Reason, SyncError


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    current: Mapping[str, Any], status: str, reason: str, message: str, generation: int
) -> dict[str, Any]:
    previous = next((c for c in current.get("conditions") or [] if c.get("type") == READY_CONDITION), None)
    same = previous is not None and previous.get("status") == status
    return {
        "type": READY_CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": previous.get("lastTransitionTime", _now()) if same and previous else _now(),
    }


def _other_conditions(current: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(c) for c in current.get("conditions") or [] if c.get("type") != READY_CONDITION]


def success_status(current: Mapping[str, Any], generation: int, result: SyncResult) -> dict[str, Any]:
    message = f"Secret {result.secret_name} is in sync ({len(result.keys)} keys)"
    wrote = result.action is not WriteAction.UNCHANGED
    last_sync = _now() if wrote or not current.get("lastSyncTime") else current["lastSyncTime"]
    return {
        **current,
        "observedGeneration": generation,
        "conditions": [
            _condition(current, "True", Reason.SYNCED, message, generation),
            *_other_conditions(current),
        ],
        "secretName": result.secret_name,
        "syncedKeys": list(result.keys),
        "lastSyncTime": last_sync,
    }


def failure_status(current: Mapping[str, Any], generation: int, error: SyncError) -> dict[str, Any]:
    return {
        **current,
        "observedGeneration": generation,
        "conditions": [
            _condition(current, "False", error.reason, error.message, generation),
            *_other_conditions(current),
        ],
    }


def changed(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return dict(current) != dict(new)


def status_patch(current: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``current`` into ``new`` (fields that vanished are set to null)."""
    patch: dict[str, Any] = {key: value for key, value in new.items() if current.get(key) != value}
    patch.update({key: None for key in current if key not in new})
    return patch
