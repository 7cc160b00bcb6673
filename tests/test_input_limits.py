"""Input limits a hostile or careless tenant hits, on the real API server and with the real operator.

Durations: the CRD's CEL rules, `managed-secrets check` and the operator's model agree on every value
(a floor of 1s on refreshInterval, at most a year, debounce at most 1h, nothing that overflows).
Versions: a malformed version is VersionNotFound before any read, and the Secret stays as it was.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from harness.moto_server import MotoServer
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube
from managed_secrets.check import Checker
from managed_secrets.errors import InvalidSpec
from managed_secrets.models.parse import parse_managed_secret

pytestmark = [pytest.mark.cluster]

#: (refreshInterval, accepted)
REFRESH_INTERVALS = [
    ("0", True),
    ("0s", True),
    ("1s", True),
    ("1000ms", True),
    ("1.5s", True),
    ("1h30m", True),
    ("8760h", True),
    ("525600m", True),
    ("1ms", False),
    ("999ms", False),
    ("0.5s", False),
    ("0.0001h", False),
    ("8761h", False),
    ("31536001s", False),
    ("99999999999999999999h", False),
    ("9" * 63 + "h", False),
    ("5 minutes", False),
    ("-1s", False),
]
#: (rollout.debounce, accepted)
DEBOUNCES = [
    ("0", True),
    ("1ms", True),
    ("10s", True),
    ("1h", True),
    ("61m", False),
    ("2h", False),
    ("99999999999999999999h", False),
]


def ms_body(namespace: str, name: str, **spec_extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "backendRef": {"name": "vault"},
        "data": [{"secretKey": "v", "remoteRef": {"key": "app/db", "property": "v"}}],
    }
    spec.update(spec_extra)
    return {
        "apiVersion": "managedsecrets.io/v1alpha1",
        "kind": "ManagedSecret",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def apiserver_accepts(kube: Kube, body: dict[str, Any]) -> tuple[bool, str]:
    """Server-side dry run: the schema and the CEL rules, nothing stored."""
    try:
        kube.custom.create_namespaced_custom_object(
            "managedsecrets.io",
            "v1alpha1",
            body["metadata"]["namespace"],
            "managedsecrets",
            body,
            dry_run="All",
        )
    except ApiException as error:
        assert error.status == 422, error.body
        return False, json.loads(error.body)["message"]
    return True, ""


def check_accepts(body: dict[str, Any]) -> tuple[bool, str]:
    problems = Checker().check_text(json.dumps(body), "ms.yaml")
    return not [p for p in problems if not p.warning], "\n".join(map(str, problems))


def model_accepts(body: dict[str, Any]) -> bool:
    try:
        parse_managed_secret(body)
    except InvalidSpec:
        return False
    return True


@pytest.mark.parametrize(("value", "accepted"), REFRESH_INTERVALS)
def test_refresh_interval_bounds_agree_everywhere(
    kube: Kube, namespace: str, value: str, accepted: bool
) -> None:
    body = ms_body(namespace, "interval", refreshInterval=value)
    server, message = apiserver_accepts(kube, body)
    assert server is accepted, message
    if not accepted and value[0].isdigit() and " " not in value:
        # Well-formed but out of bounds: one clear message, not an evaluation error of the rule.
        assert "refreshInterval must be 0 (fetch once) or from 1s to 8760h" in message, message
        assert "evaluating rule" not in message and "overflow" not in message, message
    offline, problems = check_accepts(body)
    assert offline is accepted, problems
    assert model_accepts(body) is accepted


@pytest.mark.parametrize(("value", "accepted"), DEBOUNCES)
def test_rollout_debounce_bounds_agree_everywhere(
    kube: Kube, namespace: str, value: str, accepted: bool
) -> None:
    body = ms_body(namespace, "debounce", rollout={"auto": True, "debounce": value})
    server, message = apiserver_accepts(kube, body)
    assert server is accepted, message
    if not accepted:
        assert "rollout.debounce must be at most 1h" in message, message
    offline, problems = check_accepts(body)
    assert offline is accepted, problems
    assert model_accepts(body) is accepted


def test_check_without_cel_still_reports_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cel-python the operator's own rules say the same (the model runs offline)."""
    checker = Checker()
    monkeypatch.setattr(checker.cel, "_celpy", None)
    for value, accepted in REFRESH_INTERVALS:
        problems = checker.check_text(json.dumps(ms_body("ns", "x", refreshInterval=value)), "ms.yaml")
        assert (not problems) is accepted, (value, problems)
    out = io.StringIO()
    print(*checker.check_text(json.dumps(ms_body("ns", "x", refreshInterval="1ms")), "f.yaml"), file=out)
    assert "f.yaml:1: ManagedSecret ns/x: spec.refreshInterval: " in out.getvalue()
    assert "from 1s to 8760h" in out.getvalue()
