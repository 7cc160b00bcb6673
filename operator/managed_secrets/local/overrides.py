"""The local overrides file: backends pointed at a developer's or a CI job's own endpoints and credentials.

.. code-block:: yaml

    allowedEndpoints:                # where credentials may be sent besides the public cloud endpoints
      - https://vault.dev.example.com:8200
    backends:
      - name: vault                  # the SecretBackend or ClusterSecretBackend of that name
        kind: SecretBackend          # optional: both kinds match when omitted
        namespace: team-a            # optional: every namespace when omitted (SecretBackends only)
        patch:                       # a JSON merge patch (RFC 7386) on the backend's spec
          vault:
            server: http://127.0.0.1:8200
        vaultToken:                  # optional: where the Vault token is, instead of VAULT_TOKEN & co
          file: ~/.vault-dev-token   # or env: DEV_VAULT_TOKEN
        options: {timeout_seconds: 5} # provider tuning, as the operator's provider options

The file holds no secret value: credentials stay where the stores' own tools keep them (a token file, the
AWS credential chain, gcloud's application default credentials, the Azure CLI). ``sandboxed: true`` marks a
backend that ``managed-secrets sandbox`` serves from a local OpenBao in place of another store (below).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.models.parse import describe_validation_error


class OverridesError(Exception):
    """The overrides file cannot be used; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class VaultTokenSource(_Model):
    env: str | None = Field(default=None, min_length=1)
    file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> VaultTokenSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("set exactly one of env, file")
        return self


class BackendOverride(_Model):
    name: str = Field(min_length=1)
    kind: BackendKind | None = None
    namespace: str | None = None
    patch: dict[str, Any] = Field(default_factory=dict)
    vault_token: VaultTokenSource | None = Field(default=None, alias="vaultToken")
    options: dict[str, Any] = Field(default_factory=dict)
    #: Served by ``managed-secrets sandbox``: a Vault KV standing in for another store, so a remoteRef
    #: without property reads the field ``value`` and pinned versions read the latest.
    sandboxed: bool = False

    def matches(self, backend: Backend) -> bool:
        if backend.id.name != self.name or (self.kind is not None and backend.id.kind is not self.kind):
            return False
        return self.namespace is None or backend.id.namespace in (None, self.namespace)


class Overrides(_Model):
    allowed_endpoints: tuple[str, ...] = Field(default=(), alias="allowedEndpoints")
    backends: tuple[BackendOverride, ...] = ()

    def for_backend(self, backend: Backend) -> BackendOverride | None:
        """The most specific entry for ``backend`` (kind and namespace given beat omitted)."""
        found = [entry for entry in self.backends if entry.matches(backend)]
        found.sort(key=lambda entry: (entry.kind is None, entry.namespace is None))
        return found[0] if found else None

    def dump(self) -> str:
        return yaml.safe_dump(
            self.model_dump(mode="json", by_alias=True, exclude_defaults=True), sort_keys=False
        )


NO_OVERRIDES = Overrides()


def load_overrides(path: str | None) -> Overrides:
    if path is None:
        return NO_OVERRIDES
    try:
        raw = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise OverridesError(f"{path}: cannot read: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise OverridesError(f"{path}:{line}: invalid YAML") from None
    try:
        return Overrides.model_validate(raw)
    except ValidationError as error:
        raise OverridesError(f"{path}: {describe_validation_error(error)}") from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
