"""Typed view of SecretBackend and ClusterSecretBackend.

The provider block (``vault``, ``aws``, ...) stays a mapping here: each provider parses its own block
into its own model, so a third-party provider needs no change to this module.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from managed_secrets.models.base import CamelModel
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.models.schema import DNS_LABEL, merged, rule, rules

#: Fields of a backend spec that are not provider blocks.
NON_PROVIDER_FIELDS = frozenset({"conditions"})


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : (!has(self.values) || size(self.values) == 0)",
                "values must be set for In and NotIn, and empty for Exists and DoesNotExist",
            ),
            description="One requirement.",
        )
    )

    key: str = Field(min_length=1, max_length=317, description="Label key.")
    operator: SelectorOperator = Field(
        description="In: the label's value is one of values. NotIn: the label is missing or its value is"
        " not one of values. Exists / DoesNotExist: the label is present / absent (values must be empty)."
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra=merged({"items": {"description": "One value."}}),
        description="Label values, for In and NotIn.",
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if wants_values != bool(self.values):
            raise ValueError("values must be set for In and NotIn, and empty for Exists and DoesNotExist")
        return self


class LabelSelector(CamelModel):
    match_labels: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Labels a namespace must have, with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        max_length=32,
        description="Requirements on a namespace's labels; all must hold.",
    )

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

    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)",
                "a condition must set namespaces or namespaceSelector (it would admit no namespace)",
            ),
            description="One rule admitting namespaces, optionally limiting the remote keys they may read.",
        )
    )

    namespaces: list[Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]] = Field(
        default_factory=list,
        max_length=1000,
        json_schema_extra=merged({"items": {"description": "A namespace name."}}),
        description="Names of admitted namespaces.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Admits namespaces whose labels match. An empty selector ({}) matches every namespace.",
    )
    #: Glob patterns of remote keys the admitted namespaces may read; ``{namespace}`` is replaced by the
    #: reading namespace. Empty: any key. Matched against canonical keys (providers/keys.py), which have
    #: no dot or empty segments, so ``*`` may cross ``/`` without leaving the pattern's prefix.
    remote_keys: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra=merged({"items": {"description": "One glob pattern."}}),
        description="Glob patterns (fnmatch: *, ?, [abc]; * also crosses /) of the remote keys the admitted"
        " namespaces may read; {namespace} is replaced by the reading namespace, so apps/{namespace}/* gives"
        " each namespace its own subtree. Empty: any key.",
    )

    @model_validator(mode="after")
    def _admits_someone(self) -> NamespaceCondition:
        if not self.namespaces and self.namespace_selector is None:
            raise ValueError(
                "a condition must set namespaces or namespaceSelector (it would admit no namespace)"
            )
        return self

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


#: How many conditions a ClusterSecretBackend may have.
MAX_NAMESPACE_CONDITIONS = 64
CONDITIONS_DESCRIPTION = (
    "Which namespaces may use this ClusterSecretBackend, and which remote keys they may read. No"
    " conditions: every namespace may use it and read any key. Otherwise a namespace may use it when at"
    " least one condition admits it (its name is in namespaces, or its labels match namespaceSelector), and"
    " it may read a key when one of the admitting conditions has no remoteKeys or one of their remoteKeys"
    " patterns matches the key. Checked at every reconcile."
)


class PluginBlock(CamelModel):
    """The ``plugin`` block of a backend: a third-party provider by entry-point name, and its config."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "A provider from another Python package, registered in the"
            " `managed_secrets.providers` entry-point group (install it into the operator's image). `name`"
            " picks the provider, `config` is passed to it unchanged and validated by the provider itself."
        }
    )

    name: str = Field(
        min_length=1,
        description="The entry-point name the provider registered, for example `mycompany-vault`.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="The provider's own configuration.",
    )


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
