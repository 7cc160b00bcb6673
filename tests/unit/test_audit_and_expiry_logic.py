"""The audit record of a change, the ExpiresSoon condition, and the audit fields of JSON logs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from managed_secrets.core.audit import change_record
from managed_secrets.core.reconcile import SourceVersion, SyncResult, WriteAction
from managed_secrets.core.status import expiry_warning, with_expiry
from managed_secrets.logsafety import JsonFormatter
from managed_secrets.models.status import ManagedSecretStatus, find_condition

DAY = 86400.0
NOW = datetime(2026, 12, 3, tzinfo=UTC).timestamp()


def result(action: WriteAction, changed: tuple[str, ...], sources: tuple[SourceVersion, ...]) -> SyncResult:
    return SyncResult(
        "app", ("a", "b"), action, data_changed=action is WriteAction.UPDATED, data={}, sources=sources,
        changed_keys=changed,
    )  # fmt: skip


def test_a_change_names_keys_versions_and_why_never_more() -> None:
    before = [SourceVersion("k1", "1"), SourceVersion("k2", "7")]
    changed = result(WriteAction.UPDATED, ("a",), (SourceVersion("k1", "2"), SourceVersion("k2", "7")))
    record = change_record(changed, before, why="refresh")
    assert record is not None
    assert record.message == "Secret app: keys a changed (refresh); k1 1 -> 2"
    assert record.fields["versions"] == [{"key": "k1", "from": "1", "to": "2"}]
    assert change_record(result(WriteAction.UNCHANGED, (), ()), before, why="refresh") is None
    many = change_record(
        result(WriteAction.UPDATED, tuple(f"k{i}" for i in range(15)), ()), [], why="refresh"
    )
    assert many is not None
    assert "and 5 more" in many.message


def status(expires: float | None, renew: float | None = None) -> ManagedSecretStatus:
    def stamp(t: float | None) -> str | None:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else None

    return ManagedSecretStatus(expires_at=stamp(expires), renew_at=stamp(renew))


def reason(s: ManagedSecretStatus) -> tuple[str, str] | None:
    condition = find_condition(s.conditions, "ExpiresSoon")
    return (condition.status.value, condition.reason) if condition is not None else None


def test_expires_soon_for_static_values_and_overdue_renewals() -> None:
    window = 14 * DAY
    assert reason(with_expiry(status(None), now=NOW, window=window)) is None
    assert reason(with_expiry(status(NOW + 30 * DAY), now=NOW, window=window)) == ("False", "NotExpiringSoon")
    assert reason(with_expiry(status(NOW + 3 * DAY), now=NOW, window=window)) == ("True", "ExpiresSoon")
    assert reason(with_expiry(status(NOW - 1), now=NOW, window=window)) == ("True", "Expired")
    renewed = status(NOW + 3 * DAY, renew=NOW + DAY)
    assert reason(with_expiry(renewed, now=NOW, window=window)) == ("False", "RenewedAhead")
    assert reason(with_expiry(renewed, now=NOW + DAY + 61, window=window)) == ("True", "RenewalOverdue")


def test_one_warning_when_it_turns_true() -> None:
    window = 14 * DAY
    quiet = with_expiry(status(NOW + 30 * DAY), now=NOW, window=window)
    soon = with_expiry(status(NOW + 3 * DAY), now=NOW, window=window)
    warning = expiry_warning(quiet, soon)
    assert warning is not None
    assert warning.reason == "ExpiresSoon"
    assert expiry_warning(soon, with_expiry(soon, now=NOW + 60, window=window)) is None
    assert with_expiry(soon, now=NOW + 60, window=window) is soon, "nothing changed, nothing to write"


def test_json_logs_carry_the_audit_fields() -> None:
    record = logging.LogRecord(
        "managed_secrets.audit", logging.INFO, __file__, 1, "ns/app: changed", (), None
    )
    record.audit = {"secret": "app", "versions": [{"key": "k", "from": "1", "to": "2"}]}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["audit"]["versions"] == [{"key": "k", "from": "1", "to": "2"}]
    assert entry["logger"] == "managed_secrets.audit"
