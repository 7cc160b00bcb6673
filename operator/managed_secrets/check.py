"""`managed-secrets check FILE...`: validate manifests offline, for GitOps CI.

Each YAML document of kind ManagedSecret, SecretBackend or ClusterSecretBackend (also inside a ``kind:
List``) is checked as the API server would, without a cluster:

1. defaults of the CRD's schema are applied, then the object is validated against its openAPIV3Schema
   (types, required fields, enums, patterns, lengths), unknown fields are reported (as ``kubectl apply``
   does with its default strict field validation) and the keys of ``x-kubernetes-list-type: map`` lists
   must be unique;
2. the CEL rules of the schema (``x-kubernetes-validations``) are evaluated, when the optional ``cel-python``
   package is installed (``pip install 'managed-secrets[check]'``);
3. when the schema finds nothing, the operator's own rules run: the same parsing the operator does
   (``managed_secrets.models.parse``), every template compiled (``target.template.data`` and
   ``binaryData``, in the operator's sandbox, without rendering) and the configuration model of the
   backend's provider, when that provider's module can be imported.

Every problem is printed as ``file:line: Kind namespace/name: field: message``, with the line of the
offending field. The exit code is 1 when anything is wrong, else 0. Documents of other kinds are skipped.
The CRDs are the ones shipped with this package (identical to the repository's ``crds/``).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import IO, Any, TextIO

import jsonschema
import yaml
from pydantic import BaseModel, ValidationError

from managed_secrets.api import CLUSTER_SECRET_BACKEND_KIND, GROUP, MANAGED_SECRET_KIND, SECRET_BACKEND_KIND
from managed_secrets.core.render import syntax_error
from managed_secrets.errors import SyncError
from managed_secrets.models.managedsecret import ManagedSecretSpec
from managed_secrets.models.parse import parse_backend
from managed_secrets.providers.registry import BUILTIN_PROVIDERS

KINDS = (MANAGED_SECRET_KIND, SECRET_BACKEND_KIND, CLUSTER_SECRET_BACKEND_KIND)
YAML_SUFFIXES = (".yaml", ".yml")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Bounds of one document of ours (or a List holding ours), checked on the YAML node graph before anything
#: walks it: aliases make a small file expand exponentially ("billion laughs"; kubectl refuses excessive
#: aliasing too), and deep nesting would exhaust the recursion of the checks.
MAX_NODES = 200_000
MAX_ALIAS_EXPANSION = 10_000
MAX_DEPTH = 64
#: Longest value quoted in a message; a megabyte-long field is not repeated in full.
MAX_QUOTED = 100

Path_ = tuple[str | int, ...]


# -- CRDs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrdInfo:
    kind: str
    namespaced: bool
    #: version name -> openAPIV3Schema, for every served version
    schemas: Mapping[str, Mapping[str, Any]]


@cache
def load_crds() -> dict[str, CrdInfo]:
    """The package's CRDs (managed_secrets/crds/*.yaml) by kind."""
    found: dict[str, CrdInfo] = {}
    folder = resources.files("managed_secrets") / "crds"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(YAML_SUFFIXES):
            continue
        for doc in yaml.safe_load_all(entry.read_text(encoding="utf-8")):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            schemas = {
                version["name"]: version["schema"]["openAPIV3Schema"]
                for version in spec["versions"]
                if version.get("served", True)
            }
            kind = spec["names"]["kind"]
            found[kind] = CrdInfo(kind=kind, namespaced=spec.get("scope") == "Namespaced", schemas=schemas)
    missing = [kind for kind in KINDS if kind not in found]
    if missing:
        raise RuntimeError(f"the package ships no CRD for {', '.join(missing)} (managed_secrets/crds)")
    return found


