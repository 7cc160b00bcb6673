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
from managed_secrets.api import (
    CLUSTER_SECRET_BACKENDS_PLURAL,
    GROUP,
    MANAGED_SECRETS_PLURAL,
    SECRET_BACKENDS_PLURAL,
    VERSION,
)
from managed_secrets.core.ports import ManagedSecretInfo, OwnerReference, SecretObject
from managed_secrets.kube.raw import read_json, release
from managed_secrets.kube.secretwatch import OwnWrites
from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind, ManagedSecretRef
from managed_secrets.models.parse import parse_backend
from managed_secrets.providers.base import CredentialValue
from managed_secrets.providers.guard import TOKEN_EXPIRATION_SECONDS, issued_token_refusal

log = logging.getLogger(__name__)

_PLURALS = {
    BackendKind.SECRET_BACKEND: SECRET_BACKENDS_PLURAL,
    BackendKind.CLUSTER_SECRET_BACKEND: CLUSTER_SECRET_BACKENDS_PLURAL,
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
        immutable=bool(body.get("immutable")),
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
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": secret.type,
        "data": {key: base64.b64encode(value).decode() for key, value in secret.data.items()},
    }
    if secret.immutable:  # once set it cannot be unset: an update must carry it
        body["immutable"] = True
    return body


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
        self._authn = client.AuthenticationV1Api(api_client)
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

    def check_create(self, secret: SecretObject) -> None:
        body = _encode_secret(secret)
        meta = body["metadata"]
        meta.pop("resourceVersion", None)
        # Under a generated name: the real name is taken (by the Secret this one replaces).
        meta["generateName"] = f"{meta.pop('name')[:200]}-"
        try:
            release(
                self._core.create_namespaced_secret(
                    secret.namespace, body, dry_run="All", _preload_content=False
                )
            )
        except ApiException as error:
            if error.status in (400, 403, 422):  # invalid, or denied by admission (webhooks, policies)
                raise errors.TargetRejected(
                    f"the API server would refuse Secret {secret.name} (type {secret.type}): "
                    f"{describe_api_error(error)}"
                ) from None
            raise self._write_error(error, f"checking Secret {secret.name}") from None
        except urllib3.exceptions.HTTPError as error:
            raise errors.WriteFailed(f"checking Secret {secret.name}: {type(error).__name__}") from None

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        preconditions = (
            client.V1Preconditions(uid=uid, resource_version=resource_version)
            if uid or resource_version
            else None
        )
        body = client.V1DeleteOptions(preconditions=preconditions)
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
            return errors.TargetRejected(f"{what}: the apiserver rejected it: {describe_api_error(error)}")
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

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        try:
            response = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, MANAGED_SECRETS_PLURAL, name, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise errors.WriteFailed(
                f"reading ManagedSecret {namespace}/{name}: {describe_api_error(error)}"
            ) from None
        except urllib3.exceptions.HTTPError as error:
            raise errors.WriteFailed(
                f"reading ManagedSecret {namespace}/{name}: {type(error).__name__}"
            ) from None
        body = self._json(response)
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

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        try:
            response = self._core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                raise errors.AuthFailed(f"credentials Secret {namespace}/{name} not found") from None
            raise errors.AuthFailed(
                f"reading credentials Secret {namespace}/{name}: {describe_api_error(error)}"
            ) from None
        body = self._json(response)
        data = body.get("data") or {}
        annotations = dict((body.get("metadata") or {}).get("annotations") or {})
        value = base64.b64decode(data[key]) if key in data else None
        return CredentialValue(annotations=annotations, value=value)

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        try:
            response = self._core.read_namespaced_service_account(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                raise errors.AuthFailed(f"ServiceAccount {namespace}/{name} not found") from None
            raise errors.AuthFailed(
                f"reading ServiceAccount {namespace}/{name}: {describe_api_error(error)}"
            ) from None
        return dict((self._json(response).get("metadata") or {}).get("annotations") or {})

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        """A TokenRequest token for exactly ``audiences``, released only after three checks: its ``aud``
        is what was asked, it lives no longer than asked, and the API server itself refuses it."""
        what = f"TokenRequest for ServiceAccount {namespace}/{service_account}"
        if not audiences:  # an empty list would mean the API server's own audiences
            raise errors.InvalidBackend(f"{what}: no audience")
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": list(audiences), "expirationSeconds": TOKEN_EXPIRATION_SECONDS},
        }
        try:
            response = self._core.create_namespaced_service_account_token(
                service_account, namespace, body, _preload_content=False
            )
        except ApiException as error:
            raise errors.AuthFailed(f"{what}: {describe_api_error(error)}") from None
        token: str = self._json(response)["status"]["token"]
        refusal = issued_token_refusal(token, audiences, TOKEN_EXPIRATION_SECONDS)
        if refusal is not None:
            raise errors.AuthFailed(f"{what}: {refusal}; not used")
        if self._api_server_accepts(token, what):
            raise errors.InvalidBackend(
                f"{what}: the Kubernetes API server accepts a token for audience {', '.join(audiences)},"
                " so it would work against the Kubernetes API; not used: set serviceAccountRef.audiences"
                " to an audience only the store accepts"
            )
        return token

    def _api_server_accepts(self, token: str, what: str) -> bool:
        """TokenReview without audiences: would the API server authenticate this token for itself?"""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        try:
            response = self._authn.create_token_review(review, _preload_content=False)
        except ApiException as error:
            # Fail closed: without the answer the token is not handed to anybody.
            raise errors.AuthFailed(
                f"{what}: cannot check that the API server refuses the token (TokenReview:"
                f" {describe_api_error(error)})"
            ) from None
        return bool((self._json(response).get("status") or {}).get("authenticated"))

    # -- ManagedSecret status and events -----------------------------------------------------------------

    def patch_status(self, ref: ManagedSecretRef, patch: Mapping[str, Any]) -> None:
        try:
            response = self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ref.namespace,
                MANAGED_SECRETS_PLURAL,
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
                    GROUP,
                    VERSION,
                    ref.namespace,
                    MANAGED_SECRETS_PLURAL,
                    ref.name,
                    patch,
                    _preload_content=False,
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
