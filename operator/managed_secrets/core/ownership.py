"""Which ManagedSecret a target Secret belongs to, proven with the operator's key.

A label and an annotation only *say* that a Secret is managed; anybody who may write Secrets can copy them.
Ownership is proven by an HMAC keyed with the operator's own key (a Secret in the operator's namespace, the
one the rollout hashes use) over the namespace, the Secret's name and the UID of the ManagedSecret: a tenant
can neither compute it nor reuse one from another Secret, namespace or ManagedSecret. A merge claim (keys a
``Merge`` ManagedSecret added to a Secret it does not own) is proven the same way, over its list of keys too,
so the operator only ever removes keys it can prove it added.

Each proof is ``v1:<ManagedSecret UID>:<hex HMAC>``: the UID in clear tells which incarnation of a name made
the claim, so a claim left by a deleted ManagedSecret is recognised as stale and never blocks another one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from managed_secrets.api import (
    GROUP,
    MANAGED_LABEL,
    MANAGED_SECRET_KIND,
    MERGE_PROOF_ANNOTATION,
    MERGED_BY_ANNOTATION,
    MERGED_KEYS_ANNOTATION,
    OWNER_ANNOTATION,
    OWNER_PROOF_ANNOTATION,
)
from managed_secrets.core.ports import OwnerReference, SecretObject
from managed_secrets.models.managedsecret import ManagedSecret

KIND = MANAGED_SECRET_KIND
#: On every Secret the operator manages; the operator watches Secrets by this label only.
#: MANAGED_LABEL's value on a Merge target ("true" on Secrets the operator owns): the Secret watch selects
#: Secrets by the label, and a merge target is not owned.
MERGED_LABEL_VALUE = "merged"
#: Name of the ManagedSecret (same namespace) that created the Secret.
#: Proof that the ManagedSecret named in OWNER_ANNOTATION, with the UID it records, created the Secret.
#: With creationPolicy Merge: which ManagedSecret merged keys in, and which keys (names only).
#: Proof of the merge claim: the merger's UID and an HMAC over it and the merged keys.
MERGE_CLAIM_ANNOTATIONS = (MERGED_BY_ANNOTATION, MERGED_KEYS_ANNOTATION, MERGE_PROOF_ANNOTATION)
#: Labels and annotations only the operator writes; target.labels / target.annotations cannot set them.
RESERVED_KEYS = frozenset({MANAGED_LABEL, OWNER_ANNOTATION, OWNER_PROOF_ANNOTATION, *MERGE_CLAIM_ANNOTATIONS})
PROOF_VERSION = "v1"


# -- proofs ------------------------------------------------------------------------------------------------


def _field(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(8, "big") + raw


def _mac(key: bytes, purpose: bytes, *fields: str) -> str:
    # A purpose prefix of its own: the same key signs status.dataHash and restart annotations.
    message = purpose + b"\0" + b"".join(_field(f) for f in fields)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def owner_proof(key: bytes, namespace: str, secret_name: str, uid: str) -> str:
    return f"{PROOF_VERSION}:{uid}:{_mac(key, b'owner', namespace, secret_name, uid)}"


def lease_state_proof(key: bytes, namespace: str, secret_name: str, uid: str, state: str) -> str:
    """Proves a Secret's lease annotation is the operator's own, written for this Secret and resource."""
    return _mac(key, b"lease-state", namespace, secret_name, uid, state)[:32]


def lease_data_proof(key: bytes, lease_id: str, data: Mapping[str, bytes]) -> str:
    """Binds a dynamic Secret's data to its lease: data changed by hand is replaced by new credentials."""
    digests = [f"{name}={hashlib.sha256(data[name]).hexdigest()}" for name in sorted(data)]
    return _mac(key, b"lease-data", lease_id, *digests)[:32]


def merge_proof(key: bytes, namespace: str, secret_name: str, uid: str, keys: Iterable[str]) -> str:
    joined = ",".join(sorted(keys))
    return f"{PROOF_VERSION}:{uid}:{_mac(key, b'merge', namespace, secret_name, uid, joined)}"


def proof_uid(proof: str | None) -> str | None:
    """The UID a proof names (unverified), or None when it is absent or malformed."""
    if proof is None:
        return None
    version, _, rest = proof.partition(":")
    uid, sep, mac = rest.rpartition(":")
    return uid if version == PROOF_VERSION and sep and uid and mac else None


def proves_owner(key: bytes, secret: SecretObject, uid: str) -> bool:
    """The Secret carries a valid proof that the ManagedSecret with this UID created it, here, by this name."""
    found = secret.annotations.get(OWNER_PROOF_ANNOTATION)
    if found is None or not uid:
        return False
    return hmac.compare_digest(found, owner_proof(key, secret.namespace, secret.name, uid))


# -- markers -----------------------------------------------------------------------------------------------


