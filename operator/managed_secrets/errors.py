"""Domain errors: each carries a stable reason that lands in the Ready condition.

Messages name keys, fields and backends, never values: they reach status, events and logs.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    SYNCED = "Synced"
    BACKEND_UNAVAILABLE = "BackendUnavailable"
    AUTH_FAILED = "AuthFailed"
    REMOTE_KEY_NOT_FOUND = "RemoteKeyNotFound"
    PROPERTY_NOT_FOUND = "PropertyNotFound"
    VERSION_NOT_FOUND = "VersionNotFound"
    TEMPLATE_ERROR = "TemplateError"
    BACKEND_NOT_FOUND = "BackendNotFound"
    BACKEND_NOT_ALLOWED = "BackendNotAllowed"
    KEY_NOT_ALLOWED = "KeyNotAllowed"
    INVALID_SPEC = "InvalidSpec"
    INVALID_BACKEND = "InvalidBackend"
    TARGET_EXISTS = "TargetExists"
    TARGET_NOT_FOUND = "TargetNotFound"
    TARGET_REJECTED = "TargetRejected"
    TARGET_IMMUTABLE = "TargetImmutable"
    PROVIDER_NOT_INSTALLED = "ProviderNotInstalled"
    WRITE_FAILED = "WriteFailed"
    INTERNAL_ERROR = "InternalError"
    ENDPOINT_NOT_ALLOWED = "EndpointNotAllowed"
    CREDENTIAL_NOT_ALLOWED = "CredentialNotAllowed"
    ISSUE_FAILED = "IssueFailed"
    LEASE_RENEWAL_FAILED = "LeaseRenewalFailed"
    DECODING_FAILED = "DecodingFailed"
    REVOCATION_FAILED = "RevocationFailed"


class SyncError(Exception):
    """A failure that leaves the target Secret as it was and is reported with a stable reason."""

    reason: Reason = Reason.INTERNAL_ERROR
    #: Whether trying again later may succeed without anybody changing the spec.
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendUnavailable(SyncError):
    reason = Reason.BACKEND_UNAVAILABLE
    transient = True


class AuthFailed(SyncError):
    reason = Reason.AUTH_FAILED
    transient = True


class RemoteKeyNotFound(SyncError):
    reason = Reason.REMOTE_KEY_NOT_FOUND
    transient = True


class VersionNotFound(SyncError):
    reason = Reason.VERSION_NOT_FOUND
    transient = True


class PropertyNotFound(SyncError):
    reason = Reason.PROPERTY_NOT_FOUND
    transient = True


class TemplateError(SyncError):
    reason = Reason.TEMPLATE_ERROR


class BackendNotFound(SyncError):
    reason = Reason.BACKEND_NOT_FOUND
    transient = True


class BackendNotAllowed(SyncError):
    reason = Reason.BACKEND_NOT_ALLOWED
    transient = True  # namespace labels can change without any event the operator watches


class KeyNotAllowed(SyncError):
    reason = Reason.KEY_NOT_ALLOWED


class InvalidSpec(SyncError):
    reason = Reason.INVALID_SPEC


class InvalidBackend(SyncError):
    reason = Reason.INVALID_BACKEND


class TargetExists(SyncError):
    reason = Reason.TARGET_EXISTS
    transient = True


class TargetNotFound(SyncError):
    reason = Reason.TARGET_NOT_FOUND
    transient = True


class TargetRejected(SyncError):
    """The API server refuses (or would refuse) the Secret the spec and the fetched data describe."""

    reason = Reason.TARGET_REJECTED


class TargetImmutable(SyncError):
    """The target Secret is immutable and its data or type would change."""

    reason = Reason.TARGET_IMMUTABLE
    transient = True  # cleared by deleting the Secret, which the operator does not watch


class ProviderNotInstalled(SyncError):
    reason = Reason.PROVIDER_NOT_INSTALLED


class WriteFailed(SyncError):
    reason = Reason.WRITE_FAILED
    transient = True


class EndpointNotAllowed(InvalidBackend):
    """A backend would send credentials to an endpoint outside the operator's allowlist."""

    reason = Reason.ENDPOINT_NOT_ALLOWED


class CredentialNotAllowed(AuthFailed):
    """A credential (Secret, ServiceAccount, the operator's own identity) is not opted in for a backend.

    Transient: its owner may add the mark at any time, without an event the operator watches.
    """

    reason = Reason.CREDENTIAL_NOT_ALLOWED


class IssueFailed(SyncError):
    """The store refused to issue a certificate (unknown mount or role, a name the role does not allow)."""

    reason = Reason.ISSUE_FAILED
    transient = True


class LeaseGone(SyncError):
    """The store no longer renews a lease (expired, revoked, not renewable, max TTL reached): the operator
    issues new credentials; a reason only when that fails too."""

    reason = Reason.LEASE_RENEWAL_FAILED
    transient = True


class RevocationFailed(SyncError):
    """The store refused or failed to revoke a lease the operator no longer uses; retried."""

    reason = Reason.REVOCATION_FAILED
    transient = True

    def __init__(self, message: str, cause: Reason | None = None) -> None:
        super().__init__(message)
        #: Why: BackendUnavailable may pass; AuthFailed and the like need someone to act.
        self.cause = cause


class DecodingFailed(SyncError):
    """A value is not what its decodingStrategy says (not valid base64): the store's content or the spec
    must change."""

    reason = Reason.DECODING_FAILED
