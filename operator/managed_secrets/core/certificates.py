"""Certificates a ManagedSecret issues: when the one in the Secret is still good, when to issue anew.

Level-based like the rest of the core: the decision is taken from the Secret as it is (its tls.crt and
the hash of the request it was issued for) and the time, so an operator restart changes nothing, and the
next run is due at the renewal time. Nothing here reads a private key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from managed_secrets.models.managedsecret import CertificateSource
from managed_secrets.providers.base import CertificateRequest, IssuedCertificate

CERT_KEY, KEY_KEY, CA_KEY = "tls.crt", "tls.key", "ca.crt"
#: Without renewBefore: issue anew when a third of the lifetime is left (cert-manager's default too).
DEFAULT_RENEW_SHARE = 1 / 3


@dataclass(frozen=True)
class CertificateInfo:
    """What the Secret's leaf certificate says (public facts only)."""

    serial: str
    not_before: float
    not_after: float

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before

    def renew_at(self, source: CertificateSource) -> float:
        """When to issue anew: renewBefore ahead of expiry, else a third of the lifetime ahead."""
        ahead = (
            source.renew_before.total_seconds()
            if source.renew_before is not None
            else self.lifetime * DEFAULT_RENEW_SHARE
        )
        return self.not_after - min(ahead, self.lifetime)


def request_of(source: CertificateSource) -> CertificateRequest:
    return CertificateRequest(
        mount=source.mount.strip("/"),
        role=source.role,
        common_name=source.common_name,
        alt_names=tuple(source.alt_names),
        ip_sans=tuple(source.ip_sans),
        ttl_seconds=int(source.ttl.total_seconds()) if source.ttl is not None else None,
    )


def request_hash(backend_id: str, request: CertificateRequest) -> str:
    """Stable across restarts and versions: a changed request (names, role, ttl, backend) re-issues."""
    canonical = json.dumps(
        [backend_id, request.mount, request.role, request.common_name, sorted(request.alt_names),
         sorted(request.ip_sans), request.ttl_seconds],
        separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def leaf_info(data: Mapping[str, bytes]) -> CertificateInfo | None:
    """The first certificate of tls.crt, or None when there is none that parses (then: issue)."""
    pem = data.get(CERT_KEY)
    if not pem or not data.get(KEY_KEY):
        return None
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        return None
    return CertificateInfo(
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
    )


def still_good(
    info: CertificateInfo | None,
    source: CertificateSource,
    *,
    recorded_hash: str | None,
    wanted_hash: str,
    now: float,
) -> bool:
    """Keep the certificate in the Secret: it exists, was issued for this request, and is not due."""
    return info is not None and recorded_hash == wanted_hash and now < info.renew_at(source)


def secret_data(issued: IssuedCertificate) -> dict[str, bytes]:
    """kubernetes.io/tls data: the leaf and its chain in tls.crt (what TLS servers send), the root in
    ca.crt (what clients trust); an intermediate-less CA's certificate is both."""
    chain = issued.chain
    ca = issued.issuing_ca
    if chain:
        last = x509.load_pem_x509_certificates(chain)[-1]
        ca = last.public_bytes(Encoding.PEM) if last.issuer == last.subject else ca
    return {CERT_KEY: issued.certificate + chain, KEY_KEY: issued.private_key, CA_KEY: ca}


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
