"""When the certificate in a Secret is kept and when it is issued anew (pure logic, real X.509)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from managed_secrets.core.certificates import (
    CertificateInfo,
    leaf_info,
    request_hash,
    request_of,
    secret_data,
    still_good,
)
from managed_secrets.models.managedsecret import CertificateSource
from managed_secrets.providers.base import IssuedCertificate

START = datetime(2026, 1, 1, tzinfo=UTC)


def certificate(days: int = 30) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app.example.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0xABC)
        .not_valid_before(START)
        .not_valid_after(START + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


def source(**fields: object) -> CertificateSource:
    return CertificateSource.model_validate({"role": "web", "commonName": "app.example.test", **fields})


def test_leaf_info_reads_the_first_certificate_and_refuses_garbage() -> None:
    info = leaf_info({"tls.crt": certificate(), "tls.key": b"k"})
    assert info == CertificateInfo("abc", START.timestamp(), (START + timedelta(days=30)).timestamp())
    assert leaf_info({"tls.crt": b"not a certificate", "tls.key": b"k"}) is None
    assert leaf_info({"tls.crt": certificate()}) is None, "no key: issue anew"
    assert leaf_info({}) is None


def test_renewal_is_a_third_of_the_lifetime_ahead_by_default_or_renew_before() -> None:
    info = CertificateInfo("1", 0.0, 3000.0)
    assert info.renew_at(source()) == 2000.0
    assert info.renew_at(source(renewBefore="10m")) == 2400.0
    assert info.renew_at(source(renewBefore="8760h")) == 0.0, "never before it was issued"


def test_kept_only_for_the_same_request_and_before_renewal() -> None:
    info = CertificateInfo("1", 0.0, 3000.0)
    wanted = request_hash("SecretBackend ns/vault", request_of(source()))
    assert still_good(info, source(), recorded_hash=wanted, wanted_hash=wanted, now=1999.0)
    assert not still_good(info, source(), recorded_hash=wanted, wanted_hash=wanted, now=2000.0)
    assert not still_good(info, source(), recorded_hash=None, wanted_hash=wanted, now=1.0)
    assert not still_good(None, source(), recorded_hash=wanted, wanted_hash=wanted, now=1.0)


def test_every_part_of_the_request_changes_its_hash() -> None:
    base = request_hash("b", request_of(source()))
    changed = [
        request_hash("other backend", request_of(source())),
        request_hash("b", request_of(source(mount="pki2"))),
        request_hash("b", request_of(source(role="api"))),
        request_hash("b", request_of(source(commonName="x.example.test"))),
        request_hash("b", request_of(source(altNames=["a.example.test"]))),
        request_hash("b", request_of(source(ipSans=["127.0.0.1"]))),
        request_hash("b", request_of(source(ttl="1h"))),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
    assert request_hash("b", request_of(source(altNames=["a.t", "b.t"]))) == request_hash(
        "b", request_of(source(altNames=["b.t", "a.t"]))
    ), "order does not matter"


def test_tls_data_has_the_chain_in_tls_crt_and_the_root_in_ca_crt() -> None:
    leaf, root = certificate(), certificate(365)
    data = secret_data(IssuedCertificate(leaf, root, b"KEY", b"ISSUING"))
    assert data == {"tls.crt": leaf + root, "tls.key": b"KEY", "ca.crt": root}
    assert secret_data(IssuedCertificate(leaf, b"", b"KEY", b"ISSUING"))["ca.crt"] == b"ISSUING"
