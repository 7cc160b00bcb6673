"""The API server's built-in validation of a Secret's data, mirrored, so a refusal is known before a write.

A change of ``type`` deletes the Secret and creates it anew (the type is immutable); a refusal of the new
object after the delete would lose the Secret. Checking first keeps it, and names what is missing. Mirrors
``ValidateSecret`` of kube-apiserver (pkg/apis/core/validation): key names, total size, and the keys each
built-in type requires. What this cannot know (admission webhooks, label syntax) the server-side dry run of
a type change catches (``SecretStore.check_create``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from managed_secrets import errors
from managed_secrets.core.ports import SecretObject

#: core.MaxSecretSize: the sum of the values' lengths.
MAX_SECRET_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 253
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"


def _key_problem(key: str) -> str | None:
    if len(key) > MAX_KEY_LENGTH:
        return f"key {key[:40]!r}... is longer than {MAX_KEY_LENGTH} characters"
    if not _KEY.match(key):
        return f"key {key!r} is not a valid Secret key (letters, digits, '-', '_' and '.' only)"
    if key in (".", "..") or key.startswith(".."):
        return f"key {key!r} must not be '.' or '..' or start with '..'"
    return None


def _json_object_problem(secret: SecretObject, key: str) -> str | None:
    raw = secret.data.get(key)
    if raw is None:
        return f"type {secret.type} requires the key {key}"

    def refuse_constant(_: str) -> None:  # Go's encoding/json has no NaN or Infinity
        raise ValueError

    try:
        parsed = json.loads(bytes(raw).decode("utf-8", errors="replace"), parse_constant=refuse_constant)
    except ValueError:
        return f"key {key} must hold a JSON object"
    return None if parsed is None or isinstance(parsed, dict) else f"key {key} must hold a JSON object"


def _service_account_token(secret: SecretObject) -> str | None:
    if secret.annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION):
        return None
    return (
        f"type {secret.type} requires the annotation {SERVICE_ACCOUNT_NAME_ANNOTATION} "
        "(set it in target.annotations)"
    )


def _basic_auth(secret: SecretObject) -> str | None:
    if "username" in secret.data or "password" in secret.data:
        return None
    return f"type {secret.type} requires the key username or password"


def _ssh_auth(secret: SecretObject) -> str | None:
    return (
        None
        if secret.data.get("ssh-privatekey")
        else f"type {secret.type} requires a non-empty key ssh-privatekey"
    )


def _tls(secret: SecretObject) -> str | None:
    missing = [key for key in ("tls.crt", "tls.key") if key not in secret.data]
    if not missing:
        return None
    return f"type {secret.type} requires the keys tls.crt and tls.key (missing: {', '.join(missing)})"


#: The built-in types the API server checks; other types (Opaque, bootstrap tokens, custom) have no rules.
_TYPE_RULES: dict[str, Callable[[SecretObject], str | None]] = {
    "kubernetes.io/service-account-token": _service_account_token,
    "kubernetes.io/dockercfg": lambda secret: _json_object_problem(secret, ".dockercfg"),
    "kubernetes.io/dockerconfigjson": lambda secret: _json_object_problem(secret, ".dockerconfigjson"),
    "kubernetes.io/basic-auth": _basic_auth,
    "kubernetes.io/ssh-auth": _ssh_auth,
    "kubernetes.io/tls": _tls,
}


def secret_problems(secret: SecretObject) -> list[str]:
    """What the API server would refuse in this Secret; key names and sizes only, never a value."""
    problems = [problem for key in sorted(secret.data) if (problem := _key_problem(key))]
    size = sum(len(value) for value in secret.data.values())
    if size > MAX_SECRET_SIZE:
        problems.append(f"the values total {size} bytes, more than the limit of {MAX_SECRET_SIZE}")
    rule = _TYPE_RULES.get(secret.type)
    if rule is not None and (problem := rule(secret)):
        problems.append(problem)
    return problems


def check_secret(secret: SecretObject) -> None:
    """Raises TargetRejected when the API server would refuse this Secret."""
    problems = secret_problems(secret)
    if problems:
        raise errors.TargetRejected(
            f"the API server would refuse Secret {secret.name} (type {secret.type}): {'; '.join(problems)}"
        )
