"""The provider contract: one set of cases every provider passes against its real (or stand-in) server.

Shipped with the package so a plugin author runs the same cases as the built-in providers
(``pip install 'managed-secrets[testing]'``; this module needs pytest). A test module subclasses
``ProviderContract`` and provides three fixtures:

- ``remote``: a ``Remote`` for the store (writes with an admin client, outage control);
- ``provider``: a provider configured with working credentials;
- ``bad_credentials_provider``: the same backend with credentials the server refuses.

``MemoryRemote`` is the ``Remote`` of the in-memory provider, a worked example (docs/adding-a-provider.md).
Every case runs with the root logger and the operator's loggers at DEBUG, captured by caplog.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

import pytest

from managed_secrets.core.values import extract_fields, pick_property
from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    PropertyNotFound,
    RemoteKeyNotFound,
    SyncError,
    VersionNotFound,
)
from managed_secrets.providers.base import RemoteKey, SecretProvider, ValidatingProvider, version_of
from managed_secrets.providers.memory import MemoryStore, encode_value
from managed_secrets.testing.leaks import assert_absent

Value = str | bytes | dict[str, Any]

#: An outage must be reported within this many seconds (the providers' test timeouts are a few seconds).
OUTAGE_REPORT_SECONDS = 20.0
SIXTY_FOUR_KIB = 64 * 1024


class Remote(Protocol):
    """What the contract needs of a store: writes, deletes and an outage switch."""

    #: Whether the store keeps raw bytes (AWS SecretBinary, GCP payloads); Vault and Key Vault keep text.
    supports_binary: bool
    #: Largest value the real service accepts (Key Vault: 25 KiB, SSM advanced tier: 8 KiB).
    max_value_size: int

    def new_key(self) -> str: ...

    def put(self, key: str, value: Value) -> str:
        """Write a new version of ``key`` (creating it if needed); return its version id."""
        ...

    def delete(self, key: str) -> None: ...

    def expected(self, value: Value) -> bytes:
        """The bytes a provider's fetch must return for ``value`` as put."""
        ...

    def missing_version(self) -> str:
        """A well-formed version id that no key has."""
        ...

    def stop_server(self) -> None: ...

    def start_server(self) -> None: ...


class MemoryRemote:
    """The ``Remote`` of an in-memory store: the store is its own admin client, and an outage keeps the data."""

    supports_binary = True
    max_value_size = SIXTY_FOUR_KIB

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def new_key(self) -> str:
        return f"contract/{uuid.uuid4().hex[:12]}"

    def put(self, key: str, value: Value) -> str:
        return self.store.put(key, value)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def expected(self, value: Value) -> bytes:
        return encode_value(value)

    def missing_version(self) -> str:
        return "999"

    def stop_server(self) -> None:
        self.store.set_reachable(False)

    def start_server(self) -> None:
        self.store.set_reachable(True)


def exception_texts(error: BaseException) -> str:
    """Everything an exception would show: str, repr, the formatted traceback, and its causes."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), *traceback.format_exception(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def record_texts(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log record: message, args and every extra attribute (SDKs log payloads as extras)."""
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(exception_texts(record.exc_info[1]))
    return "\n".join(parts)


