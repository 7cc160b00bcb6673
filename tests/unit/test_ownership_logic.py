"""Who may write which Secret: proofs, legacy adoption, merge claims, and keeping the Secret through a refusal.

The pure logic with a fake Cluster; tests/test_ownership.py attacks the same on the real control plane.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from leaks import assert_absent
from managed_secrets import errors
from managed_secrets.api import MERGE_PROOF_ANNOTATION, OWNER_PROOF_ANNOTATION
from managed_secrets.core.ownership import (
    legacy_owned,
    merge_claim,
    merge_proof,
    owner_marker,
    owner_proof,
    proof_uid,
    proves_owner,
)
from managed_secrets.core.ports import ManagedSecretInfo, OwnerReference, SecretObject
from managed_secrets.core.reconcile import Reconciler
from managed_secrets.core.secret_rules import check_secret, secret_problems
from managed_secrets.models.managedsecret import ManagedSecret
from managed_secrets.models.parse import parse_managed_secret

KEY = b"operator-key-for-unit-tests-0123"
NS = "team-a"
CANARY = "canary-5f1d0c3a9e"
MANAGED = {"managedsecrets.io/managed": "true"}


class FakeCluster:
    """The SecretStore and ManagedSecret lookups of core.ports.Cluster, in memory."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], SecretObject] = {}
        self.managed: dict[tuple[str, str], ManagedSecretInfo] = {}
        self.writes: list[tuple[str, str]] = []
        self.refuse_create: list[errors.SyncError] = []  # raised by the next creates, in order
        self.refuse_check: errors.SyncError | None = None
        self._versions = itertools.count(1)

    def put(self, secret: SecretObject) -> SecretObject:
        stored = replace(
            secret, uid=f"secret-uid-{next(self._versions)}", resource_version=str(next(self._versions))
        )
        self.secrets[(secret.namespace, secret.name)] = stored
        return stored

    def get(self, namespace: str, name: str) -> SecretObject | None:
        return self.secrets.get((namespace, name))

    def create(self, secret: SecretObject) -> SecretObject:
        if self.refuse_create:
            raise self.refuse_create.pop(0)
        if (secret.namespace, secret.name) in self.secrets:
            raise errors.TargetExists(f"Secret {secret.name} appeared while it was being created")
        self.writes.append(("create", secret.name))
        return self.put(secret)

    def replace(self, secret: SecretObject) -> SecretObject:
        current = self.secrets.get((secret.namespace, secret.name))
        if current is None or current.resource_version != secret.resource_version:
            raise errors.WriteFailed("conflict")
        if current.immutable and dict(current.data) != dict(secret.data):
            raise errors.TargetRejected("immutable")
        self.writes.append(("replace", secret.name))
        return self.put(replace(secret, uid=current.uid))

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        current = self.secrets.get((namespace, name))
        if current is None:
            return
        if (uid and current.uid != uid) or (
            resource_version and current.resource_version != resource_version
        ):
            raise errors.WriteFailed("precondition failed")
        self.writes.append(("delete", name))
        del self.secrets[(namespace, name)]

    def check_create(self, secret: SecretObject) -> None:
        self.writes.append(("check", secret.name))
        if self.refuse_check is not None:
            raise self.refuse_check

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        return self.managed.get((namespace, name))

    def add_managed(self, ms: ManagedSecret) -> None:
        policy = ms.spec.target.creation_policy.value
        self.managed[(ms.ref.namespace, ms.ref.name)] = ManagedSecretInfo(ms.ref.uid, ms.target_name, policy)


def managed_secret(
    name: str = "app",
    /,
    *,
    uid: str | None = None,
    synced: str | None = None,
    **target: Any,
) -> ManagedSecret:
    body: dict[str, Any] = {
        "metadata": {"namespace": NS, "name": name, "uid": uid or f"uid-{name}"},
        "spec": {
            "backendRef": {"name": "vault"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}],
            "target": target,
        },
    }
    if synced is not None:
        body["status"] = {"secretName": synced}
    return parse_managed_secret(body)


