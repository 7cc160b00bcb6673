"""The caller's own store credentials, found where the stores' tools keep them.

The backends' ``auth`` blocks name Kubernetes Secrets and ServiceAccounts that only exist in the cluster;
outside it each store is reached as the person or CI job running the command:

- Vault / OpenBao: ``VAULT_TOKEN``, else the token helper of the Vault CLI's configuration (``token_helper``
  in ``$VAULT_CONFIG_PATH`` or ``~/.vault``, called with ``get``), else ``~/.vault-token``; or where the
  overrides file says (``vaultToken``).
- AWS: the SDK's default credential chain (environment, profiles, SSO, a CI role's web identity).
- Google Cloud: application default credentials (``gcloud auth application-default login``,
  ``GOOGLE_APPLICATION_CREDENTIALS``).
- Azure: azure-identity's default chain without managed identity (environment, Azure CLI, azd).

The Vault token reaches the Vault provider as the one credential the in-memory cluster serves
(``CALLER_TOKEN_SECRET``); the other stores' SDKs find their credentials themselves.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from managed_secrets.api import ALLOWED_BACKENDS_ANNOTATION
from managed_secrets.errors import AuthFailed
from managed_secrets.local.overrides import VaultTokenSource
from managed_secrets.providers.base import CredentialValue

#: The name of the Secret the in-memory cluster answers with the caller's Vault token.
CALLER_TOKEN_SECRET = "caller-vault-token"  # noqa: S105 - a name, not a token
CALLER_TOKEN_KEY = "token"  # noqa: S105
_TOKEN_HELPER = re.compile(r'^\s*token_helper\s*=\s*"([^"]+)"', re.MULTILINE)
HELPER_TIMEOUT = 30.0


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _token_helper() -> list[str] | None:
    """The Vault CLI's configured token helper, as a command; None when there is none."""
    config = Path(os.environ.get("VAULT_CONFIG_PATH") or _home() / ".vault")
    try:
        found = _TOKEN_HELPER.search(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    if found is None:
        return None
    command = shlex.split(found.group(1))
    command[0] = str(Path(command[0]).expanduser())
    return [*command, "get"]


def caller_vault_token(source: VaultTokenSource | None, environ: Mapping[str, str] | None = None) -> str:
    """The caller's Vault token; AuthFailed, naming where it looked, when there is none."""
    env = os.environ if environ is None else environ
    if source is not None and source.env is not None:
        token = env.get(source.env, "").strip()
        if not token:
            raise AuthFailed(f"the overrides file names ${source.env} for the Vault token, and it is not set")
        return token
    if source is not None and source.file is not None:
        return _token_file(Path(source.file).expanduser(), "the overrides file's vaultToken.file")
    if token := env.get("VAULT_TOKEN", "").strip():
        return token
    helper = _token_helper()
    if helper is not None:
        return _run_helper(helper)
    return _token_file(_home() / ".vault-token", "VAULT_TOKEN is not set and")


def _token_file(path: Path, what: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        token = ""
    if not token:
        raise AuthFailed(
            f"no Vault token: {what} {path} holds none (log in with `vault login` / `bao login`, or set"
            " VAULT_TOKEN)"
        )
    return token


def _run_helper(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AuthFailed(f"the Vault token helper {command[0]} failed: {type(error).__name__}") from None
    token = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or not token:
        # Its output is not shown: it could be a token.
        raise AuthFailed(f"the Vault token helper {command[0]} returned no token (exit {done.returncode})")
    return token


class CallerCredentials:
    """Answers the one credential the local Vault backends are rewritten to ask for: the caller's Vault
    token, found anew at every login (so a ``vault login`` meanwhile is picked up). Each backend asks for
    its own Secret name (``token_secret``), so each gets the token its overrides entry names."""

    def __init__(self) -> None:
        self._backends: list[tuple[str, VaultTokenSource | None]] = []

    def token_secret(self, backend: str, source: VaultTokenSource | None) -> str:
        """The Secret name ``backend`` (as an allowed-backends entry names it) is to read its token from."""
        self._backends.append((backend, source))
        return f"{CALLER_TOKEN_SECRET}-{len(self._backends) - 1}"

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        prefix, _, index = name.rpartition("-")
        if prefix != CALLER_TOKEN_SECRET or key != CALLER_TOKEN_KEY or not index.isdigit():
            raise AuthFailed(f"outside the cluster no Kubernetes Secret is read ({namespace}/{name})")
        backend, source = self._backends[int(index)]
        token = caller_vault_token(source)
        return CredentialValue({ALLOWED_BACKENDS_ANNOTATION: backend}, token.encode())

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        raise AuthFailed(f"outside the cluster there is no ServiceAccount {namespace}/{name}")

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:  # noqa: ARG002
        raise AuthFailed(f"outside the cluster no token is requested for {namespace}/{service_account}")
