"""When a rollout counts as complete (kube.workloads.rollout_complete, after ``kubectl rollout status``),
and how core.restarts.settlement combines the workloads rolled for a Secret."""

from __future__ import annotations

from typing import Any

import pytest

from managed_secrets.core.restarts import (
    Settlement,
    Workload,
    WorkloadNotFound,
    WorkloadRef,
    settlement,
)
from managed_secrets.kube.workloads import rollout_complete
from managed_secrets.models.managedsecret import Rollout, RolloutKind, RolloutTarget

DEPLOYMENT = RolloutKind.DEPLOYMENT
NS = "team"


def body(generation: int = 2, replicas: int | None = 2, **status: Any) -> dict[str, Any]:
    spec = {} if replicas is None else {"replicas": replicas}
    return {"metadata": {"generation": generation}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("status", "complete"),
    [
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, True),
        ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, False),
        # an old pod still counted: the old template is still running somewhere
        ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}, False),
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}, False),
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}, False),
        ({}, False),
    ],
)
def test_deployment(status: dict[str, Any], complete: bool) -> None:
    assert rollout_complete(DEPLOYMENT, body(**status)) is complete


def test_a_deployment_without_replicas_means_one_and_zero_replicas_completes_once_observed() -> None:
    assert rollout_complete(DEPLOYMENT, body(replicas=None, observedGeneration=2)) is False
    assert rollout_complete(DEPLOYMENT, body(replicas=0, observedGeneration=2)) is True
    assert rollout_complete(DEPLOYMENT, body(replicas=0, observedGeneration=1)) is False


def test_stateful_set_needs_the_update_revision_current() -> None:
    done = {"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2}
    kind = RolloutKind.STATEFUL_SET
    assert rollout_complete(kind, body(**done, currentRevision="b", updateRevision="b")) is True
    assert rollout_complete(kind, body(**done, currentRevision="a", updateRevision="b")) is False
    assert (
        rollout_complete(kind, body(**{**done, "readyReplicas": 1}, currentRevision="b", updateRevision="b"))
        is False
    )


def test_daemon_set_and_argo() -> None:
    kind = RolloutKind.DAEMON_SET
    done = {
        "observedGeneration": 2,
        "desiredNumberScheduled": 3,
        "updatedNumberScheduled": 3,
        "numberAvailable": 3,
    }
    assert rollout_complete(kind, body(**done)) is True
    assert rollout_complete(kind, body(**{**done, "updatedNumberScheduled": 2})) is False
    assert rollout_complete(kind, body(**{**done, "numberMisscheduled": 1})) is False
    assert rollout_complete(RolloutKind.ROLLOUT, body(**done)) is None, "an Argo Rollout cannot say"


class Reader:
    def __init__(self, *listed: Workload, extra: Workload | None = None) -> None:
        self.listed = list(listed)
        self.extra = extra

    def list(self, namespace: str) -> list[Workload]:
        return self.listed

    def get(self, ref: WorkloadRef) -> Workload:
        if self.extra is None or self.extra.ref != ref:
            raise WorkloadNotFound(f"{ref} not found")
        return self.extra


def uses(name: str, *, complete: bool | None, kind: RolloutKind = DEPLOYMENT) -> Workload:
    return Workload(WorkloadRef(kind, NS, name), secrets=frozenset({"db"}), rollout_complete=complete)


def rolled(name: str) -> Workload:
    return uses(name, complete=True)


def rolling(name: str) -> Workload:
    return uses(name, complete=False)


def test_settlement_of_the_workloads_rolled_for_the_secret() -> None:
    auto = Rollout(auto=True)
    assert settlement(auto, NS, "db", Reader()) is Settlement.UNKNOWN, "nothing rolled: time decides"
    assert settlement(None, NS, "db", Reader(rolling("web"))) is Settlement.UNKNOWN, "not rolled"
    assert settlement(auto, NS, "db", Reader(rolled("web"), rolled("api"))) is Settlement.COMPLETE
    assert settlement(auto, NS, "db", Reader(rolled("web"), rolling("api"))) is Settlement.IN_PROGRESS
    argo = Rollout(auto=True, targets=[RolloutTarget(kind=RolloutKind.ROLLOUT, name="canary")])
    reader = Reader(rolled("web"), extra=uses("canary", complete=None, kind=RolloutKind.ROLLOUT))
    assert settlement(argo, NS, "db", reader) is Settlement.UNKNOWN
    with pytest.raises(WorkloadNotFound):
        settlement(argo, NS, "db", Reader(rolled("web")))
