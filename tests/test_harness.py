"""Smoke tests of the integration-test harness itself: the control plane and OpenBao behave like the real
things the operator will meet."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hvac
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from harness.controlplane import OPERATOR_NAMESPACE, OPERATOR_USERNAME, ControlPlane
from harness.openbao import OpenBao

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(interval)


def _gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


# ---------------------------------------------------------------------------------------------------
# Control plane
# ---------------------------------------------------------------------------------------------------


@pytest.mark.cluster
def test_apiserver_version(admin_api: k8s.ApiClient, controlplane: ControlPlane) -> None:
    assert k8s.VersionApi(admin_api).get_code().git_version == "v1.36.3"
    assert controlplane.url.startswith("https://127.0.0.1:")
    print(f"control plane started in {controlplane.startup_seconds:.1f}s")


@pytest.mark.cluster
def test_deployment_gets_replicaset(admin_api: k8s.ApiClient, namespace: str) -> None:
    labels = {"app": "web"}
    deployment = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="web"),
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image="nginx")]),
            ),
        ),
    )
    apps = k8s.AppsV1Api(admin_api)
    created = apps.create_namespaced_deployment(namespace, deployment)

    def replicasets() -> list[k8s.V1ReplicaSet] | None:
        items = apps.list_namespaced_replica_set(namespace).items
        return items or None

    (rs,) = eventually(replicasets, timeout=30)
    (owner,) = rs.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Deployment", "web", created.metadata.uid)


@pytest.mark.cluster
def test_garbage_collection_of_owned_objects(admin_api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(admin_api)
    owner = core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner"))
    )
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(
                name="owned",
                owner_references=[
                    k8s.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            ),
            string_data={"k": "v"},
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)
    eventually(lambda: _gone(lambda: core.read_namespaced_secret("owned", namespace)), timeout=30)


@pytest.mark.cluster
def test_operator_token_is_rbac_restricted(controlplane: ControlPlane, namespace: str) -> None:
    operator_api = k8s_config.new_client_from_config(config_file=str(controlplane.operator_kubeconfig))
    try:
        review = k8s.AuthenticationV1Api(operator_api).create_self_subject_review(k8s.V1SelfSubjectReview())
        assert review.status.user_info.username == OPERATOR_USERNAME
        core = k8s.CoreV1Api(operator_api)
        # The operator reads Secrets by name, and lists/watches only those labelled as managed (its drift
        # watch; RBAC cannot restrict the verb by label, so the grant is wider: see rbac-rules.yaml).
        with pytest.raises(ApiException) as not_found:
            core.read_namespaced_secret("absent", namespace)
        assert not_found.value.status == 404
        core.list_secret_for_all_namespaces(
            label_selector="managedsecrets.io/managed in (true,merged)", limit=1
        )
        with pytest.raises(ApiException) as forbidden:
            core.patch_namespaced_secret("absent", namespace, {"metadata": {"labels": {"x": "y"}}})
        assert forbidden.value.status == 403
        with pytest.raises(ApiException) as forbidden:
            k8s.RbacAuthorizationV1Api(operator_api).create_cluster_role(
                k8s.V1ClusterRole(
                    metadata=k8s.V1ObjectMeta(name=f"escalate-{secrets.token_hex(3)}"), rules=[]
                )
            )
        assert forbidden.value.status == 403
        with pytest.raises(ApiException) as forbidden:
            k8s.CoreV1Api(operator_api).list_namespaced_config_map(namespace)
        assert forbidden.value.status == 403
    finally:
        operator_api.close()
    # The same through kubectl and the operator kubeconfig.
    can_i = controlplane.kubectl(
        "auth", "can-i", "create", "clusterroles", kubeconfig=controlplane.operator_kubeconfig, check=False
    )
    assert can_i.stdout.strip() == "no"
    sa = controlplane.get_json("serviceaccount", "managed-secrets", "-n", OPERATOR_NAMESPACE)
    assert sa["metadata"]["name"] == "managed-secrets"


@pytest.mark.cluster
def test_token_request_and_review(admin_api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(admin_api)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="app"))
    )
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=["openbao"], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("app", namespace, request).status.token
    review = k8s.AuthenticationV1Api(admin_api).create_token_review(
        k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token, audiences=["openbao"]))
    )
    assert review.status.authenticated
    assert review.status.user.username == f"system:serviceaccount:{namespace}:app"


@pytest.mark.cluster
def test_apply_crds_waits_until_established(controlplane: ControlPlane, tmp_path: Path) -> None:
    (tmp_path / "widgets.yaml").write_text(
        """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.harness.example.com
spec:
  group: harness.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