def reconciler(cluster: FakeCluster) -> Reconciler:
    return Reconciler(cluster, None, None, operator_key=lambda: KEY)  # type: ignore[arg-type]


def write(rec: Reconciler, ms: ManagedSecret, data: dict[str, bytes]) -> Any:
    return rec._write(ms, data, target_known_absent=False)


# -- proofs ------------------------------------------------------------------------------------------------


def test_owner_proof_binds_namespace_name_uid_and_key() -> None:
    proof = owner_proof(KEY, NS, "db", "uid-1")
    assert proof.startswith("v1:uid-1:")
    assert proof_uid(proof) == "uid-1"
    secret = SecretObject(NS, "db", annotations={OWNER_PROOF_ANNOTATION: proof})
    assert proves_owner(KEY, secret, "uid-1")
    assert not proves_owner(KEY, secret, "uid-2"), "another ManagedSecret (or incarnation)"
    assert not proves_owner(KEY, replace(secret, namespace="team-b"), "uid-1"), "copied to another namespace"
    assert not proves_owner(KEY, replace(secret, name="other"), "uid-1"), "copied to another Secret"
    assert not proves_owner(b"another-operator-key", secret, "uid-1")
    assert not proves_owner(KEY, SecretObject(NS, "db"), "uid-1")
    # Field boundaries are unambiguous: ("a-b", "c") and ("a", "b-c") differ.
    assert owner_proof(KEY, "a", "bc", "u") != owner_proof(KEY, "ab", "c", "u")


def test_merge_proof_binds_the_keys() -> None:
    proof = merge_proof(KEY, NS, "shared", "uid-1", ["b", "a"])
    assert proof == merge_proof(KEY, NS, "shared", "uid-1", ["a", "b"])
    assert proof != merge_proof(KEY, NS, "shared", "uid-1", ["a", "b", "victim"])
    assert proof != owner_proof(KEY, NS, "shared", "uid-1")


@pytest.mark.parametrize("value", [None, "", "v1", "v1:", "v1::abc", "v2:uid:abc", "v1:uid:"])
def test_malformed_proofs_name_no_uid(value: str | None) -> None:
    assert proof_uid(value) is None


def test_owner_markers() -> None:
    assert owner_marker(SecretObject(NS, "s")) is None
    assert owner_marker(SecretObject(NS, "s", labels=MANAGED)) == ""
    assert owner_marker(SecretObject(NS, "s", annotations={"managedsecrets.io/owner": "x"})) == "x"
    ref = OwnerReference("managedsecrets.io/v1alpha1", "ManagedSecret", "y", "uid-y")
    assert owner_marker(SecretObject(NS, "s", owner_references=(ref,))) == "y"
    other = OwnerReference("apps/v1", "Deployment", "web", "uid-web")
    assert owner_marker(SecretObject(NS, "s", owner_references=(other,))) is None


def test_legacy_adoption_needs_the_status_and_no_proof() -> None:
    ms = managed_secret("app", synced="app")
    legacy = SecretObject(NS, "app", labels=MANAGED, annotations={"managedsecrets.io/owner": "app"})
    assert legacy_owned(legacy, ms)
    assert not legacy_owned(legacy, managed_secret("app")), "never synced: a pre-created look-alike"
    assert not legacy_owned(legacy, managed_secret("app", synced="other"))
    ours = OwnerReference("managedsecrets.io/v1alpha1", "ManagedSecret", "app", ms.ref.uid)
    assert legacy_owned(replace(legacy, owner_references=(ours,)), ms)
    theirs = replace(ours, uid="uid-of-another")
    assert not legacy_owned(replace(legacy, owner_references=(theirs,)), ms)
    bad_proof = {**legacy.annotations, OWNER_PROOF_ANNOTATION: "v1:x:y"}
    assert not legacy_owned(replace(legacy, annotations=bad_proof), ms), "a wrong proof is never adopted"


