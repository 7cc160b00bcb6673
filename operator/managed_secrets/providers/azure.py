"""Azure Key Vault secrets through azure-keyvault-secrets and azure-identity.

Auth (``authType``):

- ``ServicePrincipal`` (default): tenant, client id and client secret; the client id and the secret come
  from ``authSecretRef`` (``clientID`` may be given inline instead).
- ``WorkloadIdentity``: a service-account token from the TokenRequest API (``serviceAccountRef``,
  audience ``api://AzureADTokenExchange`` unless set) is the client assertion of a federated identity
  credential. Without ``serviceAccountRef``, the operator's own projected token file is used
  (``AZURE_FEDERATED_TOKEN_FILE``, as the workload-identity webhook sets it).
- ``ManagedIdentity``: the node's or pod's managed identity; ``clientID`` picks a user-assigned one.

Remote keys are secret names (1-127 letters, digits and dashes), compared case-insensitively as Key Vault
does (canonical names are lower case); versions are version ids, or ``latest``. Key Vault has no binary
secrets: values are text, returned as UTF-8 bytes.

Endpoints: ``vaultURL`` and, for ServicePrincipal and WorkloadIdentity, the Entra ID authority host
(``azure_authority_host``, ``AZURE_AUTHORITY_HOST`` or login.microsoftonline.com) must be allowed store
endpoints. ManagedIdentity, WorkloadIdentity without ``serviceAccountRef`` and the ``azure_credential``
option are the operator's own identity: ClusterSecretBackends only, unless the operator allows it for
every SecretBackend.

``ProviderContext.options`` (tests and tuning, never part of the CRD): ``azure_credential`` (a ready
TokenCredential), ``azure_caller_credential`` (True outside the cluster, for ``managed-secrets exec`` and
``render``: the caller's own credentials, as azure-identity's DefaultAzureCredential finds them: environment,
Azure CLI, azd, PowerShell; never a managed identity), ``azure_connection_verify`` (CA bundle path for Key Vault and the identity endpoints),
``azure_verify_challenge_resource`` (False for emulators whose host is not ``*.vault.azure.net``),
``azure_authority_host`` (identity endpoint of a sovereign cloud or a test server),
``azure_api_version`` (a Key Vault API version the server knows; emulators lag the SDK's default),
``azure_additionally_allowed_tenants`` (tenants besides ``tenantID`` a Key Vault challenge may name; an
emulator's challenge names a made-up one), ``timeout_seconds``, ``max_attempts``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlparse

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.secrets import SecretClient
from pydantic import ConfigDict, Field

from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    InvalidBackend,
    InvalidSpec,
    KeyNotAllowed,
    RemoteKeyNotFound,
    SyncError,
    VersionNotFound,
)
from managed_secrets.logsafety import pin_sdk_loggers
from managed_secrets.models.base import CamelModel
from managed_secrets.models.schema import per_kind, rule, rules
from managed_secrets.providers.base import (
    Fetched,
    ProviderContext,
    RemoteKey,
    SecretKeyRef,
    SecretProvider,
    ServiceAccountRef,
    audiences_doc,
    parse_config,
)
from managed_secrets.providers.keys import refuse_if_ambiguous

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Key Vault object names: 1-127 characters, letters, digits and dashes.
SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
SECRET_NAME_RULE = "Key Vault secret names are 1-127 characters: letters, digits and '-'"  # noqa: S105
#: Key Vault version ids are 32 hexadecimal digits.
_VERSION = re.compile(r"[0-9a-fA-F]{32}")
DEFAULT_FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"


class AzureAuthType(StrEnum):
    SERVICE_PRINCIPAL = "ServicePrincipal"
    MANAGED_IDENTITY = "ManagedIdentity"
    WORKLOAD_IDENTITY = "WorkloadIdentity"


class AzureAuthSecretRef(CamelModel):
    # The API server requires both; the provider still accepts the client ID from azure.clientID.
    model_config = ConfigDict(json_schema_extra={"required": ["clientID", "clientSecret"]})

    client_id: SecretKeyRef | None = Field(
        default=None, alias="clientID", description="The Secret key holding the application (client) ID."
    )
    client_secret: SecretKeyRef | None = Field(
        default=None, description="The Secret key holding the client secret."
    )


_AUTH_TYPE_DOC = (
    "How the operator authenticates: ServicePrincipal (client ID and secret from authSecretRef),"
    " ManagedIdentity (the managed identity of the node or pod; clientID picks a user-assigned one) or"
    " WorkloadIdentity (a token requested for serviceAccountRef, exchanged for the application clientID in"
    " tenantID)."
)


class AzureConfig(CamelModel):
    # The provider checks the same combinations (AzureKeyVaultProvider._check_auth_settings).
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "self.authType != 'ServicePrincipal' || (has(self.authSecretRef) && has(self.tenantID))",
                "azure.authType ServicePrincipal needs authSecretRef and tenantID",
            ),
            rule(
                "self.authType != 'WorkloadIdentity' || (has(self.serviceAccountRef) && has(self.clientID)"
                " && has(self.tenantID))",
                "azure.authType WorkloadIdentity needs serviceAccountRef, clientID and tenantID",
            ),
            description="Azure Key Vault secrets. Remote keys are secret names; versions are Key Vault"
            " version IDs, latest when unset.",
        )
    )

    vault_url: str = Field(
        alias="vaultURL",
        min_length=1,
        max_length=2048,
        pattern=r"^https://",
        description="URL of the key vault, like https://my-vault.vault.azure.net (Azure's public key vault"
        " hosts are allowed; any other must be allowed by the operator with --allowed-store-endpoint).",
    )
    tenant_id: str | None = Field(
        default=None,
        alias="tenantID",
        min_length=1,
        max_length=256,
        description="Microsoft Entra tenant ID (GUID or domain). Required for ServicePrincipal and"
        " WorkloadIdentity.",
    )
    auth_type: AzureAuthType = Field(
        default=AzureAuthType.SERVICE_PRINCIPAL,
        json_schema_extra=per_kind(
            SecretBackend={
                "description": f"{_AUTH_TYPE_DOC[:-1]}. ManagedIdentity is the operator's own identity: a"
                " SecretBackend may use it only if the operator runs with"
                " --allow-operator-identity-for-secretbackends."
            },
            ClusterSecretBackend={"description": _AUTH_TYPE_DOC},
        ),
    )
    auth_secret_ref: AzureAuthSecretRef | None = Field(
        default=None,
        description="Client credentials of a service principal, read from Kubernetes Secrets (authType"
        " ServicePrincipal).",
    )
    client_id: str | None = Field(
        default=None,
        alias="clientID",
        min_length=1,
        max_length=256,
        description="Application (client) ID for WorkloadIdentity, or of a user-assigned managed identity"
        " for ManagedIdentity.",
    )
    service_account_ref: ServiceAccountRef | None = Field(
        default=None,
        description="The ServiceAccount whose token is exchanged for an Entra token (authType"
        f" WorkloadIdentity; audience {DEFAULT_FEDERATION_AUDIENCE} unless audiences says otherwise).",
        json_schema_extra=audiences_doc(DEFAULT_FEDERATION_AUDIENCE),
    )


def _inner_error_code(error: HttpResponseError) -> str:
    """Key Vault's ``error.innererror.code`` (``SecretDisabled``, ...), or ''."""
    odata = getattr(error, "error", None)
    inner = getattr(odata, "innererror", None)
    return str(inner.get("code", "")) if isinstance(inner, dict) else ""


