"""The real lowkey-vault (nagyesta/lowkey-vault, the Azure Key Vault emulator, Java) for tests, plus a small
Entra ID authority stub for the credentials that need one.

hack/build-lowkey-vault.sh gets the jar (see harness.servers); ``KeyVaultServer`` runs it with the Java 25
the script found, on 127.0.0.1: the HTTPS Key Vault API on ``port`` and the plain-HTTP managed-identity
token endpoint on ``token_port``. stop()/start() is a real outage on the same ports; everything is in
memory, so a restart is a reset. What lowkey-vault does, so the tests know what they prove:

- it accepts any non-empty bearer token (a request without one gets the 401 challenge), so refused
  credentials are proven at the authority stub below, which checks client secrets and federated
  assertions the way Entra ID would;
- its challenge names ``https://127.0.0.1:<port>`` as the resource (clients turn off challenge resource
  verification) and ``.../secrets`` as the authorization URI, so clients see the tenant "secrets";
- it knows Key Vault API versions up to 2025-07-01 (the SDK's default, 2026-04-01, is an HTTP 400);
- a disabled version is a 404 (Key Vault: 403 ``SecretDisabled``);
- it serves a fixed self-signed certificate (lowkey-vault.pem beside the jar); ``ca_path`` is a bundle
  of it and the stub's CA.

The stub (``EntraAuthority``) runs in this process: ``/{tenant}/v2.0/.well-known/openid-configuration``
and ``/{tenant}/oauth2/v2.0/token`` (client_credentials with a client secret or a client assertion).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import parse_qs

from .controlplane import HarnessError, ServerProcess, free_ports
from .lifecycle import ProcessHarness
from .servers import LOWKEY_VAULT_SCRIPT, build_server

if TYPE_CHECKING:
    from managed_secrets.testing.contract import Value

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The newest Key Vault API version lowkey-vault knows.
API_VERSION = "2025-07-01"
#: The tenant clients take from lowkey-vault's challenge (its authorization URI ends in /secrets).
CHALLENGE_TENANT = "secrets"


def lowkey_jar() -> Path:
    """lowkey-vault's jar; raises harness.servers.ServerUnavailable when it cannot be had."""
    return build_server(LOWKEY_VAULT_SCRIPT)


# ---------------------------------------------------------------------------------------------------
# The Entra ID authority stub
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientIdentity:
    tenant_id: str
    client_id: str
    secret: str


class _AuthorityHandler(BaseHTTPRequestHandler):
    authority: ClassVar[EntraAuthority]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # request lines would be all: nothing worth keeping

    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _tenant(self) -> str | None:
        tenant = self.path.split("?", 1)[0].strip("/").split("/", 1)[0]
        return tenant if tenant in (self.authority.tenant_id, CHALLENGE_TENANT) else None

    def do_GET(self) -> None:
        tenant = self._tenant()
        if tenant is None or not self.path.split("?", 1)[0].endswith(
            "/v2.0/.well-known/openid-configuration"
        ):
            self._send(
                HTTPStatus.BAD_REQUEST, {"error": "invalid_tenant", "error_description": "AADSTS90002"}
            )
            return
        base = f"{self.authority.url}/{tenant}"
        self._send(
            HTTPStatus.OK,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if self._tenant() is None or form.get("grant_type") != "client_credentials":
            self._send(
                HTTPStatus.BAD_REQUEST, {"error": "invalid_request", "error_description": "AADSTS90002"}
            )
            return
        client_id = form.get("client_id", "")
        if "client_secret" in form:
            ok = self.authority.client_secrets.get(client_id) == form["client_secret"]
        elif form.get("client_assertion_type") == ASSERTION_TYPE:
            ok = self.authority.federated_assertions.get(client_id) == form.get("client_assertion")
        else:
            ok = False
        if not ok:
            self._send(
                HTTPStatus.UNAUTHORIZED,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
            )
            return
        token = secrets.token_urlsafe(32)
        self._send(
            HTTPStatus.OK,
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token},
        )


