"""``core.ports.ClusterReader`` on the API server: backends (as the watch last saw them), namespaces, claims."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from managed_secrets import errors
from managed_secrets.api import (
    CLUSTER_SECRET_BACKENDS_PLURAL,
    GROUP,
    MANAGED_SECRETS_PLURAL,
    SECRET_BACKENDS_PLURAL,
    VERSION,
)
from managed_secrets.core.ports import ManagedSecretInfo
from managed_secrets.kube.edge import Translation, call, call_or_none
from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.models.parse import parse_backend

_PLURALS = {
    BackendKind.SECRET_BACKEND: SECRET_BACKENDS_PLURAL,
    BackendKind.CLUSTER_SECRET_BACKEND: CLUSTER_SECRET_BACKENDS_PLURAL,
}
#: Namespace labels change rarely; a short cache spares a GET per reconcile of ClusterSecretBackend users.
NAMESPACE_CACHE_SECONDS = 10.0

#: Without the backend or the namespace labels the backend cannot be used: as if the store were down.
READ_BACKEND = Translation(errors.BackendUnavailable)
READ_CLAIM = Translation(errors.WriteFailed)


class KubeReader:
    """Implements ``core.ports.ClusterReader``; the operator's watch feeds ``remember_backend``."""

    def __init__(self, api_client: client.ApiClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._clock = clock
        self._namespace_cache: dict[str, tuple[float, dict[str, str]]] = {}
        #: Backends as last seen by the operator's watch; a miss falls back to a GET.
        self._backends: dict[tuple[BackendKind, str | None, str], Backend | errors.SyncError] = {}

    def remember_backend(self, body: Mapping[str, Any]) -> None:
        kind = BackendKind(body["kind"])
        meta = body.get("metadata") or {}
        parsed: Backend | errors.SyncError
        try:
            parsed = parse_backend(body)
        except errors.SyncError as error:
            parsed = error
        self._backends[(kind, meta.get("namespace"), meta["name"])] = parsed

    def forget_backend(self, kind: BackendKind, name: str, namespace: str | None) -> None:
        self._backends.pop((kind, namespace, name), None)

    def get_backend(self, kind: BackendKind, name: str, namespace: str | None) -> Backend | None:
        known = self._backends.get((kind, namespace, name))
        if isinstance(known, errors.SyncError):
            raise type(known)(known.message)
        if known is not None:
            return known
        what = f"reading {kind.value} {name}"
        plural = _PLURALS[kind]
        if namespace is None:
            body = call_or_none(
                what, READ_BACKEND, self._custom.get_cluster_custom_object, GROUP, VERSION, plural, name
            )
        else:
            body = call_or_none(
                what,
                READ_BACKEND,
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
            )
        return None if body is None else parse_backend(body)

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        body = call_or_none(
            f"reading ManagedSecret {namespace}/{name}",
            READ_CLAIM,
            self._custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            MANAGED_SECRETS_PLURAL,
            name,
        )
        if body is None:
            return None
        meta = body.get("metadata") or {}
        target = (body.get("spec") or {}).get("target") or {}
        return ManagedSecretInfo(
            uid=str(meta.get("uid", "")),
            secret_name=str(target.get("name") or meta.get("name", "")),
            creation_policy=str(target.get("creationPolicy") or "Owner"),
        )

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        now = self._clock()
        cached = self._namespace_cache.get(namespace)
        if cached is not None and now - cached[0] < NAMESPACE_CACHE_SECONDS:
            return cached[1]
        body = call(f"reading namespace {namespace}", READ_BACKEND, self._core.read_namespace, namespace)
        labels = dict((body.get("metadata") or {}).get("labels") or {})
        self._namespace_cache[namespace] = (now, labels)
        return labels