#: Inner error codes of a Key Vault 403 that refuse the network, not the identity.
_NETWORK_REFUSALS = frozenset({"ForbiddenByFirewall", "ForbiddenByConnection"})


class _Translator:
    """azure-core exceptions -> domain errors; server messages are never copied into ours."""

    def __init__(self, label: str) -> None:
        self.label = label

    def call(self, call: Callable[[], T], what: str) -> T:
        try:
            return call()
        except SyncError:
            raise  # raised by our own credential callbacks (a TokenRequest that failed)
        except ResourceNotFoundError:
            raise RemoteKeyNotFound(f"{self.label}: {what}: not found") from None
        except ClientAuthenticationError as error:
            # Also CredentialUnavailableError and the identity libraries' token request failures.
            raise AuthFailed(f"{self.label}: {what}: {type(error).__name__}") from None
        except HttpResponseError as error:
            status = error.status_code or 0
            if status == 403 and _inner_error_code(error) == "SecretDisabled":
                raise VersionNotFound(f"{self.label}: {what}: the version is disabled") from None
            if status in (401, 403):
                raise AuthFailed(f"{self.label}: {what}: HTTP {status}") from None
            if status == 404:
                raise RemoteKeyNotFound(f"{self.label}: {what}: not found") from None
            if status == 400:
                raise InvalidSpec(f"{self.label}: {what}: request refused as invalid (HTTP 400)") from None
            raise BackendUnavailable(f"{self.label}: {what}: HTTP {status}") from None
        except (ServiceRequestError, ServiceResponseError) as error:
            # Connection refused, TLS failures, timeouts, broken answers.
            raise BackendUnavailable(f"{self.label}: {what}: {type(error).__name__}") from None
        except AzureError as error:
            raise BackendUnavailable(f"{self.label}: {what}: {type(error).__name__}") from None
        except ValueError:
            # azure-identity raises ValueError for malformed tenant or client ids.
            raise AuthFailed(f"{self.label}: {what}: credential settings refused as invalid") from None