def is_managed_secret_reference(owner: OwnerReference) -> bool:
    return owner.kind == KIND and owner.api_version.partition("/")[0] == GROUP


def owner_marker(secret: SecretObject) -> str | None:
    """Whom the Secret's markers name as its owning ManagedSecret ("" when unnamed); None without markers.

    Markers prove nothing; they are enough to refuse a merge into the Secret (forging one only blocks merges).
    """
    named = secret.annotations.get(OWNER_ANNOTATION)
    if named:
        return named
    for owner in secret.owner_references:
        if is_managed_secret_reference(owner):
            return owner.name
    if secret.labels.get(MANAGED_LABEL) == "true" or OWNER_PROOF_ANNOTATION in secret.annotations:
        return ""
    return None


def legacy_owned(secret: SecretObject, ms: ManagedSecret) -> bool:
    """Written for this ManagedSecret by an operator version without proofs (the upgrade path).

    Accepted only for a Secret with no proof at all (a wrong proof is never adopted), with this
    ManagedSecret's label and annotation, no owner reference to another ManagedSecret (the controller
    reference earlier versions set carries this one's UID), and when the ManagedSecret's status, which only
    the operator writes, records that it synced into this Secret. The next write adds the proof.
    """
    if OWNER_PROOF_ANNOTATION in secret.annotations:
        return False
    if secret.labels.get(MANAGED_LABEL) != "true" or secret.annotations.get(OWNER_ANNOTATION) != ms.ref.name:
        return False
    if ms.synced_secret_name != secret.name:
        return False
    return all(o.uid == ms.ref.uid for o in secret.owner_references if is_managed_secret_reference(o))


def not_owned_message(secret: SecretObject, ms: ManagedSecret) -> str:
    """Why the operator will not write this Secret for this ManagedSecret, and what to do (names only)."""
    name = secret.name
    owner = owner_marker(secret)
    claim = merge_claim(secret)
    if owner and owner != ms.ref.name:
        return (
            f"Secret {name} is managed by ManagedSecret {owner}; one Secret has one owner: "
            "choose another target.name (or delete the other ManagedSecret first)"
        )
    if owner == ms.ref.name and OWNER_PROOF_ANNOTATION in secret.annotations:
        return (
            f"Secret {name} carries an ownership proof that is not valid for this ManagedSecret (made for "
            "an earlier ManagedSecret of this name, copied from another Secret, or made with another "
            "operator key); the operator does not take it over: delete the Secret to let it be created "
            "again, or choose another target.name"
        )
    if owner == ms.ref.name:
        return (
            f"Secret {name} carries this ManagedSecret's label and annotation but no ownership proof "
            f"({OWNER_PROOF_ANNOTATION}), so the operator cannot tell it created it: delete the Secret to "
            "let it be created again, or choose another target.name"
        )
    if claim is not None:
        return (
            f"Secret {name} receives merged keys from ManagedSecret {claim.name} (creationPolicy Merge) and "
            "is not managed by this ManagedSecret: choose another target.name, or use creationPolicy Merge"
        )
    return (
        f"Secret {name} exists and is not managed by this ManagedSecret; "
        "delete it, rename the target, or set creationPolicy: Merge"
    )


# -- merge claims ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeClaim:
    """A ``Merge`` ManagedSecret's record on a Secret it adds keys to."""

    name: str
    keys: frozenset[str]
    #: The merger's UID from the proof; None for a claim without proof (an earlier operator version).
    uid: str | None
    proof: str | None

    def proven_for(self, key: bytes, secret: SecretObject, uid: str) -> bool:
        """The proof is valid for this merger UID and exactly these keys."""
        if self.proof is None or self.uid != uid:
            return False
        return hmac.compare_digest(
            self.proof, merge_proof(key, secret.namespace, secret.name, uid, self.keys)
        )

    def trusted_keys(self, key: bytes, secret: SecretObject, uid: str) -> frozenset[str]:
        """The keys this merger may remove as its own: proven ones, or a claim from before proofs."""
        if self.proof is None or self.proven_for(key, secret, uid):
            return self.keys
        return frozenset()


def merge_claim(secret: SecretObject) -> MergeClaim | None:
    annotations: Mapping[str, str] = secret.annotations
    name = annotations.get(MERGED_BY_ANNOTATION)
    if not name:
        return None
    proof = annotations.get(MERGE_PROOF_ANNOTATION)
    return MergeClaim(
        name=name,
        keys=split_keys(annotations.get(MERGED_KEYS_ANNOTATION)),
        uid=proof_uid(proof),
        proof=proof,
    )


def split_keys(text: str | None) -> frozenset[str]:
    return frozenset(key for key in (text or "").split(",") if key)


def unreserved(items: Mapping[str, str]) -> dict[str, str]:
    """Labels or annotations from a spec, without those only the operator may set."""
    return {k: v for k, v in items.items() if k not in RESERVED_KEYS}
