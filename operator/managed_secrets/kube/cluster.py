"""Kubernetes calls for the core, with raw JSON (no model classes) and translated errors.

Messages built from API errors carry the status code and reason, never the server's message text: for a
Secret, that text could quote a value.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets import errors
from managed_secrets.core.ports import OwnerReference, SecretObject
from managed_secrets.kube.raw import read_json, release
from managed_secrets.kube.secretwatch import OwnWrites
from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind, ManagedSecretRef
from managed_secrets.models.parse import parse_backend

log = logging.getLogger(__name__)

GROUP = "managedsecrets.io"
VERSION = "v1alpha1"
_PLURALS = {
    BackendKind.SECRET_BACKEND: "secretbackends",
    BackendKind.CLUSTER_SECRET_BACKEND: "clustersecretbackends",
}
#: Namespace labels change rarely; a short cache spares a GET per reconcile of ClusterSecretBackend users.
NAMESPACE_CACHE_SECONDS = 10.0

P = ParamSpec("P")
R = TypeVar("R")


def describe_api_error(error: ApiException) -> str:
    """Code, reason and the fields involved; the server's free-text message is left out on purpose."""
    details = ""
    try:
        body = json.loads(error.body or "{}")
        causes = (body.get("details") or {}).get("causes") or []
        fields = sorted({cause.get("field", "") for cause in causes if cause.get("field")})
        reason = body.get("reason") or error.reason
        details = f"{reason}" + (f" ({', '.join(fields)})" if fields else "")
    except (ValueError, AttributeError):
        details = str(error.reason)
    return f"HTTP {error.status} {details}"


def _decode_secret(body: Mapping[str, Any]) -> SecretObject:
    meta = body.get("metadata") or {}
    owners = tuple(
        OwnerReference(
            api_version=o.get("apiVersion", ""),
            kind=o.get("kind", ""),
            name=o.get("name", ""),
            uid=o.get("uid", ""),
            controller=bool(o.get("controller", False)),
        )
        for o in meta.get("ownerReferences") or []
    )
    return SecretObject(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        type=body.get("type", "Opaque"),
        data={key: base64.b64decode(value) for key, value in (body.get("data") or {}).items()},
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        owner_references=owners,
        resource_version=meta.get("resourceVersion"),
        uid=meta.get("uid"),
    )


def _encode_secret(secret: SecretObject) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": secret.name,
        "namespace": secret.namespace,
        "labels": dict(secret.labels),
        "annotations": dict(secret.annotations),
        "ownerReferences": [
            {
                "apiVersion": o.api_version,
                "kind": o.kind,
                "name": o.name,
                "uid": o.uid,
                "controller": o.controller,
                "blockOwnerDeletion": False,
            }
            for o in secret.owner_references
        ],
    }
    if secret.resource_version:
        meta["resourceVersion"] = secret.resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": secret.type,
        "data": {key: base64.b64encode(value).decode() for key, value in secret.data.items()},
    }


