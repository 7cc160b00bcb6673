"""The CustomResourceDefinitions, generated from the pydantic models: the models are the one source.

``python hack/gen-crds.py`` (``make crds``) writes the same three files to ``crds/``, the chart's
``crds/`` and the package's ``crds/`` (what ``managed-secrets check`` validates against);
``tests/unit/test_crds_generated.py`` fails when a checked-in copy differs from what this produces.

Where each part comes from:

- ``spec`` of ManagedSecret: ``ManagedSecretSpec``; of the backends: one block per built-in provider, from
  the provider's ``<Name>Config`` model (the same models for both kinds, with a few texts and rules per
  kind, see ``models.schema.per_kind``), the ``plugin`` block, and for ClusterSecretBackend ``conditions``;
- ``status``: ``ManagedSecretStatus`` and ``BackendStatus`` (models/status.py);
- constraints: the models' ``Field(...)`` and ``json_schema_extra`` (CEL rules, list types).

Pydantic's JSON schema is made structural, as the API server requires: ``$ref`` inlined, ``anyOf [X,
null]`` turned into X (merge patches remove fields with null, so nothing needs ``nullable``), titles
dropped, durations written as the strings users type, defaults kept in ``spec`` and dropped in ``status``
(the API server would apply them to what the operator writes). Anything else pydantic might emit and
Kubernetes does not take fails the generation instead of being written.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from managed_secrets.api import (
    CLUSTER_SECRET_BACKEND_KIND,
    CLUSTER_SECRET_BACKENDS_PLURAL,
    FORCE_SYNC_ANNOTATION,
    GROUP,
    MANAGED_SECRET_KIND,
    MANAGED_SECRETS_PLURAL,
    READY_CONDITION,
    SECRET_BACKEND_KIND,
    SECRET_BACKENDS_PLURAL,
    VERSION,
)
from managed_secrets.check import provider_config_model
from managed_secrets.models.backend import (
    CONDITIONS_DESCRIPTION,
    MAX_NAMESPACE_CONDITIONS,
    NamespaceCondition,
    PluginBlock,
)
from managed_secrets.models.base import CamelModel
from managed_secrets.models.duration import format_duration
from managed_secrets.models.managedsecret import ManagedSecretSpec
from managed_secrets.models.parse import PLUGIN_BLOCK
from managed_secrets.models.schema import PER_KIND, deep_merge, rule, rules
from managed_secrets.models.status import BackendStatus, ManagedSecretStatus
from managed_secrets.providers.registry import BUILTIN_PROVIDERS

#: Where the generated files go, relative to the repository; all three get the same files.
OUTPUT_DIRS = ("crds", "charts/managed-secrets/crds", "operator/managed_secrets/crds")
COMMAND = "make crds  (or: .venv/bin/python hack/gen-crds.py)"
HEADER = (
    "# Generated from the pydantic models by hack/gen-crds.py (managed_secrets.crdgen): do not edit.\n"
    "# Change the models (operator/managed_secrets/models/, the providers' config models) and run `make crds`.\n"
)

#: Keywords a structural schema may carry (what we emit); anything else from pydantic is an error.
_KEY_ORDER = (
    "type",
    "description",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
)


class _Generator(GenerateJsonSchema):
    """Pydantic's generator with the API's conventions: durations as Go-style strings, and descriptions
    only where the models set them for the API (a docstring is for developers, not for kubectl explain)."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        doc = schema["cls"].__doc__
        if doc and json_schema.get("description") == inspect.cleandoc(doc):
            del json_schema["description"]
        return json_schema


class SchemaError(ValueError):
    """A model whose JSON schema cannot be made a structural schema."""


