"""The reconcile core, driven by data: tests/data/reconcile/input/<case>.yaml in, output/<case>.yaml out.

A case is two files. The input holds the ManagedSecret, its backends (``memory`` blocks naming the store
``reconcile``), the store's contents (a list is a key's versions, oldest first), the Secret that exists before
the sync if any, and namespace labels and other ManagedSecrets when the case needs them. The output holds the
SyncResult (``result``) or the refusal (``error``: its reason and a part of its message), the writes made,
and the Secret afterwards: type, data (as text), and the labels, annotations and owner references listed
(those not listed are not compared). Ownership proofs are HMACs, so they are named rather than spelled:
``proof: owner`` on an existing Secret adds this ManagedSecret's proof, ``proof: forged`` one made with
another key; in the output, ``proofs`` lists the proofs that verify (owner, merge).

The sync runs through the in-memory provider (found through its entry point) and the fake cluster.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from managed_secrets.api import (
    MERGE_PROOF_ANNOTATION,
    MERGED_KEYS_ANNOTATION,
    OWNER_PROOF_ANNOTATION,
)
from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.ownership import merge_claim, merge_proof, owner_proof, proves_owner, split_keys
from managed_secrets.core.ports import OwnerReference, SecretObject
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.reconcile import Reconciler
from managed_secrets.errors import SyncError
from managed_secrets.models.managedsecret import ManagedSecret
from managed_secrets.models.parse import parse_managed_secret
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.testing import FakeCluster, MemoryStore, drop_store, memory_store

DATA = Path(__file__).resolve().parent.parent / "data" / "reconcile"
CASES = sorted(path.stem for path in (DATA / "input").glob("*.yaml"))
STORE = "reconcile"
KEY = b"reconcile-fixtures-operator-key!"
OTHER_KEY = b"another-operator-key-for-forging"


def load(kind: str, case: str) -> dict[str, Any]:
    with (DATA / kind / f"{case}.yaml").open(encoding="utf-8") as file:
        loaded = yaml.safe_load(file)
    assert isinstance(loaded, dict), f"{kind}/{case}.yaml holds no mapping"
    return loaded


def owner_refs(items: list[Mapping[str, Any]] | None) -> tuple[OwnerReference, ...]:
    return tuple(
        OwnerReference(
            api_version=item.get("apiVersion", "managedsecrets.io/v1alpha1"),
            kind=item["kind"],
            name=item["name"],
            uid=item["uid"],
            controller=item.get("controller", True),
        )
        for item in items or []
    )


def existing_secret(spec: Mapping[str, Any], namespace: str, uid: str) -> SecretObject:
    data = {k: str(v).encode() for k, v in (spec.get("data") or {}).items()}
    data |= {k: base64.b64decode(v) for k, v in (spec.get("binaryData") or {}).items()}
    annotations = dict(spec.get("annotations") or {})
    name = spec["name"]
    proof = spec.get("proof")
    if proof in ("owner", "forged"):
        annotations[OWNER_PROOF_ANNOTATION] = owner_proof(
            KEY if proof == "owner" else OTHER_KEY, namespace, name, uid
        )
    elif proof == "merge":
        keys = split_keys(annotations.get(MERGED_KEYS_ANNOTATION))
        annotations[MERGE_PROOF_ANNOTATION] = merge_proof(KEY, namespace, name, uid, keys)
    elif proof is not None:
        raise ValueError(f"unknown proof {proof!r}: owner, forged or merge")
    return SecretObject(
        namespace=namespace,
        name=name,
        type=spec.get("type", "Opaque"),
        data=data,
        labels=dict(spec.get("labels") or {}),
        annotations=annotations,
        owner_references=owner_refs(spec.get("ownerReferences")),
        immutable=bool(spec.get("immutable", False)),
    )


def describe(secret: SecretObject | None, uid: str) -> dict[str, Any] | None:
    """A Secret as the output files spell it."""
    if secret is None:
        return None
    proofs = []
    if proves_owner(KEY, secret, uid):
        proofs.append("owner")
    claim = merge_claim(secret)
    if claim is not None and claim.proven_for(KEY, secret, uid):
        proofs.append("merge")
    return {
        "type": secret.type,
        "data": {k: v.decode("utf-8", "backslashreplace") for k, v in sorted(secret.data.items())},
        "labels": dict(secret.labels),
        "annotations": {
            k: v
            for k, v in secret.annotations.items()
            if k not in (OWNER_PROOF_ANNOTATION, MERGE_PROOF_ANNOTATION)
        },
        "ownerReferences": [
            {
                "apiVersion": o.api_version,
                "kind": o.kind,
                "name": o.name,
                "uid": o.uid,
                "controller": o.controller,
            }
            for o in secret.owner_references
        ],
        "proofs": proofs,
        "immutable": secret.immutable,
    }


def outcome(reconciler: Reconciler, ms: ManagedSecret, options: Mapping[str, Any]) -> dict[str, Any]:
    """The SyncResult, or the refusal, as the output files spell them."""
    try:
        result = reconciler.sync(ms, **options)
    except SyncError as error:
        return {"error": {"reason": error.reason.value, "message": error.message}}
    return {
        "result": {
            "action": result.action.value,
            "keys": list(result.keys),
            "dataChanged": result.data_changed,
        }
    }


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    drop_store(STORE)
    yield memory_store(STORE)
    drop_store(STORE)


def test_cases_come_in_pairs() -> None:
    outputs = sorted(path.stem for path in (DATA / "output").glob("*.yaml"))
    assert outputs == CASES
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES)
def test_reconcile(case: str, store: MemoryStore) -> None:
    given, expected = load("input", case), load("output", case)
    unknown = set(expected) - {"result", "error", "writes", "secret"}
    assert not unknown, f"output/{case}.yaml: unknown fields {sorted(unknown)}"
    store.seed(given.get("store") or {})
    for identity in given.get("storeRefuses") or []:
        store.refuse(identity)
    cluster = FakeCluster()
    for body in given.get("backends") or []:
        cluster.add_backend(body)
    for namespace, labels in (given.get("namespaceLabels") or {}).items():
        cluster.set_namespace_labels(namespace, labels)
    body = given["managedSecret"]
    ms = parse_managed_secret(body)
    ns, uid = ms.ref.namespace, ms.ref.uid
    cluster.add_managed_secret(
        ns, ms.ref.name, uid, secret_name=ms.target_name, creation_policy=ms.spec.target.creation_policy.value
    )
    for other in given.get("otherManagedSecrets") or []:
        cluster.add_managed_secret(
            ns,
            other["name"],
            other["uid"],
            secret_name=other.get("secretName"),
            creation_policy=other.get("creationPolicy", "Owner"),
        )
    for spec in given.get("existing") or []:
        cluster.add_secret(existing_secret(spec, ns, uid))
    before = describe(cluster.get(ns, ms.target_name), uid)

    reconciler = Reconciler(
        cluster, ProviderPool(ProviderRegistry(), cluster), ReadCache(), operator_key=lambda: KEY
    )
    got = outcome(reconciler, ms, given.get("sync") or {})
    if "error" in expected:
        want_error = expected["error"]
        assert got.get("error", {}).get("reason") == want_error["reason"], got
        assert want_error["messageContains"] in got["error"]["message"]
    else:
        assert got == {"result": expected["result"]}

    assert [w.verb for w in cluster.writes] == expected.get("writes", [])
    after = describe(cluster.get(ns, ms.target_name), uid)
    want = expected.get("secret")
    if want == "unchanged":
        assert after == before
        return
    if want is None:
        assert after is None
        return
    assert after is not None, f"{case}: no Secret {ms.target_name}"
    assert {"type", "data"} <= set(want), (
        f"output/{case}.yaml: the secret's type and data are always compared"
    )
    unknown = set(want) - set(after)
    assert not unknown, f"output/{case}.yaml: unknown secret fields {sorted(unknown)}"
    assert {field: after[field] for field in want} == want
