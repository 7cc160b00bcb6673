"""The in-memory provider: a store held in this process's memory, for tests, examples and plugin authors.

A backend selects it like any third-party provider (``spec: {plugin: {name: memory, config: {store: <name>}}}``,
or ``spec: {memory: {store: <name>}}`` where no CRD schema prunes it, as with the fake cluster); the registry
finds it through the ``managed_secrets.providers`` entry point, the mechanism third-party providers use.

**Why it cannot serve a production operator by accident**: its only source of values is a ``MemoryStore``
that Python code *in the same process* created and seeded (``memory_store(name)``). The backend block names a
store and an identity, never values (unknown fields are refused, so nobody writes secrets into a CRD). The
shipped operator has no code that creates a store, so in a real deployment a ``memory`` backend finds none
and fails with InvalidBackend, loudly, instead of syncing empty or made-up data. No flag is needed for that,
and there is none to leave switched on. It reads no credentials and contacts no endpoint, so the
confused-deputy guards (providers/guard.py) have nothing to check.

The store behaves like the real ones where the core can tell: numbered versions (``latest`` or omitted is
the newest), JSON maps as values, canonical keys by the strict generic rule (providers/keys.py), and the
same errors with the same reasons: RemoteKeyNotFound, VersionNotFound, AuthFailed (an identity the store
refuses), BackendUnavailable (an outage). Messages name keys, never values.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field

from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    InvalidBackend,
    RemoteKeyNotFound,
    VersionNotFound,
)
from managed_secrets.models.base import CamelModel
from managed_secrets.providers.base import Fetched, ProviderContext, RemoteKey, SecretProvider, parse_config
from managed_secrets.providers.keys import strict_canonical_ref

#: The identity a provider presents when its block names none.
DEFAULT_IDENTITY = "operator"
LATEST = "latest"

StoreValue = str | bytes | Mapping[str, Any]


def encode_value(value: StoreValue) -> bytes:
    """The bytes a fetch returns for ``value`` as put: maps as compact JSON (like Vault KV), text as UTF-8."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class _Key:
    versions: list[bytes | None] = field(default_factory=list, repr=False)  # None: a disabled version


