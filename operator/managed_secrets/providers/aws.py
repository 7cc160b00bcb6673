"""AWS Secrets Manager and SSM Parameter Store through boto3.

Auth, in this order: static keys from a Secret (optionally with a session token), a projected
service-account token exchanged with STS AssumeRoleWithWebIdentity (IRSA), else the default credential
chain of the operator's pod (ClusterSecretBackends only, unless the operator allows it for every
SecretBackend). ``role`` (with an optional ``externalID``) is then assumed on top of the static keys or
the default chain. Temporary credentials are refreshed by botocore shortly before they expire, never on
every read.

Endpoints: the service's and STS's, as botocore resolves them (``endpoint`` overrides both), must be
allowed store endpoints; they are checked when the provider is built, before any credential is read.

Versions: Secrets Manager takes a staging label (``AWSCURRENT``, ``AWSPREVIOUS``, any custom label) or a
version id (a UUID, or any id written as ``uuid/<id>``); Parameter Store takes a version number or a
label (sent as the ``name:selector`` form). Secrets Manager reads of current values are batched with
BatchGetSecretValue (20 ids a call); Parameter Store reads with GetParameters (10 names a call).

``ProviderContext.options`` (tests and tuning, never part of the CRD): ``timeout_seconds``,
``max_attempts`` (botocore's standard retry mode), ``aws_event_hooks`` (``(event, handler)`` pairs
registered on every client, e.g. to count calls).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar, cast

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.credentials import CredentialProvider, RefreshableCredentials
from botocore.session import Session as BotocoreSession
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
    ExpiryCache,
    Fetched,
    ProviderContext,
    RemoteKey,
    SecretKeyRef,
    SecretProvider,
    ServiceAccountRef,
    audiences_doc,
    parse_config,
)
from managed_secrets.providers.keys import refuse_ambiguous_version, refuse_if_ambiguous

T = TypeVar("T")
log = logging.getLogger(__name__)


class AWSService(StrEnum):
    SECRETS_MANAGER = "SecretsManager"
    PARAMETER_STORE = "ParameterStore"


#: Audience of the projected token STS accepts by default for IRSA.
DEFAULT_WEB_IDENTITY_AUDIENCE = "sts.amazonaws.com"


class AWSSecretRef(CamelModel):
    access_key_id: SecretKeyRef = Field(
        alias="accessKeyID", description="The Secret key holding the access key ID."
    )
    secret_access_key: SecretKeyRef = Field(description="The Secret key holding the secret access key.")
    session_token: SecretKeyRef | None = Field(
        default=None, description="The Secret key holding a session token, for temporary credentials."
    )


class AWSJWTAuth(CamelModel):
    service_account_ref: ServiceAccountRef = Field(
        description="The ServiceAccount whose token is exchanged; the token's audience is"
        f" {DEFAULT_WEB_IDENTITY_AUDIENCE} unless audiences says otherwise.",
        json_schema_extra=audiences_doc(DEFAULT_WEB_IDENTITY_AUDIENCE),
    )


_AUTH_DOC = (
    "Credentials for AWS. Set at most one of secretRef or jwt; without an auth block the operator uses the"
    " default credential chain of its own pod (environment, IRSA / EKS Pod Identity, instance profile)"
)


class AWSAuth(CamelModel):
    # The provider refuses both at once too (_Session).
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "!(has(self.secretRef) && has(self.jwt))",
                "set at most one of aws.auth.secretRef or aws.auth.jwt",
            )
        )
    )

    secret_ref: AWSSecretRef | None = Field(
        default=None, description="Static access keys read from Kubernetes Secrets."
    )
    jwt: AWSJWTAuth | None = Field(
        default=None,
        description="Web identity (IRSA-style): the operator requests a token for serviceAccountRef and"
        " exchanges it through sts:AssumeRoleWithWebIdentity for the role.",
    )


class AWSConfig(CamelModel):
    # The provider checks the same combinations when it builds its session (_Session).
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "!has(self.auth) || !has(self.auth.jwt) || has(self.role)",
                "aws.role is required with aws.auth.jwt (the role to assume with the web identity)",
            ),
            rule("!has(self.externalID) || has(self.role)", "aws.externalID needs aws.role"),
            description="AWS Secrets Manager or Systems Manager Parameter Store. Remote keys are secret"
            " names or ARNs (Secrets Manager) or parameter names (Parameter Store, decrypted).",
        )
    )

    service: AWSService = Field(
        default=AWSService.SECRETS_MANAGER, description="Which AWS service stores the secrets."
    )
    region: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9-]+$",
        description="AWS region of the secrets, like eu-central-1.",
    )
    endpoint: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="Custom endpoint URL of the service (VPC endpoint, or a local test server). Unset: the"
        " service's public endpoint for the region. An endpoint other than AWS's public ones must be"
        " allowed by the operator (--allowed-store-endpoint).",
    )
    auth: AWSAuth | None = Field(
        default=None,
        json_schema_extra=per_kind(
            SecretBackend={
                "description": f"{_AUTH_DOC}, which a SecretBackend may do only if the operator runs with"
                " --allow-operator-identity-for-secretbackends (a ClusterSecretBackend may)."
            },
            ClusterSecretBackend={"description": f"{_AUTH_DOC}."},
        ),
    )
    role: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
        description="ARN of an IAM role to assume (sts:AssumeRole) with the credentials above before"
        " reading; required with auth.jwt, which assumes it with the web identity token.",
    )
    external_id: str | None = Field(
        default=None,
        alias="externalID",
        min_length=2,
        max_length=1224,
        description="External ID passed when assuming role.",
    )


SECRETS_MANAGER_MAX_BATCH = 20
PARAMETER_STORE_MAX_BATCH = 10
SESSION_NAME = "managed-secrets"

_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidIdentityToken",
        "IDPRejectedClaim",
        "IDPCommunicationError",
        "MissingAuthenticationToken",
        "AuthFailure",
        "DecryptionFailure",  # the caller may not use the KMS key of the secret
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
    }
)
#: Answers AWS gives only after it verified the request's signature: the identity is known, it may just not
#: make that call (a reader rarely may list).
_AUTHENTICATED_DENIALS = frozenset({"AccessDenied", "AccessDeniedException"})
_NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "ParameterNotFound"})
_VERSION_NOT_FOUND_CODES = frozenset({"ParameterVersionNotFound", "ParameterVersionLabelLimitExceeded"})
_INVALID_CODES = frozenset(
    {"ValidationException", "InvalidParameterException", "InvalidKeyId", "InvalidParameterValue"}
)
_STATUS_CODES = {401: "AccessDenied", 403: "AccessDenied", 404: "ResourceNotFoundException"}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_CURRENT = "AWSCURRENT"
#: Secrets Manager version ids (ClientRequestToken) are 32-64 characters; staging labels 1-256 (AWS
#: checks them: an unknown label is VersionNotFound).
_VERSION_ID = re.compile(r"[0-9A-Za-z-]{32,64}")
_MAX_STAGING_LABEL = 256
#: Parameter Store selectors: a version number from 1, or a label (letters, digits, '.', '-', '_'; not
#: starting with a digit, 'aws' or 'ssm'; at most 100 characters).
_PARAMETER_VERSION = re.compile(r"[1-9][0-9]{0,18}")
_PARAMETER_LABEL = re.compile(r"[A-Za-z._-][A-Za-z0-9._-]{0,99}")


def secrets_manager_version(version: str, where: str) -> dict[str, str]:
    """GetSecretValue arguments for a pinned version: a version id (a UUID, or ``uuid/<id>``) or a
    staging label; VersionNotFound before any read for what cannot be either."""
    if version.startswith("uuid/"):
        version_id = version.removeprefix("uuid/")
        if not _VERSION_ID.fullmatch(version_id):
            raise VersionNotFound(f"{where}: a version id is 32-64 letters, digits or '-'")
        return {"VersionId": version_id}
    if _UUID.fullmatch(version):
        return {"VersionId": version}
    if len(version) > _MAX_STAGING_LABEL or not version.isprintable() or version != version.strip():
        raise VersionNotFound(f"{where}: a staging label is 1-256 printable characters")
    return {"VersionStage": version}


def parameter_selector(version: str, where: str) -> str:
    """The ``name:selector`` suffix of a pinned Parameter Store version; VersionNotFound before any read
    for what is neither a version number nor a label (0, 01, 1.5, a label with ':' or spaces)."""
    if _PARAMETER_VERSION.fullmatch(version):
        return version
    if _PARAMETER_LABEL.fullmatch(version) and not version.lower().startswith(("aws", "ssm")):
        return version
    raise VersionNotFound(
        f"{where}: a Parameter Store version is a number from 1 or a label (letters, digits, '.', '-', '_',"
        " not starting with a digit, aws or ssm)"
    )


# Canonical keys (see canonical_ref): names in the services' own character sets, ARNs parsed strictly so a
# pattern's '*' cannot stretch over an ARN's fields. Partitions: aws, aws-cn, aws-us-gov, aws-iso-b, ...
_ARN_HEAD = r"arn:aws(?:-[a-z]+)*:{service}:[a-z0-9-]+:[0-9]{{12}}"
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_SECRET_ARN = re.compile("^" + _ARN_HEAD.format(service="secretsmanager") + r":secret:[A-Za-z0-9/_+=.@-]+$")
_SECRET_VERSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,2048}$")
_PARAMETER_ARN = re.compile("^" + _ARN_HEAD.format(service="ssm") + r":parameter/[A-Za-z0-9_./-]+$")


def _error_code(error: botocore.exceptions.ClientError) -> str:
    code = str(error.response.get("Error", {}).get("Code", "Unknown"))
    if code.isdigit() or code == "Unknown":
        # An answer botocore could not parse (a proxy's page, an XML error to a JSON API): use the status.
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = _STATUS_CODES.get(status, f"HTTP{status}")
    return code


class _Translator:
    """Turns botocore exceptions into domain errors; messages name the operation and key, never values."""

    def __init__(self, label: str) -> None:
        self.label = label

    def call(self, call: Callable[[], T], what: str, *, key: RemoteKey | None = None) -> T:
        try:
            return call()
        except SyncError:
            raise  # raised by our own credential refresh
        except botocore.exceptions.ClientError as error:
            raise self.client_error(_error_code(error), what, key) from None
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.CredentialRetrievalError,
            botocore.exceptions.InvalidConfigError,
        ) as error:
            raise AuthFailed(
                f"{self.label}: {what}: no usable credentials ({type(error).__name__})"
            ) from None
        except botocore.exceptions.NoRegionError:
            raise InvalidBackend(f"{self.label}: {what}: no region") from None
        except botocore.exceptions.ParamValidationError:
            raise InvalidSpec(
                f"{self.label}: {what}: the request was refused by parameter validation"
            ) from None
        except botocore.exceptions.SSLError:
            raise BackendUnavailable(f"{self.label}: {what}: TLS verification failed") from None
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
            raise BackendUnavailable(f"{self.label}: {what}: {type(error).__name__}") from None

    def client_error(  # noqa: PLR0911 - one return per family of error codes
        self, code: str, what: str, key: RemoteKey | None
    ) -> SyncError:
        if code in _AUTH_CODES:
            return AuthFailed(f"{self.label}: {what}: {code}")
        if code in _VERSION_NOT_FOUND_CODES:
            return VersionNotFound(f"{self.label}: {what}: version not found ({code})")
        if code in _NOT_FOUND_CODES:
            if key is not None and key.version is not None:
                return VersionNotFound(f"{self.label}: {what}: version {key.version} not found ({code})")
            return RemoteKeyNotFound(f"{self.label}: {what}: key not found ({code})")
        if code == "InvalidRequestException":
            # Secrets Manager answers this for secrets scheduled for deletion.
            return RemoteKeyNotFound(f"{self.label}: {what}: key is not readable ({code})")
        if code in _INVALID_CODES:
            return InvalidSpec(f"{self.label}: {what}: request refused ({code})")
        return BackendUnavailable(f"{self.label}: {what}: AWS error {code}")


class _Session:
    """Builds boto3 clients with the configured credentials; credentials are resolved on first use."""

    def __init__(self, config: AWSConfig, context: ProviderContext, translator: _Translator) -> None:
        self._config = config
        self._context = context
        self._translator = translator
        self._label = context.backend_label
        auth = config.auth
        if auth is not None and auth.secret_ref is not None and auth.jwt is not None:
            raise InvalidBackend(f"{self._label}: aws.auth must set at most one of secretRef, jwt")
        if auth is not None and auth.jwt is not None and not config.role:
            raise InvalidBackend(f"{self._label}: aws.auth.jwt needs aws.role (the role to assume)")
        if config.external_id and not config.role:
            raise InvalidBackend(f"{self._label}: aws.externalID needs aws.role")
        options = context.options
        self._botocore_config = Config(
            region_name=config.region,
            connect_timeout=float(options.get("timeout_seconds", 10)),
            read_timeout=float(options.get("timeout_seconds", 10)),
            retries={"max_attempts": int(options.get("max_attempts", 3)), "mode": "standard"},
            user_agent_extra="managed-secrets",
        )
        self.event_hooks: list[tuple[str, Callable[..., Any]]] = list(options.get("aws_event_hooks", ()))

    def check_endpoints(self, service: str) -> None:
        """Every endpoint credentials will reach, before any is read; then the operator-identity rule."""
        services = [service, "sts"] if self._config.role else [service]
        for name in services:
            self._context.check_endpoint(self._endpoint_url(name), f"aws endpoint of {name}")
        auth = self._config.auth
        if auth is None or (auth.secret_ref is None and auth.jwt is None):
            self._context.use_operator_identity("aws.auth (the default credential chain)")

    def _endpoint_url(self, service: str) -> str:
        """The URL botocore will call for ``service``: the override, else the region's (an unsigned
        client is built only to ask botocore; it sends nothing)."""
        if self._config.endpoint:
            return self._config.endpoint
        config = self._botocore_config.merge(Config(signature_version=botocore.UNSIGNED))
        client = self._translator.call(
            lambda: boto3.Session(region_name=self._config.region).client(
                cast("Any", service), config=config
            ),
            f"resolve the {service} endpoint",
        )
        try:
            return str(client.meta.endpoint_url)
        finally:
            client.close()

    def client(self, service: str) -> Any:
        return self._make_client(self._session(), service, self._botocore_config)

    def _make_client(self, session: boto3.Session, service: str, config: Config) -> Any:
        client = session.client(cast("Any", service), endpoint_url=self._config.endpoint, config=config)
        for event, hook in self.event_hooks:
            client.meta.events.register(event, hook)
        return client

    def _session(self) -> boto3.Session:
        base = self._base_session()
        if not self._config.role:
            return base
        botocore_session = BotocoreSession()
        botocore_session.set_config_variable("region", self._config.region)
        if self._config.auth is not None and self._config.auth.jwt is not None:
            refresh = self._web_identity_refresher()
            method = "assume-role-with-web-identity"
        else:
            refresh = self._assume_role_refresher(base)
            method = "assume-role"
        credentials = RefreshableCredentials.create_from_metadata(
            metadata=refresh(), refresh_using=refresh, method=method
        )
        botocore_session.get_component("credential_provider").insert_before(
            "env", _ResolvedCredentials(credentials)
        )
        return boto3.Session(botocore_session=botocore_session, region_name=self._config.region)

    def _base_session(self) -> boto3.Session:
        auth = self._config.auth
        if auth is None or auth.secret_ref is None:
            return boto3.Session(region_name=self._config.region)
        ref = auth.secret_ref
        read = self._context.read_secret
        access_key_id = read(ref.access_key_id, "auth.secretRef.accessKeyID")
        secret_access_key = read(ref.secret_access_key, "auth.secretRef.secretAccessKey")
        session_token = None
        if ref.session_token is not None:
            session_token = read(ref.session_token, "auth.secretRef.sessionToken")
        try:
            return boto3.Session(
                aws_access_key_id=access_key_id.decode().strip(),
                aws_secret_access_key=secret_access_key.decode().strip(),
                aws_session_token=session_token.decode().strip() if session_token is not None else None,
                region_name=self._config.region,
            )
        except UnicodeDecodeError:
            raise AuthFailed(f"{self._label}: auth.secretRef: credentials are not UTF-8 text") from None

    def _sts(self, session: boto3.Session | None) -> Any:
        if session is None:
            # AssumeRoleWithWebIdentity is not signed: the token is the credential.
            config = self._botocore_config.merge(Config(signature_version=botocore.UNSIGNED))
            return self._make_client(boto3.Session(region_name=self._config.region), "sts", config)
        return self._make_client(session, "sts", self._botocore_config)

    def _assume_role_refresher(self, base: boto3.Session) -> Callable[[], dict[str, str]]:
        role = self._config.role or ""
        sts = self._sts(base)
        kwargs: dict[str, Any] = {"RoleArn": role, "RoleSessionName": SESSION_NAME}
        if self._config.external_id:
            kwargs["ExternalId"] = self._config.external_id

        def refresh() -> dict[str, str]:
            response = self._translator.call(lambda: sts.assume_role(**kwargs), f"assume role {role}")
            return _metadata(response["Credentials"])

        return refresh

    def _web_identity_refresher(self) -> Callable[[], dict[str, str]]:
        role = self._config.role or ""
        jwt = self._config.auth.jwt if self._config.auth is not None else None
        if jwt is None:  # pragma: no cover - checked by the caller
            raise InvalidBackend(f"{self._label}: aws.auth.jwt is not set")
        account = jwt.service_account_ref
        sts = self._sts(None)

        def refresh() -> dict[str, str]:
            token = self._context.service_account_token(
                account, "auth.jwt.serviceAccountRef", [DEFAULT_WEB_IDENTITY_AUDIENCE]
            )
            response = self._translator.call(
                lambda: sts.assume_role_with_web_identity(
                    RoleArn=role, RoleSessionName=SESSION_NAME, WebIdentityToken=token
                ),
                f"assume role {role} with web identity",
            )
            return _metadata(response["Credentials"])

        return refresh


class _ResolvedCredentials(CredentialProvider):
    """Hands botocore's resolver credentials we built (assumed roles that refresh themselves)."""

    METHOD = "managed-secrets"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self._resolved = credentials

    def load(self) -> RefreshableCredentials:
        return self._resolved


