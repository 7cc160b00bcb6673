"""An Azure Key Vault (secrets) server for integration tests, over real HTTPS, run as its own process.

Why not lowkey-vault: the Maven repository reachable here does not serve
``com.github.nagyesta.lowkey-vault:lowkey-vault-app`` (404 for its ``maven-metadata.xml`` and for every
version tried, while the same group's ``lowkey-vault-client`` is served), so its jar cannot be fetched on
this machine or in CI. This module is the stand-in, kept under the name the test plan gave it. It speaks
the parts of the Key Vault REST API (7.x) and of Microsoft Entra ID that the provider uses, so the real
azure-keyvault-secrets and azure-identity stacks run end to end against it:

- TLS with a certificate from a CA this harness creates; clients trust it through ``connection_verify``
  (``ca_path``), verification stays on.
- The Key Vault challenge flow: a request without a valid bearer token gets 401 with
  ``WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"``.
- Secrets: ``PUT /secrets/{name}`` (new version, 32-hex version id), ``GET /secrets/{name}[/{version}]``
  (latest = newest version), ``PATCH /secrets/{name}/{version}`` (enable/disable; reading a disabled
  version is 403 with inner error ``SecretDisabled``, as Key Vault does), ``DELETE /secrets/{name}``.
  Names must match ``^[0-9a-zA-Z-]{1,127}$`` (else 400 ``BadParameter``). Missing -> 404
  ``SecretNotFound``.
- Entra ID on the same host: ``/{tenant}/v2.0/.well-known/openid-configuration`` and
  ``/{tenant}/oauth2/v2.0/token`` (client_credentials with a client secret or a client assertion of a
  federated credential; wrong ones -> 401 ``invalid_client``), and an App Service style managed identity
  endpoint ``/msi/token`` (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``).
- Tokens it issued, and the static tokens it was started with, are accepted by the vault; others are not.

``python -m harness.lowkey --config FILE`` runs the server on 127.0.0.1; ``KeyVaultServer`` starts it as a
subprocess and stop()/start() is a real outage on the same port. Data does not survive a restart.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlparse

from harness.lifecycle import ServerHarness

SECRET_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
VAULT_RESOURCE = "https://vault.azure.net"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# ---------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Version:
    id: str
    value: str
    content_type: str | None
    created: int
    enabled: bool = True


@dataclass
class _State:
    config: dict[str, Any]
    base_url: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    secrets: dict[str, list[_Version]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)

    def valid_token(self, token: str) -> bool:
        return token in self.tokens or token in self.config.get("static_tokens", [])

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens.add(token)
        return token


class _Handler(BaseHTTPRequestHandler):
    state: ClassVar[_State]
    protocol_version = "HTTP/1.1"

    # -- plumbing -------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        # Request lines only (method, path, status): never bodies.
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _kv_error(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if inner:
            error["innererror"] = {"code": inner}
        self._send(status, {"error": error})

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if parts and parts[0] == "secrets":
                self._vault(method, parts[1:], query)
            elif parts == ["msi", "token"] and method == "GET":
                self._managed_identity(query)
            elif len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                self._openid_configuration(parts[0])
            elif len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
                self._token(parts[0])
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": {"code": "NotFound", "message": "no such route"}})
        except (ValueError, KeyError):
            self._kv_error(HTTPStatus.BAD_REQUEST, "BadParameter", "The request is not valid.")

    # -- Entra ID -------------------------------------------------------------------------------------

    def _openid_configuration(self, tenant: str) -> None:
        if tenant != self.state.config["tenant_id"]:
            self._send(
                HTTPStatus.BAD_REQUEST, {"error": "invalid_tenant", "error_description": "AADSTS90002"}
            )
            return
        base = f"{self.state.base_url}/{tenant}"
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

    def _token(self, tenant: str) -> None:
        form = {k: v[0] for k, v in parse_qs(self._body().decode()).items()}
        config = self.state.config
        client_id = form.get("client_id", "")
        refused = {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "error_codes": [7000215],
        }
        if tenant != config["tenant_id"] or form.get("grant_type") != "client_credentials":
            self._send(
                HTTPStatus.BAD_REQUEST, {"error": "invalid_request", "error_description": "AADSTS90002"}
            )
            return
        if "client_secret" in form:
            ok = config.get("client_secrets", {}).get(client_id) == form["client_secret"]
        elif form.get("client_assertion_type") == ASSERTION_TYPE:
            ok = config.get("federated_assertions", {}).get(client_id) == form.get("client_assertion")
        else:
            ok = False
        if not ok:
            self._send(HTTPStatus.UNAUTHORIZED, refused)
            return
        self._send(
            HTTPStatus.OK,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": self.state.issue_token(),
            },
        )

    def _managed_identity(self, query: dict[str, str]) -> None:
        config = self.state.config
        if self.headers.get("X-IDENTITY-HEADER") != config.get("identity_header"):
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "invalid_request"})
            return
        identity = query.get("client_id") or "system"
        if identity not in config.get("managed_identities", []):
            self._send(
                HTTPStatus.BAD_REQUEST,
                {"error": "invalid_request", "error_description": "Identity not found"},
            )
            return
        self._send(
            HTTPStatus.OK,
            {
                "access_token": self.state.issue_token(),
                "expires_on": str(int(time.time()) + 3600),
                "resource": query.get("resource", VAULT_RESOURCE),
                "token_type": "Bearer",
            },
        )

    # -- Key Vault ------------------------------------------------------------------------------------

    def _vault(self, method: str, parts: list[str], query: dict[str, str]) -> None:
        authorization = self.headers.get("Authorization", "")
        token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
        if not self.state.valid_token(token):
            self._body()  # drain
            challenge = (
                f'Bearer authorization="{self.state.base_url}/{self.state.config["tenant_id"]}", '
                f'resource="{VAULT_RESOURCE}"'
            )
            self._send(
                HTTPStatus.UNAUTHORIZED,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer token.",
                    }
                },
                headers={"WWW-Authenticate": challenge},
            )
            return
        if "api-version" not in query:
            self._kv_error(HTTPStatus.BAD_REQUEST, "BadParameter", "api-version is required")
            return
        if not parts and method == "GET":
            self._list(int(query.get("maxresults", "25")))
            return
        if not parts or not (1 <= len(parts[0]) <= 127) or not set(parts[0]) <= SECRET_NAME_CHARS:
            self._kv_error(
                HTTPStatus.BAD_REQUEST,
                "BadParameter",
                "The request URI contains an invalid name: names must match ^[0-9a-zA-Z-]+$",
            )
            return
        name, version = parts[0], (parts[1] if len(parts) > 1 else "")
        with self.state.lock:
            if method == "PUT" and not version:
                self._put(name)
            elif method == "GET":
                self._get(name, version)
            elif method == "PATCH" and version:
                self._patch(name, version)
            elif method == "DELETE" and not version:
                self._delete(name)
            else:
                self._kv_error(HTTPStatus.METHOD_NOT_ALLOWED, "BadParameter", "Method not allowed.")

    def _bundle(self, name: str, version: _Version, *, value: bool = True) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "id": f"{self.state.base_url}/secrets/{name}/{version.id}",
            "attributes": {
                "enabled": version.enabled,
                "created": version.created,
                "updated": version.created,
                "recoveryLevel": "Purgeable",
            },
            "tags": {},
        }
        if value:
            bundle["value"] = version.value
        if version.content_type:
            bundle["contentType"] = version.content_type
        return bundle

    def _not_found(self, name: str) -> None:
        self._kv_error(
            HTTPStatus.NOT_FOUND,
            "SecretNotFound",
            f"A secret with (name/id) {name} was not found in this key vault.",
        )

    def _put(self, name: str) -> None:
        body = json.loads(self._body() or b"{}")
        if not isinstance(body.get("value"), str):
            self._kv_error(HTTPStatus.BAD_REQUEST, "BadParameter", "Property value is required.")
            return
        version = _Version(
            id=uuid.uuid4().hex,
            value=body["value"],
            content_type=body.get("contentType"),
            created=int(time.time()),
            enabled=bool((body.get("attributes") or {}).get("enabled", True)),
        )
        self.state.secrets.setdefault(name, []).append(version)
        self._send(HTTPStatus.OK, self._bundle(name, version))

    def _find(self, name: str, version_id: str) -> _Version | None:
        versions = self.state.secrets.get(name) or []
        if not version_id:
            return versions[-1] if versions else None
        return next((v for v in versions if v.id == version_id), None)

    def _get(self, name: str, version_id: str) -> None:
        version = self._find(name, version_id)
        if version is None:
            self._not_found(name)
        elif not version.enabled:
            self._kv_error(
                HTTPStatus.FORBIDDEN,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                "SecretDisabled",
            )
        else:
            self._send(HTTPStatus.OK, self._bundle(name, version))

    def _list(self, limit: int) -> None:
        """The first page of the secrets' properties (no values, no paging: the operator reads one)."""
        with self.state.lock:
            items = []
            listed = [(n, v) for n, v in sorted(self.state.secrets.items()) if v]
            for name, versions in listed[:limit]:
                bundle = self._bundle(name, versions[-1], value=False)
                bundle["id"] = f"{self.state.base_url}/secrets/{name}"
                items.append(bundle)
        self._send(HTTPStatus.OK, {"value": items, "nextLink": None})

    def _patch(self, name: str, version_id: str) -> None:
        body = json.loads(self._body() or b"{}")
        version = self._find(name, version_id)
        if version is None:
            self._not_found(name)
            return
        if "enabled" in (body.get("attributes") or {}):
            version.enabled = bool(body["attributes"]["enabled"])
        if "contentType" in body:
            version.content_type = body["contentType"]
        self._send(HTTPStatus.OK, self._bundle(name, version, value=False))

    def _delete(self, name: str) -> None:
        versions = self.state.secrets.pop(name, None)
        if not versions:
            self._not_found(name)
            return
        # No soft delete here (no recoveryId): deleting is final, like a vault without soft delete.
        self._send(HTTPStatus.OK, self._bundle(name, versions[-1], value=False))


