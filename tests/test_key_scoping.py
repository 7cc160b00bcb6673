"""A hostile tenant cannot read another tenant's keys through a scoped ClusterSecretBackend.

The platform team shares one store through a ClusterSecretBackend whose condition admits the tenant
namespaces with ``remoteKeys: ["apps/{namespace}/*"]``. The attacker owns its namespace only: it creates
ManagedSecrets there naming the victim's key in every spelling a layer on the way might resolve (dot and
empty segments, percent-escapes, backslashes, control characters, ARNs, version smuggling), in ``data``
and in ``dataFrom``. Each one must end ``Ready=False`` with reason ``KeyNotAllowed``, no target Secret may
appear, and the victim's canary value may not appear anywhere the operator writes (DEBUG log, status,
events). A namespace the backend does not admit reads nothing at all. Real OpenBao and moto (Secrets
Manager and Parameter Store), the real control plane, the operator as in production.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from conftest import DebugLogCapture
from harness.moto_server import ACCOUNT_ID, MotoServer
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import ALLOWED_BACKENDS, Kube, allowed_for, wait_for
from leaks import assert_absent

pytestmark = [pytest.mark.cluster]


def path_escapes(attacker: str, victim: str) -> list[str]:
    """Keys that start inside the attacker's subtree and resolve (somewhere) to the victim's ``db``."""
    a, b = f"apps/{attacker}", f"apps/{victim}"
    return [
        f"{a}/../{victim}/db",
        f"{a}/./../{victim}/db",
        f"{a}/x/../../{victim}/db",
        f"{a}/x/y/../../../{victim}/db",
        f"{a}//../{victim}/db",
        f"/{a}/../{victim}/db",
        f"{a}/../{victim}/db/",
        f"{a}/../../{b}/db",
        f"{a}/%2e%2e/{victim}/db",
        f"{a}/%2E%2E/{victim}/db",
        f"{a}/.%2e/{victim}/db",
        f"{a}/x%2f..%2f..%2f{victim}%2fdb",
        f"{a}/%252e%252e/{victim}/db",
        f"{a}/..\\{victim}\\db",
        f"{a}/..;/{victim}/db",
        f"{a}/x?/../../{victim}/db",
        f"{a}/x#/../../{victim}/db",
        f"{a}/\x00/../../{victim}/db",
        f"{a}/x\n/../../{victim}/db",
        f"{a}/\u202e/../../{victim}/db",
        f"{a}/../{victim}/db ",
    ]


def create_attacks(
    kube: Kube,
    namespace: str,
    backend: str,
    refs: Sequence[dict[str, str]],
    *,
    prop: str | None,
    prefix: str = "",
) -> list[str]:
    """One ManagedSecret per ref in ``data``, and one per ref in ``dataFrom``; returns their names."""
    names = []
    backend_ref = {"kind": "ClusterSecretBackend", "name": backend}
    for index, ref in enumerate(refs):
        remote = {**ref, "property": prop} if prop else dict(ref)
        kube.create_ms(
            namespace,
            f"{prefix}data-{index}",
            {"backendRef": backend_ref, "data": [{"secretKey": "password", "remoteRef": remote}]},
        )
        kube.create_ms(
            namespace, f"{prefix}from-{index}", {"backendRef": backend_ref, "dataFrom": [{"extract": ref}]}
        )
        names += [f"{prefix}data-{index}", f"{prefix}from-{index}"]
    return names


#: A version that smuggles a path is refused as malformed (VersionNotFound) before it is judged ambiguous
#: (KeyNotAllowed), whichever check sees it first; either way nothing is read.
VERSION_REFUSALS = ("KeyNotAllowed", "VersionNotFound")


def assert_all_refused(
    kube: Kube,
    namespace: str,
    names: Sequence[str],
    reason: str | tuple[str, ...],
    canary: str,
    debug_log: DebugLogCapture,
) -> None:
    reasons = (reason,) if isinstance(reason, str) else reason
    for name in names:

        def refused(name: str = name) -> dict[str, Any] | None:
            cond = kube.ready(namespace, name)
            return cond if cond and cond["status"] == "False" and cond["reason"] in reasons else None

        cond = wait_for(refused, 60, what=f"{namespace}/{name} Ready=False reason in {reasons}")
        assert_absent(canary, json.dumps(cond), f"condition of {name}")
        assert kube.secret(namespace, name) is None, f"{name} wrote a Secret"
    for event in kube.events(namespace):
        assert_absent(canary, str(event.message), "events")
    assert_absent(canary, debug_log.text(), "the operator's DEBUG log")


@pytest.fixture
def tenants(kube: Kube, namespace: str) -> Iterator[tuple[str, str, str]]:
    """(platform, victim, outsider) namespaces next to the attacker's ``namespace``."""
    made = [f"{namespace[:55]}-{suffix}" for suffix in ("p", "b", "o")]
    for name in made:
        kube.core.create_namespace({"metadata": {"name": name}})
    yield made[0], made[1], made[2]
    for name in made:
        kube.core.delete_namespace(name, propagation_policy="Background")


