"""The backends' Ready condition without a cluster: status computation, writes only on change, events on
transitions, and the bounded, namespace-fair validation queue."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from managed_secrets.api import READY_CONDITION
from managed_secrets.core.clients import ProviderPool
from managed_secrets.errors import AuthFailed, BackendUnavailable, InvalidBackend
from managed_secrets.models.backend import Backend, BackendId
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.models.status import BackendStatus, ConditionStatus, find_condition
from managed_secrets.providers.base import CredentialValue, RemoteKey, SecretProvider
from managed_secrets.providers.guard import CredentialPolicy, EndpointAllowlist
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.runtime.backend_status import (
    NOT_VALIDATED_REASON,
    VALID_REASON,
    BackendStatusReporter,
    BackendStatusSettings,
    Outcome,
    next_status,
    parse_status,
    status_patch,
    transition_event,
    validate_backend,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
T2 = "2026-01-01T02:00:00Z"
OK = Outcome(ConditionStatus.TRUE, VALID_REASON, "SecretBackend a/b: the store accepted its credentials")
REFUSED = Outcome(ConditionStatus.FALSE, "AuthFailed", "SecretBackend a/b: token lookup: permission denied")


def body(name: str = "vault", namespace: str | None = "team-a", generation: int = 1) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "generation": generation}
    if namespace:
        meta["namespace"] = namespace
    return {"kind": "SecretBackend", "metadata": meta, "spec": {"fake": {"mode": "ok"}}}


# -- status computation ----------------------------------------------------------------------------


def test_first_success_sets_ready_generation_and_validated_time() -> None:
    new = next_status(BackendStatus(), 3, OK, now=T0)
    ready = find_condition(new.conditions, READY_CONDITION)
    assert ready is not None
    assert (ready.status, ready.reason, ready.observed_generation) == (ConditionStatus.TRUE, "Valid", 3)
    assert ready.last_transition_time == T0
    assert new.observed_generation == 3
    assert new.last_validated_time == T0


def test_unchanged_success_writes_nothing_until_the_validated_time_is_old() -> None:
    first = next_status(BackendStatus(), 1, OK, now=T0)
    again = next_status(first, 1, OK, now=T1, refresh_validated_after=3600)
    assert again == first
    assert status_patch(first, again) is None
    later = next_status(first, 1, OK, now=T2, refresh_validated_after=3600)
    assert status_patch(first, later) == {"lastValidatedTime": T2}


def test_failure_keeps_last_validated_time_and_moves_the_transition() -> None:
    ok = next_status(BackendStatus(), 1, OK, now=T0)
    failed = next_status(ok, 1, REFUSED, now=T1)
    ready = find_condition(failed.conditions, READY_CONDITION)
    assert ready is not None
    assert (ready.status, ready.reason, ready.last_transition_time) == (
        ConditionStatus.FALSE,
        "AuthFailed",
        T1,
    )
    assert failed.last_validated_time == T0  # when the credentials last worked
    patch = status_patch(ok, failed)
    assert patch is not None
    assert set(patch) == {"conditions"}
    # The same failure again: nothing to write.
    assert status_patch(failed, next_status(failed, 1, REFUSED, now=T2)) is None


def test_new_generation_is_written_even_when_the_outcome_is_the_same() -> None:
    ok = next_status(BackendStatus(), 1, OK, now=T0)
    newer = next_status(ok, 2, OK, now=T1)
    patch = status_patch(ok, newer)
    assert patch is not None
    assert patch["observedGeneration"] == 2
    assert patch["lastValidatedTime"] == T1
    ready = find_condition(newer.conditions, READY_CONDITION)
    assert ready is not None
    assert ready.last_transition_time == T0  # still True: no transition


def test_events_only_on_transitions() -> None:
    ok = next_status(BackendStatus(), 1, OK, now=T0)
    assert transition_event(BackendStatus(), ok) == ("Normal", "Valid", OK.message)
    failed = next_status(ok, 1, REFUSED, now=T1)
    assert transition_event(ok, failed) == ("Warning", "AuthFailed", REFUSED.message)
    assert transition_event(failed, next_status(failed, 1, REFUSED, now=T2)) is None
    down = Outcome(ConditionStatus.FALSE, "BackendUnavailable", "down")
    assert transition_event(failed, next_status(failed, 1, down, now=T2)) == (
        "Warning",
        "BackendUnavailable",
        "down",
    )


def test_malformed_status_counts_as_none() -> None:
    assert parse_status({"conditions": "not a list"}) == BackendStatus()
    assert parse_status(None) == BackendStatus()
    status = next_status(BackendStatus(), 1, OK, now=T0)
    assert parse_status(status.model_dump(by_alias=True, mode="json")) == status


# -- validation through the provider source ------------------------------------------------------------


class FakeProvider:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def fetch(self, ref: RemoteKey) -> bytes:
        raise AssertionError("validation must not read a value")

    def validate(self) -> None:
        if self.mode == "refused":
            raise AuthFailed("SecretBackend team-a/vault: token lookup: permission denied")
        if self.mode == "down":
            raise BackendUnavailable("SecretBackend team-a/vault: token lookup: ConnectionError")
        if self.mode == "crash":
            raise RuntimeError("hunter2 in a foreign message")
        if self.mode == "slow":
            time.sleep(0.3)

    def close(self) -> None:
        pass


class NoValidate:
    def fetch(self, ref: RemoteKey) -> bytes:
        return b""

    def close(self) -> None:
        pass


class FakeProviders:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.most_running: dict[str, int] = {}
        self.most_total = 0
        self.calls = 0

    def get(self, backend: Backend) -> SecretProvider:
        mode = str(backend.config.get("mode", "ok"))
        if mode == "invalid":
            raise InvalidBackend(f"{backend.id}: vault.server is required")
        if mode == "plugin":
            return NoValidate()
        return _Tracked(self, backend.id.namespace or "", FakeProvider(mode))


class _Tracked(FakeProvider):
    def __init__(self, owner: FakeProviders, namespace: str, inner: FakeProvider) -> None:
        super().__init__(inner.mode)
        self.owner, self.namespace = owner, namespace

    def validate(self) -> None:
        owner = self.owner
        with owner.lock:
            owner.calls += 1
            owner.running[self.namespace] = owner.running.get(self.namespace, 0) + 1
            owner.most_running[self.namespace] = max(
                owner.most_running.get(self.namespace, 0), owner.running[self.namespace]
            )
            owner.most_total = max(owner.most_total, sum(owner.running.values()))
        try:
            super().validate()
        finally:
            with owner.lock:
                owner.running[self.namespace] -= 1


def with_mode(mode: str, **kwargs: Any) -> dict[str, Any]:
    b = body(**kwargs)
    b["spec"] = {"fake": {"mode": mode}}
    return b


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("ok", ConditionStatus.TRUE, VALID_REASON),
        ("refused", ConditionStatus.FALSE, "AuthFailed"),
        ("down", ConditionStatus.FALSE, "BackendUnavailable"),
        ("invalid", ConditionStatus.FALSE, "InvalidBackend"),
        ("plugin", ConditionStatus.UNKNOWN, NOT_VALIDATED_REASON),
        ("crash", ConditionStatus.FALSE, "InternalError"),
    ],
)
def test_validate_backend_outcomes(mode: str, status: ConditionStatus, reason: str) -> None:
    outcome = validate_backend(with_mode(mode), FakeProviders())
    assert (outcome.status, outcome.reason) == (status, reason)
    assert "hunter2" not in outcome.message


def test_a_malformed_backend_is_invalid_backend() -> None:
    broken = body()
    broken["spec"] = {}
    outcome = validate_backend(broken, FakeProviders())
    assert (outcome.status, outcome.reason) == (ConditionStatus.FALSE, "InvalidBackend")


# -- the reporter ------------------------------------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.patches: list[tuple[BackendId, Mapping[str, Any]]] = []
        self.events: list[tuple[BackendId, str, str]] = []

    def patch_backend_status(self, key: BackendId, patch: Mapping[str, Any]) -> None:
        self.patches.append((key, dict(patch)))

    def post_backend_event(self, key: BackendId, uid: str, *, reason: str, message: str, type_: str) -> None:
        self.events.append((key, type_, reason))


async def wait_until(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_reporter_validates_new_and_changed_backends_and_ignores_status_echoes() -> None:
    async def scenario() -> None:
        writer = FakeWriter()
        reporter = BackendStatusReporter(FakeProviders(), writer, BackendStatusSettings(interval=0))
        await reporter.start()
        try:
            assert reporter.observe(BackendKind.SECRET_BACKEND, with_mode("ok"))
            await wait_until(lambda: reporter.validations == 1)
            assert len(writer.patches) == 1
            assert writer.events[0][1:] == ("Normal", "Valid")
            # The echo of our write: same generation, no validation.
            echo = with_mode("ok")
            echo["status"] = writer.patches[0][1]
            assert not reporter.observe(BackendKind.SECRET_BACKEND, echo)
            await asyncio.sleep(0.1)
            assert reporter.validations == 1
            # A new generation that breaks it: validated at once, written, one Warning.
            assert reporter.observe(
                BackendKind.SECRET_BACKEND, {**with_mode("refused", generation=2), "status": echo["status"]}
            )
            await wait_until(lambda: reporter.validations == 2)
            key, patch = writer.patches[-1]
            assert key == BackendId(kind=BackendKind.SECRET_BACKEND, name="vault", namespace="team-a")
            assert patch["observedGeneration"] == 2
            assert patch["conditions"][0]["reason"] == "AuthFailed"
            assert writer.events[-1][1:] == ("Warning", "AuthFailed")
        finally:
            await reporter.stop()

    asyncio.run(scenario())


def test_reporter_revalidates_periodically_and_writes_only_changes() -> None:
    async def scenario() -> None:
        writer = FakeWriter()
        providers = FakeProviders()
        reporter = BackendStatusReporter(providers, writer, BackendStatusSettings(interval=0.05, jitter=0.1))
        await reporter.start()
        try:
            reporter.observe(BackendKind.CLUSTER_SECRET_BACKEND, with_mode("ok", namespace=None))
            await wait_until(lambda: reporter.validations >= 5)
            assert len(writer.patches) == 1  # every later check found it as it was
            assert writer.patches[0][0].namespace is None
            reporter.forget(BackendKind.CLUSTER_SECRET_BACKEND, "vault", None)
            seen = reporter.validations
            await asyncio.sleep(0.2)
            assert reporter.validations <= seen + 1  # at most one that was already running
        finally:
            await reporter.stop()

    asyncio.run(scenario())


def test_one_namespace_with_many_slow_backends_does_not_starve_another() -> None:
    async def scenario() -> None:
        writer = FakeWriter()
        providers = FakeProviders()
        reporter = BackendStatusReporter(providers, writer, BackendStatusSettings(interval=0, workers=3))
        await reporter.start()
        try:
            for i in range(20):
                reporter.observe(
                    BackendKind.SECRET_BACKEND, with_mode("slow", name=f"b{i}", namespace="hostile")
                )
            reporter.observe(BackendKind.SECRET_BACKEND, with_mode("ok", name="app", namespace="team-b"))
            # team-b's backend is validated long before the hostile namespace's 20 x 0.3 s are done.
            await wait_until(lambda: any(key.namespace == "team-b" for key, _ in writer.patches), seconds=2.0)
            assert providers.most_running.get("hostile", 0) == 1  # one at a time per namespace
            assert providers.most_total <= 3
        finally:
            await reporter.stop()

    asyncio.run(scenario())


# -- through the real provider pool and guards ---------------------------------------------------------


class RecordingCredentials:
    """A cluster that holds a Secret of every name: it records what the operator asked for."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str]] = []

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        self.reads.append((namespace, name))
        return CredentialValue(annotations={}, value=b"hunter2-token")

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        self.reads.append((namespace, name))
        return {}

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        raise AssertionError("no token may be requested")


