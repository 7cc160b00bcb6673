"""Typed view of a ManagedSecret: parsed once at the boundary, the core never indexes raw dicts."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from managed_secrets.api import CLUSTER_SECRET_BACKEND_KIND, SECRET_BACKEND_KIND, TLS_SECRET_TYPE
from managed_secrets.models.base import CamelModel
from managed_secrets.models.duration import (
    MAX_DURATION,
    MAX_DURATION_LENGTH,
    cel_duration,
    duration_json_schema,
    format_duration,
    parse_duration,
)
from managed_secrets.models.schema import DNS_SUBDOMAIN, SECRET_KEY, JsonDict, rule, rules


class BackendKind(StrEnum):
    SECRET_BACKEND = SECRET_BACKEND_KIND
    CLUSTER_SECRET_BACKEND = CLUSTER_SECRET_BACKEND_KIND


class CreationPolicy(StrEnum):
    OWNER = "Owner"
    ORPHAN = "Orphan"
    MERGE = "Merge"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


#: Shortest refresh interval: more often would turn one object into a stream of store reads. 0 (fetch
#: once) is allowed. The CRD's CEL rule says the same.
MIN_REFRESH_INTERVAL = timedelta(seconds=1)
MAX_REFRESH_INTERVAL = MAX_DURATION
#: A restart waits at most this long after a change (the CRD's CEL rule says the same).
MAX_ROLLOUT_DEBOUNCE = timedelta(hours=1)


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):  # a bare number would be read as seconds: the CRD says string
        raise ValueError("must be a duration string like 30s, 5m or 1h30m")  # noqa: TRY004 - pydantic wants ValueError
    if len(value) > MAX_DURATION_LENGTH:
        raise ValueError(f"must be at most {MAX_DURATION_LENGTH} characters long")
    return parse_duration(value)


def _refresh_interval_bounds(value: timedelta) -> timedelta:
    if value and not MIN_REFRESH_INTERVAL <= value <= MAX_REFRESH_INTERVAL:
        raise ValueError(
            f"must be 0 (fetch once) or from {format_duration(MIN_REFRESH_INTERVAL)}"
            f" to {format_duration(MAX_REFRESH_INTERVAL)}"
        )
    return value


def _debounce_bounds(value: timedelta) -> timedelta:
    if value > MAX_ROLLOUT_DEBOUNCE:
        raise ValueError(f"must be at most {format_duration(MAX_ROLLOUT_DEBOUNCE)}")
    return value


_ZERO = cel_duration(timedelta(0))
_MIN_REFRESH = cel_duration(MIN_REFRESH_INTERVAL)
_MAX_REFRESH = cel_duration(MAX_REFRESH_INTERVAL)
RefreshInterval = Annotated[
    timedelta,
    BeforeValidator(_duration),
    AfterValidator(_refresh_interval_bounds),
    WithJsonSchema(
        duration_json_schema(
            f"(duration(self) == {_ZERO} || (duration(self) >= {_MIN_REFRESH} && duration(self) <= {_MAX_REFRESH}))",
            f"refreshInterval must be 0 (fetch once) or from {format_duration(MIN_REFRESH_INTERVAL)}"
            f" to {format_duration(MAX_REFRESH_INTERVAL)} (a year)",
        )
    ),
]
Debounce = Annotated[
    timedelta,
    BeforeValidator(_duration),
    AfterValidator(_debounce_bounds),
    WithJsonSchema(
        duration_json_schema(
            f"duration(self) <= {cel_duration(MAX_ROLLOUT_DEBOUNCE)}",
            f"rollout.debounce must be at most {format_duration(MAX_ROLLOUT_DEBOUNCE)}",
        )
    ),
]


def _certificate_duration_bounds(value: timedelta) -> timedelta:
    if not MIN_CERTIFICATE_DURATION <= value <= MAX_DURATION:
        raise ValueError(f"must be from {format_duration(MIN_CERTIFICATE_DURATION)} to 8760h (a year)")
    return value


#: Shorter certificates would be re-issued faster than a reconcile finishes on a busy cluster.
MIN_CERTIFICATE_DURATION = timedelta(seconds=10)
CertificateDuration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    AfterValidator(_certificate_duration_bounds),
    WithJsonSchema(
        duration_json_schema(
            f"duration(self) >= {cel_duration(MIN_CERTIFICATE_DURATION)}"
            f" && duration(self) <= {cel_duration(MAX_DURATION)}",
            f"must be from {format_duration(MIN_CERTIFICATE_DURATION)} to 8760h (a year)",
        )
    ),
]

#: Names of Kubernetes objects and keys of Secrets, as the API server checks them.
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY)]
_SECRET_KEY = re.compile(SECRET_KEY)


class BackendRef(CamelModel):
    name: ObjectName = Field(description="Name of the backend.")
    kind: BackendKind = Field(
        default=BackendKind.SECRET_BACKEND,
        description="SecretBackend (in this namespace, the default) or ClusterSecretBackend (whose"
        " spec.conditions must admit this namespace and the keys it reads).",
    )


class DecodingStrategy(StrEnum):
    NONE = "None"
    BASE64 = "Base64"
    BASE64URL = "Base64URL"
    AUTO = "Auto"


_DECODING_DOC = (
    "How the value is stored: None (default: as it is), Base64 or Base64URL (decoded; a value that is not"
    " valid base64 is DecodingFailed), Auto (decoded when it is valid base64 of either alphabet, else kept"
    " as it is; text that happens to be valid base64 is decoded too, so prefer the explicit ones)."
)


class RemoteRef(CamelModel):
    key: str = Field(
        min_length=1,
        max_length=2048,
        description="Remote key: a Vault path below the mount, an AWS secret name or ARN / parameter name,"
        " a GCP secret ID (or projects/<p>/secrets/<id>), an Azure Key Vault secret name.",
    )
    property: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Field of a JSON-object value to use: an exact top-level field name first, else a dotted"
        " path (db.user, hosts.0). Non-string fields are written as JSON. Unset: the whole value (for Vault,"
        " the key's whole data map as JSON).",
    )
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Version to read, in the provider's terms: Vault KV v2 version number; AWS Secrets"
        " Manager staging label (AWSCURRENT, AWSPREVIOUS, ...) or version ID, Parameter Store version number"
        " or label; GCP version number; Azure version ID. Unset: the latest version.",
    )
    decoding_strategy: DecodingStrategy = Field(
        default=DecodingStrategy.NONE,
        description=_DECODING_DOC + " Applied after property.",
    )


class DataItem(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={"description": "One key of the target Secret, filled from one remote value."}
    )

    secret_key: SecretKey = Field(
        description="Key in the target Secret (letters, digits, '-', '_' and '.'). Must be unique within data."
    )
    remote_ref: RemoteRef = Field(description="Where the value comes from in the backend.")


class ExtractRef(CamelModel):
    key: str = Field(min_length=1, max_length=2048, description="Remote key to extract.")
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Version to read, in the provider's terms. Unset: the latest version.",
    )
    decoding_strategy: DecodingStrategy = Field(
        default=DecodingStrategy.NONE, description=_DECODING_DOC + " Applied to each extracted field."
    )


class DataFromItem(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={"description": "A remote value whose fields all become keys of the target Secret."}
    )

    extract: ExtractRef = Field(
        description="Extract every top-level field of the JSON object stored at key; each field becomes a"
        " Secret key (non-string fields as JSON). Field names must be valid Secret keys. Explicit data"
        " entries win over extracted fields of the same name."
    )


def _template_keys(field: str) -> JsonDict:
    return rules(
        rule(
            f"self.all(k, k.matches('{SECRET_KEY}'))",
            f"template.{field} keys must be valid Secret keys (letters, digits, '-', '_' and '.')",
        )
    )


class TargetTemplate(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "!has(self.data) || !has(self.binaryData) || self.binaryData.all(k, !(k in self.data))",
                "a key can be in template.data or template.binaryData, not both",
            )
        )
    )

    #: Secret key -> template of its text (written as UTF-8).
    data: dict[str, str] = Field(
        default_factory=dict,
        max_length=1000,
        json_schema_extra=_template_keys("data"),
        description="Secret key -> Jinja2 template (sandboxed, undefined variables are errors). Templates"
        " see every fetched value (from data and dataFrom) by its Secret key, as a variable and as"
        " values['key'] for names that are not identifiers; filters b64encode, b64decode and fromjson are"
        " available. The rendered text is written as UTF-8. When set, the Secret holds only the templated"
        " keys. A template error fails the sync and leaves the Secret as it was; the error never contains a"
        " value.",
    )
    #: Secret key -> template that renders base64, decoded into the Secret: any bytes.
    binary_data: dict[str, str] = Field(
        default_factory=dict,
        max_length=1000,
        json_schema_extra=_template_keys("binaryData"),
        description="Secret key -> Jinja2 template that renders base64 text, which the operator decodes"
        " into the Secret, so a key can hold any bytes (a keystore, a DER certificate). For example"
        ' "{{ keystore }}" for a value stored as base64, or "{{ cert | b64encode }}" (b64encode of a fetched'
        " value encodes its original bytes). Same variables, filters and limits as data.",
    )

    @field_validator("data", "binary_data")
    @classmethod
    def _valid_keys(cls, templates: dict[str, str]) -> dict[str, str]:
        bad = sorted(key for key in templates if not _SECRET_KEY.fullmatch(key))
        if bad:
            raise ValueError(f"key {bad[0]!r} is not a valid Secret key (letters, digits, '-', '_' and '.')")
        return templates

    @model_validator(mode="after")
    def _keys_once(self) -> TargetTemplate:
        both = sorted(set(self.data) & set(self.binary_data))
        if both:
            raise ValueError(f"key {both[0]!r} is in both data and binaryData; keep it in one")
        return self


class Target(CamelModel):
    name: ObjectName | None = Field(
        default=None, description="Name of the Secret. Default: the name of the ManagedSecret."
    )
    type: str = Field(
        default="Opaque",
        min_length=1,
        max_length=253,
        description="Type of the Secret (Opaque, kubernetes.io/dockerconfigjson, kubernetes.io/tls, ...)."
        " A Secret's type is immutable, so changing it makes the operator replace the Secret, only after"
        " checking that the API server accepts the new one (its built-in rules, such as the keys tls.crt"
        " and tls.key for kubernetes.io/tls, and a server-side dry run); otherwise the old Secret stays and"
        " the condition says TargetRejected.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Labels to set on the Secret, added to those other tools put there.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Annotations to set on the Secret, added to those other tools put there.",
    )
    creation_policy: CreationPolicy = Field(
        default=CreationPolicy.OWNER,
        description="Who owns the Secret. Owner (default): the operator creates the Secret and manages it;"
        " it refuses to take over an existing Secret it did not create (delete that Secret, pick another"
        " target name, or use Merge). Ownership is proven by the annotation managedsecrets.io/owner-proof,"
        " an HMAC with the operator's key over the namespace, the Secret's name and the ManagedSecret's UID;"
        " labels and annotations alone are never enough. The Secret holds exactly the keys the ManagedSecret"
        " declares: keys added by hand are removed. With deletionPolicy Delete the Secret gets an"
        " ownerReference to the ManagedSecret, so Kubernetes garbage-collects it with the ManagedSecret."
        " Orphan: like Owner but without ownerReference (with deletionPolicy Delete the operator deletes the"
        " Secret itself through a finalizer, only if proven its own). Merge: the Secret must already exist"
        " (the sync fails until it does) and must not belong to a ManagedSecret; the operator only adds and"
        " updates its own keys and leaves other keys, labels and annotations alone. Only one ManagedSecret"
        " may merge into a Secret; the merged keys are recorded in the annotations"
        " managedsecrets.io/merged-by, managedsecrets.io/merged-keys and managedsecrets.io/merged-by-proof,"
        " and the label managedsecrets.io/managed=merged lets the operator watch the Secret (removed with the"
        " merged keys). A claim left by a ManagedSecret that no longer exists does not block another one.",
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.DELETE,
        description="What happens to the Secret when the ManagedSecret is deleted. Delete (default): the"
        " Secret is deleted (with creationPolicy Merge: only the merged keys are removed). Retain: the Secret"
        " stays as it is. Remote values are never deleted.",
    )
    template: TargetTemplate | None = Field(
        default=None,
        description="Render the Secret's keys from templates instead of copying the fetched values. Renders"
        " are limited in time, memory and output size (operator flags --template-timeout,"
        " --template-memory-mib, --template-max-output); a template over a limit fails with TemplateError"
        " and the Secret stays as it was.",
    )


class RolloutKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"
    ROLLOUT = "Rollout"  # Argo Rollouts, restarted through spec.restartAt


class RolloutTarget(CamelModel):
    model_config = ConfigDict(json_schema_extra={"description": "One workload."})

    kind: RolloutKind = Field(
        description="Kind of the workload. Rollout is an Argo Rollout (restarted through spec.restartAt)."
    )
    name: ObjectName = Field(description="Name of the workload.")


class Rollout(CamelModel):
    targets: list[RolloutTarget] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["kind", "name"]},
        description="Workloads in this namespace to restart with a rolling restart.",
    )
    auto: bool = Field(
        default=False,
        description="Also restart, without listing them in targets, the workloads in this namespace whose"
        " pod template uses the Secret (env, envFrom or a volume).",
    )
    debounce: Debounce = Field(
        default=timedelta(seconds=10),
        description="How long to wait after a change before restarting, so that several Secrets of one"
        " workload rotating together cause a single restart (Go-style duration: 10s, 1m; at most 1h; 0"
        " restarts at once).",
    )

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, targets: list[RolloutTarget]) -> list[RolloutTarget]:
        seen: set[tuple[str, str]] = set()
        for target in targets:
            if (target.kind.value, target.name) in seen:
                raise ValueError(f"{target.kind.value} {target.name!r} appears twice")
            seen.add((target.kind.value, target.name))
        return targets


#: A host name or wildcard for altNames; IP addresses go to ipSans.
_DNS_NAME = r"^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$"
_IP_ADDRESS = r"^[0-9a-fA-F:.]+$"
_PKI_PATH = r"^[a-zA-Z0-9][-_a-zA-Z0-9]*(/[a-zA-Z0-9][-_a-zA-Z0-9]*)*$"


class CertificateSource(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "!has(self.ttl) || !has(self.renewBefore) || duration(self.renewBefore) < duration(self.ttl)",
                "certificate.renewBefore must be shorter than certificate.ttl",
            ),
            description="A TLS certificate issued by the backend's PKI engine (Vault/OpenBao pki/issue/<role>)."
            " The Secret is of type kubernetes.io/tls with tls.crt (the certificate and its chain), tls.key"
            " and ca.crt. It is issued when the Secret holds no valid certificate for this request, kept on"
            " every refresh and operator restart, and issued anew renewBefore ahead of its expiry (or when"
            " the request changes, or on force-sync); the change rolls the workloads like any other.",
        )
    )

    mount: str = Field(
        default="pki",
        min_length=1,
        max_length=128,
        pattern=_PKI_PATH,
        description="Path of the PKI secrets engine. Default: pki.",
    )
    role: str = Field(
        min_length=1, max_length=128, pattern=_PKI_PATH, description="The PKI role to issue with."
    )
    common_name: str = Field(
        min_length=1, max_length=253, pattern=_DNS_NAME, description="The certificate's common name."
    )
    alt_names: list[Annotated[str, Field(min_length=1, max_length=253, pattern=_DNS_NAME)]] = Field(
        default_factory=list, max_length=100, description="DNS subject alternative names."
    )
    ip_sans: list[Annotated[str, Field(min_length=2, max_length=45, pattern=_IP_ADDRESS)]] = Field(
        default_factory=list, max_length=100, description="IP address subject alternative names."
    )
    ttl: CertificateDuration | None = Field(
        default=None,
        description="Requested lifetime (the role's max_ttl caps it). Default: the role's ttl.",
    )
    renew_before: CertificateDuration | None = Field(
        default=None,
        description="How long before expiry the certificate is issued anew. Default: a third of its"
        " lifetime.",
    )

    @model_validator(mode="after")
    def _renew_before_ttl(self) -> CertificateSource:
        if self.ttl is not None and self.renew_before is not None and self.renew_before >= self.ttl:
            raise ValueError("certificate.renewBefore must be shorter than certificate.ttl")
        return self


def _grace_bounds(value: timedelta) -> timedelta:
    if value > MAX_REVOKE_GRACE:
        raise ValueError(f"must be at most {format_duration(MAX_REVOKE_GRACE)}")
    return value


MAX_REVOKE_GRACE = timedelta(hours=24)
RevokeGrace = Annotated[
    timedelta,
    BeforeValidator(_duration),
    AfterValidator(_grace_bounds),
    WithJsonSchema(
        duration_json_schema(
            f"duration(self) <= {cel_duration(MAX_REVOKE_GRACE)}",
            f"dynamic.revokeGracePeriod must be at most {format_duration(MAX_REVOKE_GRACE)}",
        )
    ),
]
#: Engines that hand out credentials, not the store's control paths: a token, a policy, the operator's
#: own cubbyhole are never what a dynamic ManagedSecret reads.
RESERVED_DYNAMIC_MOUNTS = ("sys", "auth", "identity", "cubbyhole")
_DYNAMIC_PATH = r"^[a-zA-Z0-9][-_.a-zA-Z0-9]*(/[a-zA-Z0-9][-_.a-zA-Z0-9]*)+$"
_RESERVED_CEL = "|".join(RESERVED_DYNAMIC_MOUNTS)
#: Strings only (Vault parses "1h", "3", "true" for its typed fields); a CRD field has one type.
DynamicParameter = Annotated[str, Field(max_length=4096)]


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"


class RevokeAfter(StrEnum):
    """When a replaced lease is revoked."""

    #: once the workloads rolled for the new credentials run no pod of the old template
    ROLLOUT_COMPLETE = "RolloutComplete"
    #: revokeGracePeriod after the new credentials were written, whatever the workloads do
    GRACE_PERIOD = "GracePeriod"


class DynamicSource(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                f"!self.path.matches('^({_RESERVED_CEL})/')",
                f"dynamic.path must be a secrets engine's path, not under {', '.join(RESERVED_DYNAMIC_MOUNTS)}",
            ),
            rule(
                "!has(self.parameters) || size(self.parameters) == 0 || (has(self.method) && self.method == 'POST')",
                "dynamic.parameters are sent with method POST only",
            ),
            description="Credentials from a Vault/OpenBao dynamic secrets engine (database, AWS, RabbitMQ,"
            " ...): every response field becomes a Secret key (target.template can map them). The lease is"
            " renewed at renewAtPercent of its duration (with jitter); when it cannot be renewed any more"
            " (max TTL near, renewal refused, lease gone) new credentials are issued, the Secret written,"
            " the workloads rolled, and the old lease revoked once their rollout completed (revokeAfter)."
            " The lease survives"
            " operator restarts (kept with the Secret), so a restart issues nothing and rolls nothing.",
        )
    )

    path: str = Field(
        min_length=3,
        max_length=512,
        pattern=_DYNAMIC_PATH,
        description="The engine's path that issues credentials, without /v1/: database/creds/<role>,"
        " aws/creds/<role>, rabbitmq/creds/<role>.",
    )
    method: HttpMethod = Field(
        default=HttpMethod.GET, description="GET (most engines) or POST (with parameters). Default GET."
    )
    parameters: dict[str, DynamicParameter] = Field(
        default_factory=dict,
        max_length=32,
        description="The POST body: the engine's request parameters, as strings.",
    )
    renew_at_percent: int = Field(
        default=67,
        ge=10,
        le=90,
        description="Renew the lease when this share of its duration has passed (jittered by up to a"
        " tenth of the duration, earlier, never later). Default 67 (two thirds).",
    )
    revoke_after: RevokeAfter = Field(
        default=RevokeAfter.ROLLOUT_COMPLETE,
        description="When replaced credentials are revoked. RolloutComplete (default): as soon as every"
        " workload rolled for the new credentials has completed its rollout (no pod of the old template"
        " left), never while a rollout is in progress (a rollout that never completes keeps the old lease"
        " until it expires by itself); when no workload is rolled, or its progress cannot be read (an Argo"
        " Rollout), revokeGracePeriod after the new credentials were written. GracePeriod:"
        " revokeGracePeriod after the new credentials were written, whatever the workloads do.",
    )
    revoke_grace_period: RevokeGrace = Field(
        default=timedelta(minutes=5),
        description="How long replaced credentials stay valid after the new ones are in the Secret"
        " (with revokeAfter RolloutComplete: only when no workload's rollout can be followed), at most"
        " until they expire anyway. Default 5m.",
    )
    revoke_on_delete: bool = Field(
        default=True,
        description="Revoke the lease when the ManagedSecret is deleted (the Secret goes with it)."
        " Default true.",
    )

    @field_validator("path")
    @classmethod
    def _not_reserved(cls, path: str) -> str:
        if path.split("/", maxsplit=1)[0] in RESERVED_DYNAMIC_MOUNTS:
            raise ValueError(
                f"must be a secrets engine's path, not under {', '.join(RESERVED_DYNAMIC_MOUNTS)}"
            )
        return path

    @model_validator(mode="after")
    def _parameters_with_post(self) -> DynamicSource:
        if self.parameters and self.method is not HttpMethod.POST:
            raise ValueError("dynamic.parameters are sent with method POST only")
        return self


class RefreshPolicy(StrEnum):
    #: read again every refreshInterval
    PERIODIC = "Periodic"
    #: read again only when the spec changes (or on force-sync)
    ON_CHANGE = "OnChange"
    #: read once; never again while the Secret holds what was written (force-sync reads again)
    CREATED_ONCE = "CreatedOnce"


class ManagedSecretSpec(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=rules(
            rule(
                "!has(self.refreshPolicy) || self.refreshPolicy != 'CreatedOnce' || (!has(self.certificate)"
                " && !has(self.dynamic))",
                "refreshPolicy CreatedOnce is for data and dataFrom: certificates and leases are renewed",
            ),
            rule(
                "(has(self.data) && size(self.data) > 0) || (has(self.dataFrom) && size(self.dataFrom) > 0)"
                " || has(self.certificate) || has(self.dynamic)",
                "set at least one of data or dataFrom, or a certificate, or dynamic",
            ),
            rule(
                "!has(self.dynamic) || (!has(self.certificate) && (!has(self.data) || size(self.data) == 0)"
                " && (!has(self.dataFrom) || size(self.dataFrom) == 0))",
                "a dynamic ManagedSecret holds only the engine's credentials: set dynamic, or data/dataFrom,"
                " or certificate",
            ),
            rule(
                "!has(self.dynamic) || !has(self.target) || !has(self.target.creationPolicy)"
                " || self.target.creationPolicy != 'Merge'",
                "a dynamic ManagedSecret writes a Secret of its own: no creationPolicy Merge",
            ),
            rule(
                "!has(self.certificate) || ((!has(self.data) || size(self.data) == 0) && (!has(self.dataFrom)"
                " || size(self.dataFrom) == 0))",
                "a certificate ManagedSecret holds only the certificate: set data/dataFrom or certificate,"
                " not both",
            ),
            rule(
                "!has(self.certificate) || !has(self.target) || ((!has(self.target.type) || self.target.type"
                " in ['Opaque', 'kubernetes.io/tls']) && !has(self.target.template) && (!has(self.target"
                ".creationPolicy) || self.target.creationPolicy != 'Merge'))",
                "a certificate is written as its own kubernetes.io/tls Secret: no target.template, no"
                " creationPolicy Merge, no other target.type",
            ),
            description="What to fetch, from which backend, and the Secret to write.",
        )
    )

    backend_ref: BackendRef = Field(
        description="The SecretBackend (same namespace) or ClusterSecretBackend to read from."
    )
    refresh_interval: RefreshInterval = Field(
        default=timedelta(hours=1),
        description="How often the remote values are read again, as a Go-style duration (30s, 5m, 1h30m;"
        " units ms, s, m, h), from 1s to 8760h (a year). 0 fetches once: again only when the spec or the"
        " force-sync annotation changes. Whatever the interval, a Secret deleted or changed by hand is"
        " restored at once, from the last read while it is recent (up to half the interval, at most 1h; 5"
        " minutes for 0), else with one new read. Refreshes are jittered, and reads of the same remote key"
        " are shared between ManagedSecrets for up to half the interval. Retries after a failure come at"
        " most one interval apart.",
    )
    refresh_policy: RefreshPolicy = Field(
        default=RefreshPolicy.PERIODIC,
        description="When the remote values are read again. Periodic (default): every refreshInterval."
        " OnChange: only when the spec changes or on force-sync (refreshInterval is ignored). CreatedOnce:"
        " the Secret is written from one read and never refreshed, not even for a spec change, while it"
        " holds what was written; a Secret deleted or changed by hand is written again (from the last read"
        " while it is recent, as for every policy), and force-sync reads again. Not for certificates and dynamic secrets, which are renewed.",
    )
    target: Target = Field(
        default_factory=Target,
        # The API server applies the target's own defaults (type, policies) to an absent target too.
        json_schema_extra={"default": {}},
        description="The Kubernetes Secret the operator writes, in the ManagedSecret's namespace. Every"
        " Secret it writes carries the label managedsecrets.io/managed=true and the annotation"
        " managedsecrets.io/owner=<ManagedSecret name>. The operator watches only Secrets with that label,"
        " and only their metadata (never their data); a Secret deleted or changed by hand is restored within"
        " seconds, from the last read of the remote values (a Secret changed again and again is restored at"
        " a slowing pace). Secret data is written only when it differs, and the last good Secret is kept"
        " while the backend fails.",
    )
    data: list[DataItem] = Field(
        default_factory=list,
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["secretKey"]},
        description="Secret keys filled from single remote values. Set data, dataFrom or both.",
    )
    data_from: list[DataFromItem] = Field(
        default_factory=list,
        max_length=100,
        description="Remote JSON objects whose fields all become Secret keys. Set data, dataFrom or both.",
    )
    certificate: CertificateSource | None = Field(
        default=None,
        description="Issue a TLS certificate instead of reading values (Vault/OpenBao PKI backends).",
    )
    dynamic: DynamicSource | None = Field(
        default=None,
        description="Credentials under a lease from a dynamic secrets engine instead of static values"
        " (Vault/OpenBao backends).",
    )
    rollout: Rollout | None = Field(
        default=None,
        description="Restart workloads when the Secret's data changes (not on the first sync, not when"
        " nothing changed). A restart patches the pod template with a hash of the data, so the same data"
        " never restarts a workload twice, across operator restarts too.",
    )

    @field_validator("data")
    @classmethod
    def _unique_secret_keys(cls, items: list[DataItem]) -> list[DataItem]:
        seen: set[str] = set()
        for item in items:
            if item.secret_key in seen:
                raise ValueError(f"secretKey {item.secret_key!r} appears twice")
            seen.add(item.secret_key)
        return items

    @model_validator(mode="after")
    def _has_source(self) -> ManagedSecretSpec:
        if self.refresh_policy is RefreshPolicy.CREATED_ONCE and (
            self.certificate is not None or self.dynamic is not None
        ):
            raise ValueError(
                "refreshPolicy CreatedOnce is for data and dataFrom: certificates and leases are renewed"
            )
        if self.dynamic is not None:
            if self.certificate is not None or self.data or self.data_from:
                raise ValueError(
                    "a dynamic ManagedSecret holds only the engine's credentials: set dynamic, or"
                    " data/dataFrom, or certificate"
                )
            if self.target.creation_policy is CreationPolicy.MERGE:
                raise ValueError(
                    "a dynamic ManagedSecret writes a Secret of its own: no creationPolicy Merge"
                )
            return self
        if self.certificate is not None:
            if self.data or self.data_from:
                raise ValueError(
                    "a certificate ManagedSecret holds only the certificate: set data/dataFrom or"
                    " certificate, not both"
                )
            target = self.target
            if (
                target.type not in {"Opaque", TLS_SECRET_TYPE}
                or target.template is not None
                or target.creation_policy is CreationPolicy.MERGE
            ):
                raise ValueError(
                    "a certificate is written as its own kubernetes.io/tls Secret: no target.template, no"
                    " creationPolicy Merge, no other target.type"
                )
            return self
        if not self.data and not self.data_from:
            raise ValueError("set at least one of data or dataFrom, or a certificate, or dynamic")
        return self


class ManagedSecretRef(CamelModel):
    """Identity of a ManagedSecret, for logs, keys and owner references."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ManagedSecret(CamelModel):
    """What the reconcile core needs of a ManagedSecret object."""

    ref: ManagedSecretRef
    generation: int = 0
    spec: ManagedSecretSpec
    force_sync_token: str | None = None
    #: status.secretName: the Secret the operator last synced this ManagedSecret into (written only by it).
    synced_secret_name: str | None = None
    #: status.dataHash: the data the workloads last rolled for (written only by the operator).
    rolled_out_hash: str | None = None

    @property
    def refresh_seconds(self) -> float:
        """The refresh interval in effect: 0 (no periodic refresh) unless the policy is Periodic."""
        if self.spec.refresh_policy is not RefreshPolicy.PERIODIC:
            return 0.0
        return self.spec.refresh_interval.total_seconds()

    @property
    def target_name(self) -> str:
        return self.spec.target.name or self.ref.name

    @property
    def secret_type(self) -> str:
        """The type of the Secret written: a certificate's is always kubernetes.io/tls."""
        return TLS_SECRET_TYPE if self.spec.certificate is not None else self.spec.target.type