# -- OpenBao ---------------------------------------------------------------------------------------------------


def test_vault_scoping_cannot_be_bypassed(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    tenants: tuple[str, str, str],
    debug_log: DebugLogCapture,
) -> None:
    platform, victim, outsider = tenants
    attacker = namespace
    canary = "team-b-canary-" + secrets.token_hex(10)
    client = openbao.client()
    for path, value in {
        f"apps/{victim}/db": canary,
        f"apps/{outsider}/db": canary,
        f"apps/{attacker}/ok": "mine",
        f"apps/{attacker}/x/ok": "mine-too",
    }.items():
        client.secrets.kv.v2.create_or_update_secret(
            path=path, secret={"password": value}, mount_point="secret"
        )
    name = f"shared-{attacker}"
    kube.create_cluster_vault_token_backend(
        name,
        platform,
        openbao.addr,
        openbao.root_token,
        [{"namespaces": [attacker, victim], "remoteKeys": ["apps/{namespace}/*"]}],
    )
    try:
        # The backend works for the attacker's own keys, in the spellings that mean the same path.
        backend_ref = {"kind": "ClusterSecretBackend", "name": name}
        for index, key in enumerate([f"apps/{attacker}/ok", f"/apps/{attacker}/x/ok/"]):
            kube.create_ms(
                attacker,
                f"own-{index}",
                {
                    "backendRef": backend_ref,
                    "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
                },
            )
        kube.wait_secret_data(attacker, "own-0", {"password": "mine"}, timeout=60)
        kube.wait_secret_data(attacker, "own-1", {"password": "mine-too"}, timeout=60)

        refs = [{"key": key} for key in path_escapes(attacker, victim)]
        refs += [{"key": key} for key in path_escapes(attacker, outsider)]
        refs += [
            {"key": f"apps/{victim}/db"},  # the plain ask
        ]
        names = create_attacks(kube, attacker, name, refs, prop="password")
        assert_all_refused(kube, attacker, names, "KeyNotAllowed", canary, debug_log)
        versions = [
            {"key": f"apps/{attacker}/ok", "version": f"1/../../{victim}/db"},
            {"key": f"apps/{attacker}/ok", "version": "%31"},
        ]
        names = create_attacks(kube, attacker, name, versions, prop="password", prefix="v")
        assert_all_refused(kube, attacker, names, VERSION_REFUSALS, canary, debug_log)
        cond = kube.ready(attacker, "data-0")
        assert cond is not None
        assert "ambiguous" in cond["message"]

        # A namespace no condition admits reads nothing, not even its "own" subtree.
        outsider_refs = [{"key": f"apps/{outsider}/db"}, {"key": f"apps/{outsider}/../{victim}/db"}]
        outsider_refs += [{"key": f"apps/{victim}/db"}]
        names = create_attacks(kube, outsider, name, outsider_refs, prop="password")
        assert_all_refused(kube, outsider, names, "BackendNotAllowed", canary, debug_log)
    finally:
        kube.delete_cluster_backend(name)