def _to_json_schema(node: Any) -> Any:
    """OpenAPI v3 (structural) schema -> JSON Schema: nullable and int-or-string become types, the
    x-kubernetes-* extensions and defaults are dropped (defaults are applied before validation)."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("default", "nullable", "description", "format"):
            continue
        if key == "properties":
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = _to_json_schema(value)
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    return out


@cache
def _validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    schema = _to_json_schema(load_crds()[kind].schemas[version])
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return validator_class(schema)


# -- line numbers ----------------------------------------------------------------------------------------


class Lines:
    """Line numbers (1-based) of every field in a YAML document, by path; from yaml.compose node marks."""

    def __init__(self, node: yaml.Node | None, base: int = 1) -> None:
        self._lines: dict[Path_, int] = {}
        self._base = base
        if node is not None:
            self._walk(node, ())
            self._lines[()] = node.start_mark.line + 1

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                self._lines[child] = key.start_mark.line + 1
                self._walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                self._lines[child] = item.start_mark.line + 1
                self._walk(item, child)

    def line(self, path: Path_) -> int:
        """The line of ``path``, else of its nearest parent that is in the file."""
        for end in range(len(path), -1, -1):
            if (found := self._lines.get(tuple(path[:end]))) is not None:
                return found
        return self._base


def format_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- problems --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {'warning: ' if self.warning else ''}{self.message}"


@dataclass
class _Document:
    """One resource being checked: its body (defaults applied), where its fields are, what to call it."""

    file: str
    body: dict[str, Any]
    lines: Lines
    base: Path_
    label: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: Path_, message: str, *, warning: bool = False) -> None:
        where = format_path(path)
        text = f"{self.label}: {where}: {message}" if where else f"{self.label}: {message}"
        self.problems.append(Problem(self.file, self.lines.line((*self.base, *path)), text, warning))


def _quoted(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if isinstance(value, str):
        text = value if len(value) <= MAX_QUOTED else value[:MAX_QUOTED]
        return json.dumps(text, ensure_ascii=False) + ("..." if len(value) > MAX_QUOTED else "")
    return _quoted(str(value))


# -- schema: defaults, validation, unknown fields, list keys ---------------------------------------------


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Set the schema's defaults on absent fields, recursively, as the API server does before validating."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in properties:
                    value[name] = apply_defaults(value[name], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _schema_errors(doc: _Document, kind: str, version: str) -> None:
    validator = _validator(kind, version)
    for error in sorted(validator.iter_errors(doc.body), key=lambda e: list(map(str, e.absolute_path))):
        path: Path_ = tuple(error.absolute_path)
        where = format_path(path) or "<root>"
        keyword = error.validator
        value = error.instance
        expected: Any = error.validator_value
        if keyword == "required":
            missing = next((name for name in expected if isinstance(value, dict) and name not in value), "?")
            doc.add((*path, missing), "Required value")
        elif keyword == "enum":
            supported = ", ".join(json.dumps(v) for v in expected)
            doc.add(path, f"Unsupported value: {_quoted(value)}: supported values: {supported}")
        elif keyword == "pattern":
            doc.add(
                path,
                f"Invalid value: {_quoted(value)}: {where} in body should match '{error.validator_value}'",
            )
        elif keyword in ("minLength", "maxLength"):
            bound = "at least" if keyword == "minLength" else "at most"
            doc.add(
                path,
                f"Invalid value: {_quoted(value)}: {where} in body should be {bound} "
                f"{error.validator_value} chars long",
            )
        elif keyword in ("minItems", "maxItems", "minProperties", "maxProperties"):
            bound = "at least" if keyword.startswith("min") else "at most"
            unit = "items" if keyword.endswith("Items") else "properties"
            doc.add(path, f"Too many or too few {unit}: must have {bound} {error.validator_value} {unit}")
        elif keyword == "type":
            wanted = error.validator_value
            wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
            doc.add(path, f"Invalid value: {_quoted(value)}: {where} in body must be of type {wanted}")
        elif keyword in ("minimum", "maximum"):
            bound = "greater than or equal to" if keyword == "minimum" else "less than or equal to"
            doc.add(
                path,
                f"Invalid value: {_quoted(value)}: {where} in body should be {bound} {error.validator_value}",
            )
        else:
            doc.add(path, f"Invalid value: {_quoted(value)}: {error.message}")


def _structure_errors(doc: _Document, value: Any, schema: Mapping[str, Any], path: Path_) -> None:
    """Unknown fields (pruned by the API server, refused by kubectl's strict validation) and duplicate keys
    of ``x-kubernetes-list-type: map|set`` lists: what the JSON schema cannot say."""
    if isinstance(value, dict):
        if path == ("metadata",) or schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if properties is not None and name in properties:
                _structure_errors(doc, item, properties[name], (*path, name))
            elif isinstance(extra, dict):
                _structure_errors(doc, item, extra, (*path, name))
            elif properties is not None and not extra:
                doc.add((*path, name), f'unknown field "{format_path((*path, name))}"')
    elif isinstance(value, list):
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                _structure_errors(doc, item, schema["items"], (*path, index))
        _duplicate_errors(doc, value, schema, path)


def _duplicate_errors(doc: _Document, value: list[Any], schema: Mapping[str, Any], path: Path_) -> None:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type not in ("map", "set"):
        return
    map_keys = schema.get("x-kubernetes-list-map-keys") or []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        if list_type == "map":
            if not isinstance(item, dict):
                continue
            identity = json.dumps(
                {k: item[k] for k in map_keys if k in item}, sort_keys=True, separators=(",", ":")
            )
        else:
            identity = json.dumps(item, sort_keys=True)
        if identity in seen:
            doc.add((*path, index), f"Duplicate value: {identity} (also item {seen[identity]})")
        else:
            seen[identity] = index


def _metadata_errors(doc: _Document, namespaced: bool) -> None:
    meta = doc.body.get("metadata")
    if not isinstance(meta, dict):
        doc.add(("metadata",), "Required value")
        return
    name = meta.get("name")
    for field_name in ("name", "generateName", "namespace"):
        if meta.get(field_name) is not None and not isinstance(meta[field_name], str):
            doc.add(("metadata", field_name), f"Invalid value: {_quoted(meta[field_name])}: must be a string")
    if not name and not meta.get("generateName"):
        doc.add(("metadata", "name"), "Required value: name or generateName is required")
    elif isinstance(name, str) and (len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name)):
        doc.add(("metadata", "name"), f"Invalid value: {_quoted(name)}: must be a lowercase DNS subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and not namespaced:
        doc.add(("metadata", "namespace"), "a cluster-scoped resource has no namespace: remove it")
    elif isinstance(namespace, str) and (len(namespace) > 63 or not DNS_LABEL.fullmatch(namespace)):
        doc.add(("metadata", "namespace"), f"Invalid value: {_quoted(namespace)}: must be a DNS label")


# -- CEL rules -------------------------------------------------------------------------------------------


class _Cel:
    """x-kubernetes-validations through cel-python, when installed. Rules with oldSelf (transition rules)
    only apply to updates and are skipped."""

    def __init__(self) -> None:
        try:
            self._celpy: Any = importlib.import_module("celpy")
        except ImportError:
            self._celpy = None
            return
        self._env = self._celpy.Environment()
        self._programs: dict[str, Any] = {}

    @property
    def available(self) -> bool:
        return self._celpy is not None

    def check(self, doc: _Document, value: Any, schema: Mapping[str, Any], path: Path_) -> None:
        if self._celpy is None or value is None:
            return
        for rule in schema.get("x-kubernetes-validations") or []:
            expression = rule.get("rule", "")
            if "oldSelf" in expression:
                continue
            outcome = self._evaluate(expression, value)
            if outcome is None:
                doc.add(path, f"rule could not be evaluated offline: {expression}", warning=True)
            elif not outcome:
                message = rule.get("message") or f"failed rule: {expression}"
                where = (*path, *_field_path(rule.get("fieldPath", "")))
                doc.add(where, f"Invalid value: {_quoted(value)}: {message}")
        if isinstance(value, dict):
            properties = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            for name, item in value.items():
                sub = properties.get(name) or (extra if isinstance(extra, dict) else None)
                if sub is not None:
                    self.check(doc, item, sub, (*path, name))
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                self.check(doc, item, schema["items"], (*path, index))

    def _evaluate(self, expression: str, value: Any) -> bool | None:
        try:
            program = self._programs.get(expression)
            if program is None:
                program = self._env.program(self._env.compile(expression))
                self._programs[expression] = program
            result = program.evaluate({"self": self._celpy.json_to_cel(value)})
        except Exception:  # an unsupported Kubernetes CEL extension, or a type the rule did not expect
            return None
        if isinstance(result, Exception):
            return None
        return bool(result)


def _field_path(text: str) -> Path_:
    """``.spec.items[0].name`` (a rule's fieldPath) as a path."""
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return tuple(parts)


# -- the operator's own rules ----------------------------------------------------------------------------


def _validation_errors(doc: _Document, error: ValidationError, base: Path_) -> None:
    for detail in error.errors(include_input=False, include_url=False):
        loc = tuple(part for part in detail["loc"] if isinstance(part, (str, int)))
        doc.add((*base, *loc), str(detail["msg"]))


def provider_config_model(provider: str) -> type[BaseModel] | None:
    """The pydantic model a built-in provider parses its block with (``<Name>Config`` in its module), or
    None when the module cannot be imported (its SDK extra is not installed) or has no such model."""
    spec = BUILTIN_PROVIDERS.get(provider)
    if spec is None:
        return None
    module_name = spec.target.partition(":")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    candidates = [
        obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseModel)
        and obj.__module__ == module.__name__
        and name.lower() == f"{provider}config"
    ]
    return candidates[0] if len(candidates) == 1 else None


def _operator_rules(doc: _Document, kind: str) -> None:
    spec = doc.body.get("spec") or {}
    if kind == MANAGED_SECRET_KIND:
        try:
            parsed = ManagedSecretSpec.model_validate(spec)
        except ValidationError as error:
            _validation_errors(doc, error, ("spec",))
            return
        _template_errors(doc, parsed)
        return
    try:
        backend = parse_backend(doc.body)
    except SyncError as error:
        # The operator's message starts with "<Kind> <name>: ", which the label already says.
        message = error.message.split(": ", 1)[-1] if error.message.startswith(f"{kind} ") else error.message
        doc.add(("spec",), message)
        return
    model = provider_config_model(backend.provider)
    if model is None:
        return
    try:
        model.model_validate(backend.config)
    except ValidationError as error:
        _validation_errors(doc, error, ("spec", backend.provider))


def _template_errors(doc: _Document, spec: ManagedSecretSpec) -> None:
    """Compile each template as the operator would (syntax only; nothing is rendered)."""
    template = spec.target.template
    if template is None:
        return
    for field_name, group in (("data", template.data), ("binaryData", template.binary_data)):
        for key, source in group.items():
            try:
                found = syntax_error(source)
            except Exception as error:  # never let one template stop the check of the others
                found = (1, f"cannot be compiled ({type(error).__name__})")
            if found is not None:
                line, message = found
                doc.add(("spec", "target", "template", field_name, key), f"template line {line}: {message}")


# -- documents and files ---------------------------------------------------------------------------------


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


@dataclass(frozen=True)
class SizeProblem:
    message: str
    #: Aliases that expand (or refer to themselves): even constructing the document could exhaust memory
    #: (merge keys copy what they merge), so no document with this is read, of any kind.
    unsafe: bool


def size_problem(root: yaml.Node) -> SizeProblem | None:
    """Why a document is too big to check (expanded size, aliasing, depth, a recursive alias), or None.

    Iterative and memoised on the node graph, so it costs the size of the YAML text, not of its expansion.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            children = _children(node)
            # Capped, so a billion laughs stays a small number.
            size[key] = min(1 + sum(size[id(child)] for child in children), MAX_NODES + 1)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            in_progress.discard(key)
            continue
        if key in size:
            continue
        if key in in_progress:  # reached again from below itself
            return SizeProblem(
                "an alias refers to a node that contains it (a recursive structure)", unsafe=True
            )
        in_progress.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)
    total = size[id(root)]
    if total - len(size) > MAX_ALIAS_EXPANSION:
        return SizeProblem(
            f"aliases expand it to more than {len(size) + MAX_ALIAS_EXPANSION} YAML nodes", unsafe=True
        )
    if total > MAX_NODES:
        return SizeProblem(f"more than {MAX_NODES} YAML nodes", unsafe=False)
    if depth[id(root)] > MAX_DEPTH:
        return SizeProblem(f"nested deeper than {MAX_DEPTH} levels", unsafe=False)
    return None


def _scalar(node: yaml.Node | None) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def _shallow_body(node: yaml.Node) -> dict[str, Any]:
    """apiVersion, kind, metadata.name/namespace (and whether there are items) of a document not yet
    constructed: enough to name it and to tell whether it is ours."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    fields = {_scalar(key): value for key, value in node.value}
    body: dict[str, Any] = {name: _scalar(fields.get(name)) for name in ("apiVersion", "kind")}
    meta = fields.get("metadata")
    if isinstance(meta, yaml.MappingNode):
        meta_fields = {_scalar(key): value for key, value in meta.value}
        body["metadata"] = {name: _scalar(meta_fields.get(name)) for name in ("name", "namespace")}
    if "items" in fields:
        body["items"] = []
    return body


def _is_ours(body: Any) -> bool:
    """A document this command checks: of our API group, or a List (whose items may be)."""
    if not isinstance(body, dict):
        return False
    kind = body.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in body):
        return True
    return str(body.get("apiVersion") or "").rpartition("/")[0] == GROUP


