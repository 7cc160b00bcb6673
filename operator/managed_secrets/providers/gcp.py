"""Google Cloud Secret Manager through google-cloud-secret-manager (gRPC).

Auth: a service-account key (JSON) from a Secret, else Application Default Credentials (workload
identity on GKE; ClusterSecretBackends only, unless the operator allows it for every SecretBackend).
Keys sign their own JWTs for the API (no token endpoint round trip).

``endpoint`` (``host:port``) points the client at an emulator over a plaintext gRPC channel; credentials
(the configured key, else Application Default Credentials) are then sent in the ``authorization``
metadata, a service account's as a self-signed JWT, so use it only on a trusted network (tests use
127.0.0.1). It must be an allowed store endpoint, written
``http://host:port`` in the allowlist (plaintext); the default is ``https://secretmanager.googleapis.com``.

Remote keys: a secret id in ``projectID``, or a full ``projects/<p>/secrets/<id>`` name (optionally with
``/versions/<v>``). Versions: ``latest`` (the default) or a version number. Keys are canonicalised
(``canonical_ref``) before scoping and reading: a bare id for ``projectID``, the full name otherwise.
When the server sends ``data_crc32c``, the payload is checked against it; a mismatch is a
BackendUnavailable (corrupted in transit), never a value.

``ProviderContext.options`` (tests and tuning): ``timeout_seconds`` bounds each read including retries
of UNAVAILABLE answers.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import google.api_core.exceptions as gexc
import google.auth
import google.auth.credentials
import google.auth.exceptions
import grpc
from google.api_core.retry import Retry, if_exception_type
from google.auth.transport.requests import Request as AuthRequest
from google.cloud.secretmanager_v1 import SecretManagerServiceClient
from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (
    SecretManagerServiceGrpcTransport,
)
from google.oauth2 import service_account
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
from managed_secrets.models.schema import per_kind
from managed_secrets.providers.base import (
    ExpiryCache,
    Fetched,
    ProviderContext,
    RemoteKey,
    SecretKeyRef,
    SecretProvider,
    parse_config,
)
from managed_secrets.providers.keys import refuse_if_ambiguous

T = TypeVar("T")
log = logging.getLogger(__name__)

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SECRET_MANAGER_AUDIENCE = "https://secretmanager.googleapis.com/"  # noqa: S105 - a URL
DEFAULT_ENDPOINT_URL = "https://secretmanager.googleapis.com"
_SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_FULL_NAME = re.compile(r"^projects/([^/]+)/secrets/([^/]+)(?:/versions/([^/]+))?$")
_PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9.:-]{0,127}$")
#: A version number from 1 (no sign, no leading zero; ASCII digits only), or the alias latest.
_VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,18}")
_LATEST = "latest"


class GCPSecretRef(CamelModel):
    secret_access_key: SecretKeyRef = Field(
        description="The Secret key holding the service-account key file (JSON)."
    )


class GCPAuth(CamelModel):
    secret_ref: GCPSecretRef | None = Field(
        default=None, description="A service-account key read from a Kubernetes Secret."
    )


_AUTH_DOC = (
    "Credentials for Google Cloud. Without an auth block the operator uses Application Default Credentials"
    " of its own pod (GKE Workload Identity, metadata server, GOOGLE_APPLICATION_CREDENTIALS)"
)


class GCPConfig(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "Google Cloud Secret Manager. Remote keys are secret IDs in projectID (or full"
            " projects/<p>/secrets/<s> names); versions are version numbers, latest when unset."
        }
    )

    project_id: str = Field(
        alias="projectID",
        min_length=1,
        max_length=128,
        pattern=_PROJECT_ID.pattern,
        description="ID of the Google Cloud project that holds the secrets (domain-scoped IDs like"
        " example.com:my-project are accepted).",
    )
    endpoint: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=r"^[^/\s:]+:[0-9]{1,5}$",
        description="API endpoint as host:port, for a local emulator: it is reached over plaintext gRPC,"
        " and configured credentials are sent as a self-signed JWT in clear text, so use it only on a"
        " trusted network. Unset: secretmanager.googleapis.com over TLS. It must be allowed by the operator"
        " (--allowed-store-endpoint http://host:port).",
    )
    auth: GCPAuth | None = Field(
        default=None,
        json_schema_extra=per_kind(
            SecretBackend={
                "description": f"{_AUTH_DOC}, which a SecretBackend may do only if the operator runs with"
                " --allow-operator-identity-for-secretbackends."
            },
            ClusterSecretBackend={"description": f"{_AUTH_DOC}."},
        ),
    )


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Secret Manager computes ``data_crc32c``; payloads are at most 64 KiB."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


class _Translator:
    """google-api-core / google-auth / grpc exceptions -> domain errors, without server messages."""

    def __init__(self, label: str) -> None:
        self.label = label

    def call(self, call: Callable[[], T], what: str) -> T:
        try:
            return call()
        except SyncError:
            raise
        except (gexc.Unauthenticated, gexc.PermissionDenied, gexc.Unauthorized, gexc.Forbidden) as error:
            raise AuthFailed(f"{self.label}: {what}: {type(error).__name__}") from None
        except gexc.NotFound:
            raise RemoteKeyNotFound(f"{self.label}: {what}: not found") from None
        except gexc.FailedPrecondition:
            # Secret Manager answers this for disabled or destroyed versions.
            raise VersionNotFound(f"{self.label}: {what}: version is disabled or destroyed") from None
        except (gexc.InvalidArgument, gexc.OutOfRange, gexc.BadRequest):
            raise InvalidSpec(f"{self.label}: {what}: request refused as invalid") from None
        except gexc.RetryError as error:
            cause = type(error.cause).__name__ if error.cause is not None else "timeout"
            raise BackendUnavailable(f"{self.label}: {what}: gave up retrying ({cause})") from None
        except gexc.GoogleAPIError as error:
            # ServiceUnavailable, DeadlineExceeded, InternalServerError, ResourceExhausted, Unknown, ...
            raise BackendUnavailable(f"{self.label}: {what}: {type(error).__name__}") from None
        except google.auth.exceptions.TransportError as error:
            raise BackendUnavailable(f"{self.label}: {what}: {type(error).__name__}") from None
        except google.auth.exceptions.GoogleAuthError as error:
            # DefaultCredentialsError, RefreshError, MalformedError, ...
            raise AuthFailed(f"{self.label}: {what}: {type(error).__name__}") from None
        except grpc.RpcError as error:
            raise BackendUnavailable(f"{self.label}: {what}: gRPC error") from error.__cause__


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization`` metadata on a plaintext channel (gRPC sends call credentials only on TLS)."""

    def __init__(self, credentials: google.auth.credentials.Credentials) -> None:
        self._credentials = credentials
        self._request = AuthRequest()
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        headers: dict[str, str] = {}
        with self._lock:
            self._credentials.before_request(  # type: ignore[no-untyped-call]
                self._request, "POST", SECRET_MANAGER_AUDIENCE, headers
            )
        metadata = [*(client_call_details.metadata or ()), *((k.lower(), v) for k, v in headers.items())]
        details = _CallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            getattr(client_call_details, "wait_for_ready", None),
            getattr(client_call_details, "compression", None),
        )
        return continuation(details, request)


