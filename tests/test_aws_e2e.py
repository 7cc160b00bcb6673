"""AWS Secrets Manager end to end: moto's server, the real control plane, the operator as in production.

A ManagedSecret syncs and rotates; each failure keeps the Secret as it was with a stable reason; and 200
ManagedSecrets over 10 distinct keys cost at most 10 reads per refresh window (the provider-call metric).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.moto_server import MotoServer
from harness.operator import OperatorRunner
from kube import Kube, allowed_for, wait_for
from managed_secrets.metrics import REGISTRY

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def aws_backend(kube: Kube, moto: MotoServer, namespace: str) -> None:
    assert moto.reader is not None
    kube.create_secret(
        namespace,
        "aws-creds",
        {"id": moto.reader.access_key_id, "secret": moto.reader.secret_access_key},
        annotations=allowed_for("aws"),
    )
    kube.create_backend(
        namespace,
        "aws",
        {
            "aws": {
                "region": moto.region,
                "endpoint": moto.endpoint,
                "auth": {
                    "secretRef": {
                        "accessKeyID": {"name": "aws-creds", "key": "id"},
                        "secretAccessKey": {"name": "aws-creds", "key": "secret"},
                    }
                },
            }
        },
    )


def put(moto: MotoServer, key: str, value: dict[str, Any]) -> None:
    client = moto.client("secretsmanager")
    try:
        client.put_secret_value(SecretId=key, SecretString=json.dumps(value))
    except client.exceptions.ResourceNotFoundException:
        client.create_secret(Name=key, SecretString=json.dumps(value))


def keys_fetched() -> float:
    return REGISTRY.get_sample_value("managedsecrets_provider_keys_fetched_total", {"backend": "aws"}) or 0.0


def test_sync_rotation_and_failures_keep_the_secret(
    operator: OperatorRunner, moto: MotoServer, kube: Kube, namespace: str
) -> None:
    aws_backend(kube, moto, namespace)
    key = f"{namespace}/db"
    put(moto, key, {"user": "app", "pass": "one"})
    spec = {
        "backendRef": {"name": "aws"},
        "refreshInterval": "1h",
        "data": [
            {"secretKey": "user", "remoteRef": {"key": key, "property": "user"}},
            {"secretKey": "pass", "remoteRef": {"key": key, "property": "pass"}},
        ],
    }
    kube.create_ms(namespace, "db", spec)
    kube.wait_secret_data(namespace, "db", {"user": "app", "pass": "one"})
    put(moto, key, {"user": "app", "pass": "two"})
    kube.force_sync(namespace, "db")
    kube.wait_secret_data(namespace, "db", {"user": "app", "pass": "two"})
    version = kube.secret(namespace, "db").metadata.resource_version

    def unchanged() -> None:
        assert kube.secret(namespace, "db").metadata.resource_version == version
        assert kube.secret_data(namespace, "db") == {"user": "app", "pass": "two"}

    put(moto, key, {"user": "app"})  # the property disappears
    kube.force_sync(namespace, "db")
    kube.wait_ready(namespace, "db", "False", "PropertyNotFound")
    unchanged()

    moto.client("secretsmanager").delete_secret(SecretId=key, ForceDeleteWithoutRecovery=True)
    kube.force_sync(namespace, "db")
    cond = kube.wait_ready(namespace, "db", "False", "RemoteKeyNotFound")
    assert key in cond["message"]
    unchanged()

    put(moto, key, {"user": "app", "pass": "two"})
    kube.core.patch_namespaced_secret("aws-creds", namespace, {"stringData": {"secret": "wrong"}})
    # A new backend generation makes the operator build a new client, which reads the bad key.
    kube.custom.patch_namespaced_custom_object(
        "managedsecrets.io",
        "v1alpha1",
        namespace,
        "secretbackends",
        "aws",
        {"spec": {"aws": {"endpoint": moto.endpoint + "/"}}},
    )
    kube.force_sync(namespace, "db")
    kube.wait_ready(namespace, "db", "False", "AuthFailed", timeout=60)
    unchanged()

    moto.stop()
    try:
        kube.force_sync(namespace, "db")
        kube.wait_ready(namespace, "db", "False", "BackendUnavailable", timeout=60)
        unchanged()
    finally:
        moto.start()
    # A restarted moto has new keys and no data: put both back, as an operator of the store would.
    assert moto.reader is not None
    kube.core.patch_namespaced_secret(
        "aws-creds",
        namespace,
        {"stringData": {"id": moto.reader.access_key_id, "secret": moto.reader.secret_access_key}},
    )
    put(moto, key, {"user": "app", "pass": "three"})
    kube.wait_secret_data(namespace, "db", {"user": "app", "pass": "three"}, timeout=60)  # healed by itself
    kube.wait_ready(namespace, "db")


def test_200_resources_over_10_keys_read_each_key_once_per_window(
    operator: OperatorRunner, moto: MotoServer, kube: Kube, namespace: str
) -> None:
    aws_backend(kube, moto, namespace)
    for k in range(10):
        put(moto, f"{namespace}/shared-{k}", {"v": f"value-{k}"})
    before = keys_fetched()
    for i in range(200):
        kube.create_ms(
            namespace,
            f"ms-{i}",
            {
                "backendRef": {"name": "aws"},
                "refreshInterval": "10s",
                "data": [
                    {"secretKey": "v", "remoteRef": {"key": f"{namespace}/shared-{i % 10}", "property": "v"}}
                ],
            },
        )

    def all_synced() -> bool:
        items = kube.custom.list_namespaced_custom_object(
            "managedsecrets.io", "v1alpha1", namespace, "managedsecrets"
        )["items"]
        ready = [
            i
            for i in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (i.get("status") or {}).get("conditions", [])
            )
        ]
        return len(ready) == 200

    wait_for(all_synced, 60, interval=0.5, what="200 ManagedSecrets Ready")
    cold = keys_fetched() - before
    assert 0 < cold <= 10, f"cold sync read {cold} keys for 10 distinct keys"
    start = keys_fetched()
    time.sleep(12)  # one refresh of every resource: 10 s +/- 10 %
    window = keys_fetched() - start
    assert 0 < window <= 10, f"one refresh window read {window} keys for 10 distinct keys"
    assert kube.secret_data(namespace, "ms-199") == {"v": "value-9"}