def _name_part(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= 253 else "<invalid>"


def _label(body: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` of a document, whatever its fields hold."""
    kind = body.get("kind")
    kind_text = kind if isinstance(kind, str) and len(kind) <= 63 else "<invalid kind>"
    meta = body.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name = _name_part(meta.get("name") or meta.get("generateName") or "<unnamed>")
    namespace = meta.get("namespace")
    return f"{kind_text} {_name_part(namespace)}/{name}" if namespace else f"{kind_text} {name}"


def _yaml_problem(filename: str, text: str, error: Exception, line: int = 1) -> Problem:
    """A YAML error as a problem at its line. Messages of the YAML library name characters and marks,
    never the document's values; other errors (a RecursionError of a nested document) only their kind."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        detail = str(error.problem or error)
    elif isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(error.position, 0)) + 1
        detail = (
            f"unacceptable character #x{error.character:04x}"
            if isinstance(error.character, int)
            else "bad input"
        )
    elif isinstance(error, RecursionError):
        detail = "nested too deeply to read"
    else:
        detail = type(error).__name__
    return Problem(filename, line, f"invalid YAML: {detail}")


class _Loader(yaml.SafeLoader):
    """The safe loader, with the line of a value that cannot be constructed (an integer of more than 4300
    digits, a date that does not exist): those raise plain ValueErrors without a mark."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as error:
            problem = str(error).split(";")[0][:200]
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


class Checker:
    def __init__(self) -> None:
        self.crds = load_crds()
        self.cel = _Cel()
        self.resources = 0

    def check_text(self, text: str, filename: str) -> list[Problem]:
        """Every document of ``text``. A problem in one document never stops the check of the others; a
        syntax error stops the file at that point (the parser cannot resynchronise), with a problem."""
        problems: list[Problem] = []
        try:
            loader = _Loader(text)  # refuses non-printable characters at once
        except yaml.YAMLError as error:
            return [_yaml_problem(filename, text, error)]
        try:
            while True:
                try:
                    if not loader.check_node():
                        break
                    node = loader.get_node()
                except Exception as error:  # the composer's state is lost: nothing more to read
                    problems.append(_yaml_problem(filename, text, error))
                    break
                if node is not None:
                    problems += self._check_document(loader, node, text, filename)
        finally:
            loader.dispose()
        return problems

    def _check_document(self, loader: _Loader, node: yaml.Node, text: str, filename: str) -> list[Problem]:
        line = node.start_mark.line + 1
        shallow = _shallow_body(node)
        too_big = size_problem(node)
        if too_big is not None and (too_big.unsafe or _is_ours(shallow)):
            self.resources += _is_ours(shallow)
            return [Problem(filename, line, f"{_label(shallow)}: not checked: {too_big.message}")]
        try:
            body = loader.construct_document(node)
        except Exception as error:  # the node is read, so the next document can still be checked
            loader.constructed_objects, loader.recursive_objects = {}, {}
            loader.state_generators, loader.deep_construct = [], False
            return [_yaml_problem(filename, text, error, line)]
        if not _is_ours(body):
            return []
        return self._check_object(body, Lines(node), (), filename)

    def _check_object(self, body: Any, lines: Lines, base: Path_, filename: str) -> list[Problem]:
        if not _is_ours(body):
            return []
        kind = body.get("kind")
        if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in body):
            found: list[Problem] = []
            items = body.get("items")
            for index, item in enumerate(items if isinstance(items, list) else []):
                found += self._check_object(item, lines, (*base, "items", index), filename)
            return found
        self.resources += 1
        label = _label(body)
        try:
            return self._check_resource(body, lines, base, filename, label)
        except Exception as error:
            # A bug of ours must not hide the other documents; the kind only (no value in the message).
            line = lines.line(base)
            return [
                Problem(filename, line, f"{label}: could not be checked: unexpected {type(error).__name__}")
            ]

    def _check_resource(
        self, body: dict[str, Any], lines: Lines, base: Path_, filename: str, label: str
    ) -> list[Problem]:
        kind = body.get("kind")
        api_version = str(body.get("apiVersion") or "")
        version = api_version.rpartition("/")[2]
        doc = _Document(filename, copy.deepcopy(body), lines, base, label)
        crd = self.crds.get(kind) if isinstance(kind, str) else None
        if crd is None or not isinstance(kind, str):
            shown = kind if isinstance(kind, str) and len(kind) <= 63 else "<invalid kind>"
            doc.add(("kind",), f"unknown kind {shown!r} in {GROUP}; known: {', '.join(sorted(self.crds))}")
            return doc.problems
        schema = crd.schemas.get(version)
        if schema is None:
            served = ", ".join(f"{GROUP}/{v}" for v in crd.schemas)
            doc.add(("apiVersion",), f"{kind} is not served as {api_version}; use {served}")
            return doc.problems
        doc.body = apply_defaults(doc.body, schema)
        _metadata_errors(doc, crd.namespaced)
        _schema_errors(doc, kind, version)
        _structure_errors(doc, doc.body, schema, ())
        self.cel.check(doc, doc.body, schema, ())
        if not [p for p in doc.problems if not p.warning]:
            _operator_rules(doc, kind)
        return sorted(set(doc.problems))


def iter_files(paths: Iterable[str]) -> Iterator[Path]:
    """Files as given; folders recursively (their *.yaml and *.yml files)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
        else:
            yield path


@dataclass(frozen=True)
class SourceDocument:
    """A resource read from a manifest file (any kind; the items of a List one by one) and where it starts."""

    file: str
    line: int
    body: dict[str, Any] = field(repr=False)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _read_text(path: Path) -> str | Problem:
    name = str(path)
    try:
        raw = path.read_bytes() if name != "-" else sys.stdin.buffer.read()
    except OSError as error:
        return Problem(name, 1, f"cannot read: {error.strerror or error}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        return Problem(name, line, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start})")


def _source_documents(text: str, filename: str) -> Iterator[SourceDocument]:
    """The mapping documents of ``text`` (bounded as ``check`` bounds them; what it cannot read is skipped,
    ``check`` reports it)."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or size_problem(node) is not None:
                continue
            body = loader.construct_document(node)
            if not isinstance(body, dict):
                continue
            items = body.get("items")
            if str(body.get("kind") or "").endswith("List") and isinstance(items, list):
                lines = Lines(node)
                for index, item in enumerate(items):
                    if isinstance(item, dict):
                        yield SourceDocument(filename, lines.line(("items", index)), item)
            else:
                yield SourceDocument(filename, node.start_mark.line + 1, body)
    finally:
        loader.dispose()


def read_manifests(paths: Iterable[str]) -> tuple[list[SourceDocument], list[Problem]]:
    """Every document of the files and folders, with the errors ``check`` finds in them: a command that acts
    on manifests refuses what the API server (or the operator) would refuse."""
    checker = Checker()
    documents: list[SourceDocument] = []
    problems: list[Problem] = []
    for path in iter_files(paths):
        text = _read_text(path)
        if isinstance(text, Problem):
            problems.append(text)
            continue
        found = [problem for problem in checker.check_text(text, str(path)) if not problem.warning]
        problems += found
        if not found:
            documents += _source_documents(text, str(path))
    return documents, problems


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def check_files(
    paths: Sequence[str], out: TextIO | IO[str] | None = None, err: TextIO | IO[str] | None = None
) -> int:
    """Check every file; print problems to ``out`` and a summary to ``err``; 1 when any error, else 0."""
    out = out or sys.stdout
    err = err or sys.stderr
    checker = Checker()
    errors = warnings = files = 0
    for path in iter_files(paths):
        files += 1
        name = str(path)
        text = _read_text(path)
        if isinstance(text, Problem):
            problems = [text]
        else:
            try:
                problems = checker.check_text(text, name)
            except Exception as error:  # whatever one file does, the others are checked
                problems = [Problem(name, 1, f"could not be checked: unexpected {type(error).__name__}")]
        for problem in problems:
            print(problem, file=out)
            if problem.warning:
                warnings += 1
            else:
                errors += 1
    if not checker.cel.available:
        print(
            "note: CEL rules (x-kubernetes-validations) were not checked: pip install 'managed-secrets[check]'",
            file=err,
        )
    summary = f"{_count(checker.resources, f'{GROUP} resource')} in {_count(files, 'file')}: {_count(errors, 'error')}"
    print(f"{summary}, {_count(warnings, 'warning')}" if warnings else summary, file=err)
    return 1 if errors else 0