class KubeCluster:
    """Implements ``core.ports.Cluster`` and the status/event writes of the runtime."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        own_writes: OwnWrites | None = None,
    ) -> None:
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._clock = clock
        self._namespace_cache: dict[str, tuple[float, dict[str, str]]] = {}
        #: Backends as last seen by the operator's watch; a miss falls back to a GET.
        self._backends: dict[tuple[BackendKind, str | None, str], Backend | errors.SyncError] = {}
        self._lock = threading.Lock()
        #: Writes to Secrets, by verb; the tests and the benchmark count them.
        self.secret_writes: dict[str, int] = {"create": 0, "replace": 0, "delete": 0}
        #: Versions the writes returned, so the Secret watch ignores their echo.
        self.own_writes = own_writes if own_writes is not None else OwnWrites()

    def _json(self, response: urllib3.HTTPResponse) -> Any:
        return read_json(response)

    # -- SecretStore -------------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> SecretObject | None:
        try:
            response = self._core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise self._write_error(error, f"reading Secret {namespace}/{name}") from None
        except urllib3.exceptions.HTTPError as error:
            raise errors.WriteFailed(f"reading Secret {namespace}/{name}: {type(error).__name__}") from None
        return _decode_secret(self._json(response))

    def create(self, secret: SecretObject) -> SecretObject:
        with self._own_write(secret.namespace, secret.name):
            created = self._create(secret)
            self.own_writes.wrote((secret.namespace, secret.name), created.resource_version, created.uid)
        return created

    def _create(self, secret: SecretObject) -> SecretObject:
        body = _encode_secret(secret)
        body["metadata"].pop("resourceVersion", None)
        try:
            response = self._core.create_namespaced_secret(secret.namespace, body, _preload_content=False)
        except ApiException as error:
            if error.status == 409:
                raise errors.TargetExists(
                    f"Secret {secret.name} appeared while it was being created"
                ) from None
            raise self._write_error(error, f"creating Secret {secret.name}") from None
        except urllib3.exceptions.HTTPError as error:
            raise errors.WriteFailed(f"creating Secret {secret.name}: {type(error).__name__}") from None
        self._count("create")
        return _decode_secret(self._json(response))

    def replace(self, secret: SecretObject) -> SecretObject:
        with self._own_write(secret.namespace, secret.name):
            replaced = self._replace(secret)
            self.own_writes.wrote((secret.namespace, secret.name), replaced.resource_version, replaced.uid)
        return replaced

    def _replace(self, secret: SecretObject) -> SecretObject:
        try:
            response = self._core.replace_namespaced_secret(
                secret.name, secret.namespace, _encode_secret(secret), _preload_content=False
            )
        except ApiException as error:
            raise self._write_error(error, f"updating Secret {secret.name}") from None
        except urllib3.exceptions.HTTPError as error:
            raise errors.WriteFailed(f"updating Secret {secret.name}: {type(error).__name__}") from None
        self._count("replace")
        return _decode_secret(self._json(response))

    def delete(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None)
        with self._own_write(namespace, name):
            try:
                release(
                    self._core.delete_namespaced_secret(name, namespace, body=body, _preload_content=False)
                )
            except ApiException as error:
                if error.status == 404:
                    return
                raise self._write_error(error, f"deleting Secret {namespace}/{name}") from None
            self.own_writes.deleted((namespace, name), uid)
        self._count("delete")

    @contextlib.contextmanager
    def _own_write(self, namespace: str, name: str) -> Iterator[None]:
        key = (namespace, name)
        self.own_writes.begin(key)
        try:
            yield
        finally:
            self.own_writes.end(key)

    def _count(self, verb: str) -> None:
        with self._lock:
            self.secret_writes[verb] += 1

    @staticmethod
    def _write_error(error: ApiException, what: str) -> errors.SyncError:
        if error.status == 422:
            return errors.InvalidSpec(f"{what}: the apiserver rejected it: {describe_api_error(error)}")
        return errors.WriteFailed(f"{what}: {describe_api_error(error)}")

    # -- ClusterReader -----------------------------------------------------------------------------------

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
        plural = _PLURALS[kind]
        try:
            if namespace is None:
                response = self._custom.get_cluster_custom_object(
                    GROUP, VERSION, plural, name, _preload_content=False
                )
            else:
                response = self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, _preload_content=False
                )
        except ApiException as error:
            if error.status == 404:
                return None
            raise errors.BackendUnavailable(
                f"reading {kind.value} {name}: {describe_api_error(error)}"
            ) from None
        return parse_backend(self._json(response))

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        now = self._clock()
        cached = self._namespace_cache.get(namespace)
        if cached is not None and now - cached[0] < NAMESPACE_CACHE_SECONDS:
            return cached[1]
        try:
            response = self._core.read_namespace(namespace, _preload_content=False)
        except ApiException as error:
            raise errors.BackendUnavailable(
                f"reading namespace {namespace}: {describe_api_error(error)}"
            ) from None
        labels = dict((self._json(response).get("metadata") or {}).get("labels") or {})
        self._namespace_cache[namespace] = (now, labels)
        return labels

    # -- CredentialSource --------------------------------------------------------------------------------

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes:
        try:
            response = self._core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                raise errors.AuthFailed(f"credentials Secret {namespace}/{name} not found") from None
            raise errors.AuthFailed(
                f"reading credentials Secret {namespace}/{name}: {describe_api_error(error)}"
            ) from None
        data = self._json(response).get("data") or {}
        if key not in data:
            raise errors.AuthFailed(f"credentials Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key])

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": list(audiences) or None, "expirationSeconds": 600},
        }
        try:
            response = self._core.create_namespaced_service_account_token(
                service_account, namespace, body, _preload_content=False
            )
        except ApiException as error:
            raise errors.AuthFailed(
                f"TokenRequest for ServiceAccount {namespace}/{service_account}: {describe_api_error(error)}"
            ) from None
        token: str = self._json(response)["status"]["token"]
        return token

    # -- ManagedSecret status and events -----------------------------------------------------------------

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        try:
            response = self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ref.namespace,
                "managedsecrets",
                ref.name,
                {"status": dict(patch)},
                _preload_content=False,
            )
            release(response)
        except ApiException as error:
            if error.status == 404:
                return  # deleted meanwhile
            raise errors.WriteFailed(f"updating status of {ref}: {describe_api_error(error)}") from None

    def set_finalizers(self, ref: ManagedSecretRef, finalizers: list[str], resource_version: str) -> None:
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        try:
            release(
                self._custom.patch_namespaced_custom_object(
                    GROUP, VERSION, ref.namespace, "managedsecrets", ref.name, patch, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == 404:
                return
            raise errors.WriteFailed(f"updating finalizers of {ref}: {describe_api_error(error)}") from None

    def post_event(
        self,
        involved: Mapping[str, str],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
    ) -> None:
        """An Event for a person to read (names and reasons only). Failures are logged, not raised."""
        namespace = involved["namespace"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "managed-secrets"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "managed-secrets",
            "reportingInstance": "managed-secrets",
        }
        try:
            release(self._core.create_namespaced_event(namespace, body, _preload_content=False))
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            log.warning(
                "could not post event %s on %s/%s: %s",
                reason,
                namespace,
                involved.get("name"),
                type(error).__name__,
            )