def vault_body(
    secret_ref: dict[str, str], server: str = "http://127.0.0.1:8200", generation: int = 1
) -> dict[str, Any]:
    b = body(name="thief", namespace="tenant", generation=generation)
    b["spec"] = {"vault": {"server": server, "auth": {"token": {"secretRef": secret_ref}}}}
    return b


def guarded_pool(credentials: RecordingCredentials) -> ProviderPool:
    policy = CredentialPolicy(endpoints=EndpointAllowlist.from_patterns(["http://127.0.0.1:*"]))
    return ProviderPool(ProviderRegistry(load_entry_points=False), credentials, policy=policy)


def test_another_namespaces_secret_is_refused_before_it_is_read() -> None:
    credentials = RecordingCredentials()
    pool = guarded_pool(credentials)
    existing = validate_backend(
        vault_body({"name": "victim-creds", "key": "token", "namespace": "victim"}), pool
    )
    missing = validate_backend(
        vault_body({"name": "nothing", "key": "token", "namespace": "victim"}, generation=2), pool
    )
    assert (existing.status, existing.reason) == (ConditionStatus.FALSE, "InvalidBackend")
    assert credentials.reads == []  # nothing of the other namespace was even looked at
    assert existing.message == missing.message
    assert "victim" not in existing.message
    pool.close()