class EntraAuthority:
    """The stub on https://127.0.0.1:<port> in a daemon thread, with a certificate from ``ca_path``."""

    def __init__(self, workdir: Path, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.client_secrets: dict[str, str] = {}
        self.federated_assertions: dict[str, str] = {}
        self.ca_path, cert, key = write_tls_files(workdir)
        handler = type("Handler", (_AuthorityHandler,), {"authority": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server-key.pem): a CA and a server certificate for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "managed-secrets test key vault CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server-key.pem",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class StaticTokenCredential:
    """A TokenCredential that always returns one token (the vault accepts tokens it was started with)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        pass


class KeyVaultServer(ProcessHarness):
    """lowkey-vault as a subprocess on 127.0.0.1; the ports stay the same across restarts.

    Credentials: ``static_token`` (any token works), the service principal ``principal`` (client secret,
    checked by ``authority``), the federated credential ``federated_client_id`` whose assertion is
    ``federated_assertion``, and managed identity through lowkey-vault's token endpoint (App Service
    style: ``identity_endpoint`` with any ``identity_header``; IMDS style: ``imds_host``).
    """

    def __init__(self, *, start_timeout: float = 120.0) -> None:
        jar = lowkey_jar()
        self.jar = jar
        self.java = Path((jar.parent / "java-home").read_text().strip()) / "bin" / "java"
        self.port, self.token_port = free_ports(2)
        self.url = f"https://127.0.0.1:{self.port}"
        self.vault_url = self.url
        self.imds_host = f"http://127.0.0.1:{self.token_port}"
        self.identity_endpoint = f"{self.imds_host}/metadata/identity/oauth2/token"
        self.identity_header = secrets.token_urlsafe(16)
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-keyvault-"))
        self.log_path = self.workdir / "lowkey-vault.log"
        self.tenant_id = str(uuid.uuid4())
        self.principal = ClientIdentity(self.tenant_id, str(uuid.uuid4()), secrets.token_urlsafe(24))
        self.federated_client_id = str(uuid.uuid4())
        self.federated_assertion = secrets.token_urlsafe(48)
        self.static_token = secrets.token_urlsafe(24)
        self.authority_server = EntraAuthority(self.workdir, self.tenant_id)
        self.authority_server.client_secrets[self.principal.client_id] = self.principal.secret
        self.authority_server.federated_assertions[self.federated_client_id] = self.federated_assertion
        self.authority = self.authority_server.url
        # One CA bundle for the vault (lowkey-vault's self-signed certificate) and the authority stub.
        self.lowkey_pem = jar.parent / "lowkey-vault.pem"
        self.ca_path = self.workdir / "ca-bundle.pem"
        self.ca_path.write_text(self.lowkey_pem.read_text() + self.authority_server.ca_path.read_text())
        self._server: ServerProcess | None = None

    def start(self) -> Self:
        if self.running:
            raise HarnessError("lowkey-vault already running")
        argv: list[str | Path] = [
            self.java,
            *os.environ.get(
                "LOWKEY_JAVA_OPTS", "-XX:TieredStopAtLevel=1 -Xss512k -XX:+UseSerialGC -Xmx512m"
            ).split(),
            "-jar",
            self.jar,
            "--server.address=127.0.0.1",
            f"--server.port={self.port}",
            f"--app.token.port={self.token_port}",
        ]
        server = ServerProcess("lowkey-vault", argv, self.log_path)
        self._launch(
            server, self._ready, what=f"lowkey-vault at {self.url}", timeout=self.start_timeout, interval=0.5
        )
        return self

    def _ready(self) -> bool:
        # /ping answers "pong" on both connectors once the app has started; the HTTPS one is what tests use.
        context = ssl.create_default_context(cafile=str(self.lowkey_pem))
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=2, context=context) as answer:  # noqa: S310
                return bool(answer.read().strip() == b"pong")
        except (urllib.error.URLError, OSError):
            return False

    def close(self) -> None:
        self.authority_server.close()
        super().close()

    def client(self) -> Any:
        """An admin SecretClient for this vault (a static token; lowkey-vault checks none)."""
        from azure.keyvault.secrets import SecretClient

        return SecretClient(
            vault_url=self.vault_url,
            credential=StaticTokenCredential(self.static_token),
            api_version=API_VERSION,
            verify_challenge_resource=False,
            connection_verify=str(self.lowkey_pem),
            retry_total=0,
        )


class KeyVaultRemote:
    supports_binary = False
    max_value_size = 25 * 1024  # Key Vault's limit for a secret value

    def __init__(self, server: KeyVaultServer) -> None:
        self.server = server

    def new_key(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    def put(self, key: str, value: Value) -> str:
        from azure.core.exceptions import HttpResponseError

        with self.server.client() as client:
            try:
                secret = client.set_secret(key, self.expected(value).decode())
            except HttpResponseError as error:
                if error.status_code != 409:
                    raise
                # A deleted (soft-deleted) name is set again after recovering it, as in Key Vault; this
                # vault does not purge.
                client.begin_recover_deleted_secret(key).wait()
                secret = client.set_secret(key, self.expected(value).decode())
        return str(secret.properties.version)

    def disable(self, key: str, version: str) -> None:
        with self.server.client() as client:
            client.update_secret_properties(key, version, enabled=False)

    def delete(self, key: str) -> None:
        with self.server.client() as client:
            client.begin_delete_secret(key).wait()

    def expected(self, value: Value) -> bytes:
        if isinstance(value, dict):
            return json.dumps(value).encode()
        return value if isinstance(value, bytes) else value.encode()

    def missing_version(self) -> str:
        return uuid.uuid4().hex

    def stop_server(self) -> None:
        self.server.stop()

    def start_server(self) -> None:
        self.server.start()

    def enable(self, key: str, version: str) -> None:
        with self.server.client() as client:
            client.update_secret_properties(key, version, enabled=True)
