"""Schema metadata for the models the CRDs are generated from (``managed_secrets.crdgen``).

Constraints live on the models (``Field(...)``, ``json_schema_extra``), so one definition drives both
the operator's validation and the API server's. The helpers here attach what only the API server reads
(CEL rules, list types, texts that depend on the backend's kind) to a model's JSON schema.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

#: A JSON schema (fragment), as ``json_schema_extra`` takes it.
JsonDict = dict[str, Any]

#: Kubernetes object names (RFC 1123 subdomain) and namespaces (RFC 1123 label).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A key of a Secret's data.
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern, not a password

#: Schema fragments by backend kind, merged by the generator into the CRD of that kind only (a
#: credential reference's namespace is forbidden in a SecretBackend and required in a ClusterSecretBackend).
PER_KIND = "x-managed-secrets-per-kind"
VALIDATIONS = "x-kubernetes-validations"


def rule(expression: str, message: str) -> dict[str, str]:
    """One CEL rule (``x-kubernetes-validations`` entry) with the message the API server reports."""
    return {"rule": expression, "message": message}


def rules(*entries: Mapping[str, str], **extra: Any) -> JsonDict:
    """A ``json_schema_extra`` with CEL rules (and any other keywords)."""
    out: JsonDict = dict(extra)
    if entries:
        out[VALIDATIONS] = [dict(entry) for entry in entries]
    return out


def per_kind(**fragments: JsonDict) -> JsonDict:
    """A ``json_schema_extra`` whose fragments apply only to the CRD of the kind named by the keyword."""
    return {PER_KIND: dict(fragments)}


def merged(fragment: JsonDict) -> Callable[[JsonDict], None]:
    """A ``json_schema_extra`` that deep-merges ``fragment`` into the field's schema: for keywords of a
    nested schema (``items``, ``properties``) that a plain dict would replace."""

    def apply(schema: JsonDict) -> None:
        deep_merge(schema, fragment)

    return apply


def deep_merge(base: JsonDict, extra: Mapping[str, Any]) -> JsonDict:
    """``extra`` merged into ``base`` in place: mappings recursively, CEL rule lists appended, anything
    else replaced. Returns ``base``."""
    for key, value in extra.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            deep_merge(current, value)
        elif key == VALIDATIONS and isinstance(current, list) and isinstance(value, list):
            base[key] = [*current, *copy.deepcopy(value)]
        else:
            base[key] = copy.deepcopy(value)
    return base
