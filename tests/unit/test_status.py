"""ManagedSecret status from YAML cases: tests/data/status/input/<case>.yaml -> output/<case>.yaml.

An input holds the status as read from the object (``current``), the object's ``generation``, the rollouts
that ended since (``reports``), and what the run found: a ``sync`` result (with the dataHash the rollout
stage asked to record, if any), an ``error``, or neither (a run that only records rollouts). The output
holds whether the controller writes, the new status, and the merge patch it sends (null: no write). The steps
are the controller's, in its order: rollouts that ended, then the sync or failure (core/status.py).

To add a case, write its input and its expected output by hand (tests/data/status/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from managed_secrets import errors
from managed_secrets.core import status as status_model
from managed_secrets.core.reconcile import SyncResult, WriteAction
from managed_secrets.core.restarts import Outcome, RestartResult, RolloutReport, WorkloadRef
from managed_secrets.models.managedsecret import ManagedSecretRef, RolloutKind
from managed_secrets.models.status import ManagedSecretStatus

DATA = Path(__file__).parent.parent / "data" / "status"
CASES = sorted(path.stem for path in (DATA / "input").glob("*.yaml"))
REF = ManagedSecretRef(namespace="team-a", name="app", uid="uid-app")


def _errors_by_reason() -> dict[str, type[errors.SyncError]]:
    found: dict[str, type[errors.SyncError]] = {}
    pending: list[type[errors.SyncError]] = [errors.SyncError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.reason.value, cls)  # the most general class of a reason
        pending.extend(cls.__subclasses__())
    return found


ERRORS = _errors_by_reason()


def report(raw: dict[str, Any]) -> RolloutReport:
    outcomes = []
    for item in raw.get("outcomes") or []:
        workload = item.get("workload")
        ref = (
            WorkloadRef(RolloutKind(workload["kind"]), REF.namespace, workload["name"]) if workload else None
        )
        outcomes.append(Outcome(ref, RestartResult(item["result"]), item.get("message", "")))
    return RolloutReport(REF, raw["dataHash"], tuple(outcomes), raw.get("generation"), raw["finishedAt"])


def run(case: dict[str, Any]) -> tuple[ManagedSecretStatus, ManagedSecretStatus]:
    """(the status as read, the status after the run), as the controller computes them."""
    now = case["now"]
    generation = case.get("generation", 1)
    read = status_model.parse_status(case.get("current"))
    new = status_model.after_rollouts(read, [report(r) for r in case.get("reports") or []])
    if (sync := case.get("sync")) is not None:
        result = SyncResult(
            sync["secretName"],
            tuple(sync["keys"]),
            WriteAction(sync["action"]),
            data_changed=sync.get("dataChanged", False),
            data={},
        )
        new = status_model.after_sync(new, generation, result, data_hash=sync.get("recordHash"), now=now)
    elif (error := case.get("error")) is not None:
        failure = ERRORS[error["reason"]](error["message"])
        new = status_model.after_failure(new, generation, failure, now=now)
    return read, new


@pytest.mark.parametrize("case", CASES)
def test_status(case: str) -> None:
    given = yaml.safe_load((DATA / "input" / f"{case}.yaml").read_text())
    expected = yaml.safe_load((DATA / "output" / f"{case}.yaml").read_text())
    read, new = run(given)
    patch = status_model.status_patch(read, new)
    assert status_model.status_dict(new) == expected["status"]
    assert (patch is not None) == expected["write"]
    assert patch == expected["patch"]


def test_every_case_has_an_output() -> None:
    outputs = sorted(path.stem for path in (DATA / "output").glob("*.yaml"))
    assert CASES
    assert outputs == CASES


def test_a_written_status_reads_back_the_same() -> None:
    """What the controller writes, parsed again from the watch event, needs no further write."""
    for case in CASES:
        _, new = run(yaml.safe_load((DATA / "input" / f"{case}.yaml").read_text()))
        again = status_model.parse_status(status_model.status_dict(new))
        assert status_model.status_patch(new, again) is None, case
