"""decodingStrategy on the real control plane with OpenBao: base64-stored values (a keystore, a PEM)
arrive decoded, per data entry and per extract; Auto leaves text alone; a value that is not base64 is
DecodingFailed with the Secret kept exactly as it was and no value in the message."""

from __future__ import annotations

import base64
import secrets

import pytest

from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube

pytestmark = [pytest.mark.cluster]


def test_values_are_decoded_and_bad_base64_keeps_the_secret(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    keystore = secrets.token_bytes(64) + b"\x00\xff"  # binary, as a keystore is
    key, extra = f"{namespace}/app", f"{namespace}/extra"
    kv = openbao.client().secrets.kv.v2
    kv.create_or_update_secret(
        path=key,
        secret={
            "keystore": base64.b64encode(keystore).decode(),
            "token": base64.urlsafe_b64encode(b"url-safe token").decode().rstrip("="),
            "plain": "plain text!",
        },
        mount_point="secret",
    )
    kv.create_or_update_secret(
        path=extra, secret={"a": base64.b64encode(b"one").decode(), "b": base64.b64encode(b"two").decode()},
        mount_point="secret",
    )  # fmt: skip

    def ref(prop: str, strategy: str) -> dict[str, str]:
        return {"key": key, "property": prop, "decodingStrategy": strategy}

    spec = {
        "backendRef": {"name": "vault"},
        "refreshInterval": "1h",
        "data": [
            {"secretKey": "keystore.p12", "remoteRef": ref("keystore", "Base64")},
            {"secretKey": "token", "remoteRef": ref("token", "Base64URL")},
            {"secretKey": "plain", "remoteRef": ref("plain", "Auto")},
            {"secretKey": "raw", "remoteRef": ref("keystore", "None")},
        ],
        "dataFrom": [{"extract": {"key": extra, "decodingStrategy": "Base64"}}],
    }
    kube.create_ms(namespace, "app", spec)
    kube.wait_ready(namespace, "app")
    data = {k: base64.b64decode(v) for k, v in (kube.existing_secret(namespace, "app").data or {}).items()}
    assert data == {
        "keystore.p12": keystore,
        "token": b"url-safe token",
        "plain": b"plain text!",
        "raw": base64.b64encode(keystore),
        "a": b"one",
        "b": b"two",
    }

    # Text that is not base64 under a Base64 strategy: reported, the Secret untouched.
    version = kube.existing_secret(namespace, "app").metadata.resource_version
    canary = f"canary-{secrets.token_hex(6)}!"
    kv.create_or_update_secret(
        path=key, secret={"keystore": canary, "token": "x", "plain": "y"}, mount_point="secret"
    )
    kube.force_sync(namespace, "app")
    cond = kube.wait_ready(namespace, "app", "False", "DecodingFailed")
    assert cond["message"] == f"key {key}: property 'keystore': not valid Base64 (decodingStrategy Base64)"
    assert kube.existing_secret(namespace, "app").metadata.resource_version == version
    assert canary not in str(kube.get_ms(namespace, "app"))
