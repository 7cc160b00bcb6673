"""Azure Key Vault end to end: the real lowkey-vault, the real control plane, the operator as in
production (tests/store_lifecycle.py tells the story), authenticating as a service principal whose client
secret the Entra ID authority stub (harness.lowkey) checks: "wrong credentials" is a refused secret.

The session operator is restarted with the test vault's connection options (CA bundle, authority host, API
version, challenge checks) for this test only: they are options of the operator process, not of the CRD.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import DebugLogCapture
from harness.lowkey import KeyVaultRemote, KeyVaultServer
from harness.operator import OperatorRunner
from kube import Kube
from store_lifecycle import StoreUnderTest, run_store_lifecycle
from store_manifests import azure_backend_spec, azure_provider_options

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
