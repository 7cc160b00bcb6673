"""The audit trail on the real control plane: status.sources names the version of every remote key in the
Secret; each change of the Secret's data is one Event and one structured log line saying which keys
changed, from which version to which, and why; never a value."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from conftest import DebugLogCapture
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from leaks import assert_absent

pytestmark = [pytest.mark.cluster]


def sources(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return list((kube.get_ms(namespace, name).get("status") or {}).get("sources") or [])


def test_versions_in_status_and_one_event_and_log_line_per_change(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    debug_log: DebugLogCapture,
) -> None:
    key, other = f"{namespace}/app", f"{namespace}/other"
    canary = f"canary-{secrets.token_hex(8)}"
    kv = openbao.client().secrets.kv.v2
    kv.create_or_update_secret(path=key, secret={"password": f"{canary}-1"}, mount_point="secret")
    kv.create_or_update_secret(path=other, secret={"token": "unchanging"}, mount_point="secret")
    spec = {
        "backendRef": {"name": "vault"},
        "refreshInterval": "1h",
        "data": [
            {"secretKey": "password", "remoteRef": {"key": key, "property": "password"}},
            {"secretKey": "token", "remoteRef": {"key": other, "property": "token"}},
        ],
    }
    kube.create_ms(namespace, "app", spec)
    kube.wait_ready(namespace, "app")
    assert sources(kube, namespace, "app") == [{"key": key, "version": "1"}, {"key": other, "version": "1"}]

    kv.create_or_update_secret(path=key, secret={"password": f"{canary}-2"}, mount_point="secret")
    kube.force_sync(namespace, "app")
    kube.wait_secret_data(namespace, "app", {"password": f"{canary}-2", "token": "unchanging"})
    wait_for(
        lambda: (
            sources(kube, namespace, "app") == [{"key": key, "version": "2"}, {"key": other, "version": "1"}]
        ),
        30,
        what="status.sources at version 2",
    )
    expected = f"Secret app: keys password changed (force-sync); {key} 1 -> 2"
    changes = wait_for(
        lambda: (
            [e for e in kube.events(namespace) if e.reason == "Updated" and e.message == expected] or None
        ),
        30,
        what="the change's event",
    )
    assert len(changes) == 1
    lines = [line for line in debug_log.lines if line.startswith("INFO managed_secrets.audit ")]
    mine = [line for line in lines if f"{namespace}/app:" in line]
    assert [line.split(": ", 1)[1] for line in mine] == [
        f"Secret app: keys password, token created with (spec change); {key} - -> 1, {other} - -> 1",
        expected,
    ]
    where = {
        "the operator log": debug_log.text(),
        "the status": str(kube.get_ms(namespace, "app")),
        "the events": str(kube.core.list_namespaced_event(namespace).to_dict()),
    }
    for value in (f"{canary}-1", f"{canary}-2"):
        for place, text in where.items():
            assert_absent(value, text, place)
