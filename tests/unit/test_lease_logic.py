"""The lease schedule of core/leases.py: when to renew, when to replace, what to revoke when."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from managed_secrets.core.leases import (
    JITTER_SHARE,
    ROLLOUT_POLL_MAX_SECONDS,
    ROLLOUT_POLL_MIN_SECONDS,
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
from managed_secrets.core.restarts import Settlement
from managed_secrets.models.managedsecret import DynamicSource, RevokeAfter
from managed_secrets.providers.base import IssuedLease

SOURCE = DynamicSource(
    path="database/creds/app",
    revoke_grace_period=timedelta(seconds=30),
    revoke_after=RevokeAfter.GRACE_PERIOD,
)
AFTER_ROLLOUT = DynamicSource(path="database/creds/app", revoke_grace_period=timedelta(seconds=30))


def never_asked() -> Settlement:
    raise AssertionError("the workloads were read though no lease waits for their rollout")


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
    assert not pending.awaits_rollout
    due, later = due_revocations((pending,), 1039, never_asked)
    assert (due, later) == ((), (pending,))
    due, later = due_revocations((pending,), 1040, never_asked)
    assert (due, later) == ((pending,), ())
    assert due_revocations((pending,), 1060, never_asked) == ((), ()), "expired meanwhile: nothing to do"


def test_a_lease_waiting_for_the_rollout_goes_when_it_completes_and_never_while_it_runs() -> None:
    state = issued()
    (pending,) = replaced(state, AFTER_ROLLOUT, now=1010, still_valid=True)
    assert pending.awaits_rollout
    assert pending.replaced_at == 1010
    # Kept even when the grace period would outlast the lease: it waits for the rollout, not the time.
    assert replaced(state, AFTER_ROLLOUT, now=1040, still_valid=True) != ()
    assert due_revocations((pending,), 1011, lambda: Settlement.COMPLETE) == ((pending,), ())
    assert due_revocations((pending,), 1059, lambda: Settlement.IN_PROGRESS) == ((), (pending,)), (
        "never revoked while the rollout is in progress, the grace period notwithstanding"
    )
    assert due_revocations((pending,), 1039, lambda: Settlement.UNKNOWN) == ((), (pending,))
    assert due_revocations((pending,), 1040, lambda: Settlement.UNKNOWN) == ((pending,), ()), (
        "no rollout to follow: the grace period"
    )
    assert due_revocations((pending,), 1060, never_asked) == ((), ()), "expired: nothing to revoke"


def test_the_workloads_are_read_once_per_run_and_only_when_a_lease_waits() -> None:
    state = issued()
    by_time = PendingRevocation("a", 1040, 1100)
    waiting = (
        PendingRevocation("b", 1040, 1100, awaits_rollout=True, replaced_at=1010),
        PendingRevocation("c", 1050, 1100, awaits_rollout=True, replaced_at=1020),
    )
    asked: list[int] = []

    def settled() -> Settlement:
        asked.append(1)
        return Settlement.COMPLETE

    due, later = due_revocations((by_time, *waiting), 1030, settled)
    assert (due, later) == (waiting, (by_time,))
    assert asked == [1]
    assert state.next_run(1030) == state.due_at, "nothing pending: the renewal"


def test_the_rollout_is_polled_soon_at_first_then_less_often() -> None:
    pending = PendingRevocation("old", 5000, 9000, awaits_rollout=True, replaced_at=1000)
    state = LeaseState(**{**issued().__dict__, "due_at": 8000.0, "pending": (pending,)})
    assert state.next_run(1001) == 1001 + ROLLOUT_POLL_MIN_SECONDS
    assert state.next_run(1200) == 1200 + 50
    assert state.next_run(3000) == 3000 + ROLLOUT_POLL_MAX_SECONDS


def test_the_annotation_round_trips_and_bad_ones_mean_unknown() -> None:
    state = renewed_state(issued(), SOURCE, granted=60, now=1040)
    state = LeaseState(
        **{
            **state.__dict__,
            "pending": (
                PendingRevocation("old", 1050, 1070),
                PendingRevocation("older", 1060, 1090, awaits_rollout=True, replaced_at=1030),
            ),
        }
    )
    assert LeaseState.from_annotation(state.to_annotation()) == state
    assert state.next_run(1041) == min(state.due_at, 1050, 1041 + ROLLOUT_POLL_MIN_SECONDS)
    body = json.loads(state.to_annotation())
    body["revoke"] = [{"id": "old", "after": 1050, "expiresAt": 1070}]  # before revokeAfter existed
    old = LeaseState.from_annotation(json.dumps(body))
    assert old is not None
    assert old.pending == (PendingRevocation("old", 1050, 1070),), "it is revoked by time, as it was then"
    for bad in (None, "", "{", "[]", '{"id": 1}'):
        assert LeaseState.from_annotation(bad) is None


def test_the_reference_hides_the_lease_id() -> None:
    reference = lease_reference("database/creds/app/abc")
    assert reference.startswith("sha256:")
    assert "abc" not in reference
    assert "abc" not in repr(issued())


def test_created_once_is_for_static_data_only() -> None:
    from managed_secrets.models.managedsecret import ManagedSecretSpec, RefreshPolicy

    base = {"backendRef": {"name": "vault"}, "refreshPolicy": "CreatedOnce"}
    spec = ManagedSecretSpec.model_validate({**base, "data": [{"secretKey": "k", "remoteRef": {"key": "a"}}]})
    assert spec.refresh_policy is RefreshPolicy.CREATED_ONCE
    with pytest.raises(ValueError, match="CreatedOnce is for data and dataFrom"):
        ManagedSecretSpec.model_validate({**base, "dynamic": {"path": "database/creds/app"}})
