"""Credentials under a lease: when to renew, when to issue anew, when to revoke the replaced lease.

Level-based like certificates: the lease's state is kept with the Secret (the annotation
managedsecrets.io/lease, JSON), so an operator restart finds the lease, renews it when due, and issues
nothing. The annotation holds the lease id, which can act on the lease (with a token allowed to); whoever
can read the Secret reads the credentials themselves anyway. Status, events and logs get only its hash.

Schedule (times are wall-clock epoch seconds):
- issued with duration d: due at issue + d * share, less a jitter of up to a tenth of d, drawn once and
  kept in the annotation, so resources issued together drift apart and a restart moves nothing;
- a renewal that gets the full duration back is due again the same way; one that gets less has hit the
  max TTL: new credentials are then due while (1 - share) * d is left, time for the rollout;
- a lease that is not renewable is replaced at its due time;
- a replaced lease is revoked (revokeAfter RolloutComplete) once the workloads rolled for the new
  credentials have completed their rollout, found by polling them while it waits (every 5 s at first, less
  often the longer it takes, at most every minute); when no workload is rolled, or its progress cannot be
  read, or with revokeAfter GracePeriod: revokeGracePeriod after the new credentials were written. A lease
  that expires first is dropped: nothing left to revoke.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from managed_secrets.core.restarts import Settlement
from managed_secrets.models.managedsecret import DynamicSource, RevokeAfter
from managed_secrets.providers.base import IssuedLease, LeaseRequest

#: The jitter: up to this share of the lease's duration earlier than the nominal renewal time.
JITTER_SHARE = 0.1
#: A lease this close to its expiry is not renewed but replaced: a renewal could land too late.
EXPIRY_MARGIN_SECONDS = 2.0
#: Polling the rollout a revocation waits for: from this interval, a quarter of the time waited so far,
#: up to the maximum (a rollout of minutes is seen within seconds; a stuck one costs a list a minute).
ROLLOUT_POLL_MIN_SECONDS = 5.0
ROLLOUT_POLL_MAX_SECONDS = 60.0
_RANDOM = secrets.SystemRandom()


class LeaseAction(StrEnum):
    KEEP = "keep"
    RENEW = "renew"
    ISSUE = "issue"


@dataclass(frozen=True)
class PendingRevocation:
    """A replaced lease, revoked at ``after`` unless it expires first; one that ``awaits_rollout`` is
    revoked once the rollout for its replacement completed, and at ``after`` only if none can be followed."""

    lease_id: str = field(repr=False)
    after: float
    expires_at: float
    awaits_rollout: bool = False
    #: when its replacement was written
    replaced_at: float = 0.0


@dataclass(frozen=True)
class LeaseState:
    lease_id: str = field(repr=False)
    #: hash of the backend and the request it was issued for (a changed request issues anew)
    request: str
    issued_at: float
    #: the duration granted at issue: what each renewal asks for
    duration: int
    expires_at: float
    renewable: bool
    #: the next renewal, or (``reissue``) the time to replace the lease
    due_at: float
    reissue: bool
    renewed_at: float | None = None
    pending: tuple[PendingRevocation, ...] = ()
    #: keyed hash binding the Secret's data to the lease (core.ownership.lease_data_proof)
    data_proof: str = ""

    @property
    def reference(self) -> str:
        return lease_reference(self.lease_id)

    def to_annotation(self) -> str:
        body: dict[str, Any] = {
            "id": self.lease_id,
            "request": self.request,
            "issuedAt": self.issued_at,
            "duration": self.duration,
            "expiresAt": self.expires_at,
            "renewable": self.renewable,
            "dueAt": self.due_at,
            "reissue": self.reissue,
            "renewedAt": self.renewed_at,
            "dataProof": self.data_proof,
            "revoke": [
                {
                    "id": p.lease_id,
                    "after": p.after,
                    "expiresAt": p.expires_at,
                    "awaitsRollout": p.awaits_rollout,
                    "replacedAt": p.replaced_at,
                }
                for p in self.pending
            ],
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_annotation(cls, text: str | None) -> LeaseState | None:
        """None for a missing or malformed annotation: then nothing is known, and new credentials are due."""
        if not text:
            return None
        try:
            body = json.loads(text)
            return cls(
                lease_id=str(body["id"]),
                request=str(body["request"]),
                issued_at=float(body["issuedAt"]),
                duration=int(body["duration"]),
                expires_at=float(body["expiresAt"]),
                renewable=bool(body["renewable"]),
                due_at=float(body["dueAt"]),
                reissue=bool(body["reissue"]),
                renewed_at=float(body["renewedAt"]) if body.get("renewedAt") is not None else None,
                data_proof=str(body.get("dataProof") or ""),
                pending=tuple(
                    PendingRevocation(
                        str(p["id"]),
                        float(p["after"]),
                        float(p["expiresAt"]),
                        awaits_rollout=bool(p.get("awaitsRollout", False)),
                        replaced_at=float(p.get("replacedAt") or 0.0),
                    )
                    for p in body.get("revoke") or []
                ),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def next_run(self, now: float) -> float:
        """When this resource must run next at the latest: the renewal, a revocation, or a look at the
        rollout a revocation waits for."""
        times = [self.due_at, *(p.after for p in self.pending)]
        times += [rollout_poll_at(p, now) for p in self.pending if p.awaits_rollout]
        return min(times)


def rollout_poll_at(pending: PendingRevocation, now: float) -> float:
    waited = max(now - pending.replaced_at, 0.0)
    return now + min(max(waited / 4, ROLLOUT_POLL_MIN_SECONDS), ROLLOUT_POLL_MAX_SECONDS)


def lease_reference(lease_id: str) -> str:
    """What status, events and logs show of a lease: a hash (the id itself can act on the lease)."""
    return "sha256:" + hashlib.sha256(lease_id.encode()).hexdigest()[:16]


def request_of(source: DynamicSource) -> LeaseRequest:
    return LeaseRequest(
        path=source.path.strip("/"), method=source.method.value, parameters=dict(source.parameters)
    )


def request_hash(backend_id: str, request: LeaseRequest) -> str:
    canonical = json.dumps(
        [backend_id, request.path, request.method, sorted(request.parameters.items())], separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _share(source: DynamicSource) -> float:
    return source.renew_at_percent / 100


def _jittered_due(start: float, duration: float, source: DynamicSource) -> float:
    return start + duration * (_share(source) - JITTER_SHARE * _RANDOM.random())


def issued_state(
    issued: IssuedLease,
    source: DynamicSource,
    *,
    request: str,
    now: float,
    pending: tuple[PendingRevocation, ...],
    data_proof: str,
) -> LeaseState:
    duration = max(issued.duration, 1)
    return LeaseState(
        lease_id=issued.lease_id,
        request=request,
        issued_at=now,
        duration=duration,
        expires_at=now + duration,
        renewable=issued.renewable,
        due_at=_jittered_due(now, duration, source),
        reissue=not issued.renewable,
        pending=pending,
        data_proof=data_proof,
    )


def renewed_state(state: LeaseState, source: DynamicSource, *, granted: int, now: float) -> LeaseState:
    expires_at = now + granted
    if granted >= state.duration:
        return replace(
            state,
            expires_at=expires_at,
            renewed_at=now,
            due_at=_jittered_due(now, granted, source),
            reissue=False,
        )
    # The max TTL is near: new credentials while there is still time for the rollout.
    return replace(
        state,
        expires_at=expires_at,
        renewed_at=now,
        due_at=max(now, expires_at - (1 - _share(source)) * state.duration),
        reissue=True,
    )


def decide(
    state: LeaseState | None, *, wanted_request: str, data_intact: bool, force: bool, now: float
) -> LeaseAction:
    """``data_intact``: the Secret's data is what was issued under the lease (not changed by hand)."""
    if state is None or force or state.request != wanted_request or not data_intact:
        return LeaseAction.ISSUE
    if now >= state.expires_at - EXPIRY_MARGIN_SECONDS:
        return LeaseAction.ISSUE
    if now < state.due_at:
        return LeaseAction.KEEP
    return LeaseAction.ISSUE if state.reissue or not state.renewable else LeaseAction.RENEW


