"""The CRDs are generated from the models: the checked-in copies are what the generator writes, the
schemas are structural, both backend kinds share the provider blocks, and every CEL rule the API server
applies is one the operator's own validation applies too."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from managed_secrets import crdgen
from managed_secrets.api import CLUSTER_SECRET_BACKEND_KIND, MANAGED_SECRET_KIND, SECRET_BACKEND_KIND
from managed_secrets.check import Checker
from managed_secrets.errors import InvalidBackend
from managed_secrets.models.managedsecret import BackendKind, ManagedSecretSpec
from managed_secrets.models.parse import parse_backend
from managed_secrets.models.schema import PER_KIND
from managed_secrets.providers.base import ProviderContext
from managed_secrets.providers.guard import BackendName, CredentialPolicy, EndpointAllowlist
from managed_secrets.providers.registry import ProviderRegistry

REPO = Path(__file__).resolve().parents[2]
KEYWORDS = set(crdgen._KEY_ORDER)


def test_checked_in_crds_are_generated() -> None:
    stale = crdgen.stale(REPO)
    assert stale == [], f"out of date: {', '.join(stale)}; run {crdgen.COMMAND}"


def test_a_changed_copy_is_reported(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    assert crdgen.stale(tmp_path) == []
    victim = tmp_path / "charts/managed-secrets/crds/managedsecrets.io_secretbackends.yaml"
    victim.write_text(victim.read_text().replace("maxLength: 2048", "maxLength: 4096", 1))
    (tmp_path / "crds/extra.yaml").write_text("{}\n")
    assert crdgen.stale(tmp_path) == [
        "crds/extra.yaml",
        "charts/managed-secrets/crds/managedsecrets.io_secretbackends.yaml",
    ]
    crdgen.write(tmp_path)
    assert crdgen.stale(tmp_path) == []


def test_output_is_stable() -> None:
    assert crdgen.generate() == crdgen.generate()


def schemas() -> dict[str, dict[str, Any]]:
    return {
        kind.kind: yaml.safe_load(text.split("---\n", 1)[1])["spec"]["versions"][0]["schema"][
            "openAPIV3Schema"
        ]
        for kind, text in zip(crdgen.KINDS, crdgen.generate().values(), strict=True)
    }


def nodes(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from nodes(schema[key], f"{path}[]")


@pytest.mark.parametrize("kind", [MANAGED_SECRET_KIND, SECRET_BACKEND_KIND, CLUSTER_SECRET_BACKEND_KIND])
def test_schemas_are_structural(kind: str) -> None:
    schema = schemas()[kind]
    for path, node in nodes(schema):
        assert set(node) <= KEYWORDS, f"{kind}{path}: {set(node) - KEYWORDS}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{kind}{path}: no type"
        assert PER_KIND not in node
    status = schema["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    assert {"observedGeneration", "conditions"} <= set(status["properties"])
    unknown = [path for path, node in nodes(schema) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert unknown == ([] if kind == MANAGED_SECRET_KIND else [".spec.plugin.config"])


def without_texts(node: Any) -> Any:
    """``node`` without descriptions and without the rules that differ by kind."""
    if isinstance(node, list):
        return [without_texts(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: without_texts(value) for key, value in node.items() if key != "description"}
    rules = [r for r in out.get("x-kubernetes-validations", []) if "has(self.namespace)" not in r["rule"]]
    if rules:
        out["x-kubernetes-validations"] = rules
    else:
        out.pop("x-kubernetes-validations", None)
    return out


def test_backend_kinds_share_the_provider_blocks() -> None:
    namespaced = schemas()[SECRET_BACKEND_KIND]["properties"]["spec"]
    cluster = schemas()[CLUSTER_SECRET_BACKEND_KIND]["properties"]["spec"]
    blocks = [*crdgen.provider_models(), "plugin"]
    assert list(namespaced["properties"]) == blocks
    assert list(cluster["properties"]) == [*blocks, "conditions"]
    for block in blocks:
        assert without_texts(namespaced["properties"][block]) == without_texts(cluster["properties"][block])
    ref = cluster["properties"]["vault"]["properties"]["auth"]["properties"]["token"]["properties"][
        "secretRef"
    ]
    assert ref["x-kubernetes-validations"][0]["rule"] == "has(self.namespace)"
    ref = namespaced["properties"]["vault"]["properties"]["auth"]["properties"]["token"]["properties"][
        "secretRef"
    ]
    assert ref["x-kubernetes-validations"][0]["rule"] == "!has(self.namespace)"


@pytest.mark.parametrize("kind", [SECRET_BACKEND_KIND, CLUSTER_SECRET_BACKEND_KIND])
def test_backends_show_their_ready_condition(kind: str) -> None:
    crd = next(crd for crd in map(crdgen.crd, crdgen.KINDS) if crd["spec"]["names"]["kind"] == kind)
    version = crd["spec"]["versions"][0]
    assert [column["name"] for column in version["additionalPrinterColumns"]] == ["Ready", "Reason", "Age"]
    assert version["subresources"] == {"status": {}}


# -- the API server's CEL rules and the operator's validation agree -----------------------------------------

MS_BASE: dict[str, Any] = {
    "backendRef": {"name": "vault"},
    "data": [{"secretKey": "a", "remoteRef": {"key": "k"}}],
}
VAULT: dict[str, Any] = {
    "server": "https://vault.example.com",
    "auth": {"token": {"secretRef": {"name": "t", "key": "t"}}},
}
SA = {"name": "sa", "namespace": "ops"}
KEYS = {"accessKeyID": {"name": "k", "key": "id"}, "secretAccessKey": {"name": "k", "key": "s"}}

#: (spec of a ManagedSecret, the CEL message it breaks)
MANAGED_SECRET_CASES = [
    ({**MS_BASE, "data": []}, "set at least one of data or dataFrom"),
    ({**MS_BASE, "refreshInterval": "500ms"}, "refreshInterval must be 0 (fetch once) or from 1s to 8760h"),
    ({**MS_BASE, "refreshInterval": "8761h"}, "refreshInterval must be 0 (fetch once) or from 1s to 8760h"),
    ({**MS_BASE, "refreshInterval": "123456789012h"}, "refreshInterval must be 0 (fetch once)"),
    ({**MS_BASE, "rollout": {"debounce": "61m"}}, "rollout.debounce must be at most 1h"),
    (
        {**MS_BASE, "target": {"template": {"data": {"a": "x"}, "binaryData": {"a": "eA=="}}}},
        "a key can be in template.data or template.binaryData, not both",
    ),
    (
        {**MS_BASE, "target": {"template": {"data": {"a/b": "x"}}}},
        "template.data keys must be valid Secret keys",
    ),
    (
        {**MS_BASE, "target": {"template": {"binaryData": {"a b": "x"}}}},
        "template.binaryData keys must be valid Secret keys",
    ),
]

#: (kind, spec of a backend, the CEL message it breaks)
BACKEND_CASES = [
    (SECRET_BACKEND_KIND, {}, "set exactly one provider block"),
    (SECRET_BACKEND_KIND, {"vault": VAULT, "plugin": {"name": "x"}}, "set exactly one provider block"),
    (
        SECRET_BACKEND_KIND,
        {"vault": {**VAULT, "auth": {}}},
        "set exactly one of vault.auth.token, vault.auth.kubernetes or vault.auth.appRole",
    ),
    (
        SECRET_BACKEND_KIND,
        {
            "vault": {
                **VAULT,
                "auth": {**VAULT["auth"], "appRole": {"roleId": "r", "secretRef": {"name": "t", "key": "t"}}},
            }
        },
        "set exactly one of vault.auth.token",
    ),
    (
        SECRET_BACKEND_KIND,
        {
            "aws": {
                "region": "eu-west-1",
                "auth": {"secretRef": KEYS, "jwt": {"serviceAccountRef": {"name": "sa"}}},
            }
        },
        "set at most one of aws.auth.secretRef or aws.auth.jwt",
    ),
    (
        SECRET_BACKEND_KIND,
        {"aws": {"region": "eu-west-1", "auth": {"jwt": {"serviceAccountRef": {"name": "sa"}}}}},
        "aws.role is required with aws.auth.jwt",
    ),
    (
        SECRET_BACKEND_KIND,
        {"aws": {"region": "eu-west-1", "externalID": "abc"}},
        "aws.externalID needs aws.role",
    ),
    (
        SECRET_BACKEND_KIND,
        {
            "azure": {
                "vaultURL": "https://x.vault.azure.net",
                "authSecretRef": {
                    "clientID": {"name": "a", "key": "b"},
                    "clientSecret": {"name": "a", "key": "c"},
                },
            }
        },
        "azure.authType ServicePrincipal needs authSecretRef and tenantID",
    ),
    (
        SECRET_BACKEND_KIND,
        {
            "azure": {
                "vaultURL": "https://x.vault.azure.net",
                "authType": "WorkloadIdentity",
                "tenantID": "t",
                "serviceAccountRef": {"name": "sa"},
            }
        },
        "azure.authType WorkloadIdentity needs serviceAccountRef, clientID and tenantID",
    ),
    (
        CLUSTER_SECRET_BACKEND_KIND,
        {
            "vault": {**VAULT, "auth": {"kubernetes": {"role": "r", "serviceAccountRef": SA}}},
            "conditions": [{"remoteKeys": ["a/*"]}],
        },
        "a condition must set namespaces or namespaceSelector",
    ),
    (
        CLUSTER_SECRET_BACKEND_KIND,
        {
            "vault": {**VAULT, "auth": {"kubernetes": {"role": "r", "serviceAccountRef": SA}}},
            "conditions": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}}],
        },
        "values must be set for In and NotIn",
    ),
    (
        CLUSTER_SECRET_BACKEND_KIND,
        {
            "vault": {**VAULT, "auth": {"kubernetes": {"role": "r", "serviceAccountRef": SA}}},
            "conditions": [
                {
                    "namespaceSelector": {
                        "matchExpressions": [{"key": "t", "operator": "Exists", "values": ["a"]}]
                    }
                }
            ],
        },
        "values must be set for In and NotIn",
    ),
]


def manifest(kind: str, spec: Mapping[str, Any]) -> str:
    metadata = {"name": "x", "namespace": "team-a"} if kind != CLUSTER_SECRET_BACKEND_KIND else {"name": "x"}
    return yaml.safe_dump(
        {"apiVersion": "managedsecrets.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}
    )


def cel_problems(kind: str, spec: Mapping[str, Any]) -> str:
    return "\n".join(str(problem) for problem in Checker().check_text(manifest(kind, spec), "x.yaml"))


@pytest.mark.parametrize(("spec", "message"), MANAGED_SECRET_CASES)
def test_managed_secret_rules_agree(spec: dict[str, Any], message: str) -> None:
    assert message in cel_problems(MANAGED_SECRET_KIND, spec)
    with pytest.raises(ValidationError):
        ManagedSecretSpec.model_validate(spec)


def operator_refuses(kind: str, spec: Mapping[str, Any]) -> bool:
    """Whether the operator refuses the backend: parsing it, or building its provider (which checks the
    provider's own rules before contacting anything)."""
    body = {"kind": kind, "metadata": {"name": "x", "namespace": "team-a"}, "spec": spec}
    try:
        backend = parse_backend(body)
    except InvalidBackend:
        return True
    namespace = "team-a" if kind == SECRET_BACKEND_KIND else None
    context = ProviderContext(
        credentials=None,  # type: ignore[arg-type]  # never reached: the rules come first
        default_namespace=namespace,
        backend_label=f"{kind} x",
        backend=BackendName(BackendKind(kind), "x"),
        policy=CredentialPolicy(
            endpoints=EndpointAllowlist.from_patterns(
                ["https://vault.example.com", "https://x.vault.azure.net"]
            ),
            operator_identity_for_secretbackends=True,
        ),
    )
    try:
        provider = ProviderRegistry(load_entry_points=False).factory(backend.provider)(
            backend.config, context
        )
    except InvalidBackend:
        return True
    provider.close()
    return False


@pytest.mark.parametrize(("kind", "spec", "message"), BACKEND_CASES)
def test_backend_rules_agree(kind: str, spec: dict[str, Any], message: str) -> None:
    assert message in cel_problems(kind, spec)
    assert operator_refuses(kind, spec)
