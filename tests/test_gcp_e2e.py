"""Google Cloud Secret Manager end to end: the real GCP emulator, the real control plane, the operator as
in production (tests/store_lifecycle.py tells the story).

"Wrong credentials" is a service-account key the client cannot sign with: the emulator checks none
(tests/contract/test_gcp.py proves at a recording proxy what a good key sends).
"""

from __future__ import annotations

import json

import pytest

from conftest import DebugLogCapture
from harness.gcp_emulator import GcpSecretManagerEmulator, SecretManagerRemote
from harness.operator import OperatorRunner
from kube import Kube
from store_lifecycle import StoreUnderTest, run_store_lifecycle
from store_manifests import gcp_backend_spec

pytestmark = [pytest.mark.cluster]


def test_sync_rotation_failures_and_healing(
    operator: OperatorRunner,
    gcp_emulator: GcpSecretManagerEmulator,
    kube: Kube,
    namespace: str,
    debug_log: DebugLogCapture,
) -> None:
    unusable = {
        **gcp_emulator.reader.info,
        "private_key": "-----BEGIN PRIVATE KEY-----\nbm9w\n-----END PRIVATE KEY-----\n",
    }

    store = StoreUnderTest(
        SecretManagerRemote(gcp_emulator),
        lambda credentials_key: gcp_backend_spec(gcp_emulator, credentials_key),
        {"good": gcp_emulator.reader.json, "bad": json.dumps(unusable)},
    )
    run_store_lifecycle(kube, namespace, store, debug_log.text)
