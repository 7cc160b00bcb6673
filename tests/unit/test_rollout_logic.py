"""The pure rollout logic: which workloads use a Secret, keyed hashes, first sync vs change, status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from managed_secrets.api import RESTARTED_FOR_ANNOTATION
from managed_secrets.core import status as status_model
from managed_secrets.core.ports import SecretObject
from managed_secrets.core.restarts import (
    MAX_RESTARTS,
    Decision,
    Outcome,
    RestartResult,
    Workload,
    WorkloadRef,
    data_hash,
    decide,
    is_managed,
    restart_key,
    secrets_used,
    select_workloads,
)
from managed_secrets.models.managedsecret import Rollout, RolloutKind, RolloutTarget

#: The status field, as a person reads it.
DATA_HASH = "dataHash"


def rollout_status(
    status: Mapping[str, Any], outcomes: Sequence[Outcome], recorded: str | None, now: str
) -> dict[str, Any]:
    """core.status.rollout_status on the status as written (these cases compare what a person reads)."""
    typed = status_model.rollout_status(status_model.parse_status(status), outcomes, recorded, now)
    return status_model.status_dict(typed)


KEY = b"k" * 32
NS = "ns"
DEPLOYMENT = RolloutKind.DEPLOYMENT


def ref(name: str, kind: RolloutKind = DEPLOYMENT) -> WorkloadRef:
    return WorkloadRef(kind, NS, name)


def workload(name: str, *secrets: str, reload: str | None = None, kind: RolloutKind = DEPLOYMENT) -> Workload:
    annotations = {"managedsecrets.io/reload": reload} if reload is not None else {}
    return Workload(ref(name, kind), annotations=annotations, secrets=frozenset(secrets))


# -- secrets_used ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_spec", "expected"),
    [
        (
            {
                "containers": [
                    {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
                ]
            },
            {"s"},
        ),
        (
            {"containers": [{"envFrom": [{"secretRef": {"name": "s"}}, {"configMapRef": {"name": "cm"}}]}]},
            {"s"},
        ),
        ({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}, {"s"}),
        (
            {
                "volumes": [
                    {
                        "name": "v",
                        "projected": {"sources": [{"secret": {"name": "s"}}, {"configMap": {"name": "cm"}}]},
                    }
                ]
            },
            {"s"},
        ),
        (
            {
                "initContainers": [
                    {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "init", "key": "k"}}}]}
                ],
                "containers": [{"envFrom": [{"secretRef": {"name": "main"}}]}],
            },
            {"init", "main"},
        ),
        (
            {
                "containers": [
                    {
                        "env": [
                            {"name": "A", "value": "plain"},
                            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                        ]
                    }
                ],
                "volumes": [{"name": "e", "emptyDir": {}}],
            },
            set(),
        ),
        ({}, set()),
    ],
    ids=["env", "envFrom", "volume", "projected", "initContainers", "none", "empty"],
)
def test_secrets_used_by_each_reference_style(pod_spec: dict[str, Any], expected: set[str]) -> None:
    assert secrets_used(pod_spec) == expected


# -- select_workloads --------------------------------------------------------------------------------------


def test_explicit_targets_only_without_auto() -> None:
    rollout = Rollout(
        targets=[
            RolloutTarget(kind=DEPLOYMENT, name="web"),
            RolloutTarget(kind=RolloutKind.ROLLOUT, name="canary"),
        ]
    )
    listed = [workload("web", "other"), workload("api", "app")]
    assert select_workloads(rollout, NS, "app", listed) == [ref("web"), ref("canary", RolloutKind.ROLLOUT)]


def test_auto_finds_users_of_the_secret_and_ignores_the_rest() -> None:
    listed = [
        workload("a", "app"),
        workload("b", "app", "x", kind=RolloutKind.STATEFUL_SET),
        workload("c", "x"),
    ]
    assert select_workloads(Rollout(auto=True), NS, "app", listed) == [
        ref("a"),
        ref("b", RolloutKind.STATEFUL_SET),
    ]


def test_opt_in_without_rollout_spec_and_opt_out_always_wins() -> None:
    listed = [
        workload("in", "app", reload="true"),
        workload("in-other-secret", "x", reload="true"),
        workload("out", "app", reload="false"),
        workload("plain", "app"),
    ]
    assert select_workloads(None, NS, "app", listed) == [ref("in")]
    rollout = Rollout(auto=True, targets=[RolloutTarget(kind=DEPLOYMENT, name="out")])
    assert select_workloads(rollout, NS, "app", listed) == [ref("in"), ref("plain")]


def test_reload_annotation_values() -> None:
    assert workload("w", reload="TRUE").reload is True
    assert workload("w", reload="false").reload is False
    assert workload("w", reload="maybe").reload is None
    assert workload("w").reload is None


def test_restarted_for_is_on_the_template_except_for_argo_rollouts() -> None:
    deployment = Workload(
        ref("w"),
        annotations={RESTARTED_FOR_ANNOTATION: "meta"},
        template_annotations={RESTARTED_FOR_ANNOTATION: "tpl"},
    )
    rollout = Workload(
        ref("r", RolloutKind.ROLLOUT),
        annotations={RESTARTED_FOR_ANNOTATION: "meta"},
        template_annotations={RESTARTED_FOR_ANNOTATION: "tpl"},
    )
    assert deployment.restarted_for == "tpl"
    assert rollout.restarted_for == "meta"


def test_managed_secrets_are_labelled_or_merged_into() -> None:
    assert is_managed(SecretObject("ns", "a", labels={"managedsecrets.io/managed": "true"}))
    assert is_managed(SecretObject("ns", "b", annotations={"managedsecrets.io/merged-by": "ms"}))
    assert not is_managed(SecretObject("ns", "c"))


# -- keyed hashes ------------------------------------------------------------------------------------------


def test_data_hash_is_keyed_stable_and_reveals_nothing() -> None:
    data = {"password": b"hunter22", "user": b"app"}
    value = data_hash(KEY, data)
    assert len(value) == 32
    assert int(value, 16) >= 0
    assert data_hash(KEY, dict(reversed(data.items()))) == value, "key order does not matter"
    assert data_hash(b"another key" * 3, data) != value, "keyed: another operator key gives another hash"
    assert data_hash(KEY, {**data, "password": b"hunter23"}) != value
    assert data_hash(KEY, {"ab": b"c"}) != data_hash(KEY, {"a": b"bc"}), "no ambiguity between fields"
    assert "hunter22" not in value
    assert data_hash(KEY, {}) != data_hash(KEY, {"": b""})


def test_restart_key_covers_names_and_data_in_any_order() -> None:
    a, b = {"k": b"1"}, {"k": b"2"}
    value = restart_key(KEY, {"app-db": a, "cache": b})
    assert restart_key(KEY, {"cache": b, "app-db": a}) == value
    assert restart_key(KEY, {"app-db": b, "cache": a}) != value, "which Secret holds what matters"
    assert restart_key(KEY, {"app-db": a}) != value
    assert restart_key(KEY, {"app-db": {"k": b"1"}, "cache": {"k": b"3"}}) != value
    assert restart_key(KEY, {"x": a}) != data_hash(KEY, a), "the two hashes are domain-separated"


# -- decide ------------------------------------------------------------------------------------------------


def test_first_sync_records_changed_restarts_equal_does_nothing() -> None:
    current = data_hash(KEY, {"k": b"v"})
    assert decide(None, current) is Decision.FIRST_SYNC
    assert decide("", current) is Decision.FIRST_SYNC
    assert decide(current, current) is Decision.UNCHANGED
    assert decide(data_hash(KEY, {"k": b"old"}), current) is Decision.CHANGED


def test_crash_between_secret_write_and_rollout_restarts_after_the_operator_restart() -> None:
    """The Secret was written with new data, the operator died before the rollout ran: status still holds
    the old hash. The first sync after the restart writes nothing to the Secret (UNCHANGED), yet the
    rollout is due, and stays due until a rollout succeeded and recorded the new hash."""
    old, new = data_hash(KEY, {"k": b"old"}), data_hash(KEY, {"k": b"new"})
    status = {DATA_HASH: old}
    assert decide(status[DATA_HASH], new) is Decision.CHANGED
    failed = rollout_status(
        status, [Outcome(ref("web"), RestartResult.NOT_FOUND, "Deployment web not found")], new, "t1"
    )
    assert failed[DATA_HASH] == old, "a failed rollout does not record the new hash"
    assert decide(failed[DATA_HASH], new) is Decision.CHANGED, "so the next sync tries again"
    done = rollout_status(failed, [Outcome(ref("web"), RestartResult.RESTARTED)], new, "t2")
    assert done[DATA_HASH] == new
    assert decide(done[DATA_HASH], new) is Decision.UNCHANGED


# -- status ------------------------------------------------------------------------------------------------


def condition(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Rollout"), None)


def test_restarted_status_keeps_other_conditions_and_the_last_five_restarts() -> None:
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "message": "Secret app is in sync (1 keys)",
        "lastTransitionTime": "t",
    }
    status: dict[str, Any] = {"conditions": [ready], DATA_HASH: "old"}
    for i in range(7):
        status = rollout_status(status, [Outcome(ref(f"w{i}"), RestartResult.RESTARTED)], f"h{i}", f"t{i}")
    assert status[DATA_HASH] == "h6"
    assert [r["name"] for r in status["restarts"]] == [f"w{i}" for i in range(7 - MAX_RESTARTS, 7)]
    assert status["restarts"][-1] == {"kind": "Deployment", "name": "w6", "time": "t6"}
    assert status["conditions"][0] == ready
    cond = condition(status)
    assert cond is not None
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "True",
        "Restarted",
        "restarted Deployment w6",
    )
    assert cond["lastTransitionTime"] == "t0", "the status did not change since the first restart"


def test_failure_condition_reasons_and_recovery() -> None:
    cases = [
        (RestartResult.NOT_FOUND, "WorkloadNotFound"),
        (RestartResult.FORBIDDEN, "RolloutForbidden"),
        (RestartResult.FAILED, "RolloutFailed"),
    ]
    for result, reason in cases:
        outcomes = [
            Outcome(ref("ok"), RestartResult.RESTARTED),
            Outcome(ref("bad"), result, f"Deployment bad: {reason}"),
        ]
        status = rollout_status({DATA_HASH: "old"}, outcomes, "new", "t1")
        cond = condition(status)
        assert cond is not None
        assert (cond["status"], cond["reason"]) == ("False", reason)
        assert "Deployment bad" in cond["message"]
        assert status[DATA_HASH] == "old"
        assert status["restarts"] == [{"kind": "Deployment", "name": "ok", "time": "t1"}], (
            "what did restart is listed"
        )
        healed = rollout_status(status, [Outcome(ref("bad"), RestartResult.UNCHANGED)], "new", "t2")
        assert condition(healed) == {
            "type": "Rollout",
            "status": "True",
            "reason": "UpToDate",
            "message": "the workloads run with the current data",
            "lastTransitionTime": "t2",
        }
        assert healed[DATA_HASH] == "new"


def test_nothing_to_restart_records_the_hash_and_adds_no_condition() -> None:
    status = rollout_status({DATA_HASH: "old"}, [], "new", "t")
    assert status == {DATA_HASH: "new"}
    skipped = rollout_status(
        {DATA_HASH: "old"},
        [Outcome(ref("w"), RestartResult.SKIPPED), Outcome(ref("v"), RestartResult.UNCHANGED)],
        "new",
        "t",
    )
    assert skipped == {DATA_HASH: "new"}


def test_debounce_default_is_ten_seconds() -> None:
    assert Rollout().debounce == timedelta(seconds=10)
