"""Typed view of SecretBackend and ClusterSecretBackend.

The provider block (``vault``, ``aws``, ...) stays a mapping here: each provider parses its own block
into its own model, so a third-party provider needs no change to this module.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from managed_secrets.models.base import CamelModel
from managed_secrets.models.managedsecret import BackendKind

#: Fields of a backend spec that are not provider blocks.
NON_PROVIDER_FIELDS = frozenset({"conditions"})


class LabelSelectorRequirement(CamelModel):
    key: str
    operator: str
    values: list[str] = Field(default_factory=list)


class LabelSelector(CamelModel):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for expr in self.match_expressions:
            present = expr.key in labels
            value = labels.get(expr.key)
            ok = {
                "In": present and value in expr.values,
                "NotIn": not present or value not in expr.values,
                "Exists": present,
                "DoesNotExist": not present,
            }.get(expr.operator, False)
            if not ok:
                return False
        return True


class NamespaceCondition(CamelModel):
    """One rule admitting namespaces to a ClusterSecretBackend, optionally limiting their remote keys."""

    namespaces: list[str] = Field(default_factory=list)
    namespace_selector: LabelSelector | None = None
    #: Glob patterns of remote keys the admitted namespaces may read; ``{namespace}`` is replaced by the
    #: reading namespace. Empty: any key. Matched against canonical keys (providers/keys.py), which have
    #: no dot or empty segments, so ``*`` may cross ``/`` without leaving the pattern's prefix.
    remote_keys: list[str] = Field(default_factory=list)

    def admits(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if self.namespaces and namespace in self.namespaces:
            return True
        return self.namespace_selector is not None and self.namespace_selector.matches(labels)

    def allows_key(self, namespace: str, key: str, *, fold_case: bool = False) -> bool:
        """Whether a canonical ``key`` matches a pattern; ``fold_case`` for stores with case-insensitive
        names. The namespace is inserted escaped, so it can only ever match itself."""
        patterns = [pattern.replace("{namespace}", glob.escape(namespace)) for pattern in self.remote_keys]
        if fold_case:
            key, patterns = key.lower(), [pattern.lower() for pattern in patterns]
        return not patterns or any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


class BackendId(CamelModel):
    kind: BackendKind
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        prefix = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.value} {prefix}{self.name}"


class Backend(CamelModel):
    """A resolved backend: which provider, its raw configuration block, and who may use it."""

    id: BackendId
    uid: str = ""
    generation: int = 0
    provider: str
    config: dict[str, Any]
    conditions: list[NamespaceCondition] = Field(default_factory=list)

    @property
    def default_namespace(self) -> str | None:
        """Namespace for credential references that do not name one (namespaced backends only)."""
        return self.id.namespace

    @property
    def cache_identity(self) -> tuple[str, str, int]:
        """Changes whenever the backend's configuration changes, so clients and reads are not reused."""
        return (str(self.id), self.uid, self.generation)
