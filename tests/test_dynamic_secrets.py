"""Dynamic secrets on the real control plane: OpenBao's database engine against a real PostgreSQL.

The Secret's username and password log in; the lease is renewed (past its first expiry the credentials
still work, and OpenBao's lease lookup shows the later expiry); an operator restart issues nothing and
rolls nothing; a lease at its max TTL is replaced by new credentials; a replaced lease is revoked after the
grace period (its user is gone) while the workload rolled exactly once; deleting the ManagedSecret revokes
its lease unless revokeOnDelete is false. PostgreSQL counts every issue: the role's creation statements
record each new user in a table. No password and no lease id reaches the log (DEBUG), status or events.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import generate_latest

from conftest import DebugLogCapture
from dynamic_database import Database, database_engine
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from harness.postgres import PostgresServer
from kube import Kube, wait_for
from leaks import assert_absent
from managed_secrets import metrics
from managed_secrets.api import LEASE_ANNOTATION, LEASE_PROOF_ANNOTATION
from managed_secrets.core.leases import lease_reference

pytestmark = [pytest.mark.cluster]

#: Long enough for the control plane's controllers to act on anything they were going to act on.
SETTLE = 3.0


@pytest.fixture
def database(openbao: OpenBao, postgres: PostgresServer) -> Iterator[Database]:
    with database_engine(openbao, postgres) as db:
        yield db


def dynamic_spec(db: Database, **dynamic: Any) -> dict[str, Any]:
    return {"backendRef": {"name": "vault"}, "refreshInterval": "1h", "dynamic": {"path": db.path, **dynamic}}


def credentials(kube: Kube, namespace: str, name: str = "db") -> tuple[str, str]:
    data = kube.secret_data(namespace, name) or {}
    return data["username"], data["password"]


def lease_of(kube: Kube, namespace: str, name: str = "db") -> dict[str, Any]:
    annotations = kube.existing_secret(namespace, name).metadata.annotations or {}
    return dict(json.loads(annotations[LEASE_ANNOTATION]))


def replica_sets(kube: Kube, namespace: str, name: str) -> int:
    return sum(
        1
        for item in kube.apps.list_namespaced_replica_set(namespace).items
        if any(o.kind == "Deployment" and o.name == name for o in item.metadata.owner_references or [])
    )


def create_deployment(kube: Kube, namespace: str, name: str, secret: str, replicas: int = 1) -> None:
    """A Deployment whose pods read the Secret. No node runs them here: with replicas its rollout never
    completes, with none it completes as soon as the Deployment controller has seen the new template."""
    labels = {"app": name}
    env = [{"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}}]
    kube.apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "app", "env": env}]},
                },
            },
        },
    )
    wait_for(lambda: replica_sets(kube, namespace, name) == 1, 30, what=f"the first ReplicaSet of {name}")


def test_credentials_log_in_the_lease_is_renewed_and_a_restart_issues_nothing(
    operator: OperatorRunner,
    database: Database,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    debug_log: DebugLogCapture,
) -> None:
    database.role("20s", "1h")  # renewed ~13 s after issue: 7 s to spare on a busy machine
    create_deployment(kube, namespace, "web", "db")
    rollout = {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1s"}
    kube.create_ms(namespace, "db", {**dynamic_spec(database), "rollout": rollout})
    kube.wait_ready(namespace, "db", timeout=60)
    username, password = credentials(kube, namespace)
    assert database.postgres.login(username, password)
    lease = lease_of(kube, namespace)
    status = kube.get_ms(namespace, "db")["status"]
    assert status["lease"]["id"].startswith("sha256:")
    assert status["lease"]["renewable"] is True
    assert status["expiresAt"]
    first_expiry = database.lease_expiry(lease["id"])

    # Renewed: past the first expiry the same credentials still log in, and OpenBao says so too.
    wait_for(
        lambda: (kube.get_ms(namespace, "db")["status"].get("lease") or {}).get("renewedAt"),
        60,
        what="a renewal",
    )
    wait_for(lambda: datetime.now(first_expiry.tzinfo) > first_expiry, 30, what="the first expiry to pass")
    time.sleep(SETTLE)
    assert database.postgres.login(username, password), "renewed credentials still log in"
    assert database.lease_expiry(lease["id"]) > first_expiry
    assert credentials(kube, namespace) == (username, password)
    assert database.issued() == 1

    # A restart finds the lease with the Secret: it renews it, issues nothing, rolls nothing.
    renewed_at = kube.get_ms(namespace, "db")["status"]["lease"]["renewedAt"]
    operator.restart()
    wait_for(
        lambda: kube.get_ms(namespace, "db")["status"]["lease"].get("renewedAt") != renewed_at,
        60,
        what="a renewal after the restart",
    )
    time.sleep(SETTLE)
    assert database.issued() == 1, "the restart issued new credentials"
    assert credentials(kube, namespace) == (username, password)
    assert replica_sets(kube, namespace, "web") == 1, "nothing rolled"
    assert database.postgres.login(username, password)
    renewals = metrics.REGISTRY.get_sample_value(
        "managedsecrets_lease_operations_total", {"operation": "renew", "result": "ok"}
    )
    assert renewals is not None
    assert renewals >= 2, "renewals are counted"

    # Neither the password nor the lease id is in the log, the status, the events or the metrics.
    where = {
        "the operator log": debug_log.text(),
        "the status": str(kube.get_ms(namespace, "db")),
        "the events": str(kube.core.list_namespaced_event(namespace).to_dict()),
        "the metrics": generate_latest(metrics.REGISTRY).decode(),
    }
    for value in (password, lease["id"], lease["id"].rsplit("/", 1)[-1]):
        for place, text in where.items():
            assert_absent(value, text, place)


def test_new_credentials_roll_once_and_the_replaced_lease_is_revoked_after_the_grace_period(
    operator: OperatorRunner, database: Database, kube: Kube, namespace: str, vault_backend: str
) -> None:
    create_deployment(kube, namespace, "web", "db")
    rollout = {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1s"}
    dynamic = dynamic_spec(database, revokeGracePeriod="20s", revokeAfter="GracePeriod")
    kube.create_ms(namespace, "db", {**dynamic, "rollout": rollout})
    kube.wait_ready(namespace, "db", timeout=60)
    old = credentials(kube, namespace)

    kube.force_sync(namespace, "db")  # new credentials now; the old lease has an hour left
    new = wait_for(
        lambda: c if (c := credentials(kube, namespace)) != old else None, 60, what="new credentials"
    )
    assert database.postgres.login(*new)
    assert database.postgres.login(*old), "the old credentials live through the grace period"
    wait_for(
        lambda: kube.get_ms(namespace, "db")["status"]["lease"]["pendingRevocations"] == 1,
        15,
        what="the old lease pending revocation",
    )
    wait_for(lambda: old[0] not in database.postgres.roles(), 90, what="the old user revoked")
    wait_for(
        lambda: kube.get_ms(namespace, "db")["status"]["lease"]["pendingRevocations"] == 0,
        30,
        what="no revocation pending",
    )
    assert database.postgres.login(*new)
    assert database.issued() == 2
    # The audit trail: the change and the revocation, each one Event, by lease hash only.
    (source,) = kube.get_ms(namespace, "db")["status"]["sources"]
    assert source == {"key": database.path, "version": kube.get_ms(namespace, "db")["status"]["lease"]["id"]}
    messages = [(e.reason, e.message) for e in kube.events(namespace) if e.involved_object.name == "db"]
    changed = [m for r, m in messages if r == "Updated" and "(force-sync, re-issue)" in m]
    assert len(changed) == 1
    assert f"{database.path} sha256:" in changed[0]
    assert [r for r, _ in messages].count("LeaseRevoked") == 1
    assert replica_sets(kube, namespace, "web") == 2, "one rollout for the new credentials"
    time.sleep(SETTLE)
    assert replica_sets(kube, namespace, "web") == 2, "and none for the revocation"


def test_the_replaced_lease_is_revoked_once_the_rollout_completed_and_never_while_it_runs(
    operator: OperatorRunner, database: Database, kube: Kube, namespace: str, vault_backend: str
) -> None:
    """revokeAfter RolloutComplete (the default). The Deployment's pod cannot start (no node), so its
    rollout runs for as long as the test wants: past the grace period the old credentials still log in.
    Scaled to zero, the rollout completes and the old lease goes. Then, with an hour of grace, new
    credentials for a Deployment that completes at once: the replaced lease goes within a minute."""
    create_deployment(kube, namespace, "web", "db")
    rollout = {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1s"}
    kube.create_ms(namespace, "db", {**dynamic_spec(database, revokeGracePeriod="2s"), "rollout": rollout})
    kube.wait_ready(namespace, "db", timeout=60)
    first = credentials(kube, namespace)
    hash_before = kube.get_ms(namespace, "db")["status"]["dataHash"]

    kube.force_sync(namespace, "db")
    second = wait_for(
        lambda: c if (c := credentials(kube, namespace)) != first else None, 60, what="new credentials"
    )
    wait_for(
        lambda: kube.get_ms(namespace, "db")["status"]["dataHash"] != hash_before, 60, what="the rollout made"
    )
    assert replica_sets(kube, namespace, "web") == 2
    time.sleep(10)  # five times the grace period, two polls of the rollout at least
    assert database.postgres.login(*first), "revoked while the rollout was still running"
    assert kube.get_ms(namespace, "db")["status"]["lease"]["pendingRevocations"] == 1

    kube.apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: first[0] not in database.postgres.roles(), 90, what="the old user revoked")
    assert database.postgres.login(*second)
    wait_for(
        lambda: kube.get_ms(namespace, "db")["status"]["lease"]["pendingRevocations"] == 0,
        30,
        what="no revocation pending",
    )

    kube.patch_ms(namespace, "db", {"spec": {"dynamic": {"revokeGracePeriod": "1h"}}})
    kube.force_sync(namespace, "db")
    third = wait_for(
        lambda: c if (c := credentials(kube, namespace)) not in (first, second) else None,
        60,
        what="the third credentials",
    )
    # Within 90 s of an hour's grace: at the rollout's completion.
    wait_for(lambda: second[0] not in database.postgres.roles(), 90, what="the second user revoked")
    assert database.postgres.login(*third)
    assert database.issued() == 3
    assert replica_sets(kube, namespace, "web") == 3, "one rollout per new credentials"
    revoked = [
        e for e in kube.events(namespace) if e.involved_object.name == "db" and e.reason == "LeaseRevoked"
    ]
    assert len(revoked) == 2


def test_a_lease_at_its_max_ttl_is_replaced_before_it_expires(
    operator: OperatorRunner,
    database: Database,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    debug_log: DebugLogCapture,
) -> None:
    """TTL 20 s, max TTL 60 s, renewals at a third: the renewal OpenBao cuts short (the engine caps it at
    the role's max TTL) leads to new credentials while the old lease still has (1 - 0.34) * 20 s."""
    database.role("20s", "60s")
    kube.create_ms(namespace, "db", dynamic_spec(database, renewAtPercent=34, revokeGracePeriod="1s"))
    kube.wait_ready(namespace, "db", timeout=60)
    old = credentials(kube, namespace)
    first = lease_of(kube, namespace)
    new = wait_for(
        lambda: c if (c := credentials(kube, namespace)) != old else None, 120, what="new credentials"
    )
    second = lease_of(kube, namespace)
    assert f"renewed lease {lease_reference(first['id'])}" in debug_log.text(), "renewed before replaced"
    assert second["issuedAt"] < first["issuedAt"] + 60, "issued before the old lease's max TTL"
    assert database.postgres.login(*new)
    wait_for(lambda: old[0] not in database.postgres.roles(), 60, what="the old user gone")
    kube.wait_ready(namespace, "db")
    assert database.issued() >= 2


@pytest.mark.parametrize("revoke", [True, False])
def test_deleting_the_managed_secret_revokes_its_lease(
    operator: OperatorRunner, database: Database, kube: Kube, namespace: str, vault_backend: str, revoke: bool
) -> None:
    kube.create_ms(namespace, "db", dynamic_spec(database, revokeOnDelete=revoke))
    kube.wait_ready(namespace, "db", timeout=60)
    username, password = credentials(kube, namespace)
    kube.delete_ms(namespace, "db")
    wait_for(lambda: kube.secret(namespace, "db") is None, 60, what="the Secret gone with its ManagedSecret")
    if revoke:
        wait_for(lambda: username not in database.postgres.roles(), 60, what="the user revoked")
    else:
        time.sleep(SETTLE)
        assert database.postgres.login(username, password), "revokeOnDelete false leaves the lease"


def test_a_tenant_cannot_write_through_a_cluster_backend_or_reach_the_stores_control_paths(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str
) -> None:
    """A ClusterSecretBackend's token serves every admitted namespace: a dynamic POST could write a KV
    value or mint a token with it. POST needs the backend owner's remoteKeys pattern; sys/, auth/,
    identity/ and cubbyhole/ are refused by the API server."""
    name = f"shared-{namespace}"[:63]
    # No remoteKeys: reads of any key, no POST.
    kube.create_cluster_vault_token_backend(
        name, namespace, openbao.addr, openbao.root_token, [{"namespaces": [namespace]}]
    )
    try:
        victim = f"victim/{secrets.token_hex(4)}"
        openbao.client().secrets.kv.v2.create_or_update_secret(
            path=victim, secret={"v": "kept"}, mount_point="secret"
        )
        spec = {
            "backendRef": {"kind": "ClusterSecretBackend", "name": name},
            "dynamic": {"path": f"secret/data/{victim}", "method": "POST", "parameters": {"data": "x"}},
        }
        kube.create_ms(namespace, "write", spec)
        cond = kube.wait_ready(namespace, "write", "False", "KeyNotAllowed", timeout=60)
        assert "remoteKeys" in cond["message"]
        kept = openbao.client().secrets.kv.v2.read_secret_version(
            path=victim, mount_point="secret", raise_on_deleted_version=True
        )
        assert kept["data"]["data"] == {"v": "kept"}, "the KV value was not touched"
        with pytest.raises(ApiException) as refused:
            kube.create_ms(
                namespace, "token", {**spec, "dynamic": {"path": "auth/token/create", "method": "POST"}}
            )
        assert refused.value.status == 422
        assert "secrets engine's path" in str(refused.value.body)
    finally:
        kube.delete_cluster_backend(name)


def test_a_forged_lease_annotation_never_makes_the_operator_act_on_another_lease(
    operator: OperatorRunner,
    database: Database,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
) -> None:
    """A tenant who may edit the Secrets of its namespace writes another namespace's lease id into its
    own Secret's lease annotation, then asks for new credentials and deletes its ManagedSecret: the
    operator would revoke that lease with the backend's token (on a shared backend, someone else's
    credentials). The annotation carries an HMAC bound to the Secret; a forged one is ignored."""
    victim_ns = f"victim-{secrets.token_hex(3)}"
    kube.core.create_namespace({"metadata": {"name": victim_ns}})
    try:
        kube.create_vault_token_backend(victim_ns, openbao.addr, openbao.root_token)
        kube.create_ms(victim_ns, "db", dynamic_spec(database, revokeGracePeriod="1s"))
        kube.wait_ready(victim_ns, "db", timeout=60)
        victim = credentials(kube, victim_ns)
        victim_annotations = kube.existing_secret(victim_ns, "db").metadata.annotations or {}

        kube.create_ms(namespace, "db", dynamic_spec(database, revokeGracePeriod="1s"))
        kube.wait_ready(namespace, "db", timeout=60)
        forged = json.loads(victim_annotations[LEASE_ANNOTATION])
        # The victim's annotation, its proof included, copied as it is.
        kube.core.patch_namespaced_secret(
            "db",
            namespace,
            {
                "metadata": {
                    "annotations": {
                        k: victim_annotations[k] for k in (LEASE_ANNOTATION, LEASE_PROOF_ANNOTATION)
                    }
                }
            },
        )
        kube.force_sync(namespace, "db")
        wait_for(
            lambda: lease_of(kube, namespace)["id"] != forged["id"], 60, what="new credentials of its own"
        )
        kube.delete_ms(namespace, "db")
        wait_for(lambda: kube.secret(namespace, "db") is None, 60, what="the attacker's Secret gone")
        time.sleep(SETTLE)
        assert database.postgres.login(*victim), "the victim's lease was neither renewed away nor revoked"
        assert credentials(kube, victim_ns) == victim
    finally:
        kube.core.delete_namespace(victim_ns)
