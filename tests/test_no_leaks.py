"""A canary secret value never appears in the operator's DEBUG log, events, status or metrics."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
from prometheus_client import generate_latest

from conftest import DebugLogCapture
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube
from leaks import assert_absent, encodings
from managed_secrets.metrics import REGISTRY

pytestmark = [pytest.mark.cluster, pytest.mark.vault]


def test_encodings_find_base64_inside_a_blob() -> None:
    canary = "canary-" + secrets.token_hex(8)
    for prefix in (b"", b"x", b"xy", b"xyz"):
        blob = base64.b64encode(prefix + canary.encode() + b"tail").decode()
        assert any(form in blob for form in encodings(canary)[1:])


def test_canary_never_leaks(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    debug_log: DebugLogCapture,
) -> None:
    canary = "canary-" + secrets.token_hex(12)
    client = openbao.client()

    def put(path: str, data: dict[str, Any]) -> None:
        client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")

    put(f"{namespace}/c", {"password": canary, "json": json.dumps({"inner": canary})})
    key = f"{namespace}/c"
    kube.create_ms(
        namespace,
        "plain",
        {
            "backendRef": {"name": "vault"},
            "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
        },
    )
    kube.create_ms(
        namespace, "extract", {"backendRef": {"name": "vault"}, "dataFrom": [{"extract": {"key": key}}]}
    )
    kube.create_ms(
        namespace,
        "tmpl",
        {
            "backendRef": {"name": "vault"},
            "dataFrom": [{"extract": {"key": key}}],
            "target": {"template": {"data": {"out": "x{{ password }}x"}}},
        },
    )
    # Failures whose natural messages could quote the value:
    kube.create_ms(
        namespace,
        "badprop",
        {
            "backendRef": {"name": "vault"},
            "data": [{"secretKey": "x", "remoteRef": {"key": key, "property": "password.inner"}}],
        },
    )
    kube.create_ms(
        namespace,
        "badtmpl",
        {
            "backendRef": {"name": "vault"},
            "dataFrom": [{"extract": {"key": key}}],
            "target": {"template": {"data": {"out": "{{ password | int + 'x' }}{{ password.nope }}"}}},
        },
    )
    kube.create_ms(
        namespace,
        "badjson",
        {
            "backendRef": {"name": "vault"},
            "data": [{"secretKey": "x", "remoteRef": {"key": key, "property": "json"}}],
            "target": {"template": {"data": {"out": "{{ (x | fromjson).missing }}"}}},
        },
    )
    for name in ("plain", "extract", "tmpl"):
        kube.wait_ready(namespace, name)
    assert kube.secret_data(namespace, "plain") == {"password": canary}
    kube.wait_ready(namespace, "badprop", "False", "PropertyNotFound")
    kube.wait_ready(namespace, "badtmpl", "False", "TemplateError")
    kube.wait_ready(namespace, "badjson", "False", "TemplateError")
    # A rotation too, through force-sync.
    canary2 = canary + "-rotated"
    put(key, {"password": canary2, "json": "{}"})
    kube.force_sync(namespace, "plain")
    kube.wait_secret_data(namespace, "plain", {"password": canary2})

    log_text = debug_log.text()
    assert "kopf" in log_text, "the capture holds the operator's (Kopf's) DEBUG output"
    assert any(" DEBUG " in f" {line}" for line in debug_log.lines)
    for value in (canary, canary2):
        assert_absent(value, log_text, "the DEBUG log")
        events = "\n".join(f"{e.reason} {e.message}" for e in kube.events(namespace))
        assert events, "events were posted"
        assert_absent(value, events, "events")
        for name in ("plain", "extract", "tmpl", "badprop", "badtmpl", "badjson"):
            assert_absent(value, json.dumps(kube.get_ms(namespace, name)), f"ManagedSecret {name}")
        assert_absent(value, generate_latest(REGISTRY).decode(), "metrics")
