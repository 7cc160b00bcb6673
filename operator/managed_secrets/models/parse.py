"""Raw Kubernetes bodies in, typed models out; validation failures become stable reasons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from managed_secrets.api import FORCE_SYNC_ANNOTATION
from managed_secrets.errors import InvalidBackend, InvalidSpec
from managed_secrets.models.backend import (
    MAX_NAMESPACE_CONDITIONS,
    NON_PROVIDER_FIELDS,
    Backend,
    BackendId,
    NamespaceCondition,
)
from managed_secrets.models.managedsecret import (
    BackendKind,
    ManagedSecret,
    ManagedSecretRef,
    ManagedSecretSpec,
)

#: The backend block that names a third-party provider (entry point) instead of being one.
PLUGIN_BLOCK = "plugin"


def describe_validation_error(error: ValidationError) -> str:
    """Field paths and what is wrong with them; never the offending input (it could be a value)."""
    parts = []
    for detail in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in detail["loc"]) or "spec"
        parts.append(f"{where}: {detail['msg']}")
    return "; ".join(parts)


def parse_managed_secret(body: Mapping[str, Any]) -> ManagedSecret:
    meta = body.get("metadata", {})
    ref = ManagedSecretRef(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", "")
    )
    try:
        spec = ManagedSecretSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        raise InvalidSpec(f"spec is invalid: {describe_validation_error(error)}") from None
    annotations = meta.get("annotations") or {}
    status = body.get("status") or {}
    synced = status.get("secretName")
    rolled_out = status.get("dataHash")
    return ManagedSecret(
        ref=ref,
        generation=meta.get("generation", 0),
        spec=spec,
        force_sync_token=annotations.get(FORCE_SYNC_ANNOTATION),
        synced_secret_name=synced if isinstance(synced, str) else None,
        rolled_out_hash=rolled_out if isinstance(rolled_out, str) else None,
    )


def parse_backend(body: Mapping[str, Any]) -> Backend:
    meta = body.get("metadata", {})
    kind = BackendKind(body.get("kind", BackendKind.SECRET_BACKEND.value))
    backend_id = BackendId(
        kind=kind,
        name=meta.get("name", ""),
        namespace=meta.get("namespace") if kind is BackendKind.SECRET_BACKEND else None,
    )
    spec: Mapping[str, Any] = body.get("spec") or {}
    blocks = sorted(
        key for key, value in spec.items() if key not in NON_PROVIDER_FIELDS and value is not None
    )
    if len(blocks) != 1:
        found = ", ".join(blocks) or "none"
        raise InvalidBackend(f"{backend_id}: set exactly one provider block (found: {found})")
    provider = blocks[0]
    config = dict(spec[provider])
    if provider == PLUGIN_BLOCK:
        # A provider from another package: its entry-point name picks it, its config is its own business.
        provider, config = str(config.get("name", "")), dict(config.get("config") or {})
        if not provider:
            raise InvalidBackend(f"{backend_id}: plugin.name is required")
    raw_conditions = spec.get("conditions") or []
    if len(raw_conditions) > MAX_NAMESPACE_CONDITIONS:
        raise InvalidBackend(f"{backend_id}: conditions: at most {MAX_NAMESPACE_CONDITIONS} are allowed")
    try:
        conditions = [NamespaceCondition.model_validate(item) for item in raw_conditions]
    except ValidationError as error:
        raise InvalidBackend(f"{backend_id}: conditions: {describe_validation_error(error)}") from None
    return Backend(
        id=backend_id,
        uid=meta.get("uid", ""),
        generation=meta.get("generation", 0),
        provider=provider,
        config=config,
        conditions=conditions,
    )
