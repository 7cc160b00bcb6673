"""The audit trail of a Secret's data: which keys changed, from which version to which, and why.

One record per change, for one Event and one structured log line (logger ``managed_secrets.audit``, its
fields under ``audit`` in JSON logs). Records name keys, versions, certificate serials and lease hashes,
never a value or a usable lease id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from managed_secrets.core.reconcile import SourceVersion, SyncResult, WriteAction

#: At most this many keys and versions are named in an event message (the log line has them all).
SHOWN = 10


@dataclass(frozen=True)
class ChangeRecord:
    message: str
    fields: Mapping[str, Any]


def _shown(items: list[str]) -> str:
    more = len(items) - SHOWN
    return ", ".join(items[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def change_record(result: SyncResult, previous: Iterable[SourceVersion], *, why: str) -> ChangeRecord | None:
    """The record of this run's change to the Secret's data, or None when the data did not change."""
    if result.action is WriteAction.UNCHANGED or not result.changed_keys:
        return None
    if result.action is WriteAction.UPDATED and not result.data_changed:
        return None
    before = {source.key: source.version for source in previous}
    moved = [
        (source.key, before.get(source.key), source.version)
        for source in result.sources
        if before.get(source.key) != source.version
    ]
    verb = "created with" if result.action is WriteAction.CREATED else "changed"
    message = f"Secret {result.secret_name}: keys {_shown(list(result.changed_keys))} {verb} ({why})"
    if moved:
        message += "; " + _shown([f"{key} {old or '-'} -> {new or '-'}" for key, old, new in moved])
    fields = {
        "secret": result.secret_name,
        "action": result.action.value,
        "why": why,
        "changedKeys": list(result.changed_keys),
        "versions": [{"key": key, "from": old, "to": new} for key, old, new in moved],
    }
    return ChangeRecord(message, fields)
