"""Input limits a hostile or careless tenant hits, on the real API server and with the real operator.

Durations: the CRD's CEL rules, `managed-secrets check` and the operator's model agree on every value
(a floor of 1s on refreshInterval, at most a year, debounce at most 1h, nothing that overflows).
Versions: a malformed version is VersionNotFound before any read, and the Secret stays as it was.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from harness.moto_server import MotoServer
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, allowed_for, wait_for
from managed_secrets.check import Checker
from managed_secrets.errors import InvalidSpec
from managed_secrets.models.parse import parse_managed_secret

pytestmark = [pytest.mark.cluster]

#: (refreshInterval, accepted)
REFRESH_INTERVALS = [
    ("0", True),
    ("0s", True),
    ("1s", True),
    ("1000ms", True),
    ("1.5s", True),
    ("1h30m", True),
    ("8760h", True),
    ("525600m", True),
    ("1ms", False),
    ("999ms", False),
    ("0.5s", False),
    ("0.0001h", False),
    ("8761h", False),
    ("31536001s", False),
    ("99999999999999999999h", False),
    ("9" * 63 + "h", False),
    ("5 minutes", False),
    ("-1s", False),
]
#: (rollout.debounce, accepted)
DEBOUNCES = [
    ("0", True),
    ("1ms", True),
    ("10s", True),
    ("1h", True),
    ("61m", False),
    ("2h", False),
    ("99999999999999999999h", False),
]


def ms_body(namespace: str, name: str, **spec_extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "backendRef": {"name": "vault"},
        "data": [{"secretKey": "v", "remoteRef": {"key": "app/db", "property": "v"}}],
    }
    spec.update(spec_extra)
    return {
        "apiVersion": "managedsecrets.io/v1alpha1",
        "kind": "ManagedSecret",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def apiserver_accepts(kube: Kube, body: dict[str, Any]) -> tuple[bool, str]:
    """Server-side dry run: the schema and the CEL rules, nothing stored."""
    try:
        kube.custom.create_namespaced_custom_object(
            "managedsecrets.io",
            "v1alpha1",
            body["metadata"]["namespace"],
            "managedsecrets",
            body,
            dry_run="All",
        )
    except ApiException as error:
        if error.status != 422:
            raise
        return False, json.loads(error.body)["message"]
    return True, ""


def check_accepts(body: dict[str, Any]) -> tuple[bool, str]:
    problems = Checker().check_text(json.dumps(body), "ms.yaml")
    return not [p for p in problems if not p.warning], "\n".join(map(str, problems))


def model_accepts(body: dict[str, Any]) -> bool:
    try:
        parse_managed_secret(body)
    except InvalidSpec:
        return False
    return True


@pytest.mark.parametrize(("value", "accepted"), REFRESH_INTERVALS)
def test_refresh_interval_bounds_agree_everywhere(
    kube: Kube, namespace: str, value: str, accepted: bool
) -> None:
    body = ms_body(namespace, "interval", refreshInterval=value)
    server, message = apiserver_accepts(kube, body)
    assert server is accepted, message
    if not accepted and value[0].isdigit() and " " not in value:
        # Well-formed but out of bounds: one clear message, not an evaluation error of the rule.
        assert "refreshInterval must be 0 (fetch once) or from 1s to 8760h" in message, message
        assert "evaluating rule" not in message, message
        assert "overflow" not in message, message
    offline, problems = check_accepts(body)
    assert offline is accepted, problems
    assert model_accepts(body) is accepted


@pytest.mark.parametrize(("value", "accepted"), DEBOUNCES)
def test_rollout_debounce_bounds_agree_everywhere(
    kube: Kube, namespace: str, value: str, accepted: bool
) -> None:
    body = ms_body(namespace, "debounce", rollout={"auto": True, "debounce": value})
    server, message = apiserver_accepts(kube, body)
    assert server is accepted, message
    if not accepted:
        assert "rollout.debounce must be at most 1h" in message, message
    offline, problems = check_accepts(body)
    assert offline is accepted, problems
    assert model_accepts(body) is accepted


def test_check_without_cel_still_reports_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cel-python the operator's own rules say the same (the model runs offline)."""
    checker = Checker()
    monkeypatch.setattr(checker.cel, "_celpy", None)
    for value, accepted in REFRESH_INTERVALS:
        problems = checker.check_text(json.dumps(ms_body("ns", "x", refreshInterval=value)), "ms.yaml")
        assert (not problems) is accepted, (value, problems)
    out = io.StringIO()
    print(*checker.check_text(json.dumps(ms_body("ns", "x", refreshInterval="1ms")), "f.yaml"), file=out)
    assert "f.yaml:1: ManagedSecret ns/x: spec.refreshInterval: " in out.getvalue()
    assert "from 1s to 8760h" in out.getvalue()


# -- versions: VersionNotFound, the Secret as it was ----------------------------------------------------------

#: Versions no store accepts as a version of its own: each must fail, never read the latest.
BAD_VERSIONS = [
    "-1",
    "0",
    "1.5",
    "01",
    "latest",
    "+1",
    " 1",
    "1/../..",
    "\u0661",
]  # the last: ARABIC-INDIC DIGIT ONE


def wait_reason_for_generation(
    kube: Kube, namespace: str, name: str, reason: str | tuple[str, ...], timeout: float = 30
) -> dict[str, Any]:
    """The Ready condition computed for the object's current generation (not a stale one)."""
    generation = kube.get_ms(namespace, name)["metadata"]["generation"]

    def check() -> dict[str, Any] | None:
        cond = kube.ready(namespace, name)
        if cond and cond.get("observedGeneration") == generation:
            return cond
        return None

    cond = wait_for(check, timeout, what=f"{namespace}/{name} Ready for generation {generation}")
    reasons = (reason,) if isinstance(reason, str) else reason
    assert cond["status"] == "False", cond
    assert cond["reason"] in reasons, cond
    return cond