def replaced(
    previous: LeaseState | None, source: DynamicSource, *, now: float, still_valid: bool
) -> tuple[PendingRevocation, ...]:
    """The revocations due once new credentials replace ``previous``: its own pending ones, and itself
    after the grace period (when it is still valid and would outlive it)."""
    if previous is None:
        return ()
    pending = previous.pending
    after = now + source.revoke_grace_period.total_seconds()
    awaits_rollout = source.revoke_after is RevokeAfter.ROLLOUT_COMPLETE
    # Waiting for a rollout, the lease is kept as long as it is valid; by time alone, only when it would
    # outlive the grace period.
    if still_valid and (awaits_rollout or after < previous.expires_at):
        replacement = PendingRevocation(
            previous.lease_id, after, previous.expires_at, awaits_rollout=awaits_rollout, replaced_at=now
        )
        pending = (*pending, replacement)
    return pending


def due_revocations(
    pending: tuple[PendingRevocation, ...], now: float, rollout: Callable[[], Settlement]
) -> tuple[tuple[PendingRevocation, ...], tuple[PendingRevocation, ...]]:
    """(to revoke now, to keep for later); leases already expired are dropped, nothing to do.

    ``rollout`` says how far the rollout for the Secret's current data has got; it is asked (it reads the
    workloads) only when a lease waits for it. A complete rollout of the current data replaced every older
    credential, so it releases every lease waiting.
    """
    valid = [p for p in pending if now < p.expires_at]
    settled: Settlement | None = None
    due: list[PendingRevocation] = []
    later: list[PendingRevocation] = []
    for p in valid:
        if p.awaits_rollout:
            if settled is None:
                settled = rollout()
            ready = settled is Settlement.COMPLETE or (settled is Settlement.UNKNOWN and p.after <= now)
        else:
            ready = p.after <= now
        (due if ready else later).append(p)
    return tuple(due), tuple(later)
