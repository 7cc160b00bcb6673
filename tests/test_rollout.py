"""Rolling restarts on a real control plane (kube-controller-manager rolls Deployments, StatefulSets and
DaemonSets), with the real operator running as its own ServiceAccount.

A restart shows as one more ReplicaSet (Deployment) or ControllerRevision (StatefulSet, DaemonSet) owned
by the workload. "Exactly once" is checked by waiting past the debounce window after the new one appeared.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from harness.controlplane import RBAC_RULES_FILE, ControlPlane
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from leaks import assert_absent

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

ANNOTATION = "managedsecrets.io/restarted-for"
SETTLE = 3.0  # longer than the 1s debounce used below, plus a reconcile


def put(openbao: OpenBao, path: str, data: dict[str, Any]) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def ms_spec(key: str, secret: str, rollout: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "backendRef": {"name": "vault"},
        "refreshInterval": "1h",
        "target": {"name": secret},
        "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
    }
    if rollout is not None:
        spec["rollout"] = rollout
    spec.update(extra)
    return spec


def synced(
    kube: Kube,
    openbao: OpenBao,
    namespace: str,
    name: str,
    rollout: dict[str, Any] | None,
    *,
    value: str = "one",
    **extra: Any,
) -> dict[str, Any]:
    """ManagedSecret `name` -> Secret `name` from secret/<ns>/<name>, synced; returns its status."""
    put(openbao, f"{namespace}/{name}", {"password": value})
    kube.create_ms(namespace, name, ms_spec(f"{namespace}/{name}", name, rollout, **extra))
    kube.wait_secret_data(namespace, name, {"password": value})
    kube.wait_ready(namespace, name)
    return wait_for(
        lambda: s if (s := kube.get_ms(namespace, name).get("status") or {}).get("dataHash") else None,
        10,
        what=f"{name} dataHash",
    )


def rotate(kube: Kube, openbao: OpenBao, namespace: str, name: str, value: str) -> None:
    put(openbao, f"{namespace}/{name}", {"password": value})
    kube.force_sync(namespace, name)
    kube.wait_secret_data(namespace, name, {"password": value})


# -- workloads ---------------------------------------------------------------------------------------------


def env_from_secret(*names: str) -> dict[str, Any]:
    env = [
        {"name": f"S{i}", "valueFrom": {"secretKeyRef": {"name": n, "key": "password"}}}
        for i, n in enumerate(names)
    ]
    return {"containers": [{"name": "app", "image": "nginx", "env": env}]}


def workload_body(
    kind: str, name: str, pod_spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    labels = {"app": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "annotations": dict(annotations or {})},
        "spec": spec,
    }


def create_workload(
    kube: Kube,
    namespace: str,
    kind: str,
    name: str,
    pod_spec: dict[str, Any],
    *,
    annotations: dict[str, str] | None = None,
) -> None:
    body = workload_body(kind, name, pod_spec, annotations)
    create = {
        "Deployment": kube.apps.create_namespaced_deployment,
        "StatefulSet": kube.apps.create_namespaced_stateful_set,
        "DaemonSet": kube.apps.create_namespaced_daemon_set,
    }[kind]
    create(namespace, body)
    wait_for(
        lambda: revisions(kube, namespace, kind, name) == 1, 30, what=f"the first revision of {kind} {name}"
    )


def read_workload(kube: Kube, namespace: str, kind: str, name: str) -> Any:
    read = {
        "Deployment": kube.apps.read_namespaced_deployment,
        "StatefulSet": kube.apps.read_namespaced_stateful_set,
        "DaemonSet": kube.apps.read_namespaced_daemon_set,
    }[kind]
    return read(name, namespace)


def revisions(kube: Kube, namespace: str, kind: str, name: str) -> int:
    """ReplicaSets of a Deployment, ControllerRevisions of a StatefulSet or DaemonSet."""
    if kind == "Deployment":
        items = kube.apps.list_namespaced_replica_set(namespace).items
    else:
        items = kube.apps.list_namespaced_controller_revision(namespace).items
    return sum(
        1
        for item in items
        if any(o.kind == kind and o.name == name for o in item.metadata.owner_references or [])
    )


def restarted_for(kube: Kube, namespace: str, kind: str, name: str) -> str | None:
    template = read_workload(kube, namespace, kind, name).spec.template
    return (template.metadata.annotations or {}).get(ANNOTATION)


def rollout_condition(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    status = kube.get_ms(namespace, name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Rollout"), None)


def event_messages(kube: Kube, namespace: str, kind: str, name: str) -> list[str]:
    """Messages of the operator's events about one object (not those of kube-controller-manager)."""
    return [
        e.message
        for e in kube.events(namespace)
        if e.involved_object.kind == kind
        and e.involved_object.name == name
        and (e.source.component if e.source else None) == "managed-secrets"
    ]


