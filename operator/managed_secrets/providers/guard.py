"""Guards against a backend acting as a confused deputy: pure rules, applied by ``ProviderContext``.

A backend tells the operator where to send credentials and which credentials to send. Whoever may
create a SecretBackend must not be able to use that to obtain a credential they could not read
themselves. Three rules hold it:

- Endpoints: credentials only go to store endpoints the operator's administrator allowed (the public
  endpoints of AWS, Azure and Google Cloud, plus ``--allowed-store-endpoint``), checked before any
  credential is read.
- Opt-in: a Secret or ServiceAccount is used only when its owner named the backend in its annotation
  ``managedsecrets.io/allowed-backends``; the operator's own identity only by ClusterSecretBackends.
- Audiences: a service-account token is requested only for the store's audience, never an empty list
  nor an audience of the Kubernetes API server, for 600 s; the kube layer verifies the issued token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from managed_secrets.api import ALLOWED_BACKENDS_ANNOTATION
from managed_secrets.models.managedsecret import BackendKind

#: Annotation of a Secret or ServiceAccount naming the backends that may use it as a credential.
#: Lifetime of requested service-account tokens: the TokenRequest API's minimum.
TOKEN_EXPIRATION_SECONDS = 600

#: Public endpoints of the cloud stores, owned by their providers: sending a credential there never hands
#: it to a third party. ``*`` is exactly one DNS label (a region, a vault name), never a dot.
BUILTIN_STORE_ENDPOINTS: tuple[str, ...] = (
    # AWS Secrets Manager, Parameter Store and STS, standard and FIPS, commercial and GovCloud, China.
    "https://secretsmanager.*.amazonaws.com",
    "https://secretsmanager-fips.*.amazonaws.com",
    "https://ssm.*.amazonaws.com",
    "https://ssm-fips.*.amazonaws.com",
    "https://sts.amazonaws.com",
    "https://sts.*.amazonaws.com",
    "https://sts-fips.*.amazonaws.com",
    "https://secretsmanager.*.amazonaws.com.cn",
    "https://ssm.*.amazonaws.com.cn",
    "https://sts.*.amazonaws.com.cn",
    # Azure Key Vault and Microsoft Entra ID, public, China and US Government clouds.
    "https://*.vault.azure.net",
    "https://*.vault.azure.cn",
    "https://*.vault.usgovcloudapi.net",
    "https://login.microsoftonline.com",
    "https://login.chinacloudapi.cn",
    "https://login.microsoftonline.us",
    # Google Cloud Secret Manager, global and regional.
    "https://secretmanager.googleapis.com",
    "https://secretmanager.*.rep.googleapis.com",
)

#: Audiences the API server accepts on most clusters (its default is its issuer); the operator adds the
#: ``aud`` and ``iss`` of its own token and ``--api-audience``, and a TokenReview checks every token.
WELL_KNOWN_API_AUDIENCES: frozenset[str] = frozenset(
    {
        "https://kubernetes.default.svc",
        "https://kubernetes.default.svc.cluster.local",
        "kubernetes.default.svc",
    }
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_IPV6 = re.compile(r"^\[[0-9a-f:.]+\]$")
#: A plain URL: scheme, host, optional port and path. No user info, backslash, space, query or fragment,
#: so every HTTP client reads the same host from it as this check does.
_URL = re.compile(
    r"^(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9._~!$&'()*+,;=:%/-]*)?$"
)
_PATTERN = re.compile(
    r"^(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.*-]+)(:(?P<port>[0-9]{1,5}|\*))?/?$"
)


class EndpointError(ValueError):
    """An endpoint or pattern that is not a plain ``scheme://host[:port]``; the message says why."""


@dataclass(frozen=True, order=True)
class Endpoint:
    """Where a URL sends its request: scheme, host (lower case, no trailing dot) and port."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = _DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{self.host}" + ("" if default else f":{self.port}")


def parse_endpoint(url: str) -> Endpoint:
    """The endpoint of a store URL, or EndpointError for anything but a plain http(s) URL."""
    match = _URL.match(url)
    if match is None:
        raise EndpointError(
            "not a plain http(s)://host[:port][/path] URL (no user info, query, fragment or spaces)"
        )
    scheme = match["scheme"]
    host = _host(match["host"])
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise EndpointError(f"port {port} is out of range")
    return Endpoint(scheme, host, port)


def _host(raw: str) -> str:
    host = raw.lower().removesuffix(".")
    if not (_HOST.match(host) or _IPV6.match(host)):
        raise EndpointError(f"{raw!r} is not a host name or IP address")
    return host


@dataclass(frozen=True)
class EndpointPattern:
    """``scheme://host[:port]``; a host label may be ``*`` (exactly one label), the port may be ``*``."""

    text: str
    scheme: str
    labels: tuple[str, ...]
    port: int | None  # None: any port

    @classmethod
    def parse(cls, text: str) -> EndpointPattern:
        match = _PATTERN.match(text.strip())
        if match is None:
            raise EndpointError(
                f"store endpoint pattern {text!r} is not scheme://host[:port] (http or https, no path)"
            )
        scheme, raw_host = match["scheme"], match["host"].lower().removesuffix(".")
        labels = tuple(raw_host.split(".")) if not raw_host.startswith("[") else (raw_host,)
        for label in labels:
            if label != "*" and _host(label) != label:
                raise EndpointError(f"store endpoint pattern {text!r}: bad host label {label!r}")
        if labels and all(label == "*" for label in labels):
            raise EndpointError(f"store endpoint pattern {text!r} would allow every host")
        port_text = match["port"]
        port = None if port_text == "*" else int(port_text) if port_text else _DEFAULT_PORTS[scheme]
        return cls(text.strip(), scheme, labels, port)

    def matches(self, endpoint: Endpoint) -> bool:
        if endpoint.scheme != self.scheme or (self.port is not None and endpoint.port != self.port):
            return False
        labels = tuple(endpoint.host.split(".")) if not endpoint.host.startswith("[") else (endpoint.host,)
        if len(labels) != len(self.labels):
            return False
        return all(want in ("*", got) for want, got in zip(self.labels, labels, strict=True))