def _application_default_credentials() -> google.auth.credentials.Credentials:
    """ADC for a channel we build ourselves (an emulator endpoint): the SDK's client finds them by
    itself only on its own TLS channel. A service account then signs its own JWTs, as with a key."""
    credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    if isinstance(credentials, service_account.Credentials):
        credentials = credentials.with_always_use_jwt_access(always_use_jwt_access=True)  # type: ignore[no-untyped-call]
    return credentials


class GCPProvider:
    def __init__(self, config: GCPConfig, context: ProviderContext) -> None:
        self._config = config
        self._context = context
        self._label = context.backend_label
        self._translator = _Translator(self._label)
        if not _PROJECT_ID.match(config.project_id):
            raise InvalidBackend(f"{self._label}: gcp.projectID is not a valid project id")
        # The emulator endpoint is plaintext gRPC: in the allowlist it is http://host:port.
        endpoint_url = f"http://{config.endpoint}" if config.endpoint else DEFAULT_ENDPOINT_URL
        context.check_endpoint(endpoint_url, "gcp.endpoint")
        if config.auth is None or config.auth.secret_ref is None:
            context.use_operator_identity("gcp.auth (Application Default Credentials)")
        timeout = float(context.options.get("timeout_seconds", 10))
        self._timeout = timeout
        self._retry = Retry(
            predicate=if_exception_type(
                gexc.ServiceUnavailable, gexc.ResourceExhausted, gexc.InternalServerError
            ),
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=timeout,
        )
        self._lock = threading.Lock()
        self._client: SecretManagerServiceClient | None = None
        self._channel: grpc.Channel | None = None
        #: the secrets' expireTime, asked once per version (an hour at most)
        self._expiries = ExpiryCache()

    # -- client ---------------------------------------------------------------------------------------

    def _credentials(self) -> service_account.Credentials | None:
        auth = self._config.auth
        if auth is None or auth.secret_ref is None:
            return None
        ref = auth.secret_ref.secret_access_key
        raw = self._context.read_secret(ref, "auth.secretRef.secretAccessKey")
        try:
            info = json.loads(raw)
            if not isinstance(info, dict):
                raise TypeError  # noqa: TRY301 - same answer as a malformed document
            credentials: service_account.Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[CLOUD_PLATFORM_SCOPE], always_use_jwt_access=True
            )
        except (ValueError, TypeError, KeyError, google.auth.exceptions.GoogleAuthError):
            raise AuthFailed(
                f"{self._label}: auth.secretRef.secretAccessKey: not a service-account key (JSON)"
            ) from None
        return credentials

    def _get_client(self) -> SecretManagerServiceClient:
        with self._lock:
            if self._client is None:
                self._client = self._translator.call(self._build_client, "create client")
            return self._client

    def _build_client(self) -> SecretManagerServiceClient:
        credentials = self._credentials()
        endpoint = self._config.endpoint
        if endpoint:
            channel: grpc.Channel = grpc.insecure_channel(
                endpoint,
                options=[
                    # Come back quickly after an outage instead of backing off for up to two minutes.
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                ],
            )
            self._channel = channel
            channel = grpc.intercept_channel(
                channel, _BearerInterceptor(credentials or _application_default_credentials())
            )
            return SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))
        if credentials is None:
            # Application Default Credentials; google.auth.default() raises DefaultCredentialsError.
            return SecretManagerServiceClient()
        return SecretManagerServiceClient(credentials=credentials)

    def _forget_client(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._client is not None:
            self._client.transport.close()  # type: ignore[no-untyped-call]
            self._client = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # -- reads ----------------------------------------------------------------------------------------

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        """A bare secret id for the configured project; ``projects/<p>/secrets/<id>`` only for another
        project (scoping then sees the project: a bare-id pattern never admits another project's secret,
        nor one named by project number). A ``/versions/<v>`` suffix moves to the version; versions are
        ``latest`` (canonically: no version) or a number."""
        key = ref.key.strip("/")
        version = ref.version
        # Part of the resource name, so nothing but the two forms (no '/', no '..', no Unicode digits).
        if version is not None and version != _LATEST and not _VERSION_NUMBER.fullmatch(version):
            raise VersionNotFound(f"{self._label}: {ref}: version must be 'latest' or a number from 1")
        refuse_if_ambiguous(self._label, RemoteKey(key, version))
        project, secret_id = self._config.project_id, key
        full = _FULL_NAME.match(key)
        if full is not None:
            project, secret_id, key_version = full.groups()
            if key_version is not None:
                if version is not None and version != key_version:
                    raise KeyNotAllowed(
                        f"{self._label}: key {ref.key!r} names version {key_version!r} but version is"
                        f" {version!r}: give the version once"
                    )
                version = key_version
            if not _PROJECT_ID.match(project):
                raise InvalidSpec(
                    f"{self._label}: key {ref.key!r}: {project!r} is not a project id or number"
                )
        if not _SECRET_ID.match(secret_id):
            raise InvalidSpec(
                f"{self._label}: key {ref.key!r} is not a secret id (letters, digits, '-' and '_', at most"
                " 255) nor projects/<project>/secrets/<id>[/versions/<version>]"
            )
        if version == _LATEST:
            version = None
        if version is not None and not _VERSION_NUMBER.fullmatch(version):
            raise VersionNotFound(f"{self._label}: {ref}: version must be 'latest' or a number from 1")
        if project != self._config.project_id:
            return RemoteKey(f"projects/{project}/secrets/{secret_id}", version)
        return RemoteKey(secret_id, version)

    def _names(self, ref: RemoteKey) -> tuple[str, str]:
        """(secret name, version name) of a canonical ref."""
        secret = ref.key if "/" in ref.key else f"projects/{self._config.project_id}/secrets/{ref.key}"
        return secret, f"{secret}/versions/{ref.version or _LATEST}"

    def fetch(self, ref: RemoteKey) -> bytes:
        ref = self.canonical_ref(ref)
        try:
            return self._fetch(ref)
        except AuthFailed:
            if self._config.auth is None:
                raise
            # The key in the Secret may have been replaced since the client was built: read it once more.
            self._forget_client()
            return self._fetch(ref)

    def _fetch(self, ref: RemoteKey) -> bytes:
        secret, version_name = self._names(ref)
        log.debug("%s: reading %s", self._label, version_name)
        client = self._get_client()
        try:
            response = self._translator.call(
                lambda: client.access_secret_version(
                    request={"name": version_name}, retry=self._retry, timeout=self._timeout
                ),
                f"read {ref}",
            )
        except RemoteKeyNotFound:
            if ref.version is None:
                raise
            self._raise_missing_version(client, secret, ref)
            raise
        payload = response.payload
        data = bytes(payload.data)
        if "data_crc32c" in payload and crc32c(data) != payload.data_crc32c:
            raise BackendUnavailable(f"{self._label}: read {ref}: payload checksum mismatch")
        read = str(response.name).rsplit("/", 1)[-1] if response.name else None
        return self._expiries.with_expiry(
            secret, Fetched(data, version=read), lambda: self._expire_time(client, secret)
        )

    def _expire_time(self, client: SecretManagerServiceClient, secret: str) -> float | None:
        """The secret's expireTime (set directly or as a ttl), when it has one. GetSecret reads metadata
        only; None when the identity may not (secretmanager.secrets.get): the read stands anyway."""
        try:
            described = self._translator.call(
                lambda: client.get_secret(request={"name": secret}, retry=self._retry, timeout=self._timeout),
                f"describe {secret}",
            )
        except SyncError as error:
            log.debug("%s: no expiry for %s: %s", self._label, secret, error.message)
            return None
        if "expire_time" not in described:
            return None
        return float(described.expire_time.timestamp())

    def validate(self) -> None:
        """List at most one secret of the project (names only; the pager's first page is the one call)."""
        try:
            self._list_one()
        except AuthFailed:
            if self._config.auth is None:
                raise
            self._forget_client()  # the key in its Secret may have been replaced
            self._list_one()

    def _list_one(self) -> None:
        client = self._get_client()
        parent = f"projects/{self._config.project_id}"

        def probe() -> None:
            try:
                client.list_secrets(
                    request={"parent": parent, "page_size": 1}, retry=self._retry, timeout=self._timeout
                )
            except gexc.PermissionDenied:
                return  # authenticated: the identity may read without being allowed to list

        self._translator.call(probe, "validate (list secrets)")

    def _raise_missing_version(self, client: SecretManagerServiceClient, secret: str, ref: RemoteKey) -> None:
        """The secret exists but not that version: a VersionNotFound, not a RemoteKeyNotFound."""
        try:
            self._translator.call(
                lambda: client.get_secret(request={"name": secret}, retry=self._retry, timeout=self._timeout),
                f"describe {ref.key}",
            )
        except SyncError:
            return
        raise VersionNotFound(f"{self._label}: read {ref}: version {ref.version} not found")

    def close(self) -> None:
        self._forget_client()


def create_provider(config: Mapping[str, Any], context: ProviderContext) -> SecretProvider:
    # The generated gRPC transport logs request and response payloads (and the authorization metadata)
    # at DEBUG: keep google's loggers above that whatever the operator's own level is.
    pin_sdk_loggers()
    return GCPProvider(parse_config(GCPConfig, config, context), context)
