"""Drift: a managed Secret deleted or edited by hand is restored within seconds, from cached reads, and
the operator's Secret watch sees only its own Secrets (metadata only), whatever else the cluster holds.

Real control plane and OpenBao; the session operator (clusterwide), plus an operator of its own in
namespaced mode on a private control plane for the API-server restart.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from prometheus_client import generate_latest

from conftest import DebugLogCapture
from harness.controlplane import DEFAULT_CRD_DIR, ControlPlane, wait_until
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from leaks import assert_absent
from managed_secrets.config import OperatorConfig
from managed_secrets.kube.secretwatch import SecretChange
from managed_secrets.metrics import REGISTRY
from managed_secrets.providers.base import RemoteKey
from test_rollout import create_workload, env_from_secret, restarted_for, revisions

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

BOUND = 30.0  # generous: a repair takes well under a second on an idle machine


def put(openbao: OpenBao, path: str, data: dict[str, Any]) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def spec(key: str, interval: str = "1h", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "backendRef": {"name": "vault"},
        "refreshInterval": interval,
        "data": [
            {"secretKey": "user", "remoteRef": {"key": key, "property": "user"}},
            {"secretKey": "pass", "remoteRef": {"key": key, "property": "pass"}},
        ],
    }
    base.update(extra)
    return base


def repairs(result: str) -> float:
    return REGISTRY.get_sample_value("managedsecrets_drift_repairs_total", {"result": result}) or 0.0


def synced(kube: Kube, openbao: OpenBao, namespace: str, name: str = "app", **extra: Any) -> None:
    put(openbao, f"{namespace}/{name}", {"user": "u", "pass": "p1"})
    kube.create_ms(namespace, name, spec(f"{namespace}/{name}", **extra))
    kube.wait_secret_data(namespace, name, {"user": "u", "pass": "p1"})
    kube.wait_ready(namespace, name)


def settle(operator: OperatorRunner, seconds: float = 1.5) -> None:
    """Until the operator has been idle for ``seconds`` (status echoes processed)."""
    last, quiet_since = operator.runtime.controller.reconciles, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() - quiet_since < seconds and time.monotonic() < deadline:
        time.sleep(0.1)
        now = operator.runtime.controller.reconciles
        if now != last:
            last, quiet_since = now, time.monotonic()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Spy:
    """What the session operator does, per namespace (other tests' objects may still be winding down, so
    the global counters are not used for exact figures)."""

    def __init__(self) -> None:
        self.changes: list[SecretChange] = []  # every change the watch received, before the echo filter
        self.syncs: list[tuple[str, str]] = []  # reconciles (namespace, name)
        self.fetched: list[RemoteKey] = []  # store reads (cache misses)
        self.writes: list[tuple[str, str, str]] = []  # (verb, namespace, name) of Secret writes

    def reads(self, namespace: str) -> int:
        return sum(1 for ref in list(self.fetched) if ref.key.startswith(f"{namespace}/"))

    def writes_in(self, namespace: str, verb: str | None = None) -> int:
        return sum(1 for v, ns, _ in list(self.writes) if ns == namespace and verb in (None, v))

    def syncs_in(self, namespace: str) -> int:
        return sum(1 for ns, _ in list(self.syncs) if ns == namespace)


@pytest.fixture
def spy(operator: OperatorRunner) -> Iterator[Spy]:
    rt = operator.runtime
    watch, reconciler, reads, cluster = rt.secret_watch, rt.reconciler, rt.reads, rt.cluster
    found = Spy()
    originals: list[tuple[object, str, Any]] = []

    def wrap(obj: object, name: str, record: Callable[..., None]) -> None:
        original = getattr(obj, name)
        originals.append((obj, name, original))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            record(*args, **kwargs)
            return original(*args, **kwargs)

        setattr(obj, name, wrapper)

    wrap(watch, "_judge", found.changes.append)
    wrap(reconciler, "sync", lambda ms, **_: found.syncs.append((ms.ref.namespace, ms.ref.name)))
    wrap(reads, "_fetch", lambda _backend, _provider, futures, _observe: found.fetched.extend(futures))
    wrap(cluster, "create", lambda secret: found.writes.append(("create", secret.namespace, secret.name)))
    wrap(cluster, "replace", lambda secret: found.writes.append(("replace", secret.namespace, secret.name)))
    wrap(cluster, "delete", lambda ns, name, **_: found.writes.append(("delete", ns, name)))
    yield found
    for obj, name, _original in reversed(originals):
        delattr(obj, name)  # back to the class's method


# -- repair ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", ["1h", "0"])
def test_deleted_secret_is_back_within_seconds_without_reading_the_store(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    spy: Spy,
    interval: str,
) -> None:
    synced(kube, openbao, namespace, refreshInterval=interval)
    settle(operator)
    reads, creates = spy.reads(namespace), spy.writes_in(namespace)
    for round_ in range(2):  # twice: the second repair waits for the rate limit (about 1 s)
        old_uid = kube.existing_secret(namespace, "app").metadata.uid
        kube.core.delete_namespaced_secret("app", namespace)
        started = time.monotonic()

        def recreated(old_uid: str = old_uid) -> bool:
            s = kube.secret(namespace, "app")
            return s is not None and bool(s.metadata.uid != old_uid)

        wait_for(recreated, BOUND, what=f"the Secret recreated (round {round_})")
        assert time.monotonic() - started < BOUND
        assert kube.secret_data(namespace, "app") == {"user": "u", "pass": "p1"}
        secret = kube.existing_secret(namespace, "app")
        assert secret.metadata.labels["managedsecrets.io/managed"] == "true"
        assert [o.name for o in secret.metadata.owner_references] == ["app"], "garbage collection still works"
    settle(operator)
    assert kube.wait_ready(namespace, "app")["reason"] == "Synced"
    assert spy.reads(namespace) == reads, "repaired from the read cache: no store read"
    assert spy.writes_in(namespace) - creates == 2, "one write per repair"
    assert spy.writes_in(namespace) == spy.writes_in(namespace, "create")
    wait_for(
        lambda: any(e.reason == "DriftRepaired" for e in kube.events(namespace)),
        10,
        what="a DriftRepaired event",
    )


def test_edited_value_is_restored_and_foreign_keys_dropped_without_a_rollout(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, spy: Spy
) -> None:
    create_workload(kube, namespace, "Deployment", "web", env_from_secret("app"))
    put(openbao, f"{namespace}/app", {"pass": "p1"})
    kube.create_ms(
        namespace,
        "app",
        {
            "backendRef": {"name": "vault"},
            "refreshInterval": "1h",
            "data": [{"secretKey": "password", "remoteRef": {"key": f"{namespace}/app", "property": "pass"}}],
            "rollout": {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1s"},
        },
    )
    kube.wait_secret_data(namespace, "app", {"password": "p1"})
    kube.wait_ready(namespace, "app")
    wait_for(lambda: (kube.get_ms(namespace, "app").get("status") or {}).get("dataHash"), 10, what="dataHash")
    settle(operator)
    reads = spy.reads(namespace)

    # A tenant overwrites the value: the declared value comes back.
    kube.core.patch_namespaced_secret("app", namespace, {"data": {"password": b64("tampered")}})
    kube.wait_secret_data(namespace, "app", {"password": "p1"}, timeout=BOUND)
    # A foreign key added by hand is removed, as External Secrets Operator does for the Secrets it owns:
    # the Secret holds exactly what the ManagedSecret declares (use creationPolicy Merge to share one).
    kube.core.patch_namespaced_secret("app", namespace, {"data": {"extra": b64("x")}})
    kube.wait_secret_data(namespace, "app", {"password": "p1"}, timeout=BOUND)
    # A label or annotation added by hand is kept, and costs a check but no write.
    settle(operator)
    writes, syncs = spy.writes_in(namespace), spy.syncs_in(namespace)
    kube.core.patch_namespaced_secret(
        "app", namespace, {"metadata": {"labels": {"team": "a"}, "annotations": {"note": "n"}}}
    )
    wait_for(lambda: spy.syncs_in(namespace) > syncs, BOUND, what="the label change checked")
    settle(operator)
    secret = kube.existing_secret(namespace, "app")
    assert secret.metadata.labels["team"] == "a"
    assert secret.metadata.annotations["note"] == "n"
    assert spy.writes_in(namespace) == writes, "nothing to repair, nothing written"

    assert spy.reads(namespace) == reads, "repairs read nothing from the store"
    time.sleep(2.5)  # past the rollout debounce
    assert revisions(kube, namespace, "Deployment", "web") == 1, (
        "restoring the declared data restarts nothing"
    )
    assert restarted_for(kube, namespace, "Deployment", "web") is None
    assert kube.ready_now(namespace, "app")["status"] == "True"


def test_steady_state_and_own_writes_cause_no_drift_handling(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, spy: Spy
) -> None:
    started = time.monotonic()
    synced(kube, openbao, namespace, refreshInterval="1s")
    put(openbao, f"{namespace}/app", {"user": "u", "pass": "p2"})
    kube.force_sync(namespace, "app")
    kube.wait_secret_data(namespace, "app", {"user": "u", "pass": "p2"})
    time.sleep(4)  # several refreshes that find the same data
    elapsed = time.monotonic() - started
    assert [v for v, ns, _ in spy.writes if ns == namespace] == ["create", "replace"], (
        "exactly one Secret write per change"
    )
    mine = [c for c in spy.changes if c.namespace == namespace]
    assert len(mine) == 2, f"the watch saw the echo of both writes: {mine}"
    syncs = spy.syncs_in(namespace)
    # The create, the force-sync, and one refresh a second (jittered by 10%); an echo taken for drift
    # would add a reconcile after each write.
    assert 3 <= syncs <= 2 + elapsed / 0.9 + 1, f"{syncs} reconciles in {elapsed:.1f} s"
    assert spy.reads(namespace) >= 3, "the 1 s refreshes read the store as usual"


def test_a_tenant_deleting_its_secret_in_a_loop_is_rate_limited_and_others_still_sync(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, spy: Spy
) -> None:
    other = f"drift-other-{secrets.token_hex(3)}"
    kube.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=other)))
    try:
        kube.create_vault_token_backend(other, openbao.addr, openbao.root_token)
        synced(kube, openbao, namespace)
        synced(kube, openbao, other)
        settle(operator)
        reads, delayed = spy.reads(namespace), repairs("delayed")
        deletes = 0

        def tenant() -> None:
            nonlocal deletes
            for _ in range(50):
                try:
                    kube.core.delete_namespaced_secret("app", namespace)
                    deletes += 1
                except ApiException as error:
                    if error.status != 404:
                        raise
                time.sleep(0.1)

        attacker = threading.Thread(target=tenant)
        attacker.start()
        time.sleep(1)
        put(openbao, f"{other}/app", {"user": "u", "pass": "rotated"})
        started = time.monotonic()
        kube.force_sync(other, "app")
        kube.wait_secret_data(other, "app", {"user": "u", "pass": "rotated"}, timeout=BOUND)
        # Generous for a loaded 2-core machine: held up behind the tenant, it would wait for the whole loop.
        assert time.monotonic() - started < 30, "another namespace's rotation is not held up"
        attacker.join(60)
        assert not attacker.is_alive()

        recreated = spy.writes_in(namespace, "create")
        assert deletes >= 2
        assert recreated <= 8, f"{deletes} deletions in about 6 s gave {recreated} repairs"
        assert repairs("delayed") > delayed, "later repairs were postponed"
        assert spy.reads(namespace) == reads, "the tenant's loop read nothing from the store"
        kube.wait_secret_data(namespace, "app", {"user": "u", "pass": "p1"}, timeout=60)  # back once it stops
        assert kube.ready_now(namespace, "app")["status"] == "True"
    finally:
        kube.core.delete_namespace(other, propagation_policy="Background")


def test_unrelated_secrets_never_reach_the_operator(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, spy: Spy
) -> None:
    synced(kube, openbao, namespace)
    settle(operator)
    syncs, first = spy.syncs_in(namespace), len(spy.changes)
    blob = b64("x" * 1024)

    def create(start: int) -> None:
        for i in range(start, 300, 6):
            kube.core.create_namespaced_secret(
                namespace,
                {"metadata": {"name": f"unrelated-{i}", "labels": {"app": "x"}}, "data": {"b": blob}},
            )

    threads = [threading.Thread(target=create, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A copied label pointing at a ManagedSecret whose target is another Secret, and one pointing nowhere.
    for name, owner in (("copied", "app"), ("orphan", "nobody")):
        kube.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {
                    "name": name,
                    "labels": {"managedsecrets.io/managed": "true"},
                    "annotations": {"managedsecrets.io/owner": owner},
                },
                "data": {"k": b64("v")},
            },
        )
    wait_for(lambda: {c.name for c in spy.changes} >= {"copied", "orphan"}, BOUND, what="the labelled ones")
    for i in range(0, 300, 50):
        kube.core.patch_namespaced_secret(f"unrelated-{i}", namespace, {"data": {"b": b64("y")}})
        kube.core.delete_namespaced_secret(f"unrelated-{i + 1}", namespace)
    kube.core.patch_namespaced_secret("copied", namespace, {"data": {"k": b64("w")}})
    wait_for(lambda: len([c for c in spy.changes if c.name == "copied"]) >= 2, BOUND, what="the edit seen")
    time.sleep(1)  # the unrelated changes had time to arrive, if the API server sent them
    settle(operator)
    names = [c.name for c in spy.changes[first:] if c.namespace == namespace]
    assert sorted(set(names)) == ["copied", "orphan"], "the API server sends only labelled Secrets"
    assert spy.syncs_in(namespace) == syncs, "no reconcile for Secrets that are not targets"
    assert kube.secret_data(namespace, "copied") == {"k": "w"}, "a Secret that is not a target is left alone"
    known = {key for key in operator.runtime.secret_watch._known if key[0] == namespace}
    assert known == {(namespace, "app"), (namespace, "copied"), (namespace, "orphan")}, "memory: only those"


def test_merge_target_drift_is_repaired_and_other_keys_kept(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, spy: Spy
) -> None:
    kube.create_secret(namespace, "shared", {"theirs": "keep"})
    put(openbao, f"{namespace}/m", {"user": "u", "pass": "p1"})
    kube.create_ms(
        namespace, "merger", spec(f"{namespace}/m", target={"name": "shared", "creationPolicy": "Merge"})
    )
    kube.wait_ready(namespace, "merger")
    kube.wait_secret_data(namespace, "shared", {"theirs": "keep", "user": "u", "pass": "p1"})
    assert kube.existing_secret(namespace, "shared").metadata.labels["managedsecrets.io/managed"] == "merged"
    settle(operator)
    reads = spy.reads(namespace)
    # The Secret's owner rewrites it without our keys (a Helm upgrade, say): they come back, theirs stay.
    kube.core.replace_namespaced_secret(
        "shared",
        namespace,
        {
            "metadata": {"name": "shared", "labels": {"managedsecrets.io/managed": "merged"}},
            "data": {"theirs": b64("new")},
        },
    )
    kube.wait_secret_data(namespace, "shared", {"theirs": "new", "user": "u", "pass": "p1"}, timeout=BOUND)
    assert spy.reads(namespace) == reads
    kube.delete_ms(namespace, "merger")
    wait_for(
        lambda: kube.secret_data(namespace, "shared") == {"theirs": "new"}, BOUND, what="merged keys removed"
    )
    labels = kube.existing_secret(namespace, "shared").metadata.labels or {}
    assert "managedsecrets.io/managed" not in labels, "the merge label goes with the merged keys"


def test_drift_handling_leaks_no_value(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    debug_log: DebugLogCapture,
) -> None:
    canary = "canary-" + secrets.token_hex(12)
    tampered = "canary-" + secrets.token_hex(12)
    put(openbao, f"{namespace}/c", {"user": "u", "pass": canary})
    kube.create_ms(namespace, "c", spec(f"{namespace}/c"))
    kube.wait_secret_data(namespace, "c", {"user": "u", "pass": canary})
    start = len(debug_log.lines)
    kube.core.patch_namespaced_secret("c", namespace, {"data": {"pass": b64(tampered)}})
    kube.wait_secret_data(namespace, "c", {"user": "u", "pass": canary}, timeout=BOUND)
    kube.core.delete_namespaced_secret("c", namespace)
    kube.wait_secret_data(namespace, "c", {"user": "u", "pass": canary}, timeout=BOUND)
    text = "\n".join(debug_log.lines[start:])
    events = "\n".join(f"{e.reason} {e.message}" for e in kube.events(namespace))
    for value in (canary, tampered):
        assert_absent(value, text, "DEBUG log")
        assert_absent(value, events, "events")
    assert_absent(canary, generate_latest(REGISTRY).decode(), "metrics")


# -- namespaced mode, and an API server restart ---------------------------------------------------------------


@pytest.fixture(scope="module")
def private_controlplane() -> Iterator[ControlPlane]:
    with ControlPlane(crd_dir=DEFAULT_CRD_DIR) as cp:
        cp.apply_operator_rbac()
        yield cp


def restart_apiserver(cp: ControlPlane) -> None:
    server = next(s for s in cp._servers if s.name == "kube-apiserver")
    server.stop()
    server.start()
    wait_until(
        lambda: cp._http_ok(f"{cp.url}/readyz", token=cp.admin_token),
        timeout=60,
        interval=0.5,
        what="apiserver",
    )


def test_namespaced_watch_survives_an_apiserver_restart(
    private_controlplane: ControlPlane, openbao: OpenBao
) -> None:
    cp = private_controlplane
    api = k8s_config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
    kube = Kube(api)
    watched, unwatched = "team-a", "team-b"
    for ns in (watched, unwatched):
        kube.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        kube.create_vault_token_backend(ns, openbao.addr, openbao.root_token)
    path = f"private-{secrets.token_hex(3)}/app"
    put(openbao, path, {"user": "u", "pass": "p1"})
    runner = OperatorRunner(
        OperatorConfig(
            kubeconfig=str(cp.operator_kubeconfig),
            namespaces=(watched,),
            workers=4,
            backoff_base=0.3,
            backoff_max=2.0,
            allowed_store_endpoints=(openbao.addr,),
        )
    ).start()
    try:
        kube.create_ms(watched, "app", spec(path, refreshInterval="0"))
        kube.wait_secret_data(watched, "app", {"user": "u", "pass": "p1"})
        watch = runner.runtime.secret_watch
        wait_for(lambda: watch.lists >= 1, BOUND, what="the first listing")
        # A labelled Secret in a namespace the operator does not watch never reaches it.
        kube.core.create_namespaced_secret(
            unwatched,
            {
                "metadata": {
                    "name": "app",
                    "labels": {"managedsecrets.io/managed": "true"},
                    "annotations": {"managedsecrets.io/owner": "app"},
                },
                "data": {"k": b64("v")},
            },
        )
        restart_apiserver(cp)
        # Deleted while the watch may still be reconnecting: it resumes from its resourceVersion, or lists
        # again after 410 Gone and finds the Secret missing; either way the Secret comes back.
        kube.core.delete_namespaced_secret("app", watched)
        kube.wait_secret_data(watched, "app", {"user": "u", "pass": "p1"}, timeout=60)
        kube.core.patch_namespaced_secret("app", watched, {"data": {"pass": b64("edited")}})
        kube.wait_secret_data(watched, "app", {"user": "u", "pass": "p1"}, timeout=BOUND)
        assert kube.secret_data(unwatched, "app") == {"k": "v"}
        assert {key[0] for key in watch._known} == {watched}, "only the watched namespace"
    finally:
        runner.stop()
        api.close()
