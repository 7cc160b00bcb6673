"""The lease schedule of core/leases.py: when to renew, when to replace, what to revoke when."""

from __future__ import annotations

from datetime import timedelta

import pytest

from managed_secrets.core.leases import (
    JITTER_SHARE,
    LeaseAction,
    LeaseState,
    PendingRevocation,
    decide,
    due_revocations,
    issued_state,
    lease_reference,
    renewed_state,
    replaced,
)
from managed_secrets.models.managedsecret import DynamicSource
from managed_secrets.providers.base import IssuedLease

SOURCE = DynamicSource(path="database/creds/app", revoke_grace_period=timedelta(seconds=30))


def issued(duration: int = 60, *, renewable: bool = True, now: float = 1000.0) -> LeaseState:
    lease = IssuedLease(lease_id="database/creds/app/abc", duration=duration, renewable=renewable, data={})
    return issued_state(lease, SOURCE, request="r", now=now, pending=(), data_proof="p")


def test_renewal_is_due_at_the_share_less_a_bounded_jitter() -> None:
    dues = {issued().due_at for _ in range(200)}
    assert all(1000 + 60 * (0.67 - JITTER_SHARE) <= due <= 1000 + 60 * 0.67 for due in dues)
    assert len(dues) > 100, "resources issued together are spread"


def test_decisions() -> None:
    state = issued()
    assert decide(None, wanted_request="r", data_intact=False, force=False, now=1000) is LeaseAction.ISSUE
    assert decide(state, wanted_request="r", data_intact=True, force=False, now=1001) is LeaseAction.KEEP
    assert decide(state, wanted_request="r", data_intact=True, force=False, now=1041) is LeaseAction.RENEW
    assert decide(state, wanted_request="other", data_intact=True, force=False, now=1001) is LeaseAction.ISSUE
    assert decide(state, wanted_request="r", data_intact=False, force=False, now=1001) is LeaseAction.ISSUE
    assert decide(state, wanted_request="r", data_intact=True, force=True, now=1001) is LeaseAction.ISSUE
    assert decide(state, wanted_request="r", data_intact=True, force=False, now=1059) is LeaseAction.ISSUE
    not_renewable = issued(renewable=False)
    assert (
        decide(not_renewable, wanted_request="r", data_intact=True, force=False, now=1041)
        is LeaseAction.ISSUE
    )


def test_a_renewal_cut_short_by_the_max_ttl_schedules_new_credentials_with_time_for_the_rollout() -> None:
    full = renewed_state(issued(), SOURCE, granted=60, now=1040)
    assert not full.reissue
    assert full.expires_at == 1100
    assert 1040 + 60 * (0.67 - JITTER_SHARE) <= full.due_at <= 1040 + 60 * 0.67
    short = renewed_state(issued(), SOURCE, granted=30, now=1040)
    assert short.reissue
    assert short.due_at == pytest.approx(1070 - 0.33 * 60)
    assert (
        decide(short, wanted_request="r", data_intact=True, force=False, now=short.due_at)
        is LeaseAction.ISSUE
    )


def test_the_replaced_lease_is_revoked_after_the_grace_period_unless_it_expires_first() -> None:
    state = issued()
    (pending,) = replaced(state, SOURCE, now=1010, still_valid=True)
    assert (pending.after, pending.expires_at) == (1040, 1060)
    assert replaced(state, SOURCE, now=1040, still_valid=True) == (), "it would expire before the grace ends"
    assert replaced(state, SOURCE, now=1010, still_valid=False) == (), "a lease that is gone is not revoked"
    due, later = due_revocations((pending,), 1039)
    assert (due, later) == ((), (pending,))
    due, later = due_revocations((pending,), 1040)
    assert (due, later) == ((pending,), ())
    assert due_revocations((pending,), 1060) == ((), ()), "expired meanwhile: nothing to do"


def test_the_annotation_round_trips_and_bad_ones_mean_unknown() -> None:
    state = renewed_state(issued(), SOURCE, granted=60, now=1040)
    state = LeaseState(**{**state.__dict__, "pending": (PendingRevocation("old", 1050, 1070),)})
    assert LeaseState.from_annotation(state.to_annotation()) == state
    assert state.next_run() == min(state.due_at, 1050)
    for bad in (None, "", "{", "[]", '{"id": 1}'):
        assert LeaseState.from_annotation(bad) is None


def test_the_reference_hides_the_lease_id() -> None:
    reference = lease_reference("database/creds/app/abc")
    assert reference.startswith("sha256:")
    assert "abc" not in reference
    assert "abc" not in repr(issued())
