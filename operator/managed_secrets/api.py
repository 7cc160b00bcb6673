"""The operator's API names in one place: group, version, kinds, annotations, labels, conditions.

Every module imports these names from here; nothing else spells them out. This module imports nothing
from the package, so any layer may use it.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "managedsecrets.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# -- kinds and their plurals ---------------------------------------------------------------------------
MANAGED_SECRET_KIND: Final = "ManagedSecret"  # noqa: S105
SECRET_BACKEND_KIND: Final = "SecretBackend"  # noqa: S105 - a kind, not a password
CLUSTER_SECRET_BACKEND_KIND: Final = "ClusterSecretBackend"  # noqa: S105
MANAGED_SECRETS_PLURAL: Final = "managedsecrets"
SECRET_BACKENDS_PLURAL: Final = "secretbackends"  # noqa: S105
CLUSTER_SECRET_BACKENDS_PLURAL: Final = "clustersecretbackends"  # noqa: S105

# -- on ManagedSecrets ---------------------------------------------------------------------------------
#: Any new value asks for an immediate sync (like ESO's force-sync).
FORCE_SYNC_ANNOTATION: Final = f"{GROUP}/force-sync"
#: Only on ManagedSecrets whose deletion needs work the garbage collector cannot do.
FINALIZER: Final = f"{GROUP}/cleanup"

# -- on the Secrets the operator writes ----------------------------------------------------------------
#: ``true``: a Secret the operator owns; ``merged``: a Secret it merges keys into.
MANAGED_LABEL: Final = f"{GROUP}/managed"
OWNER_ANNOTATION: Final = f"{GROUP}/owner"
OWNER_PROOF_ANNOTATION: Final = f"{GROUP}/owner-proof"
MERGED_BY_ANNOTATION: Final = f"{GROUP}/merged-by"
MERGED_KEYS_ANNOTATION: Final = f"{GROUP}/merged-keys"
MERGE_PROOF_ANNOTATION: Final = f"{GROUP}/merged-by-proof"
#: On a certificate Secret: a hash of the request it was issued for (a changed request re-issues).
CERTIFICATE_REQUEST_ANNOTATION: Final = f"{GROUP}/certificate-request"
#: On a dynamic Secret: its lease (id, schedule, replaced leases still to revoke), JSON; see core/leases.
LEASE_ANNOTATION: Final = f"{GROUP}/lease"
#: An HMAC of that annotation by the operator's key, bound to the Secret: a lease annotation written by
#: anyone else (another lease's id, to have the operator renew or revoke it) is ignored.
LEASE_PROOF_ANNOTATION: Final = f"{GROUP}/lease-proof"
#: The Secret type of an issued certificate.
TLS_SECRET_TYPE: Final = "kubernetes.io/tls"  # noqa: S105 - a Secret type, not a password

# -- on credential Secrets and ServiceAccounts ---------------------------------------------------------
#: Which backends may use this Secret or ServiceAccount as their credentials.
ALLOWED_BACKENDS_ANNOTATION: Final = f"{GROUP}/allowed-backends"

# -- on workloads ----------------------------------------------------------------------------------------
#: The pod-template annotation whose change restarts a workload.
RESTARTED_FOR_ANNOTATION: Final = f"{GROUP}/restarted-for"
#: ``"true"``: restart on a change of any managed Secret the workload consumes.
RELOAD_ANNOTATION: Final = f"{GROUP}/reload"

# -- status condition types ------------------------------------------------------------------------------
READY_CONDITION: Final = "Ready"
ROLLOUT_CONDITION: Final = "Rollout"
#: True when what the Secret holds expires soon (a static value) or its renewal is overdue.
EXPIRY_CONDITION: Final = "ExpiresSoon"
