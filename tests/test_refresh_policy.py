"""refreshPolicy on the real control plane with OpenBao: OnChange reads again only for a spec change or a
force-sync; CreatedOnce never refreshes, not even for a spec change, while the Secret holds what it wrote,
writes it again as it was after a hand edit or a delete, and reads again on force-sync. The store's
value changes underneath at once, with refreshInterval 1s, so every refresh that happened would show."""

from __future__ import annotations

import time

import pytest
from kubernetes.client.exceptions import ApiException

from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from test_sync import put, spec

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

#: Many times the refresh interval (1s): a refresh that is due would have happened.
QUIET = 6.0


def observed(kube: Kube, namespace: str, name: str) -> bool:
    ms = kube.get_ms(namespace, name)  # one read: status and generation of the same version
    status = ms.get("status") or {}
    generation = ms["metadata"]["generation"]
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return bool(ready) and ready[0]["status"] == "True" and ready[0].get("observedGeneration") == generation


def test_on_change_reads_again_only_for_a_spec_change_or_a_force_sync(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    key = f"{namespace}/app"
    put(openbao, key, {"username": "app", "password": "one"})
    kube.create_ms(namespace, "app", spec(key, refreshInterval="1s", refreshPolicy="OnChange"))
    kube.wait_secret_data(namespace, "app", {"username": "app", "password": "one"})
    put(openbao, key, {"username": "app", "password": "two"})
    time.sleep(QUIET)
    assert kube.secret_data(namespace, "app") == {"username": "app", "password": "one"}, "refreshed"

    kube.patch_ms(namespace, "app", {"spec": {"target": {"labels": {"team": "a"}}}})
    kube.wait_secret_data(namespace, "app", {"username": "app", "password": "two"}, timeout=60)
    put(openbao, key, {"username": "app", "password": "three"})
    time.sleep(QUIET)
    assert kube.secret_data(namespace, "app") == {"username": "app", "password": "two"}
    kube.force_sync(namespace, "app")
    kube.wait_secret_data(namespace, "app", {"username": "app", "password": "three"}, timeout=60)


def test_created_once_keeps_what_it_wrote_until_the_secret_is_changed_or_a_force_sync(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    key = f"{namespace}/app"
    put(openbao, key, {"username": "app", "password": "one"})
    kube.create_ms(namespace, "app", spec(key, refreshInterval="1s", refreshPolicy="CreatedOnce"))
    kube.wait_secret_data(namespace, "app", {"username": "app", "password": "one"})
    wait_for(lambda: (kube.get_ms(namespace, "app").get("status") or {}).get("dataHash"), 30, what="dataHash")
    sources = kube.get_ms(namespace, "app")["status"]["sources"]
    written = kube.existing_secret(namespace, "app").metadata.resource_version
    put(openbao, key, {"username": "app", "password": "two"})

    # A spec change is observed (Ready for the new generation) and still reads nothing.
    kube.patch_ms(namespace, "app", {"spec": {"refreshInterval": "2s"}})
    wait_for(lambda: observed(kube, namespace, "app"), 60, what="the new generation observed")
    time.sleep(QUIET)
    assert kube.secret_data(namespace, "app") == {"username": "app", "password": "one"}
    assert kube.existing_secret(namespace, "app").metadata.resource_version == written, "no write"
    assert kube.get_ms(namespace, "app")["status"]["sources"] == sources, "the audit trail is kept"

    # Changed by hand, then deleted: written again as it was (drift repair takes the recent read).
    kube.core.patch_namespaced_secret("app", namespace, {"stringData": {"password": "by-hand"}})
    kube.wait_secret_data(namespace, "app", {"username": "app", "password": "one"}, timeout=60)
    kube.core.delete_namespaced_secret("app", namespace)
    wait_for(lambda: kube.secret(namespace, "app") is not None, 60, what="the Secret created again")
    kube.wait_secret_data(namespace, "app", {"username": "app", "password": "one"}, timeout=60)
    time.sleep(QUIET)
    assert kube.secret_data(namespace, "app") == {"username": "app", "password": "one"}
    # Force-sync is the way to take the store's new value.
    kube.force_sync(namespace, "app")
    kube.wait_secret_data(namespace, "app", {"username": "app", "password": "two"}, timeout=60)


def test_created_once_is_refused_for_what_must_be_renewed(kube: Kube, namespace: str) -> None:
    with pytest.raises(ApiException) as refused:
        kube.create_ms(
            namespace,
            "lease",
            {
                "backendRef": {"name": "vault"},
                "refreshPolicy": "CreatedOnce",
                "dynamic": {"path": "database/creds/x"},
            },
        )
    assert refused.value.status == 422
    assert "CreatedOnce is for data and dataFrom" in str(refused.value.body)
