"""Provider registry: backend block name -> factory, imported on first use.

Built-in providers are named by dotted path so their SDKs load only when a backend uses them; a missing
extra then fails with an install hint instead of an ImportError at start-up. Third-party providers
register through the ``managed_secrets.providers`` entry-point group (name = backend block name, value =
``module:factory``).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import cast

from managed_secrets.errors import InvalidBackend, ProviderNotInstalled
from managed_secrets.providers.base import ProviderFactory

ENTRY_POINT_GROUP = "managed_secrets.providers"


@dataclass(frozen=True)
class ProviderSpec:
    target: str  # "module:attribute"
    install_hint: str


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "vault": ProviderSpec(
        "managed_secrets.providers.vault:create_provider", "pip install 'managed-secrets[vault]'"
    ),
    "aws": ProviderSpec(
        "managed_secrets.providers.aws:create_provider", "pip install 'managed-secrets[aws]'"
    ),
    "gcp": ProviderSpec(
        "managed_secrets.providers.gcp:create_provider", "pip install 'managed-secrets[gcp]'"
    ),
    "azure": ProviderSpec(
        "managed_secrets.providers.azure:create_provider", "pip install 'managed-secrets[azure]'"
    ),
}


class ProviderRegistry:
    def __init__(
        self, specs: dict[str, ProviderSpec] | None = None, *, load_entry_points: bool = True
    ) -> None:
        self._specs = dict(BUILTIN_PROVIDERS if specs is None else specs)
        self._factories: dict[str, ProviderFactory] = {}
        self._lock = threading.Lock()
        if load_entry_points:
            for entry in entry_points(group=ENTRY_POINT_GROUP):
                self.register(
                    entry.name, ProviderSpec(entry.value, f"install the package that provides {entry.value}")
                )

    def register(self, name: str, spec: ProviderSpec) -> None:
        if name in self._specs:
            raise ValueError(f"provider {name!r} is registered twice")
        self._specs[name] = spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def factory(self, name: str) -> ProviderFactory:
        with self._lock:
            if name in self._factories:
                return self._factories[name]
            spec = self._specs.get(name)
            if spec is None:
                known = ", ".join(self.names())
                raise InvalidBackend(f"unknown backend type {name!r}; known: {known}")
            module_name, _, attribute = spec.target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                missing = error.name or module_name
                raise ProviderNotInstalled(
                    f"backend type {name!r} needs module {missing!r}: {spec.install_hint}"
                ) from None
            factory = cast("ProviderFactory", getattr(module, attribute))
            self._factories[name] = factory
            return factory