class ProviderContract:
    """Subclass in ``test_<store>.py`` and provide the fixtures ``remote``, ``provider`` and
    ``bad_credentials_provider``."""

    #: Values larger than this are skipped by the size case (set per store, see Remote.max_value_size).
    SIZE: ClassVar[int] = SIXTY_FOUR_KIB

    @pytest.fixture(autouse=True)
    def _debug_logs(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level("DEBUG")
        caplog.set_level("DEBUG", logger="managed_secrets")

    @pytest.fixture
    def key(self, remote: Remote) -> Iterator[str]:
        key = remote.new_key()
        yield key
        # The key may be gone with a restart, or never written.
        with contextlib.suppress(Exception):
            remote.delete(key)

    @staticmethod
    def fetch(provider: SecretProvider, key: str, version: str | None = None) -> bytes:
        return provider.fetch(RemoteKey(key, version))

    @staticmethod
    def assert_same(remote: Remote, got: bytes, value: Value) -> None:
        if isinstance(value, dict):
            assert json.loads(got) == json.loads(remote.expected(value))
        else:
            assert got == remote.expected(value)

    # -- reads ----------------------------------------------------------------------------------------

    def test_fetch(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        remote.put(key, "s3cr3t-value")
        assert self.fetch(provider, key) == remote.expected("s3cr3t-value")

    def test_json_property(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        value = {"username": "app", "password": "pw-1", "db": {"host": "db.internal", "port": 5432}}
        remote.put(key, value)
        raw = self.fetch(provider, key)
        assert pick_property(raw, key, "username") == b"app"
        assert pick_property(raw, key, "db.host") == b"db.internal"
        assert pick_property(raw, key, "db.port") == b"5432"
        assert json.loads(pick_property(raw, key, "db")) == {"host": "db.internal", "port": 5432}

    def test_version_pinning_and_latest(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        first = remote.put(key, {"generation": "one"})
        second = remote.put(key, {"generation": "two"})
        assert first != second
        assert pick_property(self.fetch(provider, key), key, "generation") == b"two"
        assert pick_property(self.fetch(provider, key, first), key, "generation") == b"one"
        assert pick_property(self.fetch(provider, key, second), key, "generation") == b"two"
        third = remote.put(key, {"generation": "three"})
        latest = self.fetch(provider, key)
        assert pick_property(latest, key, "generation") == b"three"
        # The version read is reported (status.sources, the audit trail): the one the store gave the write.
        assert version_of(latest) == third
        assert version_of(self.fetch(provider, key, first)) == first
        assert pick_property(self.fetch(provider, key, third), key, "generation") == b"three"
        assert pick_property(self.fetch(provider, key, first), key, "generation") == b"one"

    def test_missing_version(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        remote.put(key, {"a": "b"})
        with pytest.raises(VersionNotFound) as caught:
            self.fetch(provider, key, remote.missing_version())
        assert key in str(caught.value)

    def test_extract_all_fields(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        value = {"user": "app", "pass": "pw-2", "port": 5432, "tls": True, "opts": {"a": [1, 2]}}
        remote.put(key, value)
        fields = extract_fields(self.fetch(provider, key), key)
        assert fields == {
            "user": b"app",
            "pass": b"pw-2",
            "port": b"5432",
            "tls": b"true",
            "opts": b'{"a":[1,2]}',
        }

    # -- failures -------------------------------------------------------------------------------------

    def test_missing_key(self, remote: Remote, provider: SecretProvider) -> None:
        missing = remote.new_key()
        with pytest.raises(RemoteKeyNotFound) as caught:
            self.fetch(provider, missing)
        assert missing in str(caught.value)
        assert caught.value.reason == "RemoteKeyNotFound"

    def test_missing_property(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        remote.put(key, {"present": "v-3"})
        raw = self.fetch(provider, key)
        with pytest.raises(PropertyNotFound) as caught:
            pick_property(raw, key, "absent")
        assert "absent" in str(caught.value)
        assert "v-3" not in str(caught.value)

    def test_wrong_credentials(
        self, remote: Remote, bad_credentials_provider: SecretProvider, key: str
    ) -> None:
        remote.put(key, "value-behind-auth")
        with pytest.raises(AuthFailed) as caught:
            self.fetch(bad_credentials_provider, key)
        assert caught.value.reason == "AuthFailed"
        assert "value-behind-auth" not in exception_texts(caught.value)

    def test_validate(
        self, remote: Remote, provider: SecretProvider, bad_credentials_provider: SecretProvider, key: str
    ) -> None:
        """The backend's Ready check: working credentials pass, refused ones are AuthFailed, an outage
        BackendUnavailable; and it reads no value (a canary in the store never shows)."""
        assert isinstance(provider, ValidatingProvider)
        assert isinstance(bad_credentials_provider, ValidatingProvider)
        canary = f"canary-{uuid.uuid4().hex}"
        remote.put(key, canary)
        provider.validate()
        with pytest.raises(AuthFailed) as refused:
            bad_credentials_provider.validate()
        remote.stop_server()
        try:
            with pytest.raises(BackendUnavailable) as down:
                provider.validate()
        finally:
            remote.start_server()
        provider.validate()
        for error in (refused.value, down.value):
            assert_absent(canary, exception_texts(error), f"{type(error).__name__} text")

    def test_server_down_then_back(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        remote.put(key, "before-outage")
        assert self.fetch(provider, key) == remote.expected("before-outage")
        remote.stop_server()
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as caught:
                self.fetch(provider, key)
            assert time.monotonic() - started < OUTAGE_REPORT_SECONDS
            assert caught.value.transient
            assert "before-outage" not in exception_texts(caught.value)
        finally:
            remote.start_server()
        # The same provider (no rebuild) recovers; the server lost its data, so write it again.
        remote.put(key, "after-outage")
        assert self.fetch(provider, key) == remote.expected("after-outage")

    # -- values ---------------------------------------------------------------------------------------

    def test_unicode_value(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        value = "pässwörd \u2013 秘密 \u2013 ключ \u2013 🔑 \u2013 \u00a0tab\tnewline\n"
        remote.put(key, value)
        raw = self.fetch(provider, key)
        assert raw == remote.expected(value)
        remote.put(key, {"note": value})
        assert pick_property(self.fetch(provider, key), key, "note").decode() == value

    def test_binary_value(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        if not remote.supports_binary:
            pytest.skip("this store keeps text only")
        value = bytes(range(256)) * 4 + b"\x00\xff\xfe"
        remote.put(key, value)
        assert self.fetch(provider, key) == value

    def test_large_value(self, remote: Remote, provider: SecretProvider, key: str) -> None:
        size = min(SIXTY_FOUR_KIB, remote.max_value_size)
        value = secrets.token_hex(size // 2)[:size]
        remote.put(key, value)
        raw = self.fetch(provider, key)
        assert len(remote.expected(value)) >= size
        assert raw == remote.expected(value)

    # -- secrecy --------------------------------------------------------------------------------------

    def test_canary_absent_from_logs_and_errors(
        self,
        remote: Remote,
        provider: SecretProvider,
        bad_credentials_provider: SecretProvider,
        key: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        canary = f"canary-{uuid.uuid4().hex}"
        remote.put(key, {"password": canary, "user": "app"})
        raw = self.fetch(provider, key)
        assert pick_property(raw, key, "password") == canary.encode()
        assert extract_fields(raw, key)["password"] == canary.encode()

        errors: list[BaseException] = []

        def expect_failure(kind: type[SyncError], action: Callable[[], object]) -> None:
            with pytest.raises(kind) as caught:
                action()
            errors.append(caught.value)

        expect_failure(PropertyNotFound, lambda: pick_property(raw, key, "nope"))
        expect_failure(VersionNotFound, lambda: self.fetch(provider, key, remote.missing_version()))
        expect_failure(RemoteKeyNotFound, lambda: self.fetch(provider, remote.new_key()))
        expect_failure(AuthFailed, lambda: self.fetch(bad_credentials_provider, key))
        remote.stop_server()
        try:
            expect_failure(BackendUnavailable, lambda: self.fetch(provider, key))
        finally:
            remote.start_server()

        # Capture works at DEBUG (the providers log names of keys there; SDK body loggers stay pinned).
        logging.getLogger("managed_secrets.contract").debug("capture check for %s", key)
        assert any(r.name == "managed_secrets.contract" for r in caplog.records)
        logs = record_texts(caplog)
        assert_absent(canary, logs, "log records")
        for error in errors:
            assert_absent(canary, exception_texts(error), f"{type(error).__name__} text")
