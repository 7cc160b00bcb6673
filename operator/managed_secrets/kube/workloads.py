"""Kubernetes calls for rolling restarts: list, read and patch workloads, with translated errors.

Raw JSON in and out, like kube/cluster.py. A restart is a JSON merge patch of one annotation: on the pod
template of a Deployment, StatefulSet or DaemonSet (the controller rolls the pods), on an Argo Rollout
itself together with ``spec.restartAt``. No watches: workloads are read only when a rollout is due.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes import client

from managed_secrets.api import RESTARTED_FOR_ANNOTATION
from managed_secrets.core.restarts import (
    ARGO_GROUP,
    ARGO_VERSION,
    DISCOVERED_KINDS,
    RolloutFailed,
    RolloutForbidden,
    Workload,
    WorkloadNotFound,
    WorkloadRef,
    secrets_used,
)
from managed_secrets.kube.edge import Translation, call, send
from managed_secrets.models.managedsecret import RolloutKind

ARGO_CRD = "rollouts.argoproj.io"
MERGE_PATCH = "application/merge-patch+json"


def decode_workload(kind: RolloutKind, body: Mapping[str, Any]) -> Workload:
    meta = body.get("metadata") or {}
    template = (body.get("spec") or {}).get("template") or {}
    return Workload(
        ref=WorkloadRef(kind, meta.get("namespace", ""), meta.get("name", "")),
        uid=meta.get("uid", ""),
        annotations=dict(meta.get("annotations") or {}),
        template_annotations=dict((template.get("metadata") or {}).get("annotations") or {}),
        secrets=secrets_used(template.get("spec") or {}),
        rollout_complete=rollout_complete(kind, body),
    )


def rollout_complete(kind: RolloutKind, body: Mapping[str, Any]) -> bool | None:
    """What ``kubectl rollout status`` calls done, from the controller's status: it has seen the current
    template, and every pod runs it with no pod of an older one left. None for an Argo Rollout."""
    if kind is RolloutKind.ROLLOUT:
        return None
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    if kind is RolloutKind.DAEMON_SET:
        desired = int(status.get("desiredNumberScheduled") or 0)
        return (
            int(status.get("updatedNumberScheduled") or 0) >= desired
            and int(status.get("numberAvailable") or 0) >= desired
            and int(status.get("numberMisscheduled") or 0) == 0
        )
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    if kind is RolloutKind.STATEFUL_SET:
        return (
            updated >= wanted
            and int(status.get("readyReplicas") or 0) >= wanted
            and status.get("currentRevision") == status.get("updateRevision")
        )
    return (
        updated >= wanted
        and int(status.get("replicas") or 0) <= updated
        and int(status.get("availableReplicas") or 0) >= updated
    )


#: Not found, forbidden, anything else (a 5xx, a timeout: retried with backoff).
WORKLOAD_ERRORS = Translation(
    RolloutFailed,
    {
        404: lambda what, _described: WorkloadNotFound(f"{what} not found"),
        401: lambda what, described: RolloutForbidden(f"{what}: the operator may not do this ({described})"),
        403: lambda what, described: RolloutForbidden(f"{what}: the operator may not do this ({described})"),
    },
)


class KubeWorkloads:
    """Implements ``runtime.rollout_stage.WorkloadAPI``."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._extensions = client.ApiextensionsV1Api(api_client)
        apps = self._apps
        #: kind -> (list, read, patch) of the apps/v1 kinds.
        self._methods: dict[
            RolloutKind, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]
        ] = {
            RolloutKind.DEPLOYMENT: (
                apps.list_namespaced_deployment,
                apps.read_namespaced_deployment,
                apps.patch_namespaced_deployment,
            ),
            RolloutKind.STATEFUL_SET: (
                apps.list_namespaced_stateful_set,
                apps.read_namespaced_stateful_set,
                apps.patch_namespaced_stateful_set,
            ),
            RolloutKind.DAEMON_SET: (
                apps.list_namespaced_daemon_set,
                apps.read_namespaced_daemon_set,
                apps.patch_namespaced_daemon_set,
            ),
        }

    def _call(self, what: str, method: Callable[..., urllib3.HTTPResponse], *args: Any, **kwargs: Any) -> Any:
        return call(what, WORKLOAD_ERRORS, method, *args, **kwargs)

    def list(self, namespace: str) -> list[Workload]:
        """The namespace's Deployments, StatefulSets and DaemonSets."""
        found: list[Workload] = []
        for kind in DISCOVERED_KINDS:
            body = self._call(f"listing {kind.value}s in {namespace}", self._methods[kind][0], namespace)
            found += [decode_workload(kind, item) for item in body.get("items") or []]
        return found

    def get(self, ref: WorkloadRef) -> Workload:
        what = f"{ref} in {ref.namespace}"
        if ref.kind is not RolloutKind.ROLLOUT:
            return decode_workload(
                ref.kind, self._call(what, self._methods[ref.kind][1], ref.name, ref.namespace)
            )
        try:
            body = self._call(
                what,
                self._custom.get_namespaced_custom_object,
                ARGO_GROUP,
                ARGO_VERSION,
                ref.namespace,
                "rollouts",
                ref.name,
            )
        except WorkloadNotFound:
            if not self._argo_installed():
                raise WorkloadNotFound(
                    f"{ref}: Argo Rollouts is not installed (no CustomResourceDefinition {ARGO_CRD})"
                ) from None
            raise
        return decode_workload(ref.kind, body)

    def restart(self, workload: Workload, key: str, now: str) -> None:
        """Set the restart annotation (and restartAt of an Argo Rollout); the controller rolls the pods."""
        ref = workload.ref
        what = f"patching {ref} in {ref.namespace}"
        annotation = {"annotations": {RESTARTED_FOR_ANNOTATION: key}}
        if ref.kind is RolloutKind.ROLLOUT:
            self._call(
                what,
                self._custom.patch_namespaced_custom_object,
                ARGO_GROUP,
                ARGO_VERSION,
                ref.namespace,
                "rollouts",
                ref.name,
                {"metadata": annotation, "spec": {"restartAt": now}},
                _content_type=MERGE_PATCH,
            )
            return
        template_patch = {"spec": {"template": {"metadata": annotation}}}
        self._call(
            what,
            self._methods[ref.kind][2],
            ref.name,
            ref.namespace,
            template_patch,
            _content_type=MERGE_PATCH,
        )

    def _argo_installed(self) -> bool:
        return send(
            f"reading CustomResourceDefinition {ARGO_CRD}",
            WORKLOAD_ERRORS,
            self._extensions.read_custom_resource_definition,
            ARGO_CRD,
            missing_ok=True,
        )
