"""Azure Key Vault end to end: the real lowkey-vault, the real control plane, the operator as in
production (tests/store_lifecycle.py tells the story), authenticating as a service principal whose client
secret the Entra ID authority stub (harness.lowkey) checks: "wrong credentials" is a refused secret.

The session operator is restarted with the test vault's connection options (CA bundle, authority host, API
version, challenge checks) for this test only: they are options of the operator process, not of the CRD.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from conftest import DebugLogCapture
from harness.lowkey import KeyVaultRemote, KeyVaultServer
from harness.operator import OperatorRunner
from kube import Kube, allowed_for, wait_for
from managed_secrets import metrics
from store_lifecycle import StoreUnderTest, run_store_lifecycle
from store_manifests import (
    BACKEND,
    CREDENTIALS_SECRET,
    azure_backend_spec,
    azure_provider_options,
    store_spec,
)

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def azure_options(operator: OperatorRunner, keyvault: KeyVaultServer) -> Iterator[None]:
    """The session operator, restarted with the test vault's options, and restarted without them after."""
    before = operator.config.provider_options
    operator.restart(provider_options={**before, **azure_provider_options(keyvault)})
    try:
        yield
    finally:
        operator.restart(provider_options=before)


@pytest.mark.usefixtures("azure_options")
def test_sync_rotation_failures_and_healing(
    keyvault: KeyVaultServer, kube: Kube, namespace: str, debug_log: DebugLogCapture
) -> None:
    store = StoreUnderTest(
        KeyVaultRemote(keyvault),
        lambda credentials_key: azure_backend_spec(keyvault, credentials_key),
        {
            "client-id": keyvault.principal.client_id,
            "good": keyvault.principal.secret,
            "bad": "not-the-secret",
        },
    )
    run_store_lifecycle(kube, namespace, store, debug_log.text)


@pytest.mark.usefixtures("azure_options")
def test_expiry_from_the_vault_is_in_status_the_gauge_and_warned(
    keyvault: KeyVaultServer, kube: Kube, namespace: str
) -> None:
    """Key Vault's ``expires`` of the version read: status.expiresAt, the per-ManagedSecret gauge, and
    ExpiresSoon=True with one Warning event inside the operator's window (14 days), False outside it."""
    kube.create_secret(
        namespace,
        CREDENTIALS_SECRET,
        {"client-id": keyvault.principal.client_id, "good": keyvault.principal.secret},
        annotations=allowed_for(BACKEND),
    )
    kube.create_backend(namespace, BACKEND, azure_backend_spec(keyvault, "good"))
    remote = KeyVaultRemote(keyvault)
    soon, later = remote.new_key(), remote.new_key()
    expiries = {
        soon: datetime.now(UTC).replace(microsecond=0) + timedelta(days=3),
        later: datetime.now(UTC).replace(microsecond=0) + timedelta(days=90),
    }
    with keyvault.client() as client:
        for key, expires in expiries.items():
            client.set_secret(key, json.dumps({"user": "app", "pass": "x"}), expires_on=expires)
    for name, key in (("soon", soon), ("later", later)):
        kube.create_ms(namespace, name, store_spec(key))
    for name, key in (("soon", soon), ("later", later)):
        kube.wait_ready(namespace, name, timeout=60)
        stamp = expiries[key].strftime("%Y-%m-%dT%H:%M:%SZ")
        status = wait_for(
            partial(_status_with_expiry, kube, namespace, name, stamp), 30, what=f"{name} expiresAt"
        )
        gauge = metrics.REGISTRY.get_sample_value(
            "managedsecrets_secret_expiry_timestamp_seconds", {"namespace": namespace, "name": name}
        )
        assert gauge == expiries[key].timestamp()
        (condition,) = [c for c in status["conditions"] if c["type"] == "ExpiresSoon"]
        expected = ("True", "ExpiresSoon") if name == "soon" else ("False", "NotExpiringSoon")
        assert (condition["status"], condition["reason"]) == expected
    warnings = [
        e
        for e in kube.events(namespace)
        if e.reason == "ExpiresSoon" and e.type == "Warning" and e.involved_object.name in ("soon", "later")
    ]
    assert [e.involved_object.name for e in warnings] == ["soon"]
    kube.force_sync(namespace, "soon")  # still expiring: no second warning
    kube.wait_ready(namespace, "soon")
    time.sleep(2)
    assert sum(1 for e in kube.events(namespace) if e.reason == "ExpiresSoon") == 1

    kube.delete_ms(namespace, "later")
    wait_for(
        lambda: (
            metrics.REGISTRY.get_sample_value(
                "managedsecrets_secret_expiry_timestamp_seconds", {"namespace": namespace, "name": "later"}
            )
            is None
        ),
        60,
        what="the gauge of a deleted ManagedSecret gone",
    )


def _status_with_expiry(kube: Kube, namespace: str, name: str, stamp: str) -> dict[str, Any] | None:
    status: dict[str, Any] = kube.get_ms(namespace, name).get("status") or {}
    return status if status.get("expiresAt") == stamp else None
