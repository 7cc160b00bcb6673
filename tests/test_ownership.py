"""Secrets are never lost or taken over: each attack on the real control plane, with canary values.

A tenant may create Secrets and ManagedSecrets in its own namespace only; each test plays one such tenant
against a victim Secret and checks that the victim keeps every key and value, that the attacking
ManagedSecret ends Ready=False with a stable reason, and that the owner stays correct.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from conftest import DebugLogCapture
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from leaks import assert_absent

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

PROOF = "managedsecrets.io/owner-proof"


def put(openbao: OpenBao, path: str, data: dict[str, Any]) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def spec(key: str, *fields: str, **target: Any) -> dict[str, Any]:
    return {
        "backendRef": {"name": "vault"},
        "refreshInterval": "1h",
        "data": [{"secretKey": f, "remoteRef": {"key": key, "property": f}} for f in fields or ("password",)],
        "target": target,
    }


def canary() -> str:
    return "canary-" + secrets.token_hex(10)


def gone(kube: Kube, namespace: str, name: str) -> bool:
    try:
        kube.get_ms(namespace, name)
    except k8s.ApiException as error:
        return bool(error.status == 404)
    return False


def delete_and_wait(kube: Kube, namespace: str, name: str) -> None:
    kube.delete_ms(namespace, name)
    wait_for(lambda: gone(kube, namespace, name), 30, what=f"deletion of ManagedSecret {name}")


def assert_no_leak(value: str, kube: Kube, namespace: str, debug_log: DebugLogCapture, *names: str) -> None:
    assert_absent(value, debug_log.text(), "the operator's log")
    assert_absent(value, " ".join(str(e.message) for e in kube.events(namespace)), "events")
    for name in names:
        assert_absent(value, str(kube.get_ms(namespace, name).get("status")), f"status of {name}")


@pytest.fixture
def other_namespace(kube: Kube, namespace: str) -> Iterator[str]:
    name = f"{namespace[:50]}-b"
    kube.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    kube.core.delete_namespace(name, propagation_policy="Background")


# -- 1. a change the API server would refuse leaves the Secret in place -------------------------------------


def test_type_change_to_a_type_the_data_cannot_satisfy_keeps_the_secret(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    debug_log: DebugLogCapture,
) -> None:
    value = canary()
    put(openbao, f"{namespace}/db", {"username": "app", "password": value})
    kube.create_ms(namespace, "db", spec(f"{namespace}/db", "username", "password"))
    kube.wait_secret_data(namespace, "db", {"username": "app", "password": value})
    kube.wait_ready(namespace, "db")
    before = kube.existing_secret(namespace, "db")

    for wanted, missing in [
        ("kubernetes.io/tls", "tls.crt"),
        ("kubernetes.io/dockerconfigjson", ".dockerconfigjson"),
        ("kubernetes.io/ssh-auth", "ssh-privatekey"),
        ("kubernetes.io/service-account-token", "kubernetes.io/service-account.name"),
    ]:
        kube.patch_ms(namespace, "db", {"spec": {"target": {"type": wanted}}})
        cond = kube.wait_ready(namespace, "db", "False", "TargetRejected")

        def refused(w: str = wanted) -> bool:
            return w in kube.ready_now(namespace, "db")["message"]

        wait_for(refused, 30, what=f"refusal of {wanted}")
        assert missing in kube.ready_now(namespace, "db")["message"]
        secret = kube.secret(namespace, "db")
        assert secret is not None, f"changing the type to {wanted} lost the Secret"
        assert secret.metadata.uid == before.metadata.uid
        assert secret.type == "Opaque"
        assert kube.secret_data(namespace, "db") == {"username": "app", "password": value}
    assert cond["reason"] == "TargetRejected"
    assert kube.get_ms(namespace, "db")["status"]["secretName"] == "db"

    # A type the data satisfies: the Secret is replaced, once, and the data is the same.
    kube.patch_ms(namespace, "db", {"spec": {"target": {"type": "kubernetes.io/basic-auth"}}})
    wait_for(
        lambda: (s := kube.secret(namespace, "db")) is not None and s.type == "kubernetes.io/basic-auth",
        30,
        what="the Secret of the new type",
    )
    kube.wait_ready(namespace, "db")
    assert kube.secret_data(namespace, "db") == {"username": "app", "password": value}
    assert PROOF in kube.existing_secret(namespace, "db").metadata.annotations
    assert_no_leak(value, kube, namespace, debug_log, "db")


def test_type_change_refused_only_by_the_api_server_keeps_the_secret(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    """What the operator does not mirror (here a label value the API server refuses) the dry run catches."""
    value = canary()
    put(openbao, f"{namespace}/db", {"password": value})
    kube.create_ms(namespace, "db", spec(f"{namespace}/db"))
    kube.wait_secret_data(namespace, "db", {"password": value})
    kube.wait_ready(namespace, "db")
    uid = kube.existing_secret(namespace, "db").metadata.uid
    writes = dict(operator.runtime.cluster.secret_writes)
    kube.patch_ms(
        namespace,
        "db",
        {"spec": {"target": {"type": "example.com/custom", "labels": {"tier": "not valid!"}}}},
    )
    cond = kube.wait_ready(namespace, "db", "False", "TargetRejected")
    assert "would refuse" in cond["message"]
    assert "metadata.labels" in cond["message"]
    time.sleep(1)
    secret = kube.secret(namespace, "db")
    assert secret is not None
    assert (secret.metadata.uid, secret.type) == (uid, "Opaque")
    assert kube.secret_data(namespace, "db") == {"password": value}
    assert operator.runtime.cluster.secret_writes["delete"] == writes["delete"], "never deleted"


def test_immutable_secret_is_left_as_it_is_until_deleted(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    debug_log: DebugLogCapture,
) -> None:
    first, second = canary(), canary()
    put(openbao, f"{namespace}/db", {"password": first})
    kube.create_ms(namespace, "db", spec(f"{namespace}/db"))
    kube.wait_secret_data(namespace, "db", {"password": first})
    kube.core.patch_namespaced_secret("db", namespace, {"immutable": True})

    # Labels may still change on an immutable Secret: the operator writes them and keeps it immutable.
    kube.patch_ms(namespace, "db", {"spec": {"target": {"labels": {"team": "a"}}}})
    wait_for(
        lambda: (kube.existing_secret(namespace, "db").metadata.labels or {}).get("team") == "a",
        30,
        what="label",
    )
    assert kube.existing_secret(namespace, "db").immutable

    put(openbao, f"{namespace}/db", {"password": second})
    kube.force_sync(namespace, "db")
    cond = kube.wait_ready(namespace, "db", "False", "TargetImmutable")
    assert "immutable" in cond["message"]
    kube.patch_ms(namespace, "db", {"spec": {"target": {"type": "example.com/custom"}}})
    wait_for(
        lambda: "data and type" in kube.ready_now(namespace, "db")["message"],
        30,
        what="the type change refused",
    )
    assert kube.ready_now(namespace, "db")["reason"] == "TargetImmutable"
    assert kube.secret_data(namespace, "db") == {"password": first}
    assert kube.existing_secret(namespace, "db").type == "Opaque"

    kube.core.delete_namespaced_secret("db", namespace)  # what the message asks for
    kube.wait_secret_data(namespace, "db", {"password": second})
    kube.wait_ready(namespace, "db")
    assert kube.existing_secret(namespace, "db").type == "example.com/custom"
    assert_no_leak(second, kube, namespace, debug_log, "db")


# -- 2. a Merge never reaches into a Secret a ManagedSecret owns (and the reverse) ---------------------------


def test_merge_into_a_secret_owned_by_another_managed_secret_is_refused(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    value = canary()
    put(openbao, f"{namespace}/owner", {"password": value})
    put(openbao, f"{namespace}/evil", {"password": "attacker"})
    kube.create_ms(namespace, "owner", spec(f"{namespace}/owner", name="shared"))
    kube.wait_secret_data(namespace, "shared", {"password": value})
    version = kube.existing_secret(namespace, "shared").metadata.resource_version

    kube.create_ms(namespace, "merger", spec(f"{namespace}/evil", name="shared", creationPolicy="Merge"))
    cond = kube.wait_ready(namespace, "merger", "False", "TargetExists")
    assert "managed by ManagedSecret owner" in cond["message"]
    assert "Merge only adds keys to Secrets no ManagedSecret owns" in cond["message"]
    assert kube.existing_secret(namespace, "shared").metadata.resource_version == version

    delete_and_wait(kube, namespace, "merger")  # Merge + Delete: its finalizer must not empty the Secret
    time.sleep(1)
    assert kube.secret_data(namespace, "shared") == {"password": value}
    kube.force_sync(namespace, "owner")
    time.sleep(1)
    assert kube.wait_ready(namespace, "owner")["reason"] == "Synced"
    assert kube.secret_data(namespace, "shared") == {"password": value}


def test_owner_targeting_a_secret_that_receives_merged_keys_is_refused(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    value = canary()
    kube.create_secret(namespace, "shared", {"mine": value})
    put(openbao, f"{namespace}/k", {"password": "merged"})
    kube.create_ms(namespace, "merger", spec(f"{namespace}/k", name="shared", creationPolicy="Merge"))
    kube.wait_secret_data(namespace, "shared", {"mine": value, "password": "merged"})
    version = kube.existing_secret(namespace, "shared").metadata.resource_version

    kube.create_ms(namespace, "owner", spec(f"{namespace}/k", name="shared", creationPolicy="Orphan"))
    cond = kube.wait_ready(namespace, "owner", "False", "TargetExists")
    assert "receives merged keys from ManagedSecret merger" in cond["message"]
    delete_and_wait(kube, namespace, "owner")  # Orphan + Delete: its finalizer must not delete the Secret
    secret = kube.secret(namespace, "shared")
    assert secret is not None
    assert secret.metadata.resource_version == version
    assert kube.ready_now(namespace, "merger")["status"] == "True"


# -- 3. ownership is proven, not claimed ---------------------------------------------------------------------


def test_pre_created_look_alike_is_not_taken_over(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    """Label, owner annotation and even a controller ownerReference with the right UID: still not ours."""
    value, planted = canary(), canary()
    put(openbao, f"{namespace}/db", {"password": value})
    # The ManagedSecret exists first (its UID is readable) but cannot sync yet: its backend is missing.
    ms = kube.create_ms(namespace, "db", {**spec(f"{namespace}/db"), "backendRef": {"name": "later"}})
    kube.wait_ready(namespace, "db", "False", "BackendNotFound")
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(
            name="db",
            labels={"managedsecrets.io/managed": "true"},
            annotations={"managedsecrets.io/owner": "db", "reflector.example/copy-to": "attacker-ns"},
            owner_references=[
                k8s.V1OwnerReference(
                    api_version="managedsecrets.io/v1alpha1",
                    kind="ManagedSecret",
                    name="db",
                    uid=ms["metadata"]["uid"],
                    controller=True,
                )
            ],
        ),
        string_data={"password": planted, "extra": planted},
    )
    kube.core.create_namespaced_secret(namespace, body)
    version = kube.existing_secret(namespace, "db").metadata.resource_version
    kube.patch_ms(namespace, "db", {"spec": {"backendRef": {"name": "vault"}}})
    cond = kube.wait_ready(namespace, "db", "False", "TargetExists")
    assert "no ownership proof" in cond["message"]
    time.sleep(1)
    assert kube.existing_secret(namespace, "db").metadata.resource_version == version
    assert kube.secret_data(namespace, "db") == {"password": planted, "extra": planted}


def test_proof_copied_from_another_namespace_is_not_accepted(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    other_namespace: str,
    vault_backend: str,
) -> None:
    value, planted = canary(), canary()
    put(openbao, f"{namespace}/db", {"password": value})
    kube.create_ms(namespace, "db", spec(f"{namespace}/db"))
    kube.wait_secret_data(namespace, "db", {"password": value})
    genuine = kube.existing_secret(namespace, "db").metadata
    # The tenant of the other namespace copies every marker, proof included, onto a Secret of its own...
    kube.core.create_namespaced_secret(
        other_namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="db", labels=genuine.labels, annotations=genuine.annotations),
            string_data={"password": planted, "extra": planted},
        ),
    )
    kube.create_vault_token_backend(other_namespace, openbao.addr, openbao.root_token)
    # ...and a ManagedSecret of the same name there: the proof does not hold for its namespace (nor UID).
    kube.create_ms(other_namespace, "db", spec(f"{namespace}/db"))
    cond = kube.wait_ready(other_namespace, "db", "False", "TargetExists")
    assert "not valid for this ManagedSecret" in cond["message"]
    assert kube.secret_data(other_namespace, "db") == {"password": planted, "extra": planted}
    assert kube.secret_data(namespace, "db") == {"password": value}


def test_two_managed_secrets_one_target(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    value = canary()
    put(openbao, f"{namespace}/first", {"password": value})
    put(openbao, f"{namespace}/second", {"password": "attacker"})
    kube.create_ms(namespace, "first", spec(f"{namespace}/first", name="shared"))
    kube.wait_secret_data(namespace, "shared", {"password": value})
    version = kube.existing_secret(namespace, "shared").metadata.resource_version
    for policy in ("Owner", "Orphan"):
        kube.create_ms(namespace, "second", spec(f"{namespace}/second", name="shared", creationPolicy=policy))
        cond = kube.wait_ready(namespace, "second", "False", "TargetExists")
        assert "managed by ManagedSecret first" in cond["message"]
        delete_and_wait(kube, namespace, "second")  # deletionPolicy Delete: neither GC nor the finalizer
        time.sleep(1)
        secret = kube.secret(namespace, "shared")
        assert secret is not None
        assert secret.metadata.resource_version == version
    kube.force_sync(namespace, "first")
    kube.wait_ready(namespace, "first")
    assert kube.secret_data(namespace, "shared") == {"password": value}


def test_delete_policy_never_deletes_a_secret_not_proven_ours(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    value = canary()
    kube.create_secret(
        namespace, "precious", {"password": value}, labels={"managedsecrets.io/managed": "true"}
    )
    kube.core.patch_namespaced_secret(
        "precious", namespace, {"metadata": {"annotations": {"managedsecrets.io/owner": "wiper"}}}
    )
    put(openbao, f"{namespace}/k", {"password": "x"})
    kube.create_ms(namespace, "wiper", spec(f"{namespace}/k", name="precious", creationPolicy="Orphan"))
    kube.wait_ready(namespace, "wiper", "False", "TargetExists")
    delete_and_wait(kube, namespace, "wiper")
    assert kube.secret_data(namespace, "precious") == {"password": value}


def test_secret_of_an_earlier_version_is_adopted_and_given_a_proof(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    """Upgrade: a Secret the operator wrote before proofs existed, with the status that version wrote."""
    value = canary()
    put(openbao, f"{namespace}/db", {"password": value})
    ms = kube.create_ms(namespace, "db", {**spec(f"{namespace}/db"), "backendRef": {"name": "later"}})
    kube.wait_ready(namespace, "db", "False", "BackendNotFound")
    kube.core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(
                name="db",
                labels={"managedsecrets.io/managed": "true", "team": "a"},
                annotations={"managedsecrets.io/owner": "db"},
                owner_references=[
                    k8s.V1OwnerReference(
                        api_version="managedsecrets.io/v1alpha1",
                        kind="ManagedSecret",
                        name="db",
                        uid=ms["metadata"]["uid"],
                        controller=True,
                    )
                ],
            ),
            string_data={"password": "old"},
        ),
    )
    kube.custom.patch_namespaced_custom_object_status(
        "managedsecrets.io", "v1alpha1", namespace, "managedsecrets", "db", {"status": {"secretName": "db"}}
    )
    wait_for(
        lambda: (
            (state := operator.runtime.controller.state_of(namespace, "db")) is not None
            and state.body.get("status", {}).get("secretName") == "db"
        ),
        30,
        what="the operator to see the status",
    )
    uid = kube.existing_secret(namespace, "db").metadata.uid
    kube.patch_ms(namespace, "db", {"spec": {"backendRef": {"name": "vault"}}})
    kube.wait_secret_data(namespace, "db", {"password": value})
    kube.wait_ready(namespace, "db")
    secret = kube.existing_secret(namespace, "db")
    assert secret.metadata.uid == uid, "updated in place"
    assert PROOF in secret.metadata.annotations
    assert secret.metadata.labels["team"] == "a"


# -- 4. a claim by a ManagedSecret that no longer exists does not block ---------------------------------------


def test_stale_merge_claim_of_a_deleted_merger_does_not_block(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str
) -> None:
    value = canary()
    kube.create_secret(namespace, "shared", {"mine": value})
    put(openbao, f"{namespace}/a", {"password": "from-a"})
    put(openbao, f"{namespace}/b", {"token": "from-b"})
    kube.create_ms(
        namespace,
        "first",
        spec(f"{namespace}/a", name="shared", creationPolicy="Merge", deletionPolicy="Retain"),
    )
    kube.wait_secret_data(namespace, "shared", {"mine": value, "password": "from-a"})
    delete_and_wait(kube, namespace, "first")
    assert (
        kube.existing_secret(namespace, "shared").metadata.annotations["managedsecrets.io/merged-by"]
        == "first"
    )

    kube.create_ms(
        namespace, "second", spec(f"{namespace}/b", "token", name="shared", creationPolicy="Merge")
    )
    kube.wait_secret_data(namespace, "shared", {"mine": value, "password": "from-a", "token": "from-b"})
    kube.wait_ready(namespace, "second")
    annotations = kube.existing_secret(namespace, "shared").metadata.annotations
    assert annotations["managedsecrets.io/merged-by"] == "second"
    assert annotations["managedsecrets.io/merged-keys"] == "token"

    # A new ManagedSecret of the old name is a new claimant: the live claim of "second" blocks it.
    kube.create_ms(namespace, "first", spec(f"{namespace}/a", name="shared", creationPolicy="Merge"))
    cond = kube.wait_ready(namespace, "first", "False", "TargetExists")
    assert "ManagedSecret second" in cond["message"]
    delete_and_wait(kube, namespace, "second")  # Merge + Delete: removes only its own key
    kube.wait_secret_data(namespace, "shared", {"mine": value, "password": "from-a"})
    kube.force_sync(namespace, "first")
    kube.wait_ready(namespace, "first")
    assert kube.secret_data(namespace, "shared") == {"mine": value, "password": "from-a"}
