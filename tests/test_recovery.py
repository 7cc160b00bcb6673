"""Recovery after a store outage, with the production retry settings (5 s doubling up to 300 s).

A store down for a minute used to leave a 5 s object waiting for its grown backoff (50 s) after the store
came back. Retries are now capped by the refresh interval, with full jitter, and retries share reads made
after their failure: the objects are Ready again within about one interval, and the store coming back
sees one read per key, not one per object.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from managed_secrets.metrics import REGISTRY

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

INTERVAL = 5.0
OBJECTS = 20
OUTAGE = 60.0
#: Beyond one interval: the reconcile itself, the watch, this test's polling, a busy machine.
MARGIN = 15.0


@pytest.fixture
def production_backoff(operator: OperatorRunner) -> Iterator[OperatorRunner]:
    """The session's operator, restarted with the production backoff; the fast one comes back after."""
    previous = (operator.config.backoff_base, operator.config.backoff_max)
    operator.restart(backoff_base=5.0, backoff_max=300.0)
    try:
        yield operator
    finally:
        operator.restart(backoff_base=previous[0], backoff_max=previous[1])


def vault_reads() -> float:
    return (
        REGISTRY.get_sample_value("managedsecrets_provider_keys_fetched_total", {"backend": "vault"}) or 0.0
    )


def put(openbao: OpenBao, path: str, data: dict[str, Any]) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def conditions(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    items = kube.custom.list_namespaced_custom_object(
        "managedsecrets.io", "v1alpha1", namespace, "managedsecrets"
    )
    found = {}
    for item in items["items"]:
        ready = [c for c in (item.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
        if ready:
            found[item["metadata"]["name"]] = ready[0]
    return found


def all_in(kube: Kube, namespace: str, status: str, reason: str) -> bool:
    found = conditions(kube, namespace)
    return len(found) == OBJECTS and all(
        c["status"] == status and c["reason"] == reason for c in found.values()
    )


def test_ready_within_one_interval_after_a_long_outage_and_one_read_per_key(
    production_backoff: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    path = f"{namespace}/shared"
    put(openbao, path, {"v": "one"})
    for i in range(OBJECTS):
        kube.create_ms(
            namespace,
            f"ms-{i}",
            {
                "backendRef": {"name": "vault"},
                "refreshInterval": f"{INTERVAL:g}s",
                "data": [{"secretKey": "v", "remoteRef": {"key": path, "property": "v"}}],
            },
        )
    wait_for(lambda: all_in(kube, namespace, "True", "Synced"), 60, interval=0.5, what="all Ready")
    versions = {
        f"ms-{i}": kube.existing_secret(namespace, f"ms-{i}").metadata.resource_version
        for i in range(OBJECTS)
    }

    openbao.stop()
    down_at = time.monotonic()
    try:
        wait_for(
            lambda: all_in(kube, namespace, "False", "BackendUnavailable"),
            INTERVAL * 1.1 + MARGIN,
            interval=0.5,
            what="all BackendUnavailable",
        )
        # Long enough that an uncapped backoff (5, 10, 20, 40 s ...) would now wait most of a minute.
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
    finally:
        openbao.start()
    put(openbao, path, {"v": "one"})  # the dev server forgot it; the same value, so no Secret write
    back_at = time.monotonic()
    reads_before = vault_reads()
    wait_for(
        lambda: all_in(kube, namespace, "True", "Synced"), INTERVAL + MARGIN, interval=0.2, what="all Ready"
    )
    recovered_in = time.monotonic() - back_at
    reads = vault_reads() - reads_before

    assert recovered_in <= INTERVAL + MARGIN
    # One read for all the retries (they share any read made after their failure), plus at most one per
    # refresh window of those recovered first (refreshes of one key are at least 0.9 intervals apart).
    # (It may even be none here: a retry that started while the value was being put back also counts
    # before reads_before was taken.)
    refresh_windows = int(recovered_in // (0.9 * INTERVAL)) + 1
    assert reads <= 1 + refresh_windows, f"{reads} reads of one key for {OBJECTS} objects"
    for name, version in versions.items():  # the same data: nothing was rewritten
        assert kube.existing_secret(namespace, name).metadata.resource_version == version