def _metadata(credentials: Mapping[str, Any]) -> dict[str, str]:
    expiration = credentials.get("Expiration")
    expiry = expiration if isinstance(expiration, datetime) else datetime.now(UTC) + timedelta(hours=1)
    return {
        "access_key": credentials["AccessKeyId"],
        "secret_key": credentials["SecretAccessKey"],
        "token": credentials.get("SessionToken", ""),
        "expiry_time": expiry.isoformat(),
    }


class _AWSProvider:
    service_name: str

    def __init__(self, config: AWSConfig, context: ProviderContext) -> None:
        self._config = config
        self._label = context.backend_label
        self._translator = _Translator(self._label)
        self._session = _Session(config, context, self._translator)
        self._session.check_endpoints(self.service_name)
        self._lock = threading.Lock()
        self._client: Any = None
        self._static_keys = config.auth is not None and config.auth.secret_ref is not None

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._translator.call(
                    lambda: self._session.client(self.service_name), f"{self.service_name} client"
                )
            return self._client

    def _forget_client(self) -> None:
        """After an auth failure: the next read builds a client again (re-reading the Secret's keys)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        raise NotImplementedError  # pragma: no cover - each service defines it

    def fetch_many(self, refs: Sequence[RemoteKey]) -> Mapping[RemoteKey, bytes | SyncError]:
        """Reads of the canonical refs, answered under the refs as given."""
        results: dict[RemoteKey, bytes | SyncError] = {}
        canonical: dict[RemoteKey, RemoteKey] = {}
        for ref in refs:
            try:
                canonical[ref] = self.canonical_ref(ref)
            except SyncError as error:
                results[ref] = error
        read = self._fetch_many_canonical(list(dict.fromkeys(canonical.values())))
        results.update({ref: read[key] for ref, key in canonical.items()})
        return results

    def _fetch_many_canonical(self, refs: Sequence[RemoteKey]) -> dict[RemoteKey, bytes | SyncError]:
        raise NotImplementedError  # pragma: no cover - each service defines it

    def _with_retry_on_auth(self, read: Callable[[Any], bytes]) -> bytes:
        try:
            return read(self._get_client())
        except AuthFailed:
            if not self._static_keys:
                raise
            # Keys in the Secret may have been rotated since the client was built: read them once more.
            self._forget_client()
            return read(self._get_client())

    #: The cheapest authenticated call of the service (one result at most; names, never values).
    validate_call: tuple[str, dict[str, Any]]

    def validate(self) -> None:
        operation, params = self.validate_call

        def probe(client: Any) -> bytes:
            try:
                getattr(client, operation)(**params)
            except botocore.exceptions.ClientError as error:
                # Not _error_code: an unparsed 403 (a proxy's page) proves nothing.
                if str(error.response.get("Error", {}).get("Code")) not in _AUTHENTICATED_DENIALS:
                    raise
            return b""

        self._with_retry_on_auth(
            lambda client: self._translator.call(lambda: probe(client), f"validate ({operation})")
        )

    def close(self) -> None:
        self._forget_client()


class SecretsManagerProvider(_AWSProvider):
    """Reads with GetSecretValue / BatchGetSecretValue. Where rotation is on, the next rotation date
    (DescribeSecret, kept for an hour per key and version) is the value's expiry."""

    service_name = "secretsmanager"
    max_batch = SECRETS_MANAGER_MAX_BATCH
    validate_call = ("list_secrets", {"MaxResults": 1})

    def __init__(self, config: AWSConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._rotation_dates = ExpiryCache()

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        """A secret name, or a well-formed ARN (matched by scoping as the ARN, not as the name in it:
        an ARN may name another account or region). Names are literal in Secrets Manager (no path
        resolution) but dot and empty segments are refused anyway: they read as another secret to people.
        """
        if ref.version is not None:  # malformed: VersionNotFound before any read (input limits)
            secrets_manager_version(ref.version, f"{self._label}: {ref}")
        # The version is checked below too: "uuid/<id>" is this provider's own notation.
        refuse_if_ambiguous(self._label, RemoteKey(ref.key), leading_slash=True, trailing_slash=True)
        key = ref.key
        if ":" in key:
            if not _SECRET_ARN.match(key):
                raise KeyNotAllowed(
                    f"{self._label}: key {key!r} is neither a secret name nor a well-formed Secrets Manager"
                    " ARN (arn:<partition>:secretsmanager:<region>:<account>:secret:<name>)"
                )
        elif not _SECRET_NAME.match(key):
            raise InvalidSpec(
                f"{self._label}: key {key!r} is not a valid secret name (1-512 ASCII letters, digits and"
                " /_+=.@-)"
            )
        version = ref.version
        if version is not None and version.startswith("uuid/"):
            if not _SECRET_VERSION_ID.match(version.removeprefix("uuid/")):
                raise KeyNotAllowed(
                    f"{self._label}: version {version!r} of key {key!r} is ambiguous: uuid/ takes one"
                    " version id (letters, digits, '-' and '_')"
                )
        elif version is not None:
            refuse_ambiguous_version(self._label, ref, version)
        return ref

    def fetch(self, ref: RemoteKey) -> bytes:
        ref = self.canonical_ref(ref)
        return self._with_retry_on_auth(lambda client: self._fetch(client, ref))

    def _fetch(self, client: Any, ref: RemoteKey) -> bytes:
        log.debug("%s: reading %s from Secrets Manager", self._label, ref)
        kwargs: dict[str, str] = {"SecretId": ref.key}
        if ref.version is not None:
            kwargs.update(secrets_manager_version(ref.version, f"{self._label}: {ref}"))
        try:
            response = self._translator.call(
                lambda: client.get_secret_value(**kwargs), f"read {ref}", key=ref
            )
        except VersionNotFound:
            self._raise_missing_key(client, ref)
            raise
        return self._with_rotation_date(client, ref, _secret_bytes(response, ref, self._label))

    def _with_rotation_date(self, client: Any, ref: RemoteKey, value: Fetched) -> Fetched:
        return self._rotation_dates.with_expiry(ref.key, value, lambda: self._next_rotation_date(client, ref))

    def _next_rotation_date(self, client: Any, ref: RemoteKey) -> float | None:
        """None when rotation is off, or the role may not describe the secret: the read stands anyway."""
        try:
            described = self._translator.call(
                lambda: client.describe_secret(SecretId=ref.key), f"describe {ref.key}"
            )
        except SyncError as error:
            log.debug("%s: no rotation date for %s: %s", self._label, ref.key, error.message)
            return None
        when = described.get("NextRotationDate")
        if not described.get("RotationEnabled") or not isinstance(when, datetime):
            return None
        return when.timestamp()

    def _raise_missing_key(self, client: Any, ref: RemoteKey) -> None:
        """A missing version of a missing key is a missing key: ask which one it is."""
        try:
            self._translator.call(lambda: client.describe_secret(SecretId=ref.key), f"describe {ref.key}")
        except RemoteKeyNotFound:
            raise RemoteKeyNotFound(f"{self._label}: read {ref}: key not found") from None
        except SyncError:
            return

    def _fetch_many_canonical(self, refs: Sequence[RemoteKey]) -> dict[RemoteKey, bytes | SyncError]:
        results: dict[RemoteKey, bytes | SyncError] = {}
        current = [ref for ref in dict.fromkeys(refs) if ref.version in (None, _CURRENT)]
        others = [ref for ref in dict.fromkeys(refs) if ref.version not in (None, _CURRENT)]
        for start in range(0, len(current), self.max_batch):
            chunk = current[start : start + self.max_batch]
            try:
                results.update(self._with_retry_on_auth_many(chunk))
            except AuthFailed:
                # The role may lack secretsmanager:BatchGetSecretValue while it may read each key.
                others.extend(chunk)
        for ref in others:
            try:
                results[ref] = self.fetch(ref)
            except SyncError as error:
                results[ref] = error
        return results

    def _with_retry_on_auth_many(self, chunk: Sequence[RemoteKey]) -> dict[RemoteKey, bytes | SyncError]:
        try:
            return self._batch(self._get_client(), chunk)
        except AuthFailed:
            if not self._static_keys:
                raise
            self._forget_client()
            return self._batch(self._get_client(), chunk)

    def _batch(self, client: Any, chunk: Sequence[RemoteKey]) -> dict[RemoteKey, bytes | SyncError]:
        ids = list(dict.fromkeys(ref.key for ref in chunk))
        log.debug("%s: reading %d keys from Secrets Manager in one batch", self._label, len(ids))
        response = self._translator.call(
            lambda: client.batch_get_secret_value(SecretIdList=ids), f"batch read of {len(ids)} keys"
        )
        by_id: dict[str, list[RemoteKey]] = {}
        for ref in chunk:
            by_id.setdefault(ref.key, []).append(ref)
        results: dict[RemoteKey, bytes | SyncError] = {}
        for value in response.get("SecretValues", []):
            for name in (value.get("ARN"), value.get("Name")):
                for ref in by_id.get(str(name), []):
                    results[ref] = self._with_rotation_date(
                        client, ref, _secret_bytes(value, ref, self._label)
                    )
        for error in response.get("Errors", []):
            for ref in by_id.get(str(error.get("SecretId")), []):
                code = str(error.get("ErrorCode", "Unknown"))
                # Every secret has an AWSCURRENT version: not found here means the key is missing.
                results.setdefault(ref, self._translator.client_error(code, f"read {ref}", None))
        for ref in chunk:
            if ref not in results:
                # A partial ARN or an alias the answer does not echo back: read it alone.
                try:
                    results[ref] = self._fetch(client, ref)
                except SyncError as error:
                    results[ref] = error
        return results


def _secret_bytes(response: Mapping[str, Any], ref: RemoteKey, label: str) -> Fetched:
    version = str(response["VersionId"]) if response.get("VersionId") else None
    if response.get("SecretString") is not None:
        return Fetched(str(response["SecretString"]).encode(), version=version)
    if response.get("SecretBinary") is not None:
        return Fetched(bytes(response["SecretBinary"]), version=version)
    raise RemoteKeyNotFound(f"{label}: read {ref}: the version holds no value")


class ParameterStoreProvider(_AWSProvider):
    service_name = "ssm"
    max_batch = PARAMETER_STORE_MAX_BATCH
    validate_call = ("describe_parameters", {"MaxResults": 1})

    def _name(self, ref: RemoteKey) -> str:
        if ref.version is None:
            return ref.key
        return f"{ref.key}:{parameter_selector(ref.version, f'{self._label}: {ref}')}"

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        """A parameter name (``/a/b``; names are case-sensitive) or a well-formed parameter ARN, matched
        as the ARN. A ':' in a name would select a version: versions go in ``version``."""
        if ref.version is not None:  # malformed: VersionNotFound before any read (input limits)
            parameter_selector(ref.version, f"{self._label}: {ref}")
        refuse_if_ambiguous(self._label, ref, leading_slash=True)
        key = ref.key
        if ":" in key:
            if not _PARAMETER_ARN.match(key):
                raise KeyNotAllowed(
                    f"{self._label}: key {key!r} is neither a parameter name nor a well-formed parameter ARN"
                    " (arn:<partition>:ssm:<region>:<account>:parameter/<name>); set a version or label"
                    " in version, not after ':'"
                )
        elif not _PARAMETER_NAME.match(key):
            raise InvalidSpec(
                f"{self._label}: key {key!r} is not a valid parameter name (ASCII letters, digits and _.-/)"
            )
        if ref.version is not None:
            refuse_ambiguous_version(self._label, ref, ref.version)
        return ref

    def fetch(self, ref: RemoteKey) -> bytes:
        ref = self.canonical_ref(ref)
        return self._with_retry_on_auth(lambda client: self._fetch(client, ref))

    def _fetch(self, client: Any, ref: RemoteKey) -> bytes:
        log.debug("%s: reading %s from Parameter Store", self._label, ref)
        name = self._name(ref)
        try:
            response = self._translator.call(
                lambda: client.get_parameter(Name=name, WithDecryption=True), f"read {ref}", key=ref
            )
        except VersionNotFound:
            # A missing label is ParameterNotFound, like a missing name: ask which one it is.
            self._raise_missing_parameter(client, ref)
            raise
        parameter = response["Parameter"]
        version = str(parameter["Version"]) if parameter.get("Version") is not None else None
        return Fetched(str(parameter["Value"]).encode(), version=version)

    def _raise_missing_parameter(self, client: Any, ref: RemoteKey) -> None:
        """RemoteKeyNotFound when the parameter itself is missing (its metadata only, never its value);
        when that cannot be told (no ssm:DescribeParameters), the version is what is reported missing."""
        try:
            found = self._translator.call(
                lambda: client.describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [ref.key]}]
                ),
                f"describe {ref.key}",
            )
        except SyncError:
            return
        if not found.get("Parameters"):
            raise RemoteKeyNotFound(f"{self._label}: read {ref}: key not found")

    def _fetch_many_canonical(self, refs: Sequence[RemoteKey]) -> dict[RemoteKey, bytes | SyncError]:
        results: dict[RemoteKey, bytes | SyncError] = {}
        # Only unversioned names are batched: GetParameters echoes the bare name for "name:selector" (and
        # some servers omit the Selector field), so versioned names could not be told apart.
        latest = [ref for ref in dict.fromkeys(refs) if ref.version is None]
        pinned = [ref for ref in dict.fromkeys(refs) if ref.version is not None]
        for start in range(0, len(latest), self.max_batch):
            chunk = latest[start : start + self.max_batch]
            results.update(self._with_retry_on_auth_many(chunk))
        for ref in pinned:
            try:
                results[ref] = self.fetch(ref)
            except SyncError as error:
                results[ref] = error
        return results

    def _with_retry_on_auth_many(self, chunk: Sequence[RemoteKey]) -> dict[RemoteKey, bytes | SyncError]:
        try:
            return self._batch(self._get_client(), chunk)
        except AuthFailed:
            if not self._static_keys:
                raise
            self._forget_client()
            return self._batch(self._get_client(), chunk)

    def _batch(self, client: Any, chunk: Sequence[RemoteKey]) -> dict[RemoteKey, bytes | SyncError]:
        names = {ref.key: ref for ref in chunk}
        log.debug("%s: reading %d parameters in one batch", self._label, len(names))
        response = self._translator.call(
            lambda: client.get_parameters(Names=list(names), WithDecryption=True),
            f"batch read of {len(names)} parameters",
        )
        results: dict[RemoteKey, bytes | SyncError] = {}
        for parameter in response.get("Parameters", []):
            ref = names.get(str(parameter.get("Name", "")))
            if ref is not None and not parameter.get("Selector"):
                results[ref] = str(parameter["Value"]).encode()
        for ref in names.values():
            if ref in results:
                continue
            # Missing names and versions come back in InvalidParameters; one read tells which it is.
            try:
                results[ref] = self._fetch(client, ref)
            except SyncError as error:
                results[ref] = error
        return results


def create_provider(config: Mapping[str, Any], context: ProviderContext) -> SecretProvider:
    # botocore logs whole response bodies (secret values) at DEBUG: keep it above that whatever the
    # operator's own level is.
    pin_sdk_loggers()
    parsed = parse_config(AWSConfig, config, context)
    if parsed.service is AWSService.PARAMETER_STORE:
        return ParameterStoreProvider(parsed, context)
    return SecretsManagerProvider(parsed, context)
