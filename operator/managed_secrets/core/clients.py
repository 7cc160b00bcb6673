"""Provider clients, built once per backend configuration and reused (keeps Vault logins alive)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from managed_secrets.models.backend import Backend
from managed_secrets.providers.base import CredentialSource, ProviderContext, SecretProvider
from managed_secrets.providers.guard import BackendName, CredentialPolicy
from managed_secrets.providers.registry import ProviderRegistry

log = logging.getLogger(__name__)


class ProviderPool:
    def __init__(
        self,
        registry: ProviderRegistry,
        credentials: CredentialSource,
        options: Mapping[str, Any] | None = None,
        policy: CredentialPolicy | None = None,
        backend_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._registry = registry
        self._credentials = credentials
        self._options = dict(options or {})
        #: str(backend id) -> options over ``options`` for that backend only (local overrides).
        self._backend_options = {name: dict(extra) for name, extra in (backend_options or {}).items()}
        self._policy = policy or CredentialPolicy()
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[tuple[str, str, int], SecretProvider]] = {}
        self._building: dict[str, threading.Lock] = {}

    def get(self, backend: Backend) -> SecretProvider:
        name = str(backend.id)
        with self._lock:
            current = self._clients.get(name)
            if current is not None and current[0] == backend.cache_identity:
                return current[1]
            build_lock = self._building.setdefault(name, threading.Lock())
        with build_lock:  # one build per backend, even when many resources ask at once
            with self._lock:
                current = self._clients.get(name)
                if current is not None and current[0] == backend.cache_identity:
                    return current[1]
            factory = self._registry.factory(backend.provider)
            context = ProviderContext(
                credentials=self._credentials,
                default_namespace=backend.default_namespace,
                backend_label=name,
                options={**self._options, **self._backend_options.get(name, {})},
                backend=BackendName(backend.id.kind, backend.id.name),
                policy=self._policy,
            )
            client = factory(backend.config, context)
            with self._lock:
                old = self._clients.get(name)
                self._clients[name] = (backend.cache_identity, client)
        if old is not None:
            log.info("%s changed; closing its previous client", name)
            _close_quietly(old[1])
        return client

    def discard(self, backend: Backend) -> None:
        with self._lock:
            old = self._clients.pop(str(backend.id), None)
        if old is not None:
            _close_quietly(old[1])

    def close(self) -> None:
        with self._lock:
            clients = [client for _, client in self._clients.values()]
            self._clients.clear()
        for client in clients:
            _close_quietly(client)


def _close_quietly(client: SecretProvider) -> None:
    try:
        client.close()
    except Exception as error:
        log.warning("closing a provider client failed: %s", type(error).__name__)