def structural(model: type[BaseModel], kind: str, *, defaults: bool = True) -> dict[str, Any]:
    """The CRD schema of ``model`` for the CRD of ``kind``."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    defs = raw.pop("$defs", {})
    converted: dict[str, Any] = _ordered(_convert(raw, defs, kind, defaults, model.__name__))
    return converted


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], kind: str, defaults: bool, where: str) -> Any:
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
        # Keywords next to the reference (the field's description, default, rules) win over the model's.
        return _convert(deep_merge(target, node), defs, kind, defaults, where)
    branches = node.pop("anyOf", None)
    if branches is not None:
        rest = [branch for branch in branches if branch != {"type": "null"}]
        if len(rest) != 1:
            raise SchemaError(f"{where}: a union other than `X | None` has no structural schema")
        if node.get("default", ...) is None:
            del node["default"]
        return _convert(deep_merge(dict(rest[0]), node), defs, kind, defaults, where)
    _simplify(node, kind, defaults)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEY_ORDER:
            raise SchemaError(f"{where}: keyword {key!r} has no place in a structural schema")
        if key == "properties":
            out[key] = {
                name: _convert(sub, defs, kind, defaults, f"{where}.{name}") for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _convert(value, defs, kind, defaults, f"{where}[]")
        else:
            out[key] = value
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"{where}: no type")
    return out


def _simplify(node: dict[str, Any], kind: str, defaults: bool) -> None:
    """One schema node, in place: the texts and rules of ``kind`` merged, what Kubernetes has no use for
    dropped."""
    fragments = node.pop(PER_KIND, None)
    if fragments is not None:
        deep_merge(node, fragments.get(kind, {}))
    node.pop("title", None)
    if not defaults:
        node.pop("default", None)
    if node.get("additionalProperties") is True:
        # dict[str, Any]: kept as it is, unvalidated (the models mark these preserve-unknown-fields).
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True


def _ordered(node: Any) -> Any:
    """Keywords in one fixed order; properties in the models' field order."""
    if isinstance(node, list):
        return [_ordered(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key in sorted(node, key=_KEY_ORDER.index):
        value = node[key]
        if key == "properties":
            out[key] = {name: _ordered(sub) for name, sub in value.items()}
        elif key in ("default", "enum", "required", "x-kubernetes-list-map-keys", "x-kubernetes-validations"):
            out[key] = value
        else:
            out[key] = _ordered(value)
    return out


# -- the backend spec ------------------------------------------------------------------------------------


def provider_models() -> dict[str, type[BaseModel]]:
    """Block name -> config model of every built-in provider; all must be importable (the dev extras)."""
    models: dict[str, type[BaseModel]] = {}
    for name in BUILTIN_PROVIDERS:
        model = provider_config_model(name)
        if model is None:
            raise SchemaError(f"no config model for provider {name!r}: install managed-secrets[all]")
        models[name] = model
    return models


def backend_spec_model(kind: str) -> type[BaseModel]:
    """The spec of a SecretBackend or ClusterSecretBackend: one optional block per provider (the same
    models for both kinds), ``plugin``, and for ClusterSecretBackend the namespace conditions."""
    blocks = [*provider_models(), PLUGIN_BLOCK]
    fields: dict[str, Any] = {name: (model | None, None) for name, model in provider_models().items()}
    fields[PLUGIN_BLOCK] = (PluginBlock | None, None)
    if kind == CLUSTER_SECRET_BACKEND_KIND:
        fields["conditions"] = (
            list[NamespaceCondition],
            Field(
                default_factory=list, max_length=MAX_NAMESPACE_CONDITIONS, description=CONDITIONS_DESCRIPTION
            ),
        )
    names = ", ".join(blocks[:-1]) + f" or {blocks[-1]}"
    # models.parse.parse_backend refuses anything but exactly one block too.
    exactly_one = rule(
        "[" + ", ".join(f"has(self.{name})" for name in blocks) + "].filter(x, x).size() == 1",
        f"set exactly one provider block: {names}",
    )
    base = type(
        f"_{kind}SpecBase",
        (CamelModel,),
        {"__module__": __name__, "model_config": ConfigDict(json_schema_extra=rules(exactly_one))},
    )
    model: type[BaseModel] = create_model(f"{kind}Spec", __base__=base, __module__=__name__, **fields)
    return model


# -- the CRDs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority:
            out["priority"] = self.priority
        if self.description:
            out["description"] = self.description
        return out


_READY = f'.status.conditions[?(@.type=="{READY_CONDITION}")]'
_AGE = Column("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool
    description: str
    spec_description: str
    spec: Callable[[], type[BaseModel]]
    status: type[BaseModel]
    columns: tuple[Column, ...]

    @property
    def filename(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


_BACKEND_COLUMNS = (
    Column(
        "Ready", "string", f"{_READY}.status", "Whether the backend's configuration and credentials work."
    ),
    Column("Reason", "string", f"{_READY}.reason", "Reason of the Ready condition."),
    _AGE,
)
_SPEC_DESCRIPTION = (
    "Connection to one external secret store. Set exactly one provider block: vault, aws, gcp or azure."
)

KINDS: tuple[Kind, ...] = (
    Kind(
        kind=MANAGED_SECRET_KIND,
        plural=MANAGED_SECRETS_PLURAL,
        short_names=("ms", "msec"),
        namespaced=True,
        description="ManagedSecret keeps a Kubernetes Secret in sync with values from an external secret"
        " store (Vault, AWS, GCP, Azure) configured by a SecretBackend or ClusterSecretBackend, and"
        " optionally restarts workloads when the Secret's data changes. To fetch again right now, bypassing"
        f" caches, set or change the annotation {FORCE_SYNC_ANNOTATION} (any value, like a timestamp).",
        spec_description="",
        spec=lambda: ManagedSecretSpec,
        status=ManagedSecretStatus,
        columns=(
            Column("Ready", "string", f"{_READY}.status", "Whether the last sync succeeded."),
            Column("Reason", "string", f"{_READY}.reason", "Reason of the Ready condition."),
            Column("Secret", "string", ".status.secretName", "The Secret written.", priority=1),
            Column(
                "Last Sync",
                "date",
                ".status.lastSyncTime",
                "When the Secret's content was last written or verified.",
            ),
            Column("Expires", "date", ".status.expiresAt", "When the Secret's certificate or lease expires."),
            _AGE,
        ),
    ),
    Kind(
        kind=SECRET_BACKEND_KIND,
        plural=SECRET_BACKENDS_PLURAL,
        short_names=("sb",),
        namespaced=True,
        description="SecretBackend connects ManagedSecrets of its own namespace to one external secret store."
        " Its credentials come from Secrets and ServiceAccounts of the same namespace.",
        spec_description=f"{_SPEC_DESCRIPTION} Credential references (secretRef, serviceAccountRef) are"
        " looked up in this SecretBackend's namespace.",
        spec=lambda: backend_spec_model(SECRET_BACKEND_KIND),
        status=BackendStatus,
        columns=_BACKEND_COLUMNS,
    ),
    Kind(
        kind=CLUSTER_SECRET_BACKEND_KIND,
        plural=CLUSTER_SECRET_BACKENDS_PLURAL,
        short_names=("csb",),
        namespaced=False,
        description="ClusterSecretBackend connects ManagedSecrets of any admitted namespace to one external"
        " secret store; spec.conditions limits which namespaces may use it and which remote keys each may"
        " read.",
        spec_description=f"{_SPEC_DESCRIPTION} Credential references (secretRef, serviceAccountRef) must name"
        " their namespace.",
        spec=lambda: backend_spec_model(CLUSTER_SECRET_BACKEND_KIND),
        status=BackendStatus,
        columns=_BACKEND_COLUMNS,
    ),
)


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind``."""
    spec = structural(kind.spec(), kind.kind)
    if kind.spec_description:
        spec["description"] = kind.spec_description
        spec = _ordered(spec)
    status = structural(kind.status, kind.kind, defaults=False)
    schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource this object represents.",
            },
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    names: dict[str, Any] = {
        "kind": kind.kind,
        "listKind": f"{kind.kind}List",
        "plural": kind.plural,
        "singular": kind.kind.lower(),
        "shortNames": list(kind.short_names),
        "categories": ["managed-secrets"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            # Helm never deletes CRDs of a chart's crds/; this keeps them if they move to templates/.
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": {
                "app.kubernetes.io/name": "managed-secrets",
                "app.kubernetes.io/part-of": "managed-secrets",
            },
        },
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [column.render() for column in kind.columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line-free long strings folded by width, the same bytes every run."""


def render(document: Mapping[str, Any]) -> str:
    body = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True
    )
    return f"{HEADER}---\n{body}"


def generate() -> dict[str, str]:
    """File name -> content of every CRD."""
    return {kind.filename: render(crd(kind)) for kind in KINDS}


def stale(root: Path, files: Mapping[str, str] | None = None) -> list[str]:
    """The checked-in files (relative to ``root``) that differ from what ``generate`` writes, or are extra."""
    files = generate() if files is None else files
    found: list[str] = []
    for folder in OUTPUT_DIRS:
        directory = root / folder
        present = {path.name for path in directory.glob("*.yaml")} if directory.is_dir() else set()
        for name in sorted(present | set(files)):
            path = directory / name
            if name not in files or not path.is_file() or path.read_text(encoding="utf-8") != files[name]:
                found.append(f"{folder}/{name}")
    return found


def write(root: Path) -> list[str]:
    """Write every copy under ``root``; the files that changed."""
    files = generate()
    changed = stale(root, files)
    for folder in OUTPUT_DIRS:
        directory = root / folder
        directory.mkdir(parents=True, exist_ok=True)
        for path in directory.glob("*.yaml"):
            if path.name not in files:
                path.unlink()
        for name, text in files.items():
            path = directory / name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the CRDs from the models.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.root)
        for name in outdated:
            sys.stderr.write(f"out of date: {name} (run {COMMAND})\n")
        return 1 if outdated else 0
    for name in write(args.root):
        sys.stdout.write(f"wrote {name}\n")
    return 0