# -- what the API server would refuse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "data", "annotations", "expected"),
    [
        ("kubernetes.io/tls", {"tls.crt": b"c"}, {}, "tls.key"),
        ("kubernetes.io/tls", {"username": b"u"}, {}, "tls.crt, tls.key"),
        ("kubernetes.io/basic-auth", {"token": b"t"}, {}, "username or password"),
        ("kubernetes.io/ssh-auth", {"ssh-privatekey": b""}, {}, "ssh-privatekey"),
        ("kubernetes.io/dockerconfigjson", {"x": b"{}"}, {}, ".dockerconfigjson"),
        ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": CANARY.encode()}, {}, "JSON object"),
        ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b"[1]"}, {}, "JSON object"),
        ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b'{"a": NaN}'}, {}, "JSON object"),
        ("kubernetes.io/dockercfg", {".dockercfg": b"{"}, {}, "JSON object"),
        ("kubernetes.io/service-account-token", {"token": b"t"}, {}, "service-account.name"),
        ("Opaque", {"..": b"v"}, {}, "'..'"),
        ("Opaque", {"..hidden": b"v"}, {}, "'..'"),
        ("Opaque", {"a b": b"v"}, {}, "not a valid Secret key"),
        ("Opaque", {"big": b"x" * (1024 * 1024 + 1)}, {}, "more than the limit"),
    ],
)
def test_refused_secrets(
    type_: str, data: dict[str, bytes], annotations: dict[str, str], expected: str
) -> None:
    secret = SecretObject(NS, "s", type=type_, data=data, annotations=annotations)
    with pytest.raises(errors.TargetRejected) as caught:
        check_secret(secret)
    assert expected in caught.value.message
    assert_absent(CANARY, caught.value.message, "the message")


@pytest.mark.parametrize(
    ("type_", "data", "annotations"),
    [
        ("kubernetes.io/tls", {"tls.crt": b"", "tls.key": b""}, {}),  # presence is enough, as in the server
        ("kubernetes.io/basic-auth", {"password": b""}, {}),
        ("kubernetes.io/ssh-auth", {"ssh-privatekey": b"k"}, {}),
        ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b'{"auths": {}}'}, {}),
        ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b"null"}, {}),
        ("kubernetes.io/service-account-token", {}, {"kubernetes.io/service-account.name": "sa"}),
        ("Opaque", {".dot": b"v", "a.b-c_d": b"v"}, {}),
        ("example.com/custom", {}, {}),
        ("Opaque", {"big": b"x" * (1024 * 1024)}, {}),
    ],
)
def test_accepted_secrets(type_: str, data: dict[str, bytes], annotations: dict[str, str]) -> None:
    assert secret_problems(SecretObject(NS, "s", type=type_, data=data, annotations=annotations)) == []


# -- owning a Secret ---------------------------------------------------------------------------------------


def test_created_secret_carries_a_proof_and_a_second_sync_writes_nothing() -> None:
    cluster = FakeCluster()
    rec = reconciler(cluster)
    ms = managed_secret("app")
    write(rec, ms, {"k": b"v"})
    secret = cluster.get(NS, "app")
    assert secret is not None
    assert proves_owner(KEY, secret, ms.ref.uid)
    assert write(rec, ms, {"k": b"v"}).action.value == "Unchanged"
    assert cluster.writes == [("create", "app")]


def test_look_alike_secret_is_not_taken_over() -> None:
    """Label and annotation copied onto a Secret with keys of its own: refused, left as it is."""
    cluster = FakeCluster()
    planted = cluster.put(
        SecretObject(
            NS, "app", data={"other": b"keep"}, labels=MANAGED, annotations={"managedsecrets.io/owner": "app"}
        )
    )
    with pytest.raises(errors.TargetExists, match="no ownership proof"):
        write(reconciler(cluster), managed_secret("app"), {"k": b"v"})
    assert cluster.get(NS, "app") == planted
    assert cluster.writes == []


