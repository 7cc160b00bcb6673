"""HashiCorp Vault / OpenBao KV (v1 and v2) through hvac.

Auth: a static token from a Secret, Kubernetes (a TokenRequest token for the audience ``vault`` unless
``serviceAccountRef.audiences`` says otherwise, verified by Vault's TokenReview) or AppRole. A login
token is kept and renewed while it lives, and obtained again only when renewal fails or Vault refuses
it, never on every read.

Credentials go to ``server`` only: it must be an allowed store endpoint, and a redirect elsewhere is
refused (``X-Vault-Token`` is a custom header, which ``requests`` would carry along to any host).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import hvac
import hvac.exceptions
import requests
import requests.adapters
from pydantic import ConfigDict, Field

from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    InvalidBackend,
    IssueFailed,
    LeaseGone,
    RemoteKeyNotFound,
    RevocationFailed,
    SyncError,
    VersionNotFound,
)
from managed_secrets.models.base import CamelModel
from managed_secrets.models.schema import rule, rules
from managed_secrets.providers.base import (
    CertificateRequest,
    Fetched,
    IssuedCertificate,
    IssuedLease,
    LeaseRequest,
    ProviderContext,
    RemoteKey,
    SecretKeyRef,
    SecretProvider,
    ServiceAccountRef,
    audiences_doc,
    parse_config,
)
from managed_secrets.providers.keys import refuse_if_ambiguous

log = logging.getLogger(__name__)


class KVVersion(StrEnum):
    V1 = "v1"
    V2 = "v2"


#: Audience of the Kubernetes-auth token unless the backend names one (as ESO's and VSO's examples do);
#: the Vault role's ``audience`` must be set to it.
DEFAULT_KUBERNETES_AUDIENCE = "vault"


class TokenAuth(CamelModel):
    secret_ref: SecretKeyRef = Field(description="The Secret key holding the Vault token.")


class KubernetesAuth(CamelModel):
    mount_path: str = Field(
        default="kubernetes",
        min_length=1,
        max_length=1024,
        description="Mount path of the Kubernetes auth method in Vault.",
    )
    role: str = Field(
        min_length=1,
        max_length=1024,
        description="Vault role to log in as (bound to the ServiceAccount's name and namespace).",
    )
    service_account_ref: ServiceAccountRef = Field(
        description="The ServiceAccount whose token is presented to Vault.",
        json_schema_extra=audiences_doc(DEFAULT_KUBERNETES_AUDIENCE),
    )


class AppRoleAuth(CamelModel):
    mount_path: str = Field(
        default="approle",
        min_length=1,
        max_length=1024,
        description="Mount path of the AppRole auth method in Vault.",
    )
    role_id: str = Field(min_length=1, max_length=1024, description="The AppRole's role ID.")
    secret_ref: SecretKeyRef = Field(description="The Secret key holding the AppRole's secret ID.")


class VaultAuth(CamelModel):
    # The provider refuses anything but exactly one method too (VaultProvider).
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "[has(self.token), has(self.kubernetes), has(self.appRole)].filter(x, x).size() == 1",
                "set exactly one of vault.auth.token, vault.auth.kubernetes or vault.auth.appRole",
            )
        )
    )

    token: TokenAuth | None = Field(
        default=None,
        description="A static Vault token read from a Kubernetes Secret. It is read again when Vault"
        " refuses it, so rotating the Secret is enough.",
    )
    kubernetes: KubernetesAuth | None = Field(
        default=None,
        description="Vault's Kubernetes auth method: the operator requests a short-lived token for"
        " serviceAccountRef and logs in with it; Vault checks it through TokenReview.",
    )
    app_role: AppRoleAuth | None = Field(
        default=None,
        description="Vault's AppRole auth method: role ID here, secret ID in a Kubernetes Secret.",
    )


class VaultConfig(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "HashiCorp Vault or OpenBao, KV secrets engine version 1 or 2. Remote keys are"
            " paths below the mount (app/db reads <path>/data/app/db on KV v2); a value is the key's whole"
            " data map, as JSON, so use remoteRef.property to pick one field or dataFrom.extract to take"
            " them all."
        }
    )

    server: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="Address of the Vault server, like https://vault.example.com:8200. It must be one of"
        " the operator's allowed store endpoints (--allowed-store-endpoint); redirects elsewhere are"
        " refused.",
    )
    path: str = Field(
        default="secret", min_length=1, max_length=1024, description="Mount path of the KV secrets engine."
    )
    version: KVVersion = Field(
        default=KVVersion.V2,
        description="Version of the KV secrets engine: v2 (versioned, the default of `vault server -dev`) or"
        " v1 (unversioned: remoteRef.version cannot be used).",
    )
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Vault Enterprise / OpenBao namespace to use (X-Vault-Namespace). Unset: the root"
        " namespace.",
    )
    ca_bundle: str | None = Field(
        default=None,
        min_length=1,
        description="PEM-encoded CA certificates to trust for the server's TLS certificate, base64-encoded"
        " (a raw PEM string is accepted too). Unset: the system's trust store.",
    )
    auth: VaultAuth = Field(
        description="How the operator logs in to Vault. Set exactly one of token, kubernetes or appRole."
        " Login tokens are kept and renewed while they live, not obtained again for every read."
    )


#: Renew a login token once this share of its lifetime has passed.
RENEW_AT_FRACTION = 0.5
#: KV v2 versions count from 1. Vault reads 0, negative numbers and some junk as "the latest version", so a
#: pinned version must be exactly a positive number (no sign, no leading zero, no spaces) before any read.
_KV2_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def kv2_version(text: str, where: str) -> int:
    """The KV v2 version ``text`` names; VersionNotFound for anything but a positive integer."""
    if not _KV2_VERSION.fullmatch(text):
        raise VersionNotFound(f"{where}: version {text!r} is not a KV v2 version (a number from 1)")
    return int(text)


class _AllowlistedSession(requests.Session):
    """Follows a redirect only to an endpoint the backend's context admits (Vault standbys redirect)."""

    def __init__(self, context: ProviderContext) -> None:
        super().__init__()
        self._context = context

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is not None:
            self._context.check_endpoint(urljoin(resp.url, target), "vault.server redirect")
        return target