# -- AWS (moto) -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def aws_cluster_backend(
    kube: Kube,
    moto: MotoServer,
    name: str,
    platform: str,
    service: str,
    patterns: list[str],
    admitted: list[str],
) -> None:
    assert moto.reader is not None
    if kube.secret(platform, "aws-creds") is None:
        kube.create_secret(
            platform, "aws-creds", {"id": moto.reader.access_key_id, "secret": moto.reader.secret_access_key}
        )
    # Opt the shared credential in for this backend too, keeping the backends it already serves.
    current = kube.secret(platform, "aws-creds")
    assert current is not None
    listed = (current.metadata.annotations or {}).get(ALLOWED_BACKENDS, "")
    wanted = ",".join([b for b in listed.split(",") if b] + [f"ClusterSecretBackend/{name}"])
    kube.core.patch_namespaced_secret(
        "aws-creds", platform, {"metadata": {"annotations": allowed_for(*wanted.split(","))}}
    )
    kube.create_cluster_backend(
        name,
        {
            "aws": {
                "service": service,
                "region": moto.region,
                "endpoint": moto.endpoint,
                "auth": {
                    "secretRef": {
                        "accessKeyID": {"name": "aws-creds", "key": "id", "namespace": platform},
                        "secretAccessKey": {"name": "aws-creds", "key": "secret", "namespace": platform},
                    }
                },
            },
            "conditions": [{"namespaces": admitted, "remoteKeys": patterns}],
        },
    )


def test_secrets_manager_scoping_cannot_be_bypassed(
    operator: OperatorRunner,
    moto: MotoServer,
    kube: Kube,
    namespace: str,
    tenants: tuple[str, str, str],
    debug_log: DebugLogCapture,
) -> None:
    platform, victim, outsider = tenants
    attacker = namespace
    canary = "team-b-canary-" + secrets.token_hex(10)
    sm = moto.client("secretsmanager")
    victim_arn = sm.create_secret(Name=f"apps/{victim}/db", SecretString=json.dumps({"password": canary}))[
        "ARN"
    ]
    sm.create_secret(Name=f"apps/{outsider}/db", SecretString=json.dumps({"password": canary}))
    own_arn = sm.create_secret(Name=f"apps/{attacker}/ok", SecretString=json.dumps({"password": "mine"}))[
        "ARN"
    ]
    name = f"sm-{attacker}"
    arn_prefix = f"arn:aws:secretsmanager:{moto.region}:{ACCOUNT_ID}:secret"
    aws_cluster_backend(
        kube,
        moto,
        name,
        platform,
        "SecretsManager",
        ["apps/{namespace}/*", "arn:aws:secretsmanager:*:*:secret:apps/{namespace}/*"],
        [attacker, victim],
    )
    try:
        backend_ref = {"kind": "ClusterSecretBackend", "name": name}
        for index, key in enumerate([f"apps/{attacker}/ok", own_arn]):  # by name and by ARN
            kube.create_ms(
                attacker,
                f"own-{index}",
                {
                    "backendRef": backend_ref,
                    "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
                },
            )
            kube.wait_secret_data(attacker, f"own-{index}", {"password": "mine"}, timeout=60)

        keys = [
            *path_escapes(attacker, victim),
            f"apps/{victim}/db",
            victim_arn,  # the full ARN of the victim's secret
            f"{arn_prefix}:apps/{victim}/db",  # a partial ARN
            f"arn:aws:secretsmanager:eu-west-1:999999999999:secret:apps/{victim}/db",  # another region/account
            # A name inside the attacker's prefix followed by ':' fields: moto (and any lax ARN parser)
            # takes the last field as the name.
            f"{arn_prefix}:apps/{attacker}/x:apps/{victim}/db",
            f"{arn_prefix}:apps/{victim}/db:secret:apps/{attacker}/x",
            f"{arn_prefix}:apps/{attacker}/../{victim}/db",
            f"apps/{attacker}/x:{victim_arn}",
            f"ARN:aws:secretsmanager:{moto.region}:{ACCOUNT_ID}:secret:apps/{victim}/db",
        ]
        refs = [{"key": key} for key in keys]
        names = create_attacks(kube, attacker, name, refs, prop="password")
        assert_all_refused(kube, attacker, names, "KeyNotAllowed", canary, debug_log)
        versions = [
            {"key": f"apps/{attacker}/ok", "version": "uuid/../x"},
            {"key": f"apps/{attacker}/ok", "version": f"AWSCURRENT/../{victim}"},
        ]
        names = create_attacks(kube, attacker, name, versions, prop="password", prefix="v")
        assert_all_refused(kube, attacker, names, VERSION_REFUSALS, canary, debug_log)

        outsider_refs = [{"key": f"apps/{outsider}/db"}, {"key": victim_arn}, {"key": f"apps/{victim}/db"}]
        names = create_attacks(kube, outsider, name, outsider_refs, prop="password")
        assert_all_refused(kube, outsider, names, "BackendNotAllowed", canary, debug_log)
    finally:
        kube.delete_cluster_backend(name)