def test_proof_copied_from_another_namespace_is_not_accepted() -> None:
    cluster = FakeCluster()
    ms = managed_secret("app")
    copied = owner_proof(KEY, "team-b", "app", ms.ref.uid)  # the victim's Secret, same names, elsewhere
    cluster.put(
        SecretObject(
            NS,
            "app",
            data={"other": b"keep"},
            labels=MANAGED,
            annotations={"managedsecrets.io/owner": "app", OWNER_PROOF_ANNOTATION: copied},
        )
    )
    with pytest.raises(errors.TargetExists, match="not valid for this ManagedSecret"):
        write(reconciler(cluster), ms, {"k": b"v"})
    assert cluster.writes == []


def test_secret_of_another_managed_secret_is_refused_with_its_name() -> None:
    cluster = FakeCluster()
    rec = reconciler(cluster)
    write(rec, managed_secret("first", name="shared"), {"k": b"first"})
    with pytest.raises(errors.TargetExists, match="managed by ManagedSecret first"):
        write(rec, managed_secret("second", name="shared"), {"k": b"second"})
    assert cluster.secrets[(NS, "shared")].data == {"k": b"first"}


def test_recreated_managed_secret_does_not_inherit_a_retained_secret() -> None:
    cluster = FakeCluster()
    rec = reconciler(cluster)
    write(rec, managed_secret("app", uid="uid-old", deletionPolicy="Retain"), {"k": b"v"})
    with pytest.raises(errors.TargetExists, match="not valid"):
        write(rec, managed_secret("app", uid="uid-new"), {"k": b"v2"})


def test_legacy_secret_is_adopted_and_given_a_proof() -> None:
    cluster = FakeCluster()
    ms = managed_secret("app", synced="app")
    owner = OwnerReference("managedsecrets.io/v1alpha1", "ManagedSecret", "app", ms.ref.uid)
    cluster.put(
        SecretObject(
            NS,
            "app",
            data={"k": b"v"},
            labels={**MANAGED, "team": "a"},
            annotations={"managedsecrets.io/owner": "app"},
            owner_references=(owner,),
        )
    )
    result = write(reconciler(cluster), ms, {"k": b"v"})
    assert result.action.value == "Updated"
    assert not result.data_changed
    secret = cluster.get(NS, "app")
    assert secret is not None
    assert proves_owner(KEY, secret, ms.ref.uid)
    assert secret.labels["team"] == "a"


def test_reserved_keys_in_target_metadata_are_ignored() -> None:
    cluster = FakeCluster()
    ms = managed_secret(
        "app",
        labels={"managedsecrets.io/managed": "false", "team": "a"},
        annotations={OWNER_PROOF_ANNOTATION: "v1:forged:00", "managedsecrets.io/owner": "someone"},
    )
    write(reconciler(cluster), ms, {"k": b"v"})
    secret = cluster.get(NS, "app")
    assert secret is not None
    assert secret.labels == {"managedsecrets.io/managed": "true", "team": "a"}
    assert secret.annotations["managedsecrets.io/owner"] == "app"
    assert proves_owner(KEY, secret, ms.ref.uid)


def test_no_key_means_no_write() -> None:
    cluster = FakeCluster()

    def no_key() -> bytes:
        raise errors.WriteFailed("creating Secret managed-secrets-hmac-key: HTTP 404 NotFound")

    rec = Reconciler(cluster, None, None, operator_key=no_key)  # type: ignore[arg-type]
    with pytest.raises(errors.WriteFailed, match="no key to prove ownership"):
        write(rec, managed_secret("app"), {"k": b"v"})
    assert cluster.writes == []


# -- type changes and other refusals -------------------------------------------------------------------------


def synced(cluster: FakeCluster, data: dict[str, bytes] | None = None, **target: Any) -> SecretObject:
    ms = managed_secret("app", **target)
    write(reconciler(cluster), ms, data or {"k": CANARY.encode()})
    cluster.writes.clear()
    secret = cluster.get(NS, ms.target_name)
    assert secret is not None
    return secret