"""
    )
    assert controlplane.apply_crds(tmp_path) == ["widgets.harness.example.com"]
    # Served right away, with schema validation.
    bad = controlplane.kubectl(
        "apply",
        "-n",
        "default",
        "-f",
        "-",
        check=False,
        input="apiVersion: harness.example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: big}\n",
    )
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr


# ---------------------------------------------------------------------------------------------------
# OpenBao
# ---------------------------------------------------------------------------------------------------


@pytest.mark.vault
def test_openbao_kv2_roundtrip(openbao: OpenBao) -> None:
    client = openbao.client()
    path = f"harness/{secrets.token_hex(4)}"
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": "one"}, mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": "two"}, mount_point="secret")
    latest = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    assert latest["data"]["data"] == {"password": "two"}
    assert latest["data"]["metadata"]["version"] == 2
    first = client.secrets.kv.v2.read_secret_version(
        path=path, version=1, mount_point="secret", raise_on_deleted_version=True
    )
    assert first["data"]["data"] == {"password": "one"}


@pytest.mark.vault
def test_openbao_restart_keeps_helper_setup(openbao: OpenBao) -> None:
    mount = f"kv1-{secrets.token_hex(3)}"
    openbao.enable_kv_v1(mount)
    openbao.write_policy(f"{mount}-read", f'path "{mount}/*" {{ capabilities = ["read"] }}')
    role_id, secret_id = openbao.enable_approle(mount=f"approle-{mount}", policies=[f"{mount}-read"])
    openbao.client().secrets.kv.v1.create_or_update_secret(path="db", secret={"user": "u"}, mount_point=mount)

    openbao.stop()
    assert not openbao.running
    with pytest.raises(Exception):  # noqa: B017 - any connection error
        hvac.Client(url=openbao.addr, token=openbao.root_token, timeout=2).sys.read_health_status(
            method="GET"
        )
    openbao.start()

    client = openbao.client()
    assert f"{mount}/" in client.sys.list_mounted_secrets_engines()["data"]
    # dev mode keeps nothing across restarts: the data is gone, the mount is back and usable.
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v1.read_secret(path="db", mount_point=mount)
    client.secrets.kv.v1.create_or_update_secret(path="db", secret={"user": "v"}, mount_point=mount)
    # The AppRole credentials issued before the restart still log in, with the re-created policy.
    approle = openbao.client(token="")
    login = approle.auth.approle.login(role_id, secret_id, mount_point=f"approle-{mount}")
    assert f"{mount}-read" in login["auth"]["policies"]
    assert approle.secrets.kv.v1.read_secret(path="db", mount_point=mount)["data"] == {"user": "v"}


@pytest.mark.cluster
@pytest.mark.vault
def test_openbao_kubernetes_auth_with_token_review(
    openbao: OpenBao, controlplane: ControlPlane, namespace: str
) -> None:
    mount = f"k8s-{secrets.token_hex(3)}"
    openbao.write_policy(f"{mount}-read", 'path "secret/data/k8s-auth/*" { capabilities = ["read"] }')
    openbao.enable_kubernetes_auth(
        controlplane,
        mount=mount,
        role="app",
        bound_sa_names=["app"],
        bound_sa_namespaces=[namespace],
        policies=[f"{mount}-read"],
    )
    openbao.enable_kubernetes_auth(
        controlplane,
        mount=mount,
        role="app-aud",
        bound_sa_names=["app"],
        bound_sa_namespaces=[namespace],
        policies=[f"{mount}-read"],
        audience="openbao",
    )
    openbao.client().secrets.kv.v2.create_or_update_secret(path="k8s-auth/db", secret={"password": "p"})

    # Default audience (the apiserver's --api-audiences) for the role without audience.
    jwt = controlplane.create_token("app", namespace)
    client = openbao.client(token="")
    login = client.auth.kubernetes.login("app", jwt, mount_point=mount)
    assert login["auth"]["metadata"]["service_account_name"] == "app"
    assert client.secrets.kv.v2.read_secret_version(path="k8s-auth/db", raise_on_deleted_version=True)[
        "data"
    ]["data"] == {"password": "p"}

    # A role with an audience accepts only tokens for that audience.
    aud_jwt = controlplane.create_token("app", namespace, audiences=["openbao"])
    openbao.client(token="").auth.kubernetes.login("app-aud", aud_jwt, mount_point=mount)
    with pytest.raises(hvac.exceptions.VaultError):
        openbao.client(token="").auth.kubernetes.login("app-aud", jwt, mount_point=mount)

    # A ServiceAccount outside the bound names is refused by OpenBao.
    other = controlplane.create_token("other", namespace)
    with pytest.raises(hvac.exceptions.VaultError):
        openbao.client(token="").auth.kubernetes.login("app", other, mount_point=mount)