def test_parameter_store_scoping_cannot_be_bypassed(
    operator: OperatorRunner,
    moto: MotoServer,
    kube: Kube,
    namespace: str,
    tenants: tuple[str, str, str],
    debug_log: DebugLogCapture,
) -> None:
    platform, victim, _outsider = tenants
    attacker = namespace
    canary = "team-b-canary-" + secrets.token_hex(10)
    ssm = moto.client("ssm")
    for key, value in {f"/apps/{victim}/db": canary, f"/apps/{attacker}/ok": "mine"}.items():
        ssm.put_parameter(Name=key, Value=json.dumps({"password": value}), Type="SecureString")
    name = f"ssm-{attacker}"
    arn_prefix = f"arn:aws:ssm:{moto.region}:{ACCOUNT_ID}:parameter"
    aws_cluster_backend(
        kube,
        moto,
        name,
        platform,
        "ParameterStore",
        ["/apps/{namespace}/*", "arn:aws:ssm:*:*:parameter/apps/{namespace}/*"],
        [attacker, victim],
    )
    try:
        backend_ref = {"kind": "ClusterSecretBackend", "name": name}
        for index, key in enumerate([f"/apps/{attacker}/ok", f"{arn_prefix}/apps/{attacker}/ok"]):
            kube.create_ms(
                attacker,
                f"own-{index}",
                {
                    "backendRef": backend_ref,
                    "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
                },
            )
            kube.wait_secret_data(attacker, f"own-{index}", {"password": "mine"}, timeout=60)

        keys = [f"/{key}" for key in path_escapes(attacker, victim)] + [
            f"/apps/{victim}/db",
            f"{arn_prefix}/apps/{victim}/db",
            f"{arn_prefix}/apps/{attacker}/../{victim}/db",
            f"{arn_prefix}/apps/{attacker}/x:{arn_prefix}/apps/{victim}/db",
            f"/apps/{attacker}/ok:1",  # a selector smuggled into the name
            f"/apps/{attacker}//ok",
        ]
        refs = [{"key": key} for key in keys]
        names = create_attacks(kube, attacker, name, refs, prop="password")
        assert_all_refused(kube, attacker, names, "KeyNotAllowed", canary, debug_log)
        versions = [{"key": f"/apps/{attacker}/ok", "version": f"1/../../{victim}/db"}]
        names = create_attacks(kube, attacker, name, versions, prop="password", prefix="v")
        assert_all_refused(kube, attacker, names, VERSION_REFUSALS, canary, debug_log)
    finally:
        kube.delete_cluster_backend(name)