class AzureKeyVaultProvider:
    def __init__(self, config: AzureConfig, context: ProviderContext) -> None:
        self._config = config
        self._context = context
        self._label = context.backend_label
        self._translator = _Translator(self._label)
        url = urlparse(config.vault_url)
        if url.scheme != "https" or not url.hostname:
            raise InvalidBackend(f"{self._label}: azure.vaultURL must be an https:// URL")
        options = context.options
        self._verify = options.get("azure_connection_verify")
        self._transport_options: dict[str, Any] = {
            "connection_timeout": float(options.get("timeout_seconds", 10)),
            "read_timeout": float(options.get("timeout_seconds", 10)),
            "retry_total": max(0, int(options.get("max_attempts", 3)) - 1),
        }
        if self._verify is not None:
            self._transport_options["connection_verify"] = self._verify
        self._check_auth_settings()
        self._check_endpoints()
        self._lock = threading.Lock()
        self._client: SecretClient | None = None
        self._credential: Any = None

    def _check_auth_settings(self) -> None:
        config = self._config
        if self._context.options.get("azure_credential") is not None or self._caller_credential:
            return
        if config.auth_type is AzureAuthType.SERVICE_PRINCIPAL:
            secret_ref = config.auth_secret_ref
            if not config.tenant_id:
                raise InvalidBackend(f"{self._label}: azure.tenantID is required for ServicePrincipal")
            if secret_ref is None or secret_ref.client_secret is None:
                raise InvalidBackend(
                    f"{self._label}: azure.authSecretRef.clientSecret is required for ServicePrincipal"
                )
            if secret_ref.client_id is None and not config.client_id:
                raise InvalidBackend(
                    f"{self._label}: azure.authSecretRef.clientID or azure.clientID is required"
                    " for ServicePrincipal"
                )
        elif (
            config.auth_type is AzureAuthType.WORKLOAD_IDENTITY
            and config.service_account_ref is not None
            and (not config.tenant_id or not config.client_id)
        ):
            raise InvalidBackend(
                f"{self._label}: azure.tenantID and azure.clientID are required for WorkloadIdentity"
            )

    def _check_endpoints(self) -> None:
        context, config = self._context, self._config
        context.check_endpoint(config.vault_url, "azure.vaultURL")
        if context.options.get("azure_credential") is not None:
            context.use_operator_identity("the operator's azure_credential")
        elif self._caller_credential:
            context.check_endpoint(self._authority_url(), "the Entra ID authority host")
            context.use_operator_identity("the caller's Azure credentials")
        elif config.auth_type is AzureAuthType.MANAGED_IDENTITY:
            context.use_operator_identity("azure.authType ManagedIdentity")
        else:
            context.check_endpoint(self._authority_url(), "the Entra ID authority host")
            if config.service_account_ref is None and config.auth_type is AzureAuthType.WORKLOAD_IDENTITY:
                context.use_operator_identity("azure WorkloadIdentity without serviceAccountRef")

    @property
    def _caller_credential(self) -> bool:
        return bool(self._context.options.get("azure_caller_credential"))

    def _authority_url(self) -> str:
        authority = str(
            self._context.options.get("azure_authority_host")
            or os.environ.get("AZURE_AUTHORITY_HOST")
            or DEFAULT_AUTHORITY_HOST
        )
        return authority if "://" in authority else f"https://{authority}"

    # -- credentials ----------------------------------------------------------------------------------

    def _identity_options(self) -> dict[str, Any]:
        options = dict(self._transport_options)
        authority = self._context.options.get("azure_authority_host")
        if authority:
            options["authority"] = authority
            options["disable_instance_discovery"] = True
        tenants = self._context.options.get("azure_additionally_allowed_tenants")
        if tenants:
            options["additionally_allowed_tenants"] = list(tenants)
        return options

    def _read(self, ref: SecretKeyRef, what: str) -> str:
        raw = self._context.read_secret(ref, what)
        try:
            return raw.decode().strip()
        except UnicodeDecodeError:
            raise AuthFailed(f"{self._label}: {what}: not UTF-8 text") from None

    def _build_credential(self) -> TokenCredential:
        override = self._context.options.get("azure_credential")
        if override is not None:
            return override  # type: ignore[no-any-return]
        if self._caller_credential:
            # A laptop or CI job has no managed identity; probing for one only adds a timeout.
            return DefaultAzureCredential(
                exclude_managed_identity_credential=True, **self._identity_options()
            )
        config = self._config
        if config.auth_type is AzureAuthType.MANAGED_IDENTITY:
            return ManagedIdentityCredential(client_id=config.client_id, **self._transport_options)
        if config.auth_type is AzureAuthType.WORKLOAD_IDENTITY:
            return self._workload_identity()
        secret_ref = config.auth_secret_ref
        assert secret_ref is not None  # noqa: S101 - checked in _check_auth_settings
        assert secret_ref.client_secret is not None  # noqa: S101
        client_id = (
            self._read(secret_ref.client_id, "authSecretRef.clientID")
            if secret_ref.client_id is not None
            else config.client_id or ""
        )
        client_secret = self._read(secret_ref.client_secret, "authSecretRef.clientSecret")
        return ClientSecretCredential(
            config.tenant_id or "", client_id, client_secret, **self._identity_options()
        )

    def _workload_identity(self) -> TokenCredential:
        config = self._config
        account = config.service_account_ref
        if account is None:
            # The operator's own federated token file, as injected by the workload-identity webhook.
            return WorkloadIdentityCredential(
                tenant_id=config.tenant_id, client_id=config.client_id, **self._identity_options()
            )

        def assertion() -> str:
            return self._context.service_account_token(
                account, "serviceAccountRef", [DEFAULT_FEDERATION_AUDIENCE]
            )

        return ClientAssertionCredential(
            config.tenant_id or "", config.client_id or "", assertion, **self._identity_options()
        )

    def _get_client(self) -> SecretClient:
        with self._lock:
            if self._client is None:
                credential = self._translator.call(self._build_credential, "credential")
                verify_challenge = bool(self._context.options.get("azure_verify_challenge_resource", True))
                self._credential = credential
                api_version = self._context.options.get("azure_api_version")
                self._client = SecretClient(
                    vault_url=self._config.vault_url,
                    credential=credential,
                    verify_challenge_resource=verify_challenge,
                    **({"api_version": str(api_version)} if api_version else {}),
                    **self._transport_options,
                )
            return self._client

    def _forget_client(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        credential, self._credential = self._credential, None
        if credential is not None and credential is not self._context.options.get("azure_credential"):
            close = getattr(credential, "close", None)
            if callable(close):
                close()

    # -- reads ----------------------------------------------------------------------------------------

    #: Key Vault compares secret names case-insensitively: canonical names are lower case, and scoping
    #: compares patterns case-insensitively too.
    case_insensitive_keys = True

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        """The secret name in lower case (``Apps-Team-B`` is ``apps-team-b`` to Key Vault); versions are
        version ids, ``latest`` canonically being no version. Secret URLs (which can name another vault)
        and ``name/version`` forms are refused: give the name, and the version in ``version``."""
        if not ref.key:  # malformed, not ambiguous: the name rule below covers every other plain name
            raise InvalidSpec(
                f"{self._label}: key {ref.key!r} is not a valid secret name: {SECRET_NAME_RULE}"
            )
        version = ref.version
        if version is not None and version.lower() == "latest":
            version = None
        # Part of the request's path, so exactly a version id: no '/', no '..', no spaces.
        if version is not None and not _VERSION.fullmatch(version):
            raise VersionNotFound(
                f"{self._label}: {ref}: a version is a Key Vault version id (32 hexadecimal digits) or 'latest'"
            )
        refuse_if_ambiguous(self._label, RemoteKey(ref.key, version))
        name = ref.key
        if "/" in name or ":" in name:
            raise KeyNotAllowed(
                f"{self._label}: key {name!r} is a URL or a name/version form; give the secret name, and"
                " its version in version"
            )
        if not SECRET_NAME.match(name):
            raise InvalidSpec(f"{self._label}: key {name!r} is not a valid secret name: {SECRET_NAME_RULE}")
        return RemoteKey(name.lower(), version)

    def fetch(self, ref: RemoteKey) -> bytes:
        ref = self.canonical_ref(ref)
        name, version = ref.key, ref.version
        try:
            return self._fetch(ref, name, version)
        except AuthFailed:
            if self._config.auth_secret_ref is None or self._context.options.get("azure_credential"):
                raise
            # The client secret may have been rotated in its Secret since the client was built.
            self._forget_client()
            return self._fetch(ref, name, version)

    def _fetch(self, ref: RemoteKey, name: str, version: str | None) -> bytes:
        log.debug("%s: reading %s from %s", self._label, ref, self._config.vault_url)
        client = self._get_client()
        try:
            secret = self._translator.call(lambda: client.get_secret(name, version), f"read {ref}")
        except RemoteKeyNotFound:
            self._raise_missing_version(client, ref, name)
            raise
        if secret.value is None:
            raise RemoteKeyNotFound(f"{self._label}: read {ref}: the secret holds no value")
        expires = secret.properties.expires_on
        return Fetched(
            secret.value.encode(),
            version=secret.properties.version,
            expires_at=expires.timestamp() if expires is not None else None,
        )

    def validate(self) -> None:
        """Fetch the first page (one item) of the secrets' properties: names and dates, never values."""
        try:
            self._list_one()
        except AuthFailed:
            if self._config.auth_secret_ref is None or self._context.options.get("azure_credential"):
                raise
            self._forget_client()  # the client secret may have been rotated in its Secret
            self._list_one()

    def _list_one(self) -> None:
        client = self._get_client()

        def probe() -> None:
            try:
                next(client.list_properties_of_secrets(max_page_size=1).by_page(), None)
            except HttpResponseError as error:
                # A 403 comes after the token was accepted; a firewall's 403 means nothing works.
                if error.status_code != 403 or _inner_error_code(error) in _NETWORK_REFUSALS:
                    raise

        self._translator.call(probe, "validate (list secret properties)")

    def _raise_missing_version(self, client: SecretClient, ref: RemoteKey, name: str) -> None:
        """A 404 for a secret that has versions is a VersionNotFound: the version is missing, or disabled
        where the vault answers 404 for that (lowkey-vault does, for latest too). Listing versions' properties
        rather than reading latest, which may itself be the disabled one; no value is read."""

        def has_versions() -> bool:
            versions = client.list_properties_of_secret_versions(name, max_page_size=1)
            return next(iter(versions), None) is not None

        try:
            exists = self._translator.call(has_versions, f"describe {name}")
        except SyncError:
            return
        if exists:
            which = f"version {ref.version}" if ref.version else "the latest version"
            raise VersionNotFound(f"{self._label}: read {ref}: {which} not found or disabled")

    def close(self) -> None:
        self._forget_client()


def create_provider(config: Mapping[str, Any], context: ProviderContext) -> SecretProvider:
    # azure-core's HTTP logging policy writes request and response headers at INFO/DEBUG: keep it quiet
    # even when the operator runs at DEBUG.
    pin_sdk_loggers()
    return AzureKeyVaultProvider(parse_config(AzureConfig, config, context), context)