def test_a_credential_not_opted_in_and_an_endpoint_not_allowed_are_refused_before_any_call() -> None:
    credentials = RecordingCredentials()
    pool = guarded_pool(credentials)
    refused = validate_backend(vault_body({"name": "copied", "key": "token"}), pool)
    assert (refused.status, refused.reason) == (ConditionStatus.FALSE, "CredentialNotAllowed")
    assert "hunter2" not in refused.message
    assert set(credentials.reads) == {("tenant", "copied")}
    reads = len(credentials.reads)
    elsewhere = validate_backend(
        vault_body({"name": "copied", "key": "token"}, "http://10.0.0.1:8200", 2), pool
    )
    assert (elsewhere.status, elsewhere.reason) == (ConditionStatus.FALSE, "EndpointNotAllowed")
    assert len(credentials.reads) == reads  # nothing read for a store outside the allowlist
    pool.close()


def test_a_disabled_reporter_tells_changes_from_echoes_but_validates_and_writes_nothing() -> None:
    async def scenario() -> None:
        writer = FakeWriter()
        reporter = BackendStatusReporter(
            FakeProviders(), writer, BackendStatusSettings(enabled=False, interval=0.05)
        )
        await reporter.start()
        try:
            assert reporter.observe(BackendKind.SECRET_BACKEND, with_mode("ok"))
            assert not reporter.observe(BackendKind.SECRET_BACKEND, with_mode("ok"))
            assert reporter.observe(BackendKind.SECRET_BACKEND, with_mode("ok", generation=2))
            await asyncio.sleep(0.3)
            assert (reporter.validations, writer.patches, writer.events) == (0, [], [])
        finally:
            await reporter.stop()

    asyncio.run(scenario())
