"""Hostile templates on the real control plane: bounded renders, fairness across namespaces, binary data.

A tenant fills its namespace with more ManagedSecrets than the operator has workers, each with a template
built to hold a worker or eat memory. Another tenant's ManagedSecret (with a template of its own, so it
needs the same render processes) still syncs and follows a rotation; the hostile ones end Ready=False
TemplateError naming the limit; no render process grows past its memory limit and the operator's own
memory does not move; deleting them frees the workers at once.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from conftest import DebugLogCapture
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from leaks import assert_absent
from managed_secrets.runtime.controller import ControllerSettings

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

#: Escapes every cheap guard: 10**10 empty iterations over strings the '*' guard allows.
ENDLESS = "{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}"
#: Memory grows without any guarded operator: a string doubled in a namespace.
DOUBLING = "{% set ns = namespace(a=pw) %}{% for i in range(60) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}"
#: template -> what the Ready message must say.
HOSTILE = {
    ENDLESS: "rendering took longer than 2 s, the limit (--template-timeout)",
    "{{ 'x' * 10**9 }}": "'*': the result would be 1000000000 characters",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}": "range: more than 100000",
    "{% for i in range(100000) %}{{ pw * 1000 }}{% endfor %}": "over the limit of 1048576 bytes per Secret",
    DOUBLING: "128 MiB",
    "{{ pw | center(10**9) }}": "center: the result would be",
    # The secret used as a key: Jinja's own message would quote it as the missing name.
    "{{ values[pw] }}": "has no attribute or item (a computed name)",
    "{{ pw | b64decode }}": "b64decode: the input is not valid base64",
}


def put(openbao: OpenBao, path: str, data: dict[str, Any]) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def spec(key: str, interval: str, template: dict[str, Any]) -> dict[str, Any]:
    return {
        "backendRef": {"name": "vault"},
        "refreshInterval": interval,
        "data": [{"secretKey": "pw", "remoteRef": {"key": key, "property": "pass"}}],
        "target": {"template": template},
    }


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture
def other_namespace(admin_api: k8s.ApiClient) -> Iterator[str]:
    name = f"good-tenant-{secrets.token_hex(3)}"
    core = k8s.CoreV1Api(admin_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def test_hostile_templates_are_bounded_and_do_not_starve_another_namespace(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    other_namespace: str,
    debug_log: DebugLogCapture,
) -> None:
    hostile_ns, good_ns = namespace, other_namespace
    canary = "canary-" + secrets.token_hex(10)
    put(openbao, f"{hostile_ns}/x", {"pass": canary})
    kube.create_vault_token_backend(good_ns, openbao.addr, openbao.root_token)
    put(openbao, f"{good_ns}/app", {"pass": "p1"})
    rss_before = status_kib(os.getpid(), "VmRSS")

    # More hostile objects than workers, refreshing every second: they keep asking for workers.
    workers = operator.config.workers
    templates = list(HOSTILE)
    hostile = [f"h{i}" for i in range(max(workers + 4, len(templates)))]
    for i, name in enumerate(hostile):
        template = templates[i % len(templates)]
        kube.create_ms(hostile_ns, name, spec(f"{hostile_ns}/x", "1s", {"data": {"out": template}}))
    share = ControllerSettings(workers=workers).namespace_share
    wait_for(
        lambda: sum(operator.runtime.controller.work_in(hostile_ns)) >= share,
        timeout=30,
        what="the hostile namespace to hold its share of the workers",
    )

    good = spec(f"{good_ns}/app", "2s", {"data": {"url": "db://app:{{ pw }}@db"}})
    started = time.monotonic()
    kube.create_ms(good_ns, "app", good)
    kube.wait_secret_data(good_ns, "app", {"url": "db://app:p1@db"}, timeout=30)
    first_sync = time.monotonic() - started
    put(openbao, f"{good_ns}/app", {"pass": "p2"})
    kube.wait_secret_data(good_ns, "app", {"url": "db://app:p2@db"}, timeout=30)  # the refresh picks it up

    for i, name in enumerate(hostile):
        expected = HOSTILE[templates[i % len(templates)]]
        condition = kube.wait_ready(hostile_ns, name, "False", "TemplateError", timeout=60)
        assert expected in condition["message"], f"{name}: {condition['message']}"
        assert_absent(canary, condition["message"], f"{name}'s Ready message")
        assert kube.secret(hostile_ns, name) is None, "no half-rendered Secret"
    assert_absent(canary, debug_log.text(), "the DEBUG log")
    assert_absent(canary, "\n".join(f"{e.reason} {e.message}" for e in kube.events(hostile_ns)), "events")

    # Memory: each render process under its limit; the operator itself did not grow by the attacks.
    renderer = operator.runtime.renderer
    limit_kib = renderer.limits.memory_mib << 10
    assert renderer.processes_killed > 0, "the endless and memory templates cost their processes"
    for pid in renderer.pids():
        assert status_kib(pid, "VmHWM") < limit_kib
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert re.search(rf"Max address space\s+{renderer.limits.memory_mib << 20}\s", limits)
    assert status_kib(os.getpid(), "VmRSS") - rss_before < 200 << 10, "'x' * 10**9 would be about 1 GiB"

    # Deleting the hostile objects frees their workers at once (renders in flight are cancelled).
    for name in hostile:
        kube.delete_ms(hostile_ns, name)
    wait_for(
        lambda: operator.runtime.controller.work_in(hostile_ns) == (0, 0),
        timeout=30,
        what="the hostile namespace's work to end",
    )
    put(openbao, f"{good_ns}/app", {"pass": "p3"})
    kube.force_sync(good_ns, "app")
    kube.wait_secret_data(good_ns, "app", {"url": "db://app:p3@db"}, timeout=30)
    assert first_sync < 30


def test_binary_data_writes_bytes_and_b64decode_says_how(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    keystore = bytes(range(256)) + secrets.token_bytes(64)
    put(openbao, f"{namespace}/ks", {"pass": base64.b64encode(keystore).decode()})
    kube.create_ms(
        namespace,
        "ks",
        spec(
            f"{namespace}/ks",
            "1h",
            {"data": {"note": "from the store"}, "binaryData": {"keystore.p12": "{{ pw }}"}},
        ),
    )
    kube.wait_ready(namespace, "ks")
    secret = kube.secret(namespace, "ks")
    assert secret is not None
    assert base64.b64decode(secret.data["keystore.p12"]) == keystore
    assert base64.b64decode(secret.data["note"]) == b"from the store"
    version = secret.metadata.resource_version

    # The old way: decoding to text in data fails, naming the filter and pointing at binaryData.
    kube.patch_ms(
        namespace, "ks", {"spec": {"target": {"template": {"data": {"ks": "{{ pw | b64decode }}"}}}}}
    )
    condition = kube.wait_ready(namespace, "ks", "False", "TemplateError")
    assert "b64decode: the result is not UTF-8 text" in condition["message"]
    assert "binaryData" in condition["message"]
    assert "UnicodeDecodeError" not in condition["message"]
    assert kube.existing_secret(namespace, "ks").metadata.resource_version == version, (
        "the Secret stays as it was"
    )


def test_a_key_in_both_data_and_binary_data_is_refused_by_the_api_server(
    kube: Kube, namespace: str, operator: OperatorRunner
) -> None:
    with pytest.raises(k8s.ApiException) as info:
        kube.create_ms(
            namespace,
            "both",
            spec(f"{namespace}/x", "1h", {"data": {"k": "{{ pw }}"}, "binaryData": {"k": "{{ pw }}"}}),
        )
    assert info.value.status == 422
    assert "template.data or template.binaryData, not both" in str(info.value.body)