class VaultProvider:
    def __init__(self, config: VaultConfig, context: ProviderContext) -> None:
        self._config = config
        self._context = context
        self._label = context.backend_label
        self._lock = threading.Lock()
        self._token_expires_at: float | None = None  # None: a static token, never renewed by us
        self._token_ttl = 0.0
        self._ca_file: str | None = None
        auth_methods = [m for m in (config.auth.token, config.auth.kubernetes, config.auth.app_role) if m]
        if len(auth_methods) != 1:
            raise InvalidBackend(
                f"{self._label}: vault.auth must set exactly one of token, kubernetes, appRole"
            )
        context.check_endpoint(config.server, "vault.server")
        verify: bool | str = True
        if config.ca_bundle:
            verify = self._write_ca_bundle(config.ca_bundle)
        timeout = int(context.options.get("timeout_seconds", 10))
        # One pooled connection per worker thread; requests' default pool (10) would churn connections.
        session = _AllowlistedSession(context)
        pool_size = int(context.options.get("pool_size", 64))
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._client = hvac.Client(
            url=config.server,
            # Never the operator's own VAULT_TOKEN / ~/.vault-token / VAULT_CLIENT_CERT: this backend's
            # server gets only this backend's credentials.
            token="",
            cert=False,
            namespace=config.namespace,
            verify=verify,
            timeout=timeout,
            session=session,
        )
        self._logins = 0

    @property
    def logins(self) -> int:
        """How many times this client logged in (tests prove tokens are reused)."""
        return self._logins

    def _write_ca_bundle(self, bundle: str) -> str:
        try:
            pem = base64.b64decode(bundle, validate=True)
        except (binascii.Error, ValueError):
            pem = bundle.encode()
        handle, path = tempfile.mkstemp(prefix="vault-ca-", suffix=".pem")
        with os.fdopen(handle, "wb") as file:
            file.write(pem)
        self._ca_file = path
        return path

    # -- authentication -------------------------------------------------------------------------------

    def _ensure_token(self) -> None:
        with self._lock:
            if not self._client.token:
                self._login()
            elif self._token_expires_at is not None and time.monotonic() >= self._renew_deadline():
                self._renew_or_login()

    def _renew_deadline(self) -> float:
        expires_at = self._token_expires_at or 0.0
        return expires_at - self._token_ttl * (1 - RENEW_AT_FRACTION)

    def _renew_or_login(self) -> None:
        try:
            result = self._call(self._client.auth.token.renew_self, "token renewal")
            self._remember_lease(result.get("auth") or {})
        except SyncError:
            log.info("%s: token renewal failed, logging in again", self._label)
            self._login()

    def _remember_lease(self, auth: Mapping[str, Any]) -> None:
        ttl = float(auth.get("lease_duration") or 0)
        if ttl > 0 and auth.get("renewable", False):
            self._token_ttl = ttl
            self._token_expires_at = time.monotonic() + ttl
        elif ttl > 0:
            # Not renewable: log in again shortly before it expires.
            self._token_ttl = ttl * 2
            self._token_expires_at = time.monotonic() + ttl
        else:
            self._token_expires_at = None

    def _login(self) -> None:
        auth = self._config.auth
        if auth.token is not None:
            ref = auth.token.secret_ref
            token = self._context.read_secret(ref, "auth.token.secretRef").decode().strip()
            self._client.token = token
            self._token_expires_at = None
            self._logins += 1
            return
        if auth.kubernetes is not None:
            k8s = auth.kubernetes
            audiences = k8s.service_account_ref.audiences or [DEFAULT_KUBERNETES_AUDIENCE]
            jwt = self._context.service_account_token(
                k8s.service_account_ref, "auth.kubernetes.serviceAccountRef", audiences
            )
            result = self._call(
                lambda: self._client.auth.kubernetes.login(
                    k8s.role, jwt, mount_point=k8s.mount_path, use_token=True
                ),
                # The role must accept the token's audience: say which one it carried.
                f"kubernetes login (role {k8s.role}, token audience {', '.join(audiences)})",
                login=True,
            )
        elif auth.app_role is not None:
            app_role = auth.app_role
            ref = app_role.secret_ref
            secret_id = self._context.read_secret(ref, "auth.appRole.secretRef").decode().strip()
            result = self._call(
                lambda: self._client.auth.approle.login(
                    app_role.role_id, secret_id, mount_point=app_role.mount_path, use_token=True
                ),
                "appRole login",
                login=True,
            )
        else:
            raise InvalidBackend(f"{self._label}: vault.auth sets no method")
        self._logins += 1
        self._remember_lease(result.get("auth") or {})

    # -- reads ----------------------------------------------------------------------------------------

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        """The path below the mount, without surrounding slashes; dot and empty segments, escapes and
        the like are refused (the HTTP client would resolve ``a/../b`` to ``b`` before Vault sees it)."""
        canonical = RemoteKey(ref.key.strip("/"), ref.version)
        self._version(canonical)  # a malformed version: VersionNotFound before anything is read
        refuse_if_ambiguous(self._label, canonical)
        return canonical

    def fetch(self, ref: RemoteKey) -> bytes:
        ref = self.canonical_ref(ref)
        self._ensure_token()
        try:
            return self._read(ref)
        except AuthFailed:
            # A static token may have been replaced in its Secret, a login token revoked: once more.
            self._forget_token()
            self._ensure_token()
            return self._read(ref)

    def issue_certificate(self, request: CertificateRequest) -> IssuedCertificate:
        return self._retrying_auth(lambda: self._issue(request))  # type: ignore[no-any-return]

    def _issue(self, request: CertificateRequest) -> IssuedCertificate:
        what = f"issue a certificate from {request.mount}/issue/{request.role}"
        params: dict[str, Any] = {"format": "pem", "private_key_format": "pkcs8"}
        if request.alt_names:
            params["alt_names"] = ",".join(request.alt_names)
        if request.ip_sans:
            params["ip_sans"] = ",".join(request.ip_sans)
        if request.ttl_seconds is not None:
            params["ttl"] = f"{request.ttl_seconds}s"

        def issue() -> Any:
            try:
                return self._client.secrets.pki.generate_certificate(
                    name=request.role,
                    common_name=request.common_name,
                    extra_params=params,
                    mount_point=request.mount,
                )
            except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest) as error:
                # Vault's own words name the role, the refused name or the missing mount, never a key.
                raise IssueFailed(f"{self._label}: {what}: {_vault_errors(error)}") from None

        data = self._call(issue, what).get("data") or {}
        certificate, private_key = data.get("certificate"), data.get("private_key")
        if not isinstance(certificate, str) or not isinstance(private_key, str):
            raise IssueFailed(f"{self._label}: {what}: the answer holds no certificate and key")
        chain = [c for c in data.get("ca_chain") or [] if isinstance(c, str)]
        issuing_ca = data.get("issuing_ca") if isinstance(data.get("issuing_ca"), str) else ""
        return IssuedCertificate(
            certificate=_pem_lines(certificate),
            chain=b"".join(_pem_lines(c) for c in chain if c.strip() != certificate.strip()),
            private_key=_pem_lines(private_key),
            issuing_ca=_pem_lines(issuing_ca) if issuing_ca else b"",
        )

    # -- dynamic secrets ------------------------------------------------------------------------------

    def _retrying_auth(self, call: Any) -> Any:
        self._ensure_token()
        try:
            return call()
        except AuthFailed:
            self._forget_token()  # as for reads: a replaced static token, a revoked login
            self._ensure_token()
            return call()

    def issue_lease(self, request: LeaseRequest) -> IssuedLease:
        what = f"issue credentials from {request.path}"

        def issue() -> Any:
            url = f"/v1/{request.path}"
            try:
                if request.method == "POST":
                    return self._client.adapter.post(url, json=dict(request.parameters))
                return self._client.adapter.get(url)
            except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest) as error:
                # Vault's words name the path, the role or a parameter; the request carried no secret.
                raise IssueFailed(f"{self._label}: {what}: {_vault_errors(error)}") from None

        answer = self._retrying_auth(lambda: self._call(issue, what))
        if not isinstance(answer, dict):
            raise IssueFailed(f"{self._label}: {what}: the answer is empty")
        lease_id, data = answer.get("lease_id"), answer.get("data")
        if not isinstance(lease_id, str) or not lease_id or not isinstance(data, dict):
            # A KV read, a token, anything that is not credentials under a lease.
            raise IssueFailed(
                f"{self._label}: {what}: the answer holds no lease (not a dynamic secrets engine)"
            )
        return IssuedLease(
            lease_id=lease_id,
            duration=int(answer.get("lease_duration") or 0),
            renewable=bool(answer.get("renewable")),
            data={name: _field_bytes(value) for name, value in data.items()},
        )

    def renew_lease(self, lease_id: str, increment: int | None) -> int:
        what = "renew a lease"

        def renew() -> Any:
            try:
                return self._client.sys.renew_lease(lease_id=lease_id, increment=increment)
            except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest) as error:
                # "lease not found", "lease is not renewable", "lease expired": Vault's words name no id.
                raise LeaseGone(f"{self._label}: {what}: {_vault_errors(error)}") from None

        answer = self._retrying_auth(lambda: self._call(renew, what))
        duration = answer.get("lease_duration") if isinstance(answer, dict) else None
        if not isinstance(duration, int) or duration <= 0:
            raise LeaseGone(f"{self._label}: {what}: the store gave the lease no more time")
        return duration

    def revoke_lease(self, lease_id: str) -> None:
        try:
            self._retrying_auth(
                lambda: self._call(lambda: self._client.sys.revoke_lease(lease_id=lease_id), "revoke a lease")
            )
        except SyncError as error:
            raise RevocationFailed(f"{error.message} ({error.reason.value})", error.reason) from None

    def validate(self) -> None:
        """Log in (or read the static token) and look the token up: Vault's default policy grants
        lookup-self to every token, so this proves the credentials without touching a secret."""
        try:
            self._lookup_self()
        except AuthFailed:
            self._forget_token()
            self._lookup_self()

    def _lookup_self(self) -> None:
        self._ensure_token()
        # The answer holds the token itself: it is dropped here, never logged or returned.
        self._call(self._client.auth.token.lookup_self, "token lookup")

    def _forget_token(self) -> None:
        """After a refusal: the next call reads the static token again, or logs in again."""
        with self._lock:
            if self._config.auth.token is not None:
                self._client.token = None
            else:
                self._login()

    def _version(self, ref: RemoteKey) -> int | None:
        """The pinned KV v2 version of ``ref`` (None: the latest); VersionNotFound when it cannot be one."""
        if ref.version is None:
            return None
        if self._config.version is KVVersion.V1:
            raise VersionNotFound(f"{self._label}: {ref.key}: KV v1 has no versions")
        return kv2_version(ref.version, f"{self._label}: {ref.key}")

    def _read(self, ref: RemoteKey) -> bytes:
        mount = self._config.path.strip("/")
        path = ref.key  # canonical: checked by fetch
        version = self._version(ref)
        if self._config.version is KVVersion.V1:
            response = self._call(
                lambda: self._client.secrets.kv.v1.read_secret(path=path, mount_point=mount),
                f"read {ref.key}",
            )
            data = response.get("data")
        else:
            response = self._call(
                lambda: self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=mount, version=version, raise_on_deleted_version=True
                ),
                f"read {ref}",
                key=ref,
            )
            data = (response.get("data") or {}).get("data")
        if data is None:
            raise RemoteKeyNotFound(f"{self._label}: key {ref} not found")
        value = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        if self._config.version is KVVersion.V1:
            return value
        read = ((response.get("data") or {}).get("metadata") or {}).get("version")
        return Fetched(value, version=str(read) if read is not None else None)

    def _call(self, call: Any, what: str, *, key: RemoteKey | None = None, login: bool = False) -> Any:
        """Run one hvac call and translate its exceptions; messages name the operation, never values."""
        try:
            return call()
        except hvac.exceptions.InvalidPath:
            if key is not None and key.version is not None:
                raise VersionNotFound(
                    f"{self._label}: version {key.version} of key {key.key} not found"
                ) from None
            if login:
                raise AuthFailed(f"{self._label}: {what}: auth method not found") from None
            raise RemoteKeyNotFound(f"{self._label}: {what}: key not found") from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise AuthFailed(f"{self._label}: {what}: permission denied") from None
        except hvac.exceptions.InvalidRequest:
            if login:
                raise AuthFailed(f"{self._label}: {what}: login refused") from None
            raise RemoteKeyNotFound(f"{self._label}: {what}: request refused") from None
        except (hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway):
            raise BackendUnavailable(f"{self._label}: {what}: Vault is sealed or failing") from None
        except hvac.exceptions.VaultError as error:
            raise BackendUnavailable(f"{self._label}: {what}: Vault error {type(error).__name__}") from None
        except requests.exceptions.SSLError:
            raise BackendUnavailable(f"{self._label}: {what}: TLS verification failed") from None
        except requests.exceptions.RequestException as error:
            raise BackendUnavailable(f"{self._label}: {what}: {type(error).__name__}") from None

    def close(self) -> None:
        self._client.adapter.close()
        if self._ca_file:
            Path(self._ca_file).unlink(missing_ok=True)
            self._ca_file = None


def _vault_errors(error: hvac.exceptions.VaultError) -> str:
    """Vault's error messages, shortened (they name paths and roles; the request carried no secret)."""
    text = "; ".join(str(e) for e in (error.errors or [])) or type(error).__name__
    return text[:300]


def _field_bytes(value: Any) -> bytes:
    """A response field as Secret data: text as it is, anything else as JSON (as extract does)."""
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _pem_lines(text: str) -> bytes:
    return (text.strip() + "\n").encode()


def create_provider(config: Mapping[str, Any], context: ProviderContext) -> SecretProvider:
    return VaultProvider(parse_config(VaultConfig, config, context), context)