def test_type_change_the_server_would_refuse_keeps_the_secret() -> None:
    cluster = FakeCluster()
    before = synced(cluster)
    with pytest.raises(errors.TargetRejected, match=r"tls\.crt and tls\.key") as caught:
        write(reconciler(cluster), managed_secret("app", type="kubernetes.io/tls"), {"k": CANARY.encode()})
    assert_absent(CANARY, caught.value.message, "the message")
    assert cluster.get(NS, "app") == before
    assert cluster.writes == [], "refused before anything was written, even a dry run"


def test_type_change_refused_by_the_dry_run_keeps_the_secret() -> None:
    cluster = FakeCluster()
    before = synced(cluster)
    cluster.refuse_check = errors.TargetRejected(
        "the API server would refuse Secret app: HTTP 400 BadRequest"
    )
    with pytest.raises(errors.TargetRejected):
        write(reconciler(cluster), managed_secret("app", type="example.com/x"), {"k": b"v"})
    assert cluster.get(NS, "app") == before
    assert cluster.writes == [("check", "app")]


def test_type_change_refused_after_the_delete_restores_the_old_secret() -> None:
    cluster = FakeCluster()
    before = synced(cluster)
    cluster.refuse_create = [
        errors.TargetRejected("creating Secret app: the apiserver rejected it: HTTP 422")
    ]
    with pytest.raises(errors.TargetRejected, match="previous Secret app was restored"):
        write(reconciler(cluster), managed_secret("app", type="example.com/x"), {"k": b"v"})
    restored = cluster.get(NS, "app")
    assert restored is not None
    assert (restored.type, dict(restored.data), dict(restored.annotations)) == (
        before.type,
        dict(before.data),
        dict(before.annotations),
    )
    assert cluster.writes == [("check", "app"), ("delete", "app"), ("create", "app")]


def test_type_change_when_neither_create_works_is_a_write_failure() -> None:
    cluster = FakeCluster()
    synced(cluster)
    cluster.refuse_create = [errors.WriteFailed("HTTP 503"), errors.WriteFailed("HTTP 503")]
    with pytest.raises(errors.WriteFailed, match="neither the new nor the old"):
        write(reconciler(cluster), managed_secret("app", type="example.com/x"), {"k": b"v"})


def test_type_change_that_is_valid_replaces_the_secret() -> None:
    cluster = FakeCluster()
    synced(cluster)
    write(reconciler(cluster), managed_secret("app", type="kubernetes.io/basic-auth"), {"username": b"u"})
    secret = cluster.get(NS, "app")
    assert secret is not None
    assert secret.type == "kubernetes.io/basic-auth"
    assert cluster.writes == [("check", "app"), ("delete", "app"), ("create", "app")]


def test_immutable_secret_keeps_its_data_and_type_but_takes_labels() -> None:
    cluster = FakeCluster()
    before = synced(cluster)
    frozen = cluster.put(replace(before, immutable=True))
    with pytest.raises(errors.TargetImmutable, match="data would change"):
        write(reconciler(cluster), managed_secret("app"), {"k": b"rotated"})
    with pytest.raises(errors.TargetImmutable, match="type would change"):
        write(reconciler(cluster), managed_secret("app", type="example.com/x"), {"k": CANARY.encode()})
    assert cluster.get(NS, "app") == frozen
    write(reconciler(cluster), managed_secret("app", labels={"team": "a"}), {"k": CANARY.encode()})
    after = cluster.get(NS, "app")
    assert after is not None
    assert after.immutable
    assert after.labels["team"] == "a"


# -- merging -----------------------------------------------------------------------------------------------


def test_merge_into_a_secret_of_another_managed_secret_is_refused() -> None:
    cluster = FakeCluster()
    owned = synced(cluster)
    with pytest.raises(errors.TargetExists, match="managed by ManagedSecret app"):
        write(reconciler(cluster), managed_secret("merger", name="app", creationPolicy="Merge"), {"k": b"x"})
    assert cluster.get(NS, "app") == owned