# -- tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_rotation_restarts_the_workload_exactly_once(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, kind: str
) -> None:
    create_workload(kube, namespace, kind, "web", env_from_secret("app"))
    before = synced(
        kube,
        openbao,
        namespace,
        "app",
        {"targets": [{"kind": kind, "name": "web"}], "debounce": "1s"},
        value="first-value",
    )
    assert re.fullmatch(r"[0-9a-f]{32}", before["dataHash"])
    time.sleep(SETTLE)
    assert revisions(kube, namespace, kind, "web") == 1, "the first sync restarts nothing"
    assert restarted_for(kube, namespace, kind, "web") is None

    rotate(kube, openbao, namespace, "app", "second-value")
    wait_for(lambda: revisions(kube, namespace, kind, "web") == 2, 30, what=f"a new revision of {kind} web")
    time.sleep(SETTLE)
    assert revisions(kube, namespace, kind, "web") == 2, "exactly one restart"
    key = restarted_for(kube, namespace, kind, "web")
    assert key is not None
    assert re.fullmatch(r"[0-9a-f]{32}", key)

    status = wait_for(
        lambda: (
            s if (s := kube.get_ms(namespace, "app")["status"])["dataHash"] != before["dataHash"] else None
        ),
        10,
        what="the new dataHash",
    )
    assert [(r["kind"], r["name"]) for r in status["restarts"]] == [(kind, "web")]
    cond = rollout_condition(kube, namespace, "app")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("True", "Restarted")
    message = f"restarted {kind} web: Secret app changed"
    assert message in event_messages(kube, namespace, kind, "web")
    assert message in event_messages(kube, namespace, "ManagedSecret", "app")
    for text in (key, str(status), " ".join(event_messages(kube, namespace, kind, "web"))):
        assert_absent("second-value", text, "restart annotation, status and events")

    # Refreshes that find the same value (forced, twice) restart nothing and leave the status alone.
    time.sleep(SETTLE)
    status = kube.get_ms(namespace, "app")["status"]
    kube.force_sync(namespace, "app")
    time.sleep(1)
    kube.force_sync(namespace, "app")
    time.sleep(SETTLE)
    assert revisions(kube, namespace, kind, "web") == 2
    assert restarted_for(kube, namespace, kind, "web") == key
    assert kube.get_ms(namespace, "app")["status"] == status


