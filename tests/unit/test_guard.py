"""The confused-deputy guards as pure logic: endpoints, credential opt-in, token audiences, and how every
built-in provider applies them before it reads any credential (no store is contacted here)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from managed_secrets import cli
from managed_secrets.api import ALLOWED_BACKENDS_ANNOTATION
from managed_secrets.config import OperatorConfig
from managed_secrets.errors import (
    AuthFailed,
    CredentialNotAllowed,
    EndpointNotAllowed,
    InvalidBackend,
    Reason,
)
from managed_secrets.models.managedsecret import BackendKind
from managed_secrets.providers.base import CredentialValue, ProviderContext, SecretKeyRef, ServiceAccountRef
from managed_secrets.providers.guard import (
    BackendName,
    CredentialPolicy,
    Endpoint,
    EndpointAllowlist,
    EndpointError,
    EndpointPattern,
    allowed_backends,
    audience_refusal,
    issued_token_refusal,
    opt_in_refusal,
    parse_endpoint,
    token_claims,
)
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.runtime.factory import credential_policy

SB = BackendKind.SECRET_BACKEND
CSB = BackendKind.CLUSTER_SECRET_BACKEND
API = "https://kubernetes.default.svc"


def jwt(claims: Mapping[str, Any]) -> str:
    def part(data: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


# -- endpoints -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://vault.example.com", Endpoint("https", "vault.example.com", 443)),
        ("https://Vault.Example.COM.:8200/v1/", Endpoint("https", "vault.example.com", 8200)),
        ("http://127.0.0.1:8200", Endpoint("http", "127.0.0.1", 8200)),
        ("http://[::1]:8200/", Endpoint("http", "[::1]", 8200)),
    ],
)
def test_plain_urls_parse(url: str, expected: Endpoint) -> None:
    assert parse_endpoint(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8200@evil.example/",  # user info: the client would go to evil.example
        "http://evil.example#@127.0.0.1",  # a fragment hiding the real host
        "http://evil.example?@127.0.0.1",
        "http://127.0.0.1\\@evil.example",  # backslash: parsers disagree on it
        "http://evil .example",
        "ftp://vault.example.com",
        "https://",
        "https://-bad-.example",
        "http://vault.example.com:99999",
        "vault.example.com:8200",
    ],
)
def test_ambiguous_or_odd_urls_are_refused(url: str) -> None:
    with pytest.raises(EndpointError):
        parse_endpoint(url)


def test_wildcards_match_one_label_and_ports() -> None:
    pattern = EndpointPattern.parse("https://*.vault.example.com")
    assert pattern.matches(parse_endpoint("https://team-a.vault.example.com"))
    assert not pattern.matches(parse_endpoint("https://a.b.vault.example.com")), "one label only"
    assert not pattern.matches(parse_endpoint("https://vault.example.com"))
    assert not pattern.matches(parse_endpoint("https://team-a.vault.example.com:8200")), "default port only"
    assert not pattern.matches(parse_endpoint("http://team-a.vault.example.com")), "the scheme counts"
    any_port = EndpointPattern.parse("http://127.0.0.1:*")
    assert any_port.matches(parse_endpoint("http://127.0.0.1:1234"))
    assert not any_port.matches(parse_endpoint("http://localhost:1234")), "a host name is not its address"
    assert not any_port.matches(parse_endpoint("http://127.0.0.10:1234"))


@pytest.mark.parametrize(
    "pattern",
    ["https://*", "https://*.*", "vault.example.com", "https://vault.example.com/v1", "https://a_b.example"],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(EndpointError):
        EndpointPattern.parse(pattern)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://secretsmanager.eu-central-1.amazonaws.com", True),
        ("https://ssm.us-gov-west-1.amazonaws.com", True),
        ("https://sts.amazonaws.com", True),
        ("https://secretsmanager.cn-north-1.amazonaws.com.cn", True),
        ("https://my-vault.vault.azure.net", True),  # Microsoft's host whoever owns the vault
        ("https://login.microsoftonline.com", True),
        ("https://secretmanager.googleapis.com", True),
        # Hosts on the same domains that a tenant controls: an API Gateway, an S3 bucket, a website.
        ("https://abc123.execute-api.us-east-1.amazonaws.com", False),
        ("https://bucket.s3.amazonaws.com", False),
        ("https://secretsmanager.x.execute-api.us-east-1.amazonaws.com", False),
        ("https://storage.googleapis.com", False),
        ("http://secretsmanager.eu-central-1.amazonaws.com", False),  # not over TLS
        ("https://vault.example.com", False),
    ],
)
def test_builtin_endpoints_are_the_clouds_own(url: str, allowed: bool) -> None:
    assert EndpointAllowlist().allows(parse_endpoint(url)) is allowed


# -- credential opt-in -------------------------------------------------------------------------------------


def test_allowed_backends_annotation() -> None:
    annotations = {
        ALLOWED_BACKENDS_ANNOTATION: " vault, SecretBackend/other clustersecretbackend/shared,,x/y"
    }
    assert allowed_backends(annotations) == [
        BackendName(SB, "vault"),
        BackendName(SB, "other"),
        BackendName(CSB, "shared"),
    ]
    assert allowed_backends({}) == []
    assert allowed_backends({ALLOWED_BACKENDS_ANNOTATION: "*"}) == [BackendName(SB, "*")], "no wildcard"


def test_opt_in_refusal_says_what_to_add() -> None:
    refusal = opt_in_refusal({}, BackendName(SB, "evil"), object_kind="Secret", namespace="team-a", name="db")
    assert refusal is not None
    assert (
        "kubectl -n team-a annotate secret db managedsecrets.io/allowed-backends=SecretBackend/evil)"
        in refusal
    )
    existing = {ALLOWED_BACKENDS_ANNOTATION: "vault"}
    refusal = opt_in_refusal(
        existing, BackendName(CSB, "shared"), object_kind="ServiceAccount", namespace="ops", name="reader"
    )
    assert refusal is not None
    assert "serviceaccount reader managedsecrets.io/allowed-backends=SecretBackend/vault," in refusal
    assert "ClusterSecretBackend/shared --overwrite" in refusal
    assert (
        opt_in_refusal(existing, BackendName(SB, "vault"), object_kind="Secret", namespace="n", name="x")
        is None
    )
    # A SecretBackend and a ClusterSecretBackend of the same name are different backends.
    assert opt_in_refusal(existing, BackendName(CSB, "vault"), object_kind="Secret", namespace="n", name="x")


# -- audiences and issued tokens ---------------------------------------------------------------------------


def test_audience_refusal() -> None:
    api = {API}
    assert audience_refusal(["vault"], api) is None
    assert "empty list" in (audience_refusal([], api) or "")
    assert "accepted by the Kubernetes API server" in (audience_refusal([API], api) or "")
    assert API in (audience_refusal(["vault", API], api) or "")


def test_issued_token_refusal() -> None:
    good = jwt({"aud": ["vault"], "iat": 1000, "exp": 1600})
    assert issued_token_refusal(good, ["vault"], 600) is None
    assert "audiences" in (
        issued_token_refusal(jwt({"aud": ["vault", API], "iat": 0, "exp": 600}), ["vault"], 600) or ""
    )
    assert "audiences" in (
        issued_token_refusal(jwt({"aud": "other", "iat": 0, "exp": 600}), ["vault"], 600) or ""
    )
    assert "expire" in (
        issued_token_refusal(jwt({"aud": ["vault"], "iat": 0, "exp": 3600}), ["vault"], 600) or ""
    )
    assert issued_token_refusal("not-a-jwt", ["vault"], 600) is not None
    assert token_claims("a.!!!.c") == {}


# -- ProviderContext -----------------------------------------------------------------------------------------


class FakeCredentials:
    def __init__(self, annotations: Mapping[str, str] | None = None) -> None:
        self.annotations = dict(annotations or {})
        self.calls: list[str] = []

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        self.calls.append(f"secret {namespace}/{name}")
        return CredentialValue(self.annotations, b"s3cret" if key == "token" else None)

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        self.calls.append(f"serviceaccount {namespace}/{name}")
        return self.annotations

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        self.calls.append(f"token {namespace}/{service_account} {','.join(audiences)}")
        return "token"


def context(
    credentials: FakeCredentials,
    *,
    namespace: str | None = "team-a",
    name: str = "vault",
    policy: CredentialPolicy | None = None,
    options: Mapping[str, Any] | None = None,
) -> ProviderContext:
    kind = SB if namespace else CSB
    return ProviderContext(
        credentials=credentials,
        default_namespace=namespace,
        backend_label=f"{kind.value} {name}",
        options=dict(options or {}),
        backend=BackendName(kind, name),
        policy=policy
        or CredentialPolicy(endpoints=EndpointAllowlist.from_patterns(["https://vault.example.com"])),
    )


def opted_in(*entries: str) -> dict[str, str]:
    return {ALLOWED_BACKENDS_ANNOTATION: ",".join(entries)}


def test_no_credential_before_an_endpoint_is_named() -> None:
    creds = FakeCredentials(opted_in("vault"))
    ctx = context(creds)
    with pytest.raises(EndpointNotAllowed, match="check_endpoint"):
        ctx.read_secret(SecretKeyRef(name="tok", key="token"), "auth")
    with pytest.raises(EndpointNotAllowed):
        ctx.service_account_token(ServiceAccountRef(name="sa"), "auth", ["vault"])
    assert creds.calls == []
    with pytest.raises(EndpointNotAllowed, match="not an allowed store endpoint"):
        ctx.check_endpoint("https://evil.example", "server")
    with pytest.raises(EndpointNotAllowed):
        ctx.read_secret(SecretKeyRef(name="tok", key="token"), "auth")
    assert creds.calls == [], "a refused endpoint names nothing"
    ctx.check_endpoint("https://vault.example.com/", "server")
    assert ctx.read_secret(SecretKeyRef(name="tok", key="token"), "auth") == b"s3cret"


def test_an_unmarked_secret_is_refused_before_its_key_is_looked_at() -> None:
    ctx = context(FakeCredentials(opted_in("other")))
    ctx.check_endpoint("https://vault.example.com", "server")
    with pytest.raises(CredentialNotAllowed) as caught:
        ctx.read_secret(SecretKeyRef(name="tok", key="missing"), "auth")
    assert caught.value.reason is Reason.CREDENTIAL_NOT_ALLOWED
    assert isinstance(caught.value, AuthFailed), "transient, and the provider's client is rebuilt"
    marked = context(FakeCredentials(opted_in("vault")))
    marked.check_endpoint("https://vault.example.com", "server")
    with pytest.raises(AuthFailed, match="has no key 'missing'"):
        marked.read_secret(SecretKeyRef(name="tok", key="missing"), "auth")


def test_service_account_tokens_are_for_the_store_audience_only() -> None:
    creds = FakeCredentials(opted_in("vault"))
    ctx = context(
        creds,
        policy=CredentialPolicy(
            endpoints=EndpointAllowlist.from_patterns(["https://vault.example.com"]),
            api_audiences=frozenset({API, "extra"}),
        ),
    )
    ctx.check_endpoint("https://vault.example.com", "server")
    for audiences in ([API], ["vault", "extra"]):
        with pytest.raises(InvalidBackend, match="accepted by the Kubernetes API server"):
            ctx.service_account_token(ServiceAccountRef(name="sa", audiences=audiences), "sa")
    with pytest.raises(InvalidBackend, match="empty list"):
        ctx.service_account_token(ServiceAccountRef(name="sa"), "sa")  # and no provider default
    assert creds.calls == [], "refused before the ServiceAccount is even read"
    assert ctx.service_account_token(ServiceAccountRef(name="sa"), "sa", ["vault"]) == "token"
    assert creds.calls == ["serviceaccount team-a/sa", "token team-a/sa vault"]
    unmarked = context(FakeCredentials())
    unmarked.check_endpoint("https://vault.example.com", "server")
    with pytest.raises(CredentialNotAllowed, match="annotate serviceaccount sa"):
        unmarked.service_account_token(ServiceAccountRef(name="sa"), "sa", ["vault"])


def test_the_operator_identity_is_for_cluster_backends() -> None:
    namespaced = context(FakeCredentials())
    namespaced.check_endpoint("https://vault.example.com", "server")
    with pytest.raises(CredentialNotAllowed, match="operator's own identity"):
        namespaced.use_operator_identity("default chain")
    cluster = context(FakeCredentials(), namespace=None)
    cluster.check_endpoint("https://vault.example.com", "server")
    cluster.use_operator_identity("default chain")
    allowed = context(
        FakeCredentials(),
        policy=CredentialPolicy(
            endpoints=EndpointAllowlist.from_patterns(["https://vault.example.com"]),
            operator_identity_for_secretbackends=True,
        ),
    )
    allowed.check_endpoint("https://vault.example.com", "server")
    allowed.use_operator_identity("default chain")


# -- the built-in providers apply them when they are built ---------------------------------------------------


def build(name: str, config: Mapping[str, Any], ctx: ProviderContext) -> Any:
    return ProviderRegistry(load_entry_points=False).factory(name)(config, ctx)


TOKEN_AUTH = {"token": {"secretRef": {"name": "tok", "key": "token"}}}
KEYS = {"accessKeyID": {"name": "k", "key": "id"}, "secretAccessKey": {"name": "k", "key": "secret"}}


@pytest.mark.parametrize(
    ("provider", "config"),
    [
        ("vault", {"server": "https://evil.example:8200", "auth": TOKEN_AUTH}),
        ("vault", {"server": "https://vault.example.com@evil.example", "auth": TOKEN_AUTH}),
        ("aws", {"region": "us-east-1", "endpoint": "https://evil.example", "auth": {"secretRef": KEYS}}),
        (
            "aws",  # the role is assumed at STS: with an override, STS is the override as well
            {
                "region": "us-east-1",
                "endpoint": "http://evil.example",
                "role": "arn:aws:iam::123456789012:role/r",
                "auth": {"jwt": {"serviceAccountRef": {"name": "sa"}}},
            },
        ),
        (
            "gcp",
            {
                "projectID": "p",
                "endpoint": "evil.example:443",
                "auth": {"secretRef": {"secretAccessKey": {"name": "k", "key": "k"}}},
            },
        ),
        (
            "azure",
            {
                "vaultURL": "https://evil.example",
                "tenantID": "t",
                "authSecretRef": {
                    "clientID": {"name": "k", "key": "id"},
                    "clientSecret": {"name": "k", "key": "s"},
                },
            },
        ),
    ],
    ids=["vault", "vault-userinfo", "aws", "aws-sts", "gcp", "azure"],
)
def test_providers_refuse_endpoints_outside_the_allowlist_before_any_read(
    provider: str, config: Mapping[str, Any]
) -> None:
    creds = FakeCredentials(opted_in("vault"))
    with pytest.raises(EndpointNotAllowed):
        build(provider, config, context(creds))
    assert creds.calls == []


@pytest.mark.parametrize(
    ("provider", "config"),
    [
        (
            "aws",
            {
                "region": "eu-central-1",
                "auth": {"secretRef": KEYS},
                "role": "arn:aws:iam::123456789012:role/r",
            },
        ),
        ("aws", {"region": "cn-north-1", "service": "ParameterStore", "auth": {"secretRef": KEYS}}),
        ("gcp", {"projectID": "p", "auth": {"secretRef": {"secretAccessKey": {"name": "k", "key": "k"}}}}),
        (
            "azure",
            {
                "vaultURL": "https://team-a.vault.azure.net",
                "tenantID": "t",
                "authSecretRef": {
                    "clientID": {"name": "k", "key": "id"},
                    "clientSecret": {"name": "k", "key": "s"},
                },
            },
        ),
    ],
    ids=["aws-sts", "aws-china", "gcp", "azure"],
)
def test_public_cloud_endpoints_need_no_allowlist_entry(provider: str, config: Mapping[str, Any]) -> None:
    build(provider, config, context(FakeCredentials(), policy=CredentialPolicy())).close()


@pytest.mark.parametrize(
    ("provider", "config"),
    [
        ("aws", {"region": "us-east-1"}),
        ("aws", {"region": "us-east-1", "role": "arn:aws:iam::123456789012:role/r"}),
        ("gcp", {"projectID": "p"}),
        ("azure", {"vaultURL": "https://team-a.vault.azure.net", "authType": "ManagedIdentity"}),
        (
            "azure",
            {
                "vaultURL": "https://team-a.vault.azure.net",
                "authType": "WorkloadIdentity",
                "tenantID": "t",
                "clientID": "c",
            },
        ),
    ],
    ids=["aws-default-chain", "aws-role-on-default-chain", "gcp-adc", "azure-managed", "azure-token-file"],
)
def test_a_secretbackend_cannot_borrow_the_operator_identity(
    provider: str, config: Mapping[str, Any]
) -> None:
    with pytest.raises(CredentialNotAllowed, match="operator's own identity"):
        build(provider, config, context(FakeCredentials(), policy=CredentialPolicy()))
    build(provider, config, context(FakeCredentials(), namespace=None, policy=CredentialPolicy())).close()


def test_vault_ignores_the_operator_environment_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """hvac reads VAULT_TOKEN (and ~/.vault-token) when given no token: this backend's server would get
    the operator's own token before any login."""
    monkeypatch.setenv("VAULT_TOKEN", "operator-own-token")
    monkeypatch.setenv("HOME", str(tmp_path))
    provider = build(
        "vault", {"server": "https://vault.example.com", "auth": TOKEN_AUTH}, context(FakeCredentials())
    )
    assert not provider._client.token
    provider.close()


