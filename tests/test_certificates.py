"""Certificates from OpenBao's PKI engine, on the real control plane: a kubernetes.io/tls Secret that
verifies against the issuing CA with the requested names, issued anew renewBefore ahead of its expiry and
on a changed request, kept through refreshes and an operator restart, a refused request reported as
IssueFailed with the old Secret kept, and the private key never in the operator's log (DEBUG included)."""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from kubernetes.client.exceptions import ApiException

from conftest import DebugLogCapture
from harness.openbao import OpenBao
from harness.operator import OperatorRunner
from kube import Kube, wait_for
from leaks import assert_absent
from managed_secrets.api import CERTIFICATE_REQUEST_ANNOTATION, TLS_SECRET_TYPE

ROLE = "web"
DOMAIN = "example.test"


@pytest.fixture
def pki(openbao: OpenBao) -> Iterator[str]:
    """A PKI engine of its own (mount per test) with a root CA and a role for *.example.test."""
    mount = f"pki-{secrets.token_hex(4)}"
    client = openbao.client()
    client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    client.secrets.pki.generate_root("internal", "managed-secrets test CA", mount_point=mount)
    client.secrets.pki.create_or_update_role(
        ROLE,
        {"allowed_domains": DOMAIN, "allow_subdomains": True, "allow_ip_sans": True, "max_ttl": "24h"},
        mount_point=mount,
    )
    yield mount
    client.sys.disable_secrets_engine(mount)


def issued_serials(openbao: OpenBao, mount: str) -> set[str]:
    """Every certificate the engine issued (the CA's own included)."""
    answer = openbao.client().secrets.pki.list_certificates(mount_point=mount)
    return set(answer["data"]["keys"])


def spec(mount: str, **certificate: Any) -> dict[str, Any]:
    return {
        "backendRef": {"name": "vault"},
        "refreshInterval": "1h",
        "certificate": {"mount": mount, "role": ROLE, "commonName": f"app.{DOMAIN}", **certificate},
    }


def tls_data(kube: Kube, namespace: str, name: str = "tls") -> dict[str, bytes]:
    secret = kube.existing_secret(namespace, name)
    assert secret.type == TLS_SECRET_TYPE
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def leaf(data: dict[str, bytes]) -> x509.Certificate:
    return x509.load_pem_x509_certificates(data["tls.crt"])[0]


def verify_signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    signature_hash = certificate.signature_hash_algorithm
    assert signature_hash is not None
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(
            certificate.signature, certificate.tbs_certificate_bytes, padding.PKCS1v15(), signature_hash
        )
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(signature_hash))


