"""Kopf wiring. Handlers only forward watch events; all logic lives in runtime/ and core/.

Kopf writes nothing to the objects: no change handlers (no last-handled-configuration annotation), no
Kopf finalizers, no status from handler results, no events from log lines. Its work here is the
watching, the start-up listing and the health endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from managed_secrets.api import (
    CLUSTER_SECRET_BACKENDS_PLURAL,
    GROUP,
    MANAGED_SECRETS_PLURAL,
    SECRET_BACKENDS_PLURAL,
    VERSION,
)
from managed_secrets.config import OperatorConfig
from managed_secrets.logsafety import pin_sdk_loggers
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.runtime.factory import Runtime, build_runtime, make_api_client, verify_operator_namespace

log = logging.getLogger(__name__)


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """Kopf deep-copies every event's body to diff it for change handlers; this operator has none.

    Measured: the copy and diff were the largest share of Kopf's CPU per event (bench/).
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:  # noqa: ARG002
        return {}

    def fetch(self, *, body: Any) -> Any:  # noqa: ARG002
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:  # noqa: ARG002
        return None


def build_registry(config: OperatorConfig, holder: dict[str, Runtime]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    def runtime() -> Runtime:
        return holder["runtime"]

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # we post events for what a person needs, not per log line
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 30
        settings.peering.standalone = True
        settings.persistence.diffbase_storage = NoDiffBaseStorage()
        # Last resort after SIGTERM (Kopf's default is 10 minutes); the runtime's own stop is bounded.
        settings.process.ultimate_exiting_timeout = 30
        rt = build_runtime(config)
        holder["runtime"] = rt
        await rt.controller.start()
        await rt.backend_status.start()
        rt.secret_watch.start()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # The same identity and endpoint as the operator's own client, wherever it was configured.
        configuration = make_api_client(config).configuration
        header = configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
        scheme, _sep, value = header.partition(" ") if " " in header else ("Bearer", "", header)
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            scheme=scheme if value else None,
            token=value or None,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
            default_namespace=None,
        )

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        rt = holder.pop("runtime", None)
        if rt is not None:
            await rt.stop()

    kopf.on.probe(registry=registry, id="reconciles")(_liveness_probe(holder))

    @kopf.on.event(GROUP, VERSION, MANAGED_SECRETS_PLURAL, registry=registry)
    async def managed_secret_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
        meta = body.get("metadata", {})
        if type == "DELETED":
            runtime().controller.forget(meta.get("namespace", ""), meta.get("name", ""))
        else:
            runtime().controller.observe(_plain(body))

    def backend_event(kind: BackendKind) -> Any:
        async def handler(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
            meta = body.get("metadata", {})
            namespace = meta.get("namespace") if kind is BackendKind.SECRET_BACKEND else None
            rt = runtime()
            changed = True
            if type == "DELETED":
                rt.cluster.forget_backend(kind, meta.get("name", ""), namespace)
                rt.backend_status.forget(kind, meta.get("name", ""), namespace)
            else:
                plain = {**_plain(body), "kind": kind.value}
                rt.cluster.remember_backend(plain)
                changed = rt.backend_status.observe(kind, plain)  # False: our status write's echo
            if type is not None and changed:  # not the initial listing: something changed now
                rt.controller.backend_changed(kind, meta.get("name", ""), namespace)

        return handler

    kopf.on.event(GROUP, VERSION, SECRET_BACKENDS_PLURAL, registry=registry)(
        backend_event(BackendKind.SECRET_BACKEND)
    )
    kopf.on.event(GROUP, VERSION, CLUSTER_SECRET_BACKENDS_PLURAL, registry=registry)(
        backend_event(BackendKind.CLUSTER_SECRET_BACKEND)
    )
    return registry


def _liveness_probe(holder: dict[str, Runtime]) -> Any:
    async def reconciles(**_: Any) -> Mapping[str, Any]:
        # Kopf's /healthz answers 500 when a probe raises; PermanentError: no retry inside the request.
        rt = holder.get("runtime")
        if rt is None:
            return {}
        liveness = rt.controller.liveness()
        if not liveness.alive:
            raise kopf.PermanentError(liveness.message)
        return dict(liveness.details)

    return reconciles


#: Metadata the runtime reads; the rest (managedFields, last-applied-configuration) would only cost memory.
_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "finalizers",
    "deletionTimestamp",
)
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A slim plain-dict copy of a watched object: what the runtime uses, nothing more."""
    meta = body.get("metadata") or {}
    slim_meta = {key: meta[key] for key in _KEPT_METADATA if key in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROPPED_ANNOTATIONS}
    if annotations:
        slim_meta["annotations"] = annotations
    slim = {key: body[key] for key in ("apiVersion", "kind", "spec", "status") if key in body}
    slim["metadata"] = slim_meta
    return slim


async def run_operator(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
    liveness_endpoint: str | None = None,
    holder: dict[str, Runtime] | None = None,
) -> None:
    pin_sdk_loggers()  # whoever embeds the operator, SDK body logging stays off
    await asyncio.to_thread(verify_operator_namespace, config)  # StartupError: nothing was started
    holder = {} if holder is None else holder
    registry = build_registry(config, holder)
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness_endpoint,
    )
