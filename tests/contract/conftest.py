"""Fixtures of the provider contract suite: the stores' (real) servers and an in-memory CredentialSource.

Servers are session-scoped and started on first use; the contract's outage case stops and starts them
(same port), and each server's harness brings its credentials back (data written before is gone).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from harness.moto_server import MotoServer
from managed_secrets.api import ALLOWED_BACKENDS_ANNOTATION
from managed_secrets.errors import AuthFailed
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.providers.base import CredentialValue, ProviderContext, SecretProvider
from managed_secrets.providers.guard import BackendName, CredentialPolicy, EndpointAllowlist
from managed_secrets.providers.registry import ProviderRegistry

NAMESPACE = "team-a"
#: The test servers all listen on 127.0.0.1: the allowed store endpoints of these contexts.
CONTRACT_POLICY = CredentialPolicy(
    endpoints=EndpointAllowlist.from_patterns(["http://127.0.0.1:*", "https://127.0.0.1:*"]),
    # The contract tests read with the test process's own identity too (default chains, token files).
    operator_identity_for_secretbackends=True,
)
#: Every credential of InMemoryCredentials is opted in for the backends make_provider builds.
OPTED_IN = {
    ALLOWED_BACKENDS_ANNOTATION: ",".join(
        f"{kind.value}/{name}-test" for kind in BackendKind for name in ("vault", "aws", "gcp", "azure")
    )
}

SecretValue = bytes | str | Callable[[], bytes | str]


class InMemoryCredentials:
    """A CredentialSource over a dict: the only way providers in these tests get credentials.

    Values may be callables, read at each call, so a restarted server's new keys are seen (as when
    somebody updates the Kubernetes Secret). ``tokens`` answers TokenRequests per (namespace, account).
    """

    def __init__(
        self,
        secrets: Mapping[tuple[str, str, str], SecretValue] | None = None,
        tokens: Mapping[tuple[str, str], str | Callable[[], str]] | None = None,
    ) -> None:
        self.secrets: dict[tuple[str, str, str], SecretValue] = dict(secrets or {})
        self.tokens: dict[tuple[str, str], str | Callable[[], str]] = dict(tokens or {})
        self.reads: list[tuple[str, str, str]] = []
        self.token_requests: list[tuple[str, str, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        with self._lock:
            self.reads.append((namespace, name, key))
        value = self.secrets.get((namespace, name, key))
        if value is None:
            raise AuthFailed(f"Secret {namespace}/{name} has no key {key!r}")
        if callable(value):
            value = value()
        return CredentialValue(OPTED_IN, value.encode() if isinstance(value, str) else value)

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        if (namespace, name) not in self.tokens:
            raise AuthFailed(f"ServiceAccount {namespace}/{name} not found")
        return OPTED_IN

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        with self._lock:
            self.token_requests.append((namespace, service_account, tuple(audiences)))
        token = self.tokens.get((namespace, service_account))
        if token is None:
            raise AuthFailed(f"no token for service account {namespace}/{service_account}")
        return token() if callable(token) else token


def make_provider(
    name: str,
    config: Mapping[str, Any],
    credentials: InMemoryCredentials | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    namespace: str | None = NAMESPACE,
    policy: CredentialPolicy | None = None,
) -> SecretProvider:
    """A provider built the way the runtime builds one: through the registry's lazy factory."""
    kind = BackendKind.SECRET_BACKEND if namespace else BackendKind.CLUSTER_SECRET_BACKEND
    context = ProviderContext(
        credentials=credentials or InMemoryCredentials(),
        default_namespace=namespace,
        backend_label=f"{kind.value} {namespace + '/' if namespace else ''}{name}-test",
        options=dict(options or {}),
        backend=BackendName(kind, f"{name}-test"),
        policy=policy or CONTRACT_POLICY,
    )
    return ProviderRegistry(load_entry_points=False).factory(name)(config, context)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server