def test_certificate_is_issued_verified_and_kept(
    operator: OperatorRunner,
    openbao: OpenBao,
    kube: Kube,
    namespace: str,
    vault_backend: str,
    pki: str,
    debug_log: DebugLogCapture,
) -> None:
    kube.create_ms(namespace, "tls", spec(pki, altNames=[f"api.{DOMAIN}"], ipSans=["127.0.0.1"], ttl="2h"))
    kube.wait_ready(namespace, "tls", timeout=60)
    data = tls_data(kube, namespace)
    cert, ca = leaf(data), x509.load_pem_x509_certificate(data["ca.crt"])
    verify_signed_by(cert, ca)
    assert ca.subject == ca.issuer, "ca.crt is the root"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) >= {f"app.{DOMAIN}", f"api.{DOMAIN}"}
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    key = load_pem_private_key(data["tls.key"], password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers(), "tls.key matches"  # type: ignore[union-attr]
    status = kube.get_ms(namespace, "tls")["status"]
    assert status["expiresAt"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert CERTIFICATE_REQUEST_ANNOTATION in (
        kube.existing_secret(namespace, "tls").metadata.annotations or {}
    )

    # Refreshes and a restart keep it: nothing is issued, the Secret is not written.
    serials = issued_serials(openbao, pki)
    version = kube.existing_secret(namespace, "tls").metadata.resource_version
    operator.restart()
    kube.patch_ms(namespace, "tls", {"spec": {"refreshInterval": "2s"}})  # a refresh every 2 s from now
    refreshes: set[float] = set()

    def refreshed_three_times() -> bool:
        state = operator.runtime.controller.state_of(namespace, "tls")
        if state is not None and state.last_refresh is not None and state.generation >= 2:
            refreshes.add(state.last_refresh)
        return len(refreshes) >= 3

    wait_for(refreshed_three_times, 60, what="three refreshes after the restart")
    kube.wait_ready(namespace, "tls", timeout=60)
    assert issued_serials(openbao, pki) == serials, "no certificate issued by refreshes or the restart"
    assert kube.existing_secret(namespace, "tls").metadata.resource_version == version, "no write"

    # A changed request issues anew (the request hash on the Secret no longer matches).
    kube.patch_ms(namespace, "tls", {"spec": {"certificate": {"altNames": [f"www.{DOMAIN}"]}}})
    wait_for(
        lambda: leaf(tls_data(kube, namespace)).serial_number != cert.serial_number,
        60,
        what="a certificate for the new names",
    )
    new_names = leaf(tls_data(kube, namespace)).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert f"www.{DOMAIN}" in new_names.value.get_values_for_type(x509.DNSName)

    # The private keys never reach the log (DEBUG included), the events or the status.
    log_text = debug_log.text()
    for private_key in (data["tls.key"], tls_data(kube, namespace)["tls.key"]):
        body = b"".join(private_key.strip().splitlines()[1:-1]).decode()
        for chunk in (body[:64], body[-64:]):
            assert_absent(chunk, log_text, "the operator log")
            assert_absent(chunk, str(kube.get_ms(namespace, "tls")), "the status")
            assert_absent(chunk, str(kube.core.list_namespaced_event(namespace).to_dict()), "the events")


def test_certificate_is_issued_anew_before_it_expires(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, pki: str
) -> None:
    """ttl 40 s, renewBefore 30 s: due 10 s after issue, while the refresh interval is an hour."""
    kube.create_ms(namespace, "tls", spec(pki, ttl="40s", renewBefore="30s"))
    kube.wait_ready(namespace, "tls", timeout=60)
    first = leaf(tls_data(kube, namespace))

    def issued_anew() -> x509.Certificate | None:
        cert = leaf(tls_data(kube, namespace))
        return cert if cert.serial_number != first.serial_number else None

    renewed = wait_for(issued_anew, 90, what="the certificate issued anew")
    assert datetime.now(UTC) < first.not_valid_after_utc, "before the old one expired"
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    wait_for(
        lambda: (
            kube.get_ms(namespace, "tls")["status"].get("expiresAt")
            == renewed.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        30,
        what="status.expiresAt of the new certificate",
    )


def test_refused_request_is_issue_failed_and_keeps_the_secret(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, vault_backend: str, pki: str
) -> None:
    kube.create_ms(namespace, "tls", spec(pki, ttl="1h"))
    kube.wait_ready(namespace, "tls", timeout=60)
    before = kube.existing_secret(namespace, "tls")
    # A name the role does not allow, then a role that does not exist: refused, the Secret stays.
    kube.patch_ms(namespace, "tls", {"spec": {"certificate": {"commonName": "app.elsewhere.test"}}})
    condition = kube.wait_ready(namespace, "tls", "False", "IssueFailed", timeout=60)
    assert "elsewhere" in condition["message"]
    kube.patch_ms(
        namespace, "tls", {"spec": {"certificate": {"commonName": f"app.{DOMAIN}", "role": "nope"}}}
    )
    wait_for(
        lambda: (kube.get_ms(namespace, "tls")["status"].get("observedGeneration") or 0) >= 3,
        60,
        what="the operator to see the unknown role",
    )
    kube.wait_ready(namespace, "tls", "False", "IssueFailed", timeout=60)
    after = kube.existing_secret(namespace, "tls")
    assert after.metadata.resource_version == before.metadata.resource_version, "the last good Secret kept"
    kube.patch_ms(namespace, "tls", {"spec": {"certificate": {"role": ROLE}}})
    kube.wait_ready(namespace, "tls", timeout=60)  # heals; the original request again: nothing new needed
    assert (
        kube.existing_secret(namespace, "tls").metadata.resource_version == before.metadata.resource_version
    )


def test_certificate_spec_rules_are_enforced_by_the_api_server(kube: Kube, namespace: str) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        (
            {
                "certificate": {"role": ROLE, "commonName": f"a.{DOMAIN}"},
                "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}],
            },
            "not both",
        ),
        (
            {"certificate": {"role": ROLE, "commonName": f"a.{DOMAIN}", "ttl": "1h", "renewBefore": "2h"}},
            "renewBefore",
        ),
        (
            {
                "certificate": {"role": ROLE, "commonName": f"a.{DOMAIN}"},
                "target": {"creationPolicy": "Merge"},
            },
            "Merge",
        ),
        ({"certificate": {"role": ROLE, "commonName": f"a.{DOMAIN}", "ttl": "1s"}}, "10s"),
    ]
    for index, (extra, message) in enumerate(bad):
        with pytest.raises(ApiException) as refused:
            kube.create_ms(namespace, f"bad-{index}", {"backendRef": {"name": "vault"}, **extra})
        assert refused.value.status == 422
        assert message in str(refused.value.body)


def test_a_tenant_issues_only_from_the_roles_a_cluster_backend_allows(
    operator: OperatorRunner, openbao: OpenBao, kube: Kube, namespace: str, pki: str
) -> None:
    """A ClusterSecretBackend shared by tenants with ``remoteKeys: [<mount>/issue/{namespace}]``: a tenant
    gets certificates from its own role, and an ask for another role (plainly or through a path trick)
    is KeyNotAllowed before anything is issued."""
    client = openbao.client()
    client.secrets.pki.create_or_update_role(
        namespace, {"allowed_domains": DOMAIN, "allow_subdomains": True, "max_ttl": "1h"}, mount_point=pki
    )
    name = f"pki-{namespace}"[:63]
    kube.create_cluster_vault_token_backend(
        name,
        namespace,
        openbao.addr,
        openbao.root_token,
        [{"namespaces": [namespace], "remoteKeys": [f"{pki}/issue/{{namespace}}"]}],
    )
    try:
        backend = {"kind": "ClusterSecretBackend", "name": name}
        own = {**spec(pki, ttl="1h"), "backendRef": backend}
        own["certificate"]["role"] = namespace
        kube.create_ms(namespace, "own", own)
        kube.wait_ready(namespace, "own", timeout=60)
        serials = issued_serials(openbao, pki)
        attack = {**spec(pki, ttl="1h"), "backendRef": backend}
        attack["certificate"]["role"] = ROLE  # another tenant's role, plainly
        kube.create_ms(namespace, "attack", attack)
        kube.wait_ready(namespace, "attack", "False", "KeyNotAllowed", timeout=60)
        assert kube.secret(namespace, "attack") is None
        attack["certificate"]["role"] = f"{namespace}/../{ROLE}"  # through a path trick: the schema refuses
        with pytest.raises(ApiException) as refused:
            kube.create_ms(namespace, "attack-path", attack)
        assert refused.value.status == 422
        assert issued_serials(openbao, pki) == serials, "nothing issued for the refused asks"
    finally:
        kube.delete_cluster_backend(name)