@dataclass(frozen=True)
class EndpointAllowlist:
    """The store endpoints credentials may be sent to: the built-in cloud endpoints plus the admin's."""

    extra: tuple[EndpointPattern, ...] = ()
    builtin: tuple[EndpointPattern, ...] = field(
        default_factory=lambda: tuple(EndpointPattern.parse(p) for p in BUILTIN_STORE_ENDPOINTS)
    )

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> EndpointAllowlist:
        """Raises EndpointError naming the first bad pattern (the operator refuses to start)."""
        return cls(extra=tuple(EndpointPattern.parse(p) for p in patterns if p.strip()))

    def allows(self, endpoint: Endpoint) -> bool:
        return any(pattern.matches(endpoint) for pattern in (*self.extra, *self.builtin))


# -- credential opt-in -------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class BackendName:
    """A backend as an ``allowed-backends`` entry names it: ``SecretBackend/<name>`` in the credential's
    own namespace (``<name>`` alone means the same), or ``ClusterSecretBackend/<name>``."""

    kind: BackendKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.name}"


_KINDS = {kind.value.lower(): kind for kind in BackendKind}


def allowed_backends(annotations: Mapping[str, str]) -> list[BackendName]:
    """The entries of the ``allowed-backends`` annotation (comma or space separated), in order."""
    entries: list[BackendName] = []
    for item in re.split(r"[\s,]+", annotations.get(ALLOWED_BACKENDS_ANNOTATION, "")):
        if not item:
            continue
        kind_text, slash, name = item.rpartition("/")
        kind = _KINDS.get(kind_text.lower()) if slash else BackendKind.SECRET_BACKEND
        if kind is not None and name and BackendName(kind, name) not in entries:
            entries.append(BackendName(kind, name))
    return entries


def opt_in_refusal(
    annotations: Mapping[str, str], backend: BackendName, *, object_kind: str, namespace: str, name: str
) -> str | None:
    """None when the credential's owner allowed ``backend``; else what to add, as a sentence."""
    entries = allowed_backends(annotations)
    if backend in entries:
        return None
    value = ",".join(str(entry) for entry in [*entries, backend])
    overwrite = " --overwrite" if entries else ""
    return (
        f"{object_kind} {namespace}/{name} is not opted in for {backend}: whoever owns it must add"
        f" {backend} to its annotation {ALLOWED_BACKENDS_ANNOTATION} (kubectl -n {namespace} annotate"
        f" {object_kind.lower()} {name} {ALLOWED_BACKENDS_ANNOTATION}={value}{overwrite})"
    )


# -- service-account token audiences -----------------------------------------------------------------------


def audience_refusal(audiences: Sequence[str], api_audiences: Iterable[str]) -> str | None:
    """None when a token for ``audiences`` is fit for a store; else why not."""
    if not audiences:
        return (
            "no audience: an empty list means the API server's own audience, so the token would work"
            " against the Kubernetes API; set audiences to the store's audience"
        )
    refused = sorted(set(audiences) & set(api_audiences))
    if refused:
        return (
            f"audience {', '.join(refused)} is accepted by the Kubernetes API server, so the token would"
            " work against the Kubernetes API; use the store's own audience"
        )
    return None


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the caller got it from the API server over TLS); {} if malformed."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def claim_audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [str(a) for a in aud] if isinstance(aud, list) else []


def issued_token_refusal(token: str, audiences: Sequence[str], expiration_seconds: int) -> str | None:
    """None when an issued token carries exactly ``audiences`` and lives no longer than asked."""
    claims = token_claims(token)
    got = claim_audiences(claims)
    if sorted(set(got)) != sorted(set(audiences)):
        return (
            f"the issued token's audiences are {sorted(set(got))}, not the {sorted(set(audiences))} asked for"
        )
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int) or not isinstance(expires, int) or expires - issued > expiration_seconds:
        return f"the issued token does not expire within the {expiration_seconds} s asked for"
    return None


@dataclass(frozen=True)
class CredentialPolicy:
    """The operator-wide settings of these guards (from flags); the default is the strictest."""

    endpoints: EndpointAllowlist = field(default_factory=EndpointAllowlist)
    #: Audiences a requested token must not carry: the API server's (known ones; TokenReview checks too).
    api_audiences: frozenset[str] = WELL_KNOWN_API_AUDIENCES
    #: Whether namespaced SecretBackends may use the operator's own identity (its pod's cloud identity).
    operator_identity_for_secretbackends: bool = False