def serve(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    port = int(config["port"])
    state = _State(config=config, base_url=f"https://127.0.0.1:{port}")
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config["cert_file"], config["key_file"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"key vault stand-in listening on {state.base_url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ClientIdentity:
    tenant_id: str
    client_id: str
    secret: str


class KeyVaultServer(ServerHarness):
    """The server above as a subprocess on 127.0.0.1:<port>; the port stays the same across restarts.

    Credentials it accepts: ``static_token`` (use ``StaticTokenCredential``), the service principal
    ``principal`` (client secret), the federated credential ``federated_client_id`` whose assertion is
    ``federated_assertion``, the managed identities ``managed_identity_ids`` (and the system-assigned one)
    through ``identity_endpoint`` / ``identity_header``.
    """

    def __init__(self, *, port: int | None = None, start_timeout: float = 30.0) -> None:
        from .controlplane import free_port

        self.port = port if port is not None else free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.vault_url = self.url
        self.authority = self.url
        self.identity_endpoint = f"{self.url}/msi/token"
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-keyvault-"))
        self.log_path = self.workdir / "keyvault.log"
        self.ca_path, cert_path, key_path = write_tls_files(self.workdir)
        tenant = str(uuid.uuid4())
        self.static_token = secrets.token_urlsafe(24)
        self.principal = ClientIdentity(tenant, str(uuid.uuid4()), secrets.token_urlsafe(24))
        self.federated_client_id = str(uuid.uuid4())
        self.federated_assertion = secrets.token_urlsafe(48)
        self.managed_identity_ids = [str(uuid.uuid4())]
        self.identity_header = secrets.token_urlsafe(16)
        self.tenant_id = tenant
        self.config_path = self.workdir / "config.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "cert_file": str(cert_path),
                    "key_file": str(key_path),
                    "tenant_id": tenant,
                    "static_tokens": [self.static_token],
                    "client_secrets": {self.principal.client_id: self.principal.secret},
                    "federated_assertions": {self.federated_client_id: self.federated_assertion},
                    "managed_identities": ["system", *self.managed_identity_ids],
                    "identity_header": self.identity_header,
                }
            )
        )
        self.config_path.chmod(0o600)
        self._server: Any = None

    def start(self) -> Self:
        from .controlplane import HarnessError, ServerProcess, wait_until

        if self.running:
            raise HarnessError("key vault already running")
        tests_dir = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
        }
        server = ServerProcess(
            "keyvault",
            [sys.executable, "-m", "harness.lowkey", "--config", str(self.config_path)],
            self.log_path,
            env=env,
        )
        self._server = server
        atexit.register(self.stop)
        server.start()
        try:
            wait_until(
                self._ready,
                timeout=self.start_timeout,
                what=f"key vault at {self.url}",
                alive=server.exit_problem,
            )
        except BaseException:
            print(f"key vault failed to start:\n{server.tail()}", file=sys.stderr)
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        request = urllib.request.Request(f"{self.url}/secrets/probe?api-version=7.5")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=2, context=context):  # noqa: S310
                return True
        except urllib.error.HTTPError as error:
            return error.code == HTTPStatus.UNAUTHORIZED
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self._server is None:
            return
        atexit.unregister(self.stop)
        self._server.stop()
        self._server = None

    def close(self) -> None:
        self.stop()
        if os.environ.get("MANAGED_SECRETS_KEEP_TESTDIR", "") in ("", "0"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def client(self) -> Any:
        """An azure SecretClient for this vault with the static token, trusting the harness CA."""
        from azure.keyvault.secrets import SecretClient

        return SecretClient(
            vault_url=self.vault_url,
            credential=StaticTokenCredential(self.static_token),
            verify_challenge_resource=False,
            connection_verify=str(self.ca_path),
            retry_total=0,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    serve(parser.parse_args().config)


if __name__ == "__main__":
    main()