@pytest.mark.parametrize(
    "markers",
    [
        {"labels": MANAGED},
        {"annotations": {"managedsecrets.io/owner": "somebody"}},
        {"owner_references": (OwnerReference("managedsecrets.io/v1alpha1", "ManagedSecret", "o", "u"),)},
    ],
)
def test_merge_refuses_any_owner_marker(markers: dict[str, Any]) -> None:
    cluster = FakeCluster()
    cluster.put(SecretObject(NS, "s", data={"mine": b"m"}, **markers))
    with pytest.raises(errors.TargetExists, match="Merge only adds keys to Secrets no ManagedSecret owns"):
        write(reconciler(cluster), managed_secret("merger", name="s", creationPolicy="Merge"), {"k": b"x"})
    assert cluster.writes == []


def merged(cluster: FakeCluster, ms: ManagedSecret, data: dict[str, bytes]) -> SecretObject:
    if cluster.get(NS, ms.target_name) is None:
        cluster.put(SecretObject(NS, ms.target_name, data={"mine": b"hand-made"}))
    write(reconciler(cluster), ms, data)
    cluster.add_managed(ms)
    secret = cluster.get(NS, ms.target_name)
    assert secret is not None
    return secret


def test_live_merge_claim_blocks_others() -> None:
    cluster = FakeCluster()
    first = managed_secret("first", name="shared", creationPolicy="Merge")
    merged(cluster, first, {"a": b"1"})
    with pytest.raises(errors.TargetExists, match="already receives merged keys from ManagedSecret first"):
        write(
            reconciler(cluster), managed_secret("second", name="shared", creationPolicy="Merge"), {"b": b"2"}
        )


@pytest.mark.parametrize("how", ["deleted", "recreated", "moved"])
def test_stale_merge_claim_does_not_block(how: str) -> None:
    cluster = FakeCluster()
    first = managed_secret("first", name="shared", creationPolicy="Merge", deletionPolicy="Retain")
    merged(cluster, first, {"a": b"1"})
    if how == "deleted":
        del cluster.managed[(NS, "first")]
    elif how == "recreated":
        cluster.add_managed(managed_secret("first", uid="uid-new", name="shared", creationPolicy="Merge"))
    else:
        cluster.add_managed(managed_secret("first", name="elsewhere", creationPolicy="Merge"))
    second = managed_secret("second", name="shared", creationPolicy="Merge")
    write(reconciler(cluster), second, {"b": b"2"})
    secret = cluster.get(NS, "shared")
    assert secret is not None
    assert dict(secret.data) == {"mine": b"hand-made", "a": b"1", "b": b"2"}, "retained keys stay"
    claim = merge_claim(secret)
    assert claim is not None
    assert (claim.name, claim.uid, claim.keys) == ("second", second.ref.uid, frozenset({"b"}))


def test_recreated_merger_takes_over_its_own_stale_claim_without_removing_old_keys() -> None:
    cluster = FakeCluster()
    merged(cluster, managed_secret("m", uid="uid-old", name="shared", creationPolicy="Merge"), {"a": b"1"})
    write(
        reconciler(cluster),
        managed_secret("m", uid="uid-new", name="shared", creationPolicy="Merge"),
        {"b": b"2"},
    )
    assert set(cluster.secrets[(NS, "shared")].data) == {"mine", "a", "b"}


def test_tampered_merged_keys_are_not_removed() -> None:
    """A forged merged-keys list cannot make the operator delete keys it did not add."""
    cluster = FakeCluster()
    ms = managed_secret("m", name="shared", creationPolicy="Merge")
    secret = merged(cluster, ms, {"a": b"1"})
    tampered = {**secret.annotations, "managedsecrets.io/merged-keys": "a,mine"}
    cluster.put(replace(secret, annotations=tampered))
    write(reconciler(cluster), ms, {"b": b"2"})
    assert set(cluster.secrets[(NS, "shared")].data) == {"mine", "a", "b"}
    reconciler(cluster).cleanup(managed_secret("m", name="shared", creationPolicy="Merge"))
    assert set(cluster.secrets[(NS, "shared")].data) == {"mine", "a"}