def test_three_secrets_rotated_within_the_window_restart_once(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    create_workload(kube, namespace, "Deployment", "web", env_from_secret("a", "b", "c"))
    hashes = {
        name: synced(kube, openbao, namespace, name, {"auto": True})["dataHash"] for name in "abc"
    }  # default debounce 10s
    for name in "abc":
        put(openbao, f"{namespace}/{name}", {"password": "two"})
        kube.force_sync(namespace, name)
    for name in "abc":
        kube.wait_secret_data(namespace, name, {"password": "two"})
    wait_for(lambda: revisions(kube, namespace, "Deployment", "web") == 2, 40, what="the restart")
    for name in "abc":

        def rehashed(name: str = name) -> bool:
            return bool(kube.get_ms(namespace, name)["status"]["dataHash"] != hashes[name])

        wait_for(rehashed, 10, what=f"{name} dataHash")
    time.sleep(SETTLE)
    assert revisions(kube, namespace, "Deployment", "web") == 2, "one restart for three Secrets"
    assert event_messages(kube, namespace, "Deployment", "web") == [
        "restarted Deployment web: Secrets a, b, c changed"
    ]


def test_operator_restart_with_everything_in_sync_restarts_nothing(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    create_workload(kube, namespace, "Deployment", "web", env_from_secret("app"))
    synced(
        kube,
        openbao,
        namespace,
        "app",
        {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1s"},
    )
    rotate(kube, openbao, namespace, "app", "two")  # one real restart first, so the workload carries a key
    wait_for(lambda: revisions(kube, namespace, "Deployment", "web") == 2, 30, what="the restart")
    wait_for(
        lambda: (rollout_condition(kube, namespace, "app") or {}).get("reason") == "Restarted",
        10,
        what="the Rollout condition",
    )
    time.sleep(SETTLE)
    version = kube.get_ms(namespace, "app")["metadata"]["resourceVersion"]
    hmac_key = kube.existing_secret("managed-secrets-system", "managed-secrets-hmac-key").data["key"]

    operator.restart()
    wait_for(
        lambda: (state := operator.runtime.controller.state_of(namespace, "app")) is not None and state.ready,
        30,
        what="the resync after the restart",
    )
    time.sleep(SETTLE)
    assert revisions(kube, namespace, "Deployment", "web") == 2
    assert kube.get_ms(namespace, "app")["metadata"]["resourceVersion"] == version, "no status write either"
    assert (
        kube.existing_secret("managed-secrets-system", "managed-secrets-hmac-key").data["key"] == hmac_key
    ), "the key is stable"


def test_same_values_label_change_and_unrelated_secrets_restart_nothing(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    kube.create_secret(namespace, "hand-made", {"password": "x"})
    pod = env_from_secret("app")
    pod["containers"][0]["envFrom"] = [{"secretRef": {"name": "hand-made"}}]
    create_workload(kube, namespace, "Deployment", "web", pod)
    synced(
        kube,
        openbao,
        namespace,
        "app",
        {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1s"},
        refreshInterval="1s",
    )
    synced(kube, openbao, namespace, "other", {"auto": True, "debounce": "1s"})
    data_hash = kube.get_ms(namespace, "app")["status"]["dataHash"]

    time.sleep(SETTLE)  # refreshes every second that find the same value
    kube.patch_ms(namespace, "app", {"spec": {"target": {"labels": {"team": "a"}}}})
    wait_for(
        lambda: (kube.existing_secret(namespace, "app").metadata.labels or {}).get("team") == "a",
        10,
        what="the label",
    )
    rotate(kube, openbao, namespace, "other", "two")  # a managed Secret web does not use
    kube.core.patch_namespaced_secret(
        "hand-made", namespace, {"stringData": {"password": "y"}}
    )  # not managed
    time.sleep(SETTLE)
    assert revisions(kube, namespace, "Deployment", "web") == 1
    assert restarted_for(kube, namespace, "Deployment", "web") is None
    status = kube.get_ms(namespace, "app")["status"]
    assert status["dataHash"] == data_hash
    assert "restarts" not in status
    assert rollout_condition(kube, namespace, "app") is None


def test_auto_finds_every_reference_style_and_honours_opt_out(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    container: dict[str, Any] = {"name": "app", "image": "nginx"}
    styles: dict[str, dict[str, Any]] = {
        "env": env_from_secret("app"),
        "env-from": {"containers": [{**container, "envFrom": [{"secretRef": {"name": "app"}}]}]},
        "volume": {"containers": [container], "volumes": [{"name": "s", "secret": {"secretName": "app"}}]},
        "projected": {
            "containers": [container],
            "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "app"}}]}}],
        },
        "init": {
            "initContainers": [{**container, "name": "init", "envFrom": [{"secretRef": {"name": "app"}}]}],
            "containers": [container],
        },
    }
    for name, pod in styles.items():
        create_workload(kube, namespace, "Deployment", name, pod)
    create_workload(kube, namespace, "Deployment", "bystander", env_from_secret("unrelated"))
    create_workload(
        kube,
        namespace,
        "Deployment",
        "opted-out",
        env_from_secret("app"),
        annotations={"managedsecrets.io/reload": "false"},
    )
    create_workload(
        kube,
        namespace,
        "StatefulSet",
        "db",
        {"containers": [container], "volumes": [{"name": "s", "secret": {"secretName": "app"}}]},
    )
    synced(kube, openbao, namespace, "app", {"auto": True, "debounce": "1s"})

    rotate(kube, openbao, namespace, "app", "two")
    for name in styles:

        def restarted(name: str = name) -> bool:
            return revisions(kube, namespace, "Deployment", name) == 2

        wait_for(restarted, 30, what=f"the restart of {name}")
    wait_for(
        lambda: revisions(kube, namespace, "StatefulSet", "db") == 2, 30, what="the restart of StatefulSet db"
    )
    time.sleep(SETTLE)
    assert {
        name: revisions(kube, namespace, "Deployment", name) for name in [*styles, "bystander", "opted-out"]
    } == {**dict.fromkeys(styles, 2), "bystander": 1, "opted-out": 1}
    restarts = kube.get_ms(namespace, "app")["status"]["restarts"]
    assert len(restarts) == 5, "the last five of six"


def test_opt_in_annotation_without_rollout_spec(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    create_workload(
        kube,
        namespace,
        "Deployment",
        "opted-in",
        env_from_secret("app"),
        annotations={"managedsecrets.io/reload": "true"},
    )
    create_workload(kube, namespace, "Deployment", "plain", env_from_secret("app"))
    synced(kube, openbao, namespace, "app", None)
    rotate(kube, openbao, namespace, "app", "two")
    wait_for(
        lambda: revisions(kube, namespace, "Deployment", "opted-in") == 2,
        30,
        what="the restart (default debounce 10s)",
    )
    time.sleep(SETTLE)
    assert revisions(kube, namespace, "Deployment", "opted-in") == 2
    assert revisions(kube, namespace, "Deployment", "plain") == 1


def test_missing_workload_is_a_condition_and_the_rollout_stays_due(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    """Crash safety through a failed restart: the new dataHash is recorded only once the rollout ran."""
    before = synced(
        kube,
        openbao,
        namespace,
        "app",
        {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1s"},
    )
    rotate(kube, openbao, namespace, "app", "two")
    cond = wait_for(lambda: rollout_condition(kube, namespace, "app"), 15, what="the Rollout condition")
    assert (cond["status"], cond["reason"]) == ("False", "WorkloadNotFound")
    assert "Deployment web" in cond["message"]
    assert kube.wait_ready(namespace, "app")["reason"] == "Synced", "the sync itself succeeded"
    assert kube.get_ms(namespace, "app")["status"]["dataHash"] == before["dataHash"]
    assert any(
        "Deployment web" in e.message for e in kube.events(namespace) if e.reason == "WorkloadNotFound"
    )

    create_workload(kube, namespace, "Deployment", "web", env_from_secret("app"))
    kube.force_sync(namespace, "app")  # the next sync: same data, but the rollout is still due
    wait_for(lambda: revisions(kube, namespace, "Deployment", "web") == 2, 30, what="the restart")
    wait_for(
        lambda: (rollout_condition(kube, namespace, "app") or {}).get("reason") == "Restarted",
        10,
        what="Rollout=True",
    )
    assert kube.get_ms(namespace, "app")["status"]["dataHash"] != before["dataHash"]
    time.sleep(SETTLE)
    assert revisions(kube, namespace, "Deployment", "web") == 2


def test_operator_stopped_between_secret_write_and_rollout_restarts_after_it_is_back(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    create_workload(kube, namespace, "Deployment", "web", env_from_secret("app"))
    before = synced(
        kube,
        openbao,
        namespace,
        "app",
        {"targets": [{"kind": "Deployment", "name": "web"}], "debounce": "1m"},
    )
    rotate(kube, openbao, namespace, "app", "two")
    operator.stop()  # well within the one-minute debounce: the Secret is written, the rollout not yet
    try:
        assert revisions(kube, namespace, "Deployment", "web") == 1
        assert kube.get_ms(namespace, "app")["status"]["dataHash"] == before["dataHash"]
        kube.patch_ms(namespace, "app", {"spec": {"rollout": {"debounce": "1s"}}})
    finally:
        operator.start()
    wait_for(
        lambda: revisions(kube, namespace, "Deployment", "web") == 2,
        30,
        what="the restart after the operator came back",
    )
    wait_for(
        lambda: kube.get_ms(namespace, "app")["status"]["dataHash"] != before["dataHash"],
        10,
        what="the new dataHash",
    )
    time.sleep(SETTLE)
    assert revisions(kube, namespace, "Deployment", "web") == 2


ARGO_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rollouts.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts", "singular": "rollout"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


@pytest.fixture
def argo_crd_absent(controlplane: ControlPlane, tmp_path: Path) -> Iterator[Path]:
    """Argo Rollouts is not installed; the test may install a minimal CRD, removed afterwards."""
    path = tmp_path / "argo-rollouts-crd.yaml"
    path.write_text(yaml.safe_dump(ARGO_CRD))
    yield path
    controlplane.kubectl(
        "delete", "customresourcedefinition", "rollouts.argoproj.io", "--ignore-not-found", "--wait=false"
    )


def test_argo_rollout_restart_at_and_missing_crd(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    controlplane: ControlPlane,
    argo_crd_absent: Path,
) -> None:
    synced(
        kube,
        openbao,
        namespace,
        "app",
        {"targets": [{"kind": "Rollout", "name": "canary"}], "debounce": "1s"},
    )
    rotate(kube, openbao, namespace, "app", "two")
    cond = wait_for(lambda: rollout_condition(kube, namespace, "app"), 15, what="the Rollout condition")
    assert (cond["status"], cond["reason"]) == ("False", "WorkloadNotFound")
    assert "Argo Rollouts is not installed" in cond["message"]
    kube.wait_ready(namespace, "app")

    controlplane.apply_crds(argo_crd_absent)
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "canary", "namespace": namespace},
        "spec": {"template": {"spec": env_from_secret("app")}},
    }
    kube.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "rollouts", rollout)
    kube.force_sync(namespace, "app")
    body = wait_for(
        lambda: (
            r
            if (
                r := kube.custom.get_namespaced_custom_object(
                    "argoproj.io", "v1alpha1", namespace, "rollouts", "canary"
                )
            )["spec"].get("restartAt")
            else None
        ),
        30,
        what="spec.restartAt",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["spec"]["restartAt"])
    assert re.fullmatch(r"[0-9a-f]{32}", body["metadata"]["annotations"][ANNOTATION])
    assert ANNOTATION not in (body["spec"]["template"].get("metadata") or {}).get("annotations", {})
    wait_for(
        lambda: (rollout_condition(kube, namespace, "app") or {}).get("reason") == "Restarted",
        10,
        what="Rollout=True",
    )


def test_operator_rbac_is_exactly_enough_for_restarts(controlplane: ControlPlane, namespace: str) -> None:
    """The rollout tests above run the operator as its ServiceAccount, so these rules are enough; here:
    they are no more than get/list/watch/patch of the workload kinds it restarts."""
    rules = yaml.safe_load(RBAC_RULES_FILE.read_text())
    workload_rules = [r for r in rules if set(r["apiGroups"]) & {"apps", "argoproj.io"}]
    assert workload_rules == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets", "daemonsets"],
            "verbs": ["get", "list", "watch", "patch"],
        },
        {"apiGroups": ["argoproj.io"], "resources": ["rollouts"], "verbs": ["get", "list", "watch", "patch"]},
    ]
    api = k8s_config.new_client_from_config(config_file=str(controlplane.operator_kubeconfig))
    try:
        authz = k8s.AuthorizationV1Api(api)

        def can(verb: str, group: str, resource: str, subresource: str | None = None) -> bool:
            attributes = k8s.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource, subresource=subresource
            )
            review = authz.create_self_subject_access_review(
                k8s.V1SelfSubjectAccessReview(
                    spec=k8s.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                )
            )
            return bool(review.status.allowed)

        kinds = [
            ("apps", "deployments"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
            ("argoproj.io", "rollouts"),
        ]
        for group, resource in kinds:
            for verb in ("get", "list", "watch", "patch"):
                assert can(verb, group, resource), f"{verb} {resource}"
            for verb in ("create", "update", "delete", "deletecollection"):
                assert not can(verb, group, resource), f"{verb} {resource} must be denied"
        assert not can("patch", "apps", "deployments", "scale")
        assert not can("update", "apps", "deployments", "status")
        for group, resource in [("apps", "replicasets"), ("apps", "controllerrevisions"), ("", "pods")]:
            for verb in ("get", "patch", "delete"):
                assert not can(verb, group, resource), f"{verb} {resource} must be denied"
    finally:
        api.close()
