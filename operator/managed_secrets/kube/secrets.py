"""``core.ports.SecretStore`` on the API server: the Secrets the operator writes, as raw JSON."""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes import client

from managed_secrets import errors
from managed_secrets.core.ports import OwnerReference, SecretObject
from managed_secrets.kube.edge import Translation, call, call_or_none, send
from managed_secrets.kube.secretwatch import OwnWrites

#: Writes of Secrets (and the reads the writes depend on): a 422 is the Secret itself refused.
WRITE = Translation(
    errors.WriteFailed,
    {422: lambda what, described: errors.TargetRejected(f"{what}: the apiserver rejected it: {described}")},
)


def decode_secret(body: Mapping[str, Any]) -> SecretObject:
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


def encode_secret(secret: SecretObject) -> dict[str, Any]:
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


class KubeSecrets:
    """Implements ``core.ports.SecretStore``; tells ``own_writes`` of each write so the watch skips its echo."""

    def __init__(self, api_client: client.ApiClient, *, own_writes: OwnWrites | None = None) -> None:
        self._core = client.CoreV1Api(api_client)
        self._lock = threading.Lock()
        #: Writes to Secrets, by verb; the tests and the benchmark count them.
        self.writes: dict[str, int] = {"create": 0, "replace": 0, "delete": 0}
        #: Versions the writes returned, so the Secret watch ignores their echo.
        self.own_writes = own_writes if own_writes is not None else OwnWrites()

    def get(self, namespace: str, name: str) -> SecretObject | None:
        body = call_or_none(
            f"reading Secret {namespace}/{name}", WRITE, self._core.read_namespaced_secret, name, namespace
        )
        return None if body is None else decode_secret(body)

    def create(self, secret: SecretObject) -> SecretObject:
        body = encode_secret(secret)
        body["metadata"].pop("resourceVersion", None)
        appeared = WRITE.but(
            {
                409: lambda _what, _described: errors.TargetExists(
                    f"Secret {secret.name} appeared while it was being created"
                )
            }
        )
        with self._own_write(secret.namespace, secret.name):
            created = decode_secret(
                call(
                    f"creating Secret {secret.name}",
                    appeared,
                    self._core.create_namespaced_secret,
                    secret.namespace,
                    body,
                )
            )
            self._count("create")
            self.own_writes.wrote((secret.namespace, secret.name), created.resource_version, created.uid)
        return created

    def replace(self, secret: SecretObject) -> SecretObject:
        with self._own_write(secret.namespace, secret.name):
            replaced = decode_secret(
                call(
                    f"updating Secret {secret.name}",
                    WRITE,
                    self._core.replace_namespaced_secret,
                    secret.name,
                    secret.namespace,
                    encode_secret(secret),
                )
            )
            self._count("replace")
            self.own_writes.wrote((secret.namespace, secret.name), replaced.resource_version, replaced.uid)
        return replaced

    def check_create(self, secret: SecretObject) -> None:
        body = encode_secret(secret)
        meta = body["metadata"]
        meta.pop("resourceVersion", None)
        # Under a generated name: the real name is taken (by the Secret this one replaces).
        meta["generateName"] = f"{meta.pop('name')[:200]}-"

        def refused(_what: str, described: str) -> errors.SyncError:
            return errors.TargetRejected(
                f"the API server would refuse Secret {secret.name} (type {secret.type}): {described}"
            )

        # Invalid, or denied by admission (webhooks, policies).
        would_refuse = WRITE.but(dict.fromkeys((400, 403, 422), refused))
        send(
            f"checking Secret {secret.name}",
            would_refuse,
            self._core.create_namespaced_secret,
            secret.namespace,
            body,
            dry_run="All",
        )

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
            if not send(
                f"deleting Secret {namespace}/{name}",
                WRITE,
                self._core.delete_namespaced_secret,
                name,
                namespace,
                body=body,
                missing_ok=True,
            ):
                return
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
            self.writes[verb] += 1