def test_vault_refuses_a_redirect_outside_the_allowlist() -> None:
    import requests

    ctx = context(FakeCredentials())
    provider = build("vault", {"server": "https://vault.example.com", "auth": TOKEN_AUTH}, ctx)
    session = provider._client.adapter.session

    def redirect(location: str) -> requests.Response:
        response = requests.Response()
        response.status_code = 307
        response.headers["Location"] = location
        response.url = "https://vault.example.com/v1/secret/data/x"
        return response

    assert session.get_redirect_target(redirect("/v1/other")) == "/v1/other"
    with pytest.raises(EndpointNotAllowed, match="redirect"):
        session.get_redirect_target(redirect("https://evil.example/v1/secret/data/x"))
    provider.close()


# -- the operator's settings ---------------------------------------------------------------------------------


def test_policy_from_config_adds_the_audiences_of_the_operator_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(jwt({"aud": ["https://oidc.example/cluster"], "iss": "https://issuer.example"}))
    policy = credential_policy(
        OperatorConfig(allowed_store_endpoints=("https://vault.example.com",), api_audiences=("extra",)),
        token,
    )
    assert {"https://oidc.example/cluster", "https://issuer.example", "extra", API} <= policy.api_audiences
    assert policy.endpoints.allows(parse_endpoint("https://vault.example.com"))
    assert not policy.operator_identity_for_secretbackends
    outside = credential_policy(OperatorConfig(), tmp_path / "absent")
    assert API in outside.api_audiences
    assert not outside.endpoints.allows(parse_endpoint("https://vault.example.com"))


def test_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANAGED_SECRETS_ALLOWED_STORE_ENDPOINTS", "https://a.example, https://b.example:8200")
    monkeypatch.setenv("MANAGED_SECRETS_API_AUDIENCES", "x y")
    monkeypatch.setenv("MANAGED_SECRETS_ALLOW_OPERATOR_IDENTITY_FOR_SECRETBACKENDS", "true")
    config = OperatorConfig.from_env()
    assert config.allowed_store_endpoints == ("https://a.example", "https://b.example:8200")
    assert config.api_audiences == ("x", "y")
    assert config.allow_operator_identity_for_secretbackends


def test_run_refuses_a_bad_endpoint_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--allowed-store-endpoint", "https://*"])
    assert exited.value.code == 2
    assert "would allow every host" in capsys.readouterr().err