class MemoryStore:
    """One store: keys with numbered versions, an outage switch and identities it refuses. Thread-safe."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._refused: set[str] = set()
        self._reachable = True
        #: Every read (key, version) in order; tests count store calls with it.
        self.reads: list[RemoteKey] = []

    def __repr__(self) -> str:  # names and sizes only: a repr must never show a value
        return f"MemoryStore({self.name!r}, keys={len(self._keys)})"

    # -- seeding and changing values ---------------------------------------------------------------------

    def put(self, key: str, value: StoreValue) -> str:
        """Write a new version of ``key`` (creating the key); returns its version id ("1", "2", ...)."""
        with self._lock:
            entry = self._keys.setdefault(key, _Key())
            entry.versions.append(encode_value(value))
            return str(len(entry.versions))

    def seed(self, values: Mapping[str, StoreValue | list[StoreValue]]) -> None:
        """Several keys at once; a list is a key's versions, oldest first."""
        for key, value in values.items():
            for version in value if isinstance(value, list) else [value]:
                self.put(key, version)

    def delete(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def disable(self, key: str, version: str) -> None:
        """Make one version unreadable (VersionNotFound), as stores that disable versions do."""
        with self._lock:
            entry = self._keys.get(key)
            if entry is None or not version.isdigit() or not 0 < int(version) <= len(entry.versions):
                raise KeyError(f"{key}@{version}")
            entry.versions[int(version) - 1] = None

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()
            self._refused.clear()
            self._reachable = True
            self.reads.clear()

    # -- failures ----------------------------------------------------------------------------------------

    def refuse(self, identity: str = DEFAULT_IDENTITY) -> None:
        """Reject this identity's requests (AuthFailed), as a store rejects revoked credentials."""
        with self._lock:
            self._refused.add(identity)

    def accept(self, identity: str = DEFAULT_IDENTITY) -> None:
        with self._lock:
            self._refused.discard(identity)

    def set_reachable(self, reachable: bool) -> None:
        """False: every request fails with BackendUnavailable until set back."""
        with self._lock:
            self._reachable = reachable

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.set_reachable(False)
        try:
            yield
        finally:
            self.set_reachable(True)

    # -- what the provider calls -------------------------------------------------------------------------

    def _check(self, identity: str, label: str) -> None:
        if not self._reachable:
            raise BackendUnavailable(f"{label}: in-memory store {self.name!r} is unreachable")
        if identity in self._refused:
            raise AuthFailed(f"{label}: in-memory store {self.name!r} refuses identity {identity!r}")

    def authenticate(self, identity: str, label: str) -> None:
        with self._lock:
            self._check(identity, label)

    def read(self, ref: RemoteKey, identity: str, label: str) -> bytes:
        with self._lock:
            self._check(identity, label)
            self.reads.append(ref)
            entry = self._keys.get(ref.key)
            if entry is None or not entry.versions:
                raise RemoteKeyNotFound(f"{label}: key {ref.key} not found")
            if ref.version is None:
                for index in range(len(entry.versions) - 1, -1, -1):  # the newest enabled version
                    value = entry.versions[index]
                    if value is not None:
                        return Fetched(value, version=str(index + 1))
                raise VersionNotFound(f"{label}: key {ref.key} has no enabled version")
            number = int(ref.version)
            value = entry.versions[number - 1] if 0 < number <= len(entry.versions) else None
            if value is None:
                raise VersionNotFound(f"{label}: key {ref.key} has no version {ref.version}")
            return Fetched(value, version=ref.version)


_stores: dict[str, MemoryStore] = {}
_stores_lock = threading.Lock()


def memory_store(name: str = "default") -> MemoryStore:
    """The store of that name in this process, created empty on first use. Only code in this process
    creates stores; a backend block can name one but never make one."""
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = MemoryStore(name)
        return store


def drop_store(name: str) -> None:
    """Forget a store: backends naming it fail with InvalidBackend again."""
    with _stores_lock:
        _stores.pop(name, None)


class MemoryConfig(CamelModel):
    """The ``memory`` block: which store, and the identity to present. No values, ever."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(default="default", min_length=1, max_length=253)
    identity: str = Field(default=DEFAULT_IDENTITY, min_length=1, max_length=253)


class MemoryProvider:
    """A client of one in-memory store (``SecretProvider`` and ``CanonicalizingProvider``)."""

    def __init__(self, store: MemoryStore, identity: str, label: str) -> None:
        self.store = store
        self.identity = identity
        self._label = label

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        """The strict generic key rule; versions are ``latest`` (the newest, same as none) or a number."""
        version = None if ref.version == LATEST else ref.version
        if version is not None and not (version.isascii() and version.isdigit() and int(version) > 0):
            raise VersionNotFound(f"{self._label}: {ref.key}: a version is 'latest' or a number from 1")
        if version is not None:
            version = str(int(version))  # "01" reads version 1: one spelling per version
        return strict_canonical_ref(self._label, RemoteKey(ref.key, version))

    def fetch(self, ref: RemoteKey) -> bytes:
        return self.store.read(self.canonical_ref(ref), self.identity, self._label)

    def validate(self) -> None:
        """The cheap call that proves the backend works: AuthFailed when the store refuses this identity,
        BackendUnavailable during an outage."""
        self.store.authenticate(self.identity, self._label)

    def close(self) -> None:
        """Nothing to release: the store outlives its clients."""


def create_provider(config: Mapping[str, Any], context: ProviderContext) -> SecretProvider:
    settings = parse_config(MemoryConfig, config, context)
    with _stores_lock:
        store = _stores.get(settings.store)
    if store is None:
        raise InvalidBackend(
            f"{context.backend_label}: no in-memory store {settings.store!r} in this operator process; the"
            " memory provider serves only stores that code in the same process created (tests, examples),"
            " so it holds nothing in a deployed operator: use a real store"
        )
    return MemoryProvider(store, settings.identity, context.backend_label)