def pin(kube: Kube, namespace: str, name: str, version: str) -> None:
    spec = kube.get_ms(namespace, name)["spec"]
    spec["data"][0]["remoteRef"]["version"] = version
    kube.patch_ms(namespace, name, {"spec": {"data": spec["data"]}})


def assert_bad_versions_keep_the_secret(
    kube: Kube,
    namespace: str,
    name: str,
    expected: dict[str, str],
    versions: list[str],
    reasons: tuple[str, ...] = ("VersionNotFound",),
) -> None:
    before = kube.secret(namespace, name)
    assert before is not None
    for version in versions:
        pin(kube, namespace, name, version)
        cond = wait_reason_for_generation(kube, namespace, name, reasons)
        assert "version" in cond["message"], cond
        after = kube.secret(namespace, name)
        assert after is not None
        assert after.metadata.resource_version == before.metadata.resource_version, version
        assert kube.secret_data(namespace, name) == expected, version


def versioned_spec(backend: str, key: str, version: str | None, **extra: Any) -> dict[str, Any]:
    remote: dict[str, Any] = {"key": key, **extra}
    if version is not None:
        remote["version"] = version
    return {
        "backendRef": {"name": backend},
        "refreshInterval": "1h",
        "data": [{"secretKey": "v", "remoteRef": remote}],
    }


@pytest.mark.vault
def test_vault_malformed_versions_are_version_not_found(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    kv = openbao.client().secrets.kv.v2
    path = f"{namespace}/ver"
    kv.create_or_update_secret(path=path, secret={"v": "first"}, mount_point="secret")
    kv.create_or_update_secret(path=path, secret={"v": "second"}, mount_point="secret")
    kube.create_ms(namespace, "pinned", versioned_spec("vault", path, "1", property="v"))
    kube.wait_secret_data(namespace, "pinned", {"v": "first"})
    kube.wait_ready(namespace, "pinned")
    # "-1" and "0" mean "latest" to Vault: reading them would silently switch the Secret to "second".
    assert_bad_versions_keep_the_secret(kube, namespace, "pinned", {"v": "first"}, BAD_VERSIONS)
    pin(kube, namespace, "pinned", "2")  # and a good version still works after all that
    kube.wait_secret_data(namespace, "pinned", {"v": "second"})
    # Created with a bad version: no Secret at all.
    kube.create_ms(namespace, "fresh", versioned_spec("vault", path, "-1", property="v"))
    wait_reason_for_generation(kube, namespace, "fresh", "VersionNotFound")
    assert kube.secret(namespace, "fresh") is None


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def aws_backend(kube: Kube, moto: MotoServer, namespace: str, name: str, service: str) -> None:
    assert moto.reader is not None
    if kube.secret(namespace, "aws-creds") is None:
        kube.create_secret(
            namespace,
            "aws-creds",
            {"id": moto.reader.access_key_id, "secret": moto.reader.secret_access_key},
            annotations=allowed_for("sm", "ssm"),  # the backends of these tests
        )
    kube.create_backend(
        namespace,
        name,
        {
            "aws": {
                "service": service,
                "region": moto.region,
                "endpoint": moto.endpoint,
                "auth": {
                    "secretRef": {
                        "accessKeyID": {"name": "aws-creds", "key": "id"},
                        "secretAccessKey": {"name": "aws-creds", "key": "secret"},
                    }
                },
            }
        },
    )


def test_aws_malformed_versions_are_version_not_found(
    operator: OperatorRunner, moto: MotoServer, kube: Kube, namespace: str
) -> None:
    aws_backend(kube, moto, namespace, "sm", "SecretsManager")
    aws_backend(kube, moto, namespace, "ssm", "ParameterStore")
    sm = moto.client("secretsmanager")
    key = f"{namespace}/ver"
    sm.create_secret(Name=key, SecretString="first")
    sm.put_secret_value(SecretId=key, SecretString="second")
    ssm = moto.client("ssm")
    parameter = f"/{namespace}/ver"
    ssm.put_parameter(Name=parameter, Value="first", Type="String")
    ssm.put_parameter(Name=parameter, Value="second", Type="String", Overwrite=True)

    kube.create_ms(namespace, "sm", versioned_spec("sm", key, "AWSPREVIOUS"))
    kube.create_ms(namespace, "ssm", versioned_spec("ssm", parameter, "1"))
    kube.wait_secret_data(namespace, "sm", {"v": "first"})
    kube.wait_secret_data(namespace, "ssm", {"v": "first"})
    kube.wait_ready(namespace, "sm")
    kube.wait_ready(namespace, "ssm")
    # Secrets Manager: anything but a version id is a staging label, and these labels do not exist; a
    # label that carries a path or edge spaces is refused as ambiguous first (KeyNotAllowed, key scoping).
    assert_bad_versions_keep_the_secret(
        kube,
        namespace,
        "sm",
        {"v": "first"},
        [*BAD_VERSIONS, "uuid/"],
        reasons=("VersionNotFound", "KeyNotAllowed"),
    )
    # Parameter Store: "01" could be read as version 1 and "0" as nothing; both refused before any read.
    assert_bad_versions_keep_the_secret(
        kube, namespace, "ssm", {"v": "first"}, [*BAD_VERSIONS, "aws-x", "a:b"]
    )
    pin(kube, namespace, "ssm", "2")
    kube.wait_secret_data(namespace, "ssm", {"v": "second"})
