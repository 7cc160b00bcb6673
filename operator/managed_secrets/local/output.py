"""What ``render`` prints and what ``exec`` gives the process: formats, masking, CI log masking.

A key becomes an environment variable when its name is one (``[A-Za-z_][A-Za-z0-9_]*``) and its value is
text without NUL; every other key (``tls.crt``, a binary keystore) must be a file: ``exec`` writes it under
``$MANAGED_SECRETS_DIR/<secret name>/<key>``, as a volume mount would lay it out, and ``render``'s env and
dotenv formats leave it out (saying so on stderr).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import yaml

from managed_secrets.errors import InvalidSpec
from managed_secrets.local.resolve import ResolvedSecret

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MASK = "****"
#: The environment variable that tells a process where its file-shaped keys are.
DIR_VARIABLE = "MANAGED_SECRETS_DIR"


class Format(StrEnum):
    ENV = "env"
    DOTENV = "dotenv"
    JSON = "json"
    YAML_SECRET = "yaml-secret"  # noqa: S105 - a format name


def as_env_text(value: bytes) -> str | None:
    """The value as an environment variable's text; None when it cannot be one."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


@dataclass
class Split:
    """The keys of the resolved Secrets: environment variables, and files (secret name, key, bytes)."""

    env: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: env name -> the ManagedSecret that set it, for the message when two disagree
    origin: dict[str, str] = field(default_factory=dict)


def split(secrets: Iterable[ResolvedSecret]) -> Split:
    """Raises InvalidSpec when two Secrets give one variable different values (the process would get one
    of them by chance); the same value twice is fine."""
    out = Split()
    for resolved in secrets:
        for key, value in sorted(resolved.data.items()):
            text = as_env_text(value) if ENV_NAME.match(key) else None
            if text is None:
                out.files.append((resolved.secret.name, key, value))
                continue
            if key in out.env and out.env[key] != text:
                raise InvalidSpec(
                    f"{key} is set by both ManagedSecret {out.origin[key]} and {resolved.managed_secret}"
                    " with different values: pick one with --only"
                )
            out.env[key] = text
            out.origin[key] = resolved.managed_secret
    return out


# -- render -------------------------------------------------------------------------------------------


def _dotenv_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "\\$")
    return f'"{escaped}"'


def render_text(secrets: Sequence[ResolvedSecret], fmt: Format, *, reveal: bool) -> tuple[str, list[str]]:
    """The output, and notes for stderr (keys a format cannot hold). Values appear only with ``reveal``."""
    notes: list[str] = []
    if fmt in (Format.ENV, Format.DOTENV):
        parts = split(secrets)
        for name, key, _ in parts.files:
            notes.append(f"{name}/{key}: not an environment variable (exec writes it to a file); left out")
        lines = []
        for key, text in parts.env.items():
            shown = text if reveal else MASK
            lines.append(
                f"export {key}={shlex.quote(shown)}" if fmt is Format.ENV else f"{key}={_dotenv_quote(shown)}"
            )
        return "".join(f"{line}\n" for line in lines), notes
    if fmt is Format.JSON:
        document: dict[str, dict[str, object]] = {}
        for resolved in secrets:
            entries: dict[str, object] = {}
            for key, value in sorted(resolved.data.items()):
                as_text = as_env_text(value)
                if not reveal:
                    entries[key] = MASK
                elif as_text is not None:
                    entries[key] = as_text
                else:
                    entries[key] = {"base64": base64.b64encode(value).decode()}
            document[resolved.secret.name] = entries
        return json.dumps(document, indent=2, sort_keys=True) + "\n", notes
    return yaml_secrets(secrets, reveal=reveal), notes


def yaml_secrets(secrets: Sequence[ResolvedSecret], *, reveal: bool) -> str:
    """The Secrets as ``kubectl get secret -o yaml`` shows them (data base64), without the operator's own
    ownership metadata."""
    documents = []
    for resolved in secrets:
        secret = resolved.secret
        metadata: dict[str, object] = {"name": secret.name, "namespace": secret.namespace}
        if resolved.labels:
            metadata["labels"] = dict(sorted(resolved.labels.items()))
        if resolved.annotations:
            metadata["annotations"] = dict(sorted(resolved.annotations.items()))
        data = {
            key: base64.b64encode(value).decode() if reveal else MASK
            for key, value in sorted(secret.data.items())
        }
        documents.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": secret.type, "data": data}
        )
    return yaml.safe_dump_all(documents, sort_keys=False)


# -- CI log masking -------------------------------------------------------------------------------------


class CiSystem(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    NONE = "none"


def detect_ci(environ: Mapping[str, str]) -> CiSystem:
    if environ.get("GITHUB_ACTIONS") == "true":
        return CiSystem.GITHUB
    if environ.get("GITLAB_CI") == "true":
        return CiSystem.GITLAB
    return CiSystem.NONE


def github_masks(secrets: Iterable[ResolvedSecret]) -> list[str]:
    """``::add-mask::`` commands for every value, line by line (the runner masks what it saw on one line;
    a value's base64 form too, as Kubernetes manifests carry it)."""
    seen: dict[str, None] = {}
    for resolved in secrets:
        for value in resolved.data.values():
            text = value.decode("utf-8", "replace")
            for line in [*text.splitlines(), base64.b64encode(value).decode()]:
                if line.strip():
                    seen[line] = None
    return [f"::add-mask::{line}" for line in seen]