def test_legacy_merge_claim_is_still_ours() -> None:
    cluster = FakeCluster()
    cluster.put(
        SecretObject(
            NS,
            "shared",
            data={"mine": b"m", "old": b"o"},
            annotations={"managedsecrets.io/merged-by": "m", "managedsecrets.io/merged-keys": "old"},
        )
    )
    ms = managed_secret("m", name="shared", creationPolicy="Merge")
    write(reconciler(cluster), ms, {"new": b"n"})
    secret = cluster.get(NS, "shared")
    assert secret is not None
    assert set(secret.data) == {"mine", "new"}
    claim = merge_claim(secret)
    assert claim is not None
    assert claim.proven_for(KEY, secret, ms.ref.uid)
    assert MERGE_PROOF_ANNOTATION in secret.annotations


def test_owner_refuses_a_secret_that_receives_merged_keys() -> None:
    cluster = FakeCluster()
    owned = synced(cluster)
    merger = managed_secret("merger", name="app", creationPolicy="Merge")
    claim = {
        "managedsecrets.io/merged-by": "merger",
        "managedsecrets.io/merged-keys": "x",
        MERGE_PROOF_ANNOTATION: merge_proof(KEY, NS, "app", merger.ref.uid, ["x"]),
    }
    cluster.put(replace(owned, annotations={**owned.annotations, **claim}))
    cluster.add_managed(merger)
    with pytest.raises(errors.TargetExists, match="also receives merged keys from ManagedSecret merger"):
        write(reconciler(cluster), managed_secret("app"), {"k": b"new"})
    del cluster.managed[(NS, "merger")]
    write(reconciler(cluster), managed_secret("app"), {"k": b"new"})
    assert merge_claim(cluster.secrets[(NS, "app")]) is None


# -- deletion ----------------------------------------------------------------------------------------------


def test_cleanup_deletes_only_proven_secrets() -> None:
    cluster = FakeCluster()
    synced(cluster, name="first", creationPolicy="Orphan")
    # Another ManagedSecret (Orphan + Delete) pointed at the same Secret never owned it.
    intruder = managed_secret("intruder", name="first", creationPolicy="Orphan")
    reconciler(cluster).cleanup(intruder)
    assert cluster.get(NS, "first") is not None
    look_alike = cluster.put(
        SecretObject(NS, "planted", labels=MANAGED, annotations={"managedsecrets.io/owner": "p"})
    )
    reconciler(cluster).cleanup(managed_secret("p", name="planted", creationPolicy="Orphan"))
    assert cluster.get(NS, "planted") == look_alike
    reconciler(cluster).cleanup(managed_secret("app", name="first", creationPolicy="Orphan"))
    assert cluster.get(NS, "first") is None


def test_cleanup_also_deletes_the_previous_target() -> None:
    cluster = FakeCluster()
    synced(cluster, name="old", creationPolicy="Orphan")
    write(reconciler(cluster), managed_secret("app", name="new", creationPolicy="Orphan"), {"k": b"v"})
    assert cluster.get(NS, "old") is not None, "a rename leaves the old Secret in place"
    reconciler(cluster).cleanup(managed_secret("app", synced="old", name="new", creationPolicy="Orphan"))
    assert cluster.get(NS, "old") is None
    assert cluster.get(NS, "new") is None


def test_cleanup_of_a_merger_never_touches_an_owned_secret() -> None:
    cluster = FakeCluster()
    owned = synced(cluster)
    legacy_claim = {"managedsecrets.io/merged-by": "merger", "managedsecrets.io/merged-keys": "k"}
    stored = cluster.put(replace(owned, annotations={**owned.annotations, **legacy_claim}))
    reconciler(cluster).cleanup(managed_secret("merger", name="app", creationPolicy="Merge"))
    assert cluster.get(NS, "app") == stored
