"""AWS Secrets Manager end to end: moto's server, the real control plane, the operator as in production.

A ManagedSecret syncs and rotates; each failure keeps the Secret as it was with a stable reason; and 200
ManagedSecrets over 10 distinct keys read each key once per refresh window (per-key read times).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest

from harness.moto_server import MotoServer
from harness.operator import AwsCalls, OperatorRunner
from kube import Kube, allowed_for, wait_for
from managed_secrets import metrics

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
    version = kube.existing_secret(namespace, "db").metadata.resource_version

    def unchanged() -> None:
        assert kube.existing_secret(namespace, "db").metadata.resource_version == version
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
    operator: OperatorRunner, moto: MotoServer, kube: Kube, namespace: str, aws_calls: AwsCalls
) -> None:
    """The read cache's contract, from each key's read times, whatever the cold sync lasts:

    - a first sync shares any read of the key less than half an interval old, so two reads of one key are
      never closer than INTERVAL / 2;
    - a refresh shares any read made after that resource's previous sync, and comes at least 0.9 intervals
      (the jitter) after it, so once every resource has synced, reads of one key are at least 0.9
      intervals apart: one read per key per refresh window, however many resources read it.
    """
    interval = 10.0
    jitter = 0.1  # ControllerSettings.refresh_jitter
    aws_backend(kube, moto, namespace)
    keys = {f"{namespace}/shared-{k}" for k in range(10)}
    for key in keys:
        put(moto, key, {"v": f"value-{key.rsplit('-', 1)[-1]}"})
    started = time.monotonic()
    for i in range(200):
        kube.create_ms(
            namespace,
            f"ms-{i}",
            {
                "backendRef": {"name": "aws"},
                "refreshInterval": f"{interval:g}s",
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

    wait_for(all_synced, 120, interval=0.5, what="200 ManagedSecrets Ready")
    cold_sync_done = time.monotonic()
    # Then watch every key through at least one refresh of its readers.
    wait_for(
        lambda: all(
            any(t > cold_sync_done for t in times) for times in aws_calls.reads(keys, started).values()
        ),
        interval * (1 + jitter) + 60,
        interval=0.5,
        what="a refresh read of every key",
    )
    reads = aws_calls.reads(keys, started)
    for key, times in sorted(reads.items()):
        assert any(t <= cold_sync_done for t in times), f"{key} never read in the cold sync"
        gaps = [(later - earlier, later) for earlier, later in itertools.pairwise(times)]
        for gap, at in gaps:
            assert gap >= interval / 2, f"{key} read twice within {gap:.1f}s (reads: {times})"
            if at > cold_sync_done:
                assert gap >= interval * (1 - jitter), f"{key} read twice in one refresh window ({gap:.1f}s)"
    assert kube.secret_data(namespace, "ms-199") == {"v": "value-9"}


def test_the_next_rotation_date_is_the_expiry_and_is_described_once_per_version(
    operator: OperatorRunner, moto: MotoServer, kube: Kube, namespace: str, aws_calls: AwsCalls
) -> None:
    """Secrets Manager says when it rotates a secret next (DescribeSecret, where rotation is on): that is
    status.expiresAt and the gauge, with ExpiresSoon inside the 14-day window. A secret without rotation
    has no expiry. DescribeSecret is asked once per key and version, not on every read."""
    aws_backend(kube, moto, namespace)
    client = moto.client("secretsmanager")
    days = {"soon": 3, "later": 30, "never": None}
    for name, after in days.items():
        key = f"{namespace}/{name}"
        put(moto, key, {"pass": "x"})
        if after is not None:
            # No rotation function in moto: the rules alone, and the current value stays as it is.
            client.rotate_secret(
                SecretId=key, RotationRules={"AutomaticallyAfterDays": after}, RotateImmediately=False
            )
    expected = {
        name: client.describe_secret(SecretId=f"{namespace}/{name}").get("NextRotationDate") for name in days
    }
    assert expected["never"] is None
    since = time.monotonic()
    for name in days:
        spec = {
            "backendRef": {"name": "aws"},
            "data": [{"secretKey": "pass", "remoteRef": {"key": f"{namespace}/{name}", "property": "pass"}}],
        }
        kube.create_ms(namespace, name, spec)
    for name, when in expected.items():
        kube.wait_ready(namespace, name, timeout=60)
        status = kube.get_ms(namespace, name)["status"]
        gauge = metrics.REGISTRY.get_sample_value(
            "managedsecrets_secret_expiry_timestamp_seconds", {"namespace": namespace, "name": name}
        )
        conditions = {c["type"]: c for c in status["conditions"]}
        if when is None:
            assert "expiresAt" not in status
            assert gauge is None
            assert "ExpiresSoon" not in conditions
            continue
        assert status["expiresAt"] == when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert gauge == when.timestamp()
        reason = "ExpiresSoon" if name == "soon" else "NotExpiringSoon"
        assert conditions["ExpiresSoon"]["reason"] == reason
    warned = [e.involved_object.name for e in kube.events(namespace) if e.reason == "ExpiresSoon"]
    assert warned == ["soon"]

    for _ in range(2):  # reads again, same versions: nothing described again
        kube.force_sync(namespace, "soon")
        kube.wait_ready(namespace, "soon")
    describes = [
        names
        for at, operation, names in list(aws_calls.calls)
        if at >= since and operation == "DescribeSecret"
    ]
    assert sorted(describes) == sorted((f"{namespace}/{name}",) for name in days)
