"""The end-to-end story a cloud store's test tells on the real control plane with the session operator.

A ManagedSecret syncs and rotates; each failure (missing version, disabled version, missing property,
missing secret, wrong credentials, server down) is reported with its stable reason while the Secret stays
exactly as it was (same resourceVersion); each heals once the cause goes away; no value is in the log,
the status or the events.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kube import Kube, allowed_for
from leaks import assert_absent
from managed_secrets.testing.contract import Remote
from store_manifests import BACKEND, CREDENTIALS_SECRET, store_data, store_spec


class LifecycleRemote(Remote, Protocol):
    """The contract suite's Remote, and a version switch."""

    def disable(self, key: str, version: str) -> None: ...
    def enable(self, key: str, version: str) -> None: ...


@dataclass
class StoreUnderTest:
    remote: LifecycleRemote
    #: The SecretBackend spec reading its credentials from Secret ``store-creds`` under this key.
    backend_spec: Callable[[str], Mapping[str, Any]]
    #: ``store-creds``: at least "good" (working credentials) and "bad" (ones the store refuses).
    credentials: Mapping[str, str]


def run_store_lifecycle(
    kube: Kube, namespace: str, store: StoreUnderTest, log_text: Callable[[], str]
) -> None:
    remote = store.remote
    kube.create_secret(
        namespace, CREDENTIALS_SECRET, dict(store.credentials), annotations=allowed_for(BACKEND)
    )
    kube.create_backend(namespace, BACKEND, store.backend_spec("good"))
    key = remote.new_key()
    canary = f"canary-{secrets.token_hex(8)}"
    values: list[str] = []

    def put(suffix: str | None) -> str:
        value = {"user": "app"}
        if suffix is not None:
            values.append(f"{canary}-{suffix}")
            value["pass"] = values[-1]
        return remote.put(key, value)

    def data(version: str | None = None) -> list[dict[str, Any]]:
        return store_data(key, version)

    def expect(name: str, suffix: str, timeout: float = 30) -> None:
        kube.wait_secret_data(namespace, name, {"user": "app", "pass": f"{canary}-{suffix}"}, timeout=timeout)

    def frozen(name: str) -> Callable[[], None]:
        secret = kube.existing_secret(namespace, name)

        def unchanged() -> None:
            now = kube.existing_secret(namespace, name)
            assert now.metadata.resource_version == secret.metadata.resource_version, f"{name} was written"
            assert now.data == secret.data

        return unchanged

    def fails(name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
        kube.force_sync(namespace, name)
        return kube.wait_ready(namespace, name, "False", reason, timeout=timeout)

    def use_credentials(credentials_key: str) -> None:
        kube.custom.patch_namespaced_custom_object(
            "managedsecrets.io",
            "v1alpha1",
            namespace,
            "secretbackends",
            BACKEND,
            {"spec": store.backend_spec(credentials_key)},
        )

    def heals(name: str, timeout: float = 30) -> None:
        kube.force_sync(namespace, name)
        kube.wait_ready(namespace, name, timeout=timeout)

    # Sync, then rotation: a new version is what latest reads.
    put("one")
    kube.create_ms(namespace, "db", store_spec(key))
    expect("db", "one")
    second = put("two")
    kube.force_sync(namespace, "db")
    expect("db", "two")
    kube.create_ms(namespace, "pinned", store_spec(key, second))
    expect("pinned", "two")

    # A missing version.
    unchanged = frozen("pinned")
    kube.patch_ms(namespace, "pinned", {"spec": {"data": data(remote.missing_version())}})
    kube.wait_ready(namespace, "pinned", "False", "VersionNotFound")
    unchanged()
    kube.patch_ms(namespace, "pinned", {"spec": {"data": data(second)}})
    kube.wait_ready(namespace, "pinned")
    unchanged()  # the same values: nothing to write

    # A disabled version (latest has moved on, so only the pinned resource notices).
    put("three")
    kube.force_sync(namespace, "db")
    expect("db", "three")
    remote.disable(key, second)
    fails("pinned", "VersionNotFound")
    unchanged()
    remote.enable(key, second)
    heals("pinned")
    unchanged()
    kube.delete_ms(namespace, "pinned")

    # A missing property.
    unchanged = frozen("db")
    put(None)
    fails("db", "PropertyNotFound")
    unchanged()
    put("four")
    kube.force_sync(namespace, "db")
    expect("db", "four")

    # A missing secret.
    unchanged = frozen("db")
    remote.delete(key)
    cond = fails("db", "RemoteKeyNotFound")
    assert key in cond["message"]
    unchanged()
    put("five")
    kube.force_sync(namespace, "db")
    expect("db", "five")

    # Wrong credentials: a new backend generation makes the operator build a client with them.
    unchanged = frozen("db")
    use_credentials("bad")
    fails("db", "AuthFailed", timeout=60)
    unchanged()
    use_credentials("good")
    heals("db", timeout=60)
    unchanged()

    # The server down; it comes back empty (in memory), and the store's owner puts the value back.
    remote.stop_server()
    try:
        fails("db", "BackendUnavailable", timeout=90)
        unchanged()
    finally:
        remote.start_server()
    put("six")
    expect("db", "six", timeout=90)  # healed by the operator's retries, without a nudge
    kube.wait_ready(namespace, "db")

    where = {
        "the operator log": log_text(),
        "the status": str(kube.get_ms(namespace, "db")),
        "the events": str(kube.core.list_namespaced_event(namespace).to_dict()),
    }
    for value in values:
        for place, text in where.items():
            assert_absent(value, text, place)
