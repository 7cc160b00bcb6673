"""Key scoping cannot be bypassed: canonical keys per provider, and the core matching only those.

Every hostile key below is something a tenant may write in its own ManagedSecret; each must be refused
(KeyNotAllowed) or canonicalised to what the store really reads, for every provider, and the provider must
be asked for the canonical key only.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.ports import ManagedSecretInfo, SecretObject
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.reconcile import Reconciler
from managed_secrets.errors import InvalidSpec, KeyNotAllowed, RemoteKeyNotFound, SyncError, VersionNotFound
from managed_secrets.models.backend import Backend, BackendId, NamespaceCondition
from managed_secrets.models.managedsecret import BackendKind, ManagedSecret
from managed_secrets.models.parse import parse_managed_secret
from managed_secrets.providers.base import (
    CanonicalizingProvider,
    CredentialValue,
    ProviderContext,
    RemoteKey,
    SecretProvider,
)
from managed_secrets.providers.guard import CredentialPolicy, EndpointAllowlist
from managed_secrets.providers.keys import ambiguity, canonicalizer, strict_canonical_ref
from managed_secrets.providers.registry import ProviderRegistry, ProviderSpec

LABEL = "ClusterSecretBackend shared"

#: Keys that try to leave apps/team-a/ for apps/team-b/db, each through a layer that may resolve it.
ESCAPES_FROM_TEAM_A = [
    "apps/team-a/../team-b/db",
    "apps/team-a/./../team-b/db",
    "apps/team-a/x/../../team-b/db",
    "apps/team-a//../team-b/db",
    "apps/team-a/x/y/../../../team-b/db",
    "/apps/team-a/../team-b/db",
    "apps/team-a/../team-b/db/",
    "apps/team-a/..",
    "apps/team-a/.",
    "apps/team-a/%2e%2e/team-b/db",
    "apps/team-a/%2E%2E/team-b/db",
    "apps/team-a/.%2e/team-b/db",
    "apps/team-a/x%2f..%2f..%2fteam-b%2fdb",
    "apps/team-a/x%2F..%2F..%2Fteam-b%2Fdb",
    "apps/team-a/%252e%252e/team-b/db",
    "apps/team-a/..\\team-b\\db",
    "apps/team-a/x\\..\\..\\team-b\\db",
    "apps/team-a/..;/team-b/db",
    "apps/team-a/x;/../../team-b/db",
    "apps/team-a/x?/../../team-b/db",
    "apps/team-a/x#/../../team-b/db",
    "apps/team-a/\x00/../../team-b/db",
    "apps/team-a/x\n/../../team-b/db",
    "apps/team-a/x\r\n../../team-b/db",
    "apps/team-a/\u202e../team-b/db",
    "apps/team-a/\u200b/../../team-b/db",
    "apps/team-a/\x7f/../../team-b/db",
    "apps/team-a/\x85/../../team-b/db",
    "apps/team-a/\u2028/../../team-b/db",
    "apps/team-a/x ",
    " apps/team-a/x",
    "apps/team-a/x\t",
]


def test_every_escape_is_ambiguous() -> None:
    for key in ESCAPES_FROM_TEAM_A:
        assert ambiguity(key) is not None, key
        with pytest.raises(KeyNotAllowed):
            strict_canonical_ref(LABEL, RemoteKey(key))


@pytest.mark.parametrize(
    "key",
    ["apps/team-a/db", "apps/team-a/db.v2", "apps/team-a/.hidden", "apps/team-a/...", "a", "apps/team-a/x y"],
)
def test_plain_keys_are_not_ambiguous(key: str) -> None:
    assert ambiguity(key) is None
    assert strict_canonical_ref(LABEL, RemoteKey(key, "3")) == RemoteKey(key, "3")


@pytest.mark.parametrize(
    "version", ["../../team-b", "1/../2", "..", ".", "1%2f2", "1\\2", "1?x=2", "1#2", "1;2", " 1", "1\n", ""]
)
def test_a_version_cannot_smuggle_a_path(version: str) -> None:
    with pytest.raises(KeyNotAllowed, match="version"):
        strict_canonical_ref(LABEL, RemoteKey("apps/team-a/db", version))


def test_edge_slashes_only_where_the_store_keeps_them() -> None:
    assert ambiguity("/a/b") is not None
    assert ambiguity("/a/b", leading_slash=True) is None
    assert ambiguity("a/b/", trailing_slash=True) is None
    assert ambiguity("a/b/", leading_slash=True) is not None
    for key in ("/", "//a", "a//", "/a//b"):
        assert ambiguity(key, leading_slash=True, trailing_slash=True) is not None, key


# -- patterns ----------------------------------------------------------------------------------------------


def condition(*patterns: str) -> NamespaceCondition:
    return NamespaceCondition(namespaces=["team-a"], remote_keys=list(patterns))


def test_namespace_is_inserted_as_a_literal() -> None:
    # Namespace names cannot hold glob characters today; if one ever did, it must match only itself.
    rule = condition("apps/{namespace}/*")
    assert rule.allows_key("team-a", "apps/team-a/db")
    assert not rule.allows_key("*", "apps/team-b/db")
    assert not rule.allows_key("team-?", "apps/team-b/db")
    assert not rule.allows_key("[a-z]*", "apps/team-b/db")
    assert rule.allows_key("[a-z]*", "apps/[a-z]*/db")


def test_star_crosses_slashes_within_the_prefix_only() -> None:
    rule = condition("apps/{namespace}/*")
    assert rule.allows_key("team-a", "apps/team-a/db/primary")  # documented: * spans '/'
    assert not rule.allows_key("team-a", "apps/team-ab/db")
    assert not rule.allows_key("team-a", "apps/team-a")
    assert not rule.allows_key("team-a", "Apps/team-a/db")  # case-sensitive by default


def test_case_folding_for_case_insensitive_stores() -> None:
    rule = condition("Apps-{namespace}-*")
    assert not rule.allows_key("team-a", "apps-team-a-db")
    assert rule.allows_key("team-a", "apps-team-a-db", fold_case=True)
    assert not rule.allows_key("team-a", "apps-team-b-db", fold_case=True)


# -- the built-in providers' canonical forms ---------------------------------------------------------------


class NoCredentials:
    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        raise AssertionError("canonicalisation must not read credentials")

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        raise AssertionError("canonicalisation must not read ServiceAccounts")

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        raise AssertionError("canonicalisation must not request tokens")


def build(provider: str, config: Mapping[str, Any]) -> CanonicalizingProvider:
    context = ProviderContext(
        NoCredentials(),
        default_namespace=None,
        backend_label=LABEL,
        # The configs below point at 127.0.0.1, where nothing listens; only canonical_ref is called.
        policy=CredentialPolicy(
            endpoints=EndpointAllowlist.from_patterns(["http://127.0.0.1:*", "https://127.0.0.1:*"]),
            operator_identity_for_secretbackends=True,
        ),
    )
    built = ProviderRegistry(load_entry_points=False).factory(provider)(config, context)
    assert isinstance(built, CanonicalizingProvider)
    return built


VAULT = {"server": "http://127.0.0.1:1", "auth": {"token": {"secretRef": {"name": "t", "key": "t"}}}}
SECRETS_MANAGER = {"region": "us-east-1", "endpoint": "http://127.0.0.1:1"}
PARAMETER_STORE = {**SECRETS_MANAGER, "service": "ParameterStore"}
GCP = {"projectID": "my-project", "endpoint": "127.0.0.1:1"}
AZURE = {"vaultURL": "https://shared.vault.azure.net", "authType": "ManagedIdentity"}
ALL_PROVIDERS = [
    ("vault", VAULT),
    ("aws", SECRETS_MANAGER),
    ("aws", PARAMETER_STORE),
    ("gcp", GCP),
    ("azure", AZURE),
]


@pytest.mark.parametrize(("provider", "config"), ALL_PROVIDERS)
def test_every_provider_refuses_every_escape(provider: str, config: Mapping[str, Any]) -> None:
    built = build(provider, config)
    try:
        for key in ESCAPES_FROM_TEAM_A:
            with pytest.raises(KeyNotAllowed):
                built.canonical_ref(RemoteKey(key))
            # fetch canonicalises too: the read never reaches the network with such a key.
            with pytest.raises(KeyNotAllowed):
                built.fetch(RemoteKey(key))
    finally:
        built.close()


@pytest.mark.parametrize(("provider", "config"), ALL_PROVIDERS)
def test_canonical_form_is_idempotent(provider: str, config: Mapping[str, Any]) -> None:
    built = build(provider, config)
    samples = {
        "vault": [RemoteKey("/apps/team-a/db/", "2"), RemoteKey("apps/team-a/db")],
        "gcp": [
            RemoteKey("projects/my-project/secrets/db/versions/3"),
            RemoteKey("projects/other/secrets/db"),
        ],
        "azure": [RemoteKey("Apps-Team-A-DB", "latest"), RemoteKey("x", "0123456789abcdef0123456789abcdef")],
    }.get(provider, [RemoteKey("/apps/team-a/db", "1"), RemoteKey("apps/team-a/db")])
    for ref in samples:
        once = built.canonical_ref(ref)
        assert built.canonical_ref(once) == once
    built.close()


@pytest.mark.parametrize(
    ("ref", "canonical"),
    [
        (RemoteKey("apps/team-a/db"), RemoteKey("apps/team-a/db")),
        (RemoteKey("/apps/team-a/db/"), RemoteKey("apps/team-a/db")),
        (RemoteKey("//apps/team-a/db"), RemoteKey("apps/team-a/db")),
        (RemoteKey("apps/team-a/db", "3"), RemoteKey("apps/team-a/db", "3")),
        (RemoteKey("apps/Team-A/db"), RemoteKey("apps/Team-A/db")),  # Vault paths are case-sensitive
    ],
)
def test_vault_canonical_keys(ref: RemoteKey, canonical: RemoteKey) -> None:
    assert build("vault", VAULT).canonical_ref(ref) == canonical


@pytest.mark.parametrize("key", ["/", "//", "apps/team-a/x/..", "./apps/team-a/x"])
def test_vault_refuses_keys_that_name_no_path_or_resolve_elsewhere(key: str) -> None:
    with pytest.raises(KeyNotAllowed):
        build("vault", VAULT).canonical_ref(RemoteKey(key))


@pytest.mark.parametrize("version", ["1/../2", "%32", "1?version=2", "1#", "../1"])
def test_vault_version_cannot_carry_a_path_or_query(version: str) -> None:
    with pytest.raises((KeyNotAllowed, VersionNotFound)):  # a malformed version: VersionNotFound
        build("vault", VAULT).canonical_ref(RemoteKey("apps/team-a/db", version))


ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret"


@pytest.mark.parametrize(
    "ref",
    [
        RemoteKey("apps/team-a/db"),
        RemoteKey("/apps/team-a/db"),  # a literal, different secret name in Secrets Manager
        RemoteKey("apps/team-a/db", "AWSPREVIOUS"),
        RemoteKey("apps/team-a/db", "uuid/EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE"),
        RemoteKey(f"{ARN}:apps/team-b/db-AbCdEf"),  # kept as the ARN: `apps/team-a/*` cannot match it
        RemoteKey("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:apps/team-a/db"),
    ],
)
def test_secrets_manager_keeps_names_and_well_formed_arns(ref: RemoteKey) -> None:
    assert build("aws", SECRETS_MANAGER).canonical_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        RemoteKey(f"{ARN}:apps/team-a/../team-b/db"),
        RemoteKey(f"{ARN}:apps/team-b/db:secret:apps/team-a/x"),  # extra fields for a pattern's '*'
        RemoteKey("arn:aws:secretsmanager:us-east-1:1234:secret:apps/team-a/x"),  # not an account id
        RemoteKey("ARN:aws:secretsmanager:us-east-1:123456789012:secret:apps/team-a/x"),
        RemoteKey("arn:aws:ssm:us-east-1:123456789012:parameter/apps/team-a/x"),  # another service
        RemoteKey("apps/team-a/x:AWSCURRENT"),
        RemoteKey("apps/team-a/db", "uuid/../x"),
        RemoteKey("apps/team-a/db", "uuid/a/b"),
        RemoteKey("apps/team-a/db", "AWS/../CURRENT"),
        RemoteKey("apps/team-a//db"),
    ],
)
def test_secrets_manager_refuses_ambiguous_keys(ref: RemoteKey) -> None:
    with pytest.raises((KeyNotAllowed, VersionNotFound)):  # a malformed version: VersionNotFound
        build("aws", SECRETS_MANAGER).canonical_ref(ref)


@pytest.mark.parametrize("key", ["apps/team a/db", "apps/tëam-a/db", "apps/team-a/db*"])
def test_secrets_manager_malformed_names_are_invalid_specs(key: str) -> None:
    with pytest.raises(InvalidSpec):
        build("aws", SECRETS_MANAGER).canonical_ref(RemoteKey(key))


@pytest.mark.parametrize(
    "ref",
    [
        RemoteKey("/apps/team-a/db"),
        RemoteKey("db"),
        RemoteKey("/apps/team-a/db", "3"),
        RemoteKey("/apps/team-a/db", "prod"),
        RemoteKey("arn:aws:ssm:us-east-1:123456789012:parameter/apps/team-b/db"),  # kept as the ARN
    ],
)
def test_parameter_store_keeps_names_and_well_formed_arns(ref: RemoteKey) -> None:
    assert build("aws", PARAMETER_STORE).canonical_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        RemoteKey("/apps/team-a/db:3"),  # a selector in the name
        RemoteKey("/apps/team-a/db/"),
        RemoteKey("/apps/team-a//db"),
        RemoteKey("arn:aws:ssm:us-east-1:123456789012:parameter/apps/team-a/../team-b/db"),
        RemoteKey("arn:aws:ssm:us-east-1:123456789012:parameter/apps/team-b/db:1"),
        RemoteKey("arn:aws:secretsmanager:us-east-1:123456789012:secret:apps/team-a/db"),
        RemoteKey("/apps/team-a/db", "../../team-b/db"),
        RemoteKey("/apps/team-a/db", "1/2"),
    ],
)
def test_parameter_store_refuses_ambiguous_keys(ref: RemoteKey) -> None:
    with pytest.raises((KeyNotAllowed, VersionNotFound)):  # a malformed version: VersionNotFound
        build("aws", PARAMETER_STORE).canonical_ref(ref)


def test_parameter_store_checks_selectors() -> None:
    with pytest.raises(VersionNotFound):
        build("aws", PARAMETER_STORE).canonical_ref(RemoteKey("/apps/team-a/db", "1:2"))
    with pytest.raises(InvalidSpec):
        build("aws", PARAMETER_STORE).canonical_ref(RemoteKey("/apps/team a/db"))


@pytest.mark.parametrize(
    ("ref", "canonical"),
    [
        (RemoteKey("team-a-db"), RemoteKey("team-a-db")),
        (RemoteKey("/team-a-db/"), RemoteKey("team-a-db")),
        (RemoteKey("team-a-db", "latest"), RemoteKey("team-a-db")),
        (RemoteKey("projects/my-project/secrets/team-b-db"), RemoteKey("team-b-db")),
        (RemoteKey("projects/my-project/secrets/team-b-db/versions/3"), RemoteKey("team-b-db", "3")),
        (RemoteKey("projects/my-project/secrets/team-b-db/versions/latest"), RemoteKey("team-b-db")),
        (RemoteKey("projects/my-project/secrets/x/versions/3", "3"), RemoteKey("x", "3")),
        # Another project, or this one by number, keeps the full name: bare-id patterns cannot match it.
        (RemoteKey("projects/other/secrets/team-a-db"), RemoteKey("projects/other/secrets/team-a-db")),
        (
            RemoteKey("projects/123456789/secrets/team-a-db"),
            RemoteKey("projects/123456789/secrets/team-a-db"),
        ),
    ],
)
def test_gcp_canonical_keys(ref: RemoteKey, canonical: RemoteKey) -> None:
    assert build("gcp", GCP).canonical_ref(ref) == canonical


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        (RemoteKey("projects/my-project/secrets/team-a-db/versions/../../team-b-db"), KeyNotAllowed),
        (RemoteKey("projects/my-project/secrets/../secrets/team-b-db"), KeyNotAllowed),
        (RemoteKey("projects//secrets/team-b-db"), KeyNotAllowed),
        (RemoteKey("team-a-db", "../../team-b-db/versions/1"), VersionNotFound),
        (RemoteKey("team-a-db", "1/../../../team-b-db/versions/1"), VersionNotFound),
        (RemoteKey("team-a-db", " 4 "), VersionNotFound),  # no trimming: exactly a number
        (RemoteKey("projects/my-project/secrets/x/versions/2", "3"), KeyNotAllowed),
        (RemoteKey("team-a-db%2f..%2fteam-b-db"), KeyNotAllowed),
        (RemoteKey("projects/my-project/locations/eu/secrets/x"), InvalidSpec),
        (RemoteKey("projects/My_Project/secrets/x"), InvalidSpec),
        (RemoteKey("team.a.db"), InvalidSpec),
        (RemoteKey("team-a-db", "\u0663"), VersionNotFound),  # an Arabic-Indic digit is no version number
        (RemoteKey("team-a-db", "-1"), VersionNotFound),
    ],
)
def test_gcp_refusals(ref: RemoteKey, error: type[SyncError]) -> None:
    with pytest.raises(error):
        build("gcp", GCP).canonical_ref(ref)


@pytest.mark.parametrize(
    ("ref", "canonical"),
    [
        (RemoteKey("Apps-Team-B-DB"), RemoteKey("apps-team-b-db")),
        (RemoteKey("apps-team-a-db", "LATEST"), RemoteKey("apps-team-a-db")),
        (
            RemoteKey("apps-team-a-db", "0123456789ABCDEF0123456789ABCDEF"),
            RemoteKey("apps-team-a-db", "0123456789ABCDEF0123456789ABCDEF"),
        ),
    ],
)
def test_azure_names_fold_case(ref: RemoteKey, canonical: RemoteKey) -> None:
    built = build("azure", AZURE)
    assert getattr(built, "case_insensitive_keys", False) is True
    assert built.canonical_ref(ref) == canonical


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        (RemoteKey("https://other.vault.azure.net/secrets/apps-team-a-db"), KeyNotAllowed),
        (RemoteKey("https:apps-team-a-db"), KeyNotAllowed),
        (RemoteKey("apps-team-a-db/0123abcd"), KeyNotAllowed),
        (RemoteKey("apps-team-a-db/"), KeyNotAllowed),
        (RemoteKey("apps-team-a-db%2f0123"), KeyNotAllowed),
        (RemoteKey("apps-team-a-db", "../0123"), VersionNotFound),  # malformed before ambiguous
        (RemoteKey("apps_team_a"), InvalidSpec),
        (RemoteKey("apps.team.a"), InvalidSpec),
        (RemoteKey("apps-team-a-db", "not-hex"), VersionNotFound),
    ],
)
def test_azure_refusals(ref: RemoteKey, error: type[SyncError]) -> None:
    with pytest.raises(error):
        build("azure", AZURE).canonical_ref(ref)


# -- the reconcile core --------------------------------------------------------------------------------------


class NaiveStore:
    """A plugin store that resolves keys like an HTTP server: percent-decoding, '\\' as '/', dot segments.

    It has no canonical_ref, so the core must apply the strict generic rule.
    """

    def __init__(self, values: Mapping[str, bytes]) -> None:
        self.values = dict(values)
        self.asked: list[RemoteKey] = []

    def fetch(self, ref: RemoteKey) -> bytes:
        self.asked.append(ref)
        resolved = posixpath.normpath(urllib.parse.unquote(urllib.parse.unquote(ref.key)).replace("\\", "/"))
        if resolved not in self.values:
            raise RemoteKeyNotFound(f"key {ref.key} not found")
        return self.values[resolved]

    def close(self) -> None:
        pass


class CaseInsensitiveStore(NaiveStore):
    case_insensitive_keys = True

    def canonical_ref(self, ref: RemoteKey) -> RemoteKey:
        return strict_canonical_ref(LABEL, RemoteKey(ref.key.lower(), ref.version))

    def fetch(self, ref: RemoteKey) -> bytes:
        self.asked.append(ref)
        return self.values[ref.key.lower()]


class FakeCluster:
    def __init__(self, backend: Backend, labels: Mapping[str, Mapping[str, str]]) -> None:
        self.backend = backend
        self.labels = labels
        self.secrets: dict[tuple[str, str], SecretObject] = {}

    def get_backend(self, kind: BackendKind, name: str, namespace: str | None) -> Backend | None:
        return self.backend if name == self.backend.id.name else None

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.labels.get(namespace, {})

    def get(self, namespace: str, name: str) -> SecretObject | None:
        return self.secrets.get((namespace, name))

    def create(self, secret: SecretObject) -> SecretObject:
        self.secrets[(secret.namespace, secret.name)] = secret
        return secret

    def replace(self, secret: SecretObject) -> SecretObject:
        return self.create(secret)

    def delete(
        self, namespace: str, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        self.secrets.pop((namespace, name), None)

    def check_create(self, secret: SecretObject) -> None:
        raise AssertionError("these tests create no Secret of a rejected type")

    def managed_secret_info(self, namespace: str, name: str) -> ManagedSecretInfo | None:
        raise AssertionError("these tests never merge into a Secret another ManagedSecret owns")

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        raise AssertionError("no credentials in these tests")

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        raise AssertionError("no credentials in these tests")

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        raise AssertionError("no credentials in these tests")


CANARY = b"team-b-canary-7f3a"


def reconciler(store: SecretProvider, conditions: list[dict[str, Any]]) -> tuple[Reconciler, FakeCluster]:
    backend = Backend(
        id=BackendId(kind=BackendKind.CLUSTER_SECRET_BACKEND, name="shared"),
        uid="u",
        provider="naive",
        config={},
        conditions=[NamespaceCondition.model_validate(c) for c in conditions],
    )
    cluster = FakeCluster(backend, {"team-a": {"tenant": "yes"}})
    registry = ProviderRegistry({"naive": ProviderSpec("x:y", "none")}, load_entry_points=False)
    registry._factories["naive"] = lambda config, context: store
    return Reconciler(cluster, ProviderPool(registry, cluster), ReadCache()), cluster


def managed(namespace: str, spec: dict[str, Any]) -> ManagedSecret:
    body = {
        "metadata": {"namespace": namespace, "name": "app", "uid": "ms-uid"},
        "spec": {"backendRef": {"kind": "ClusterSecretBackend", "name": "shared"}, **spec},
    }
    return parse_managed_secret(body)


SCOPED = [{"namespaces": ["team-a"], "remoteKeys": ["apps/{namespace}/*"]}]


@pytest.mark.parametrize("key", ESCAPES_FROM_TEAM_A)
@pytest.mark.parametrize("where", ["data", "dataFrom"])
def test_core_refuses_escapes_before_any_read(key: str, where: str) -> None:
    store = NaiveStore({"apps/team-b/db": CANARY, "apps/team-a/ok": b'{"a": "1"}'})
    sync, cluster = reconciler(store, SCOPED)
    spec: dict[str, Any] = (
        {"data": [{"secretKey": "v", "remoteRef": {"key": key}}]}
        if where == "data"
        else {"dataFrom": [{"extract": {"key": key}}]}
    )
    # A legitimate key next to the hostile one: nothing at all is read.
    spec.setdefault("data", []).append({"secretKey": "ok", "remoteRef": {"key": "apps/team-a/ok"}})
    with pytest.raises(KeyNotAllowed) as caught:
        sync.sync(managed("team-a", spec))
    assert store.asked == []
    assert cluster.secrets == {}
    assert CANARY.decode() not in str(caught.value)


@pytest.mark.parametrize(
    "ref",
    [
        {"key": "apps/team-a/db", "version": "../../team-b/db"},
        {"key": "apps/team-a/db", "version": "1/../../../team-b/db"},
        {"key": "apps/team-a/db", "version": "%2e%2e"},
    ],
)
def test_core_refuses_versions_that_smuggle_a_path(ref: dict[str, str]) -> None:
    store = NaiveStore({"apps/team-b/db": CANARY})
    sync, _ = reconciler(store, SCOPED)
    with pytest.raises(KeyNotAllowed, match="version"):
        sync.sync(managed("team-a", {"data": [{"secretKey": "v", "remoteRef": ref}]}))
    with pytest.raises(KeyNotAllowed, match="version"):
        sync.sync(managed("team-a", {"dataFrom": [{"extract": ref}]}))
    assert store.asked == []


def test_core_reads_the_canonical_key_and_scopes_it() -> None:
    store = CaseInsensitiveStore({"apps-team-a-db": b"mine", "apps-team-b-db": CANARY})
    sync, _cluster = reconciler(store, [{"namespaces": ["team-a"], "remoteKeys": ["Apps-{namespace}-*"]}])
    result = sync.sync(
        managed("team-a", {"data": [{"secretKey": "v", "remoteRef": {"key": "APPS-TEAM-A-DB"}}]})
    )
    assert result.data == {"v": b"mine"}
    assert store.asked == [RemoteKey("apps-team-a-db")]
    with pytest.raises(KeyNotAllowed, match="canonically 'apps-team-b-db'"):
        sync.sync(managed("team-a", {"data": [{"secretKey": "v", "remoteRef": {"key": "Apps-Team-B-DB"}}]}))
    assert store.asked == [RemoteKey("apps-team-a-db")]


def test_core_shares_one_read_between_spellings_of_one_key() -> None:
    store = CaseInsensitiveStore({"apps-team-a-db": b'{"u": "x"}'})
    sync, _ = reconciler(store, [{"namespaces": ["team-a"]}])
    spec = {
        "data": [
            {"secretKey": "a", "remoteRef": {"key": "apps-team-a-db"}},
            {"secretKey": "b", "remoteRef": {"key": "Apps-Team-A-DB", "property": "u"}},
        ],
        "dataFrom": [{"extract": {"key": "APPS-team-a-db"}}],
    }
    result = sync.sync(managed("team-a", spec))
    assert result.data["b"] == b"x"
    assert result.data["u"] == b"x"
    assert store.asked == [RemoteKey("apps-team-a-db")]


def test_a_namespace_not_admitted_reads_nothing() -> None:
    store = NaiveStore({"apps/team-b/db": CANARY, "apps/team-c/db": CANARY})
    sync, cluster = reconciler(store, [*SCOPED, {"namespaceSelector": {"matchLabels": {"tier": "x"}}}])
    for key in ["apps/team-c/db", "apps/team-c/../team-b/db", "apps/team-a/../team-b/db", "*"]:
        with pytest.raises(SyncError) as caught:
            sync.sync(managed("team-c", {"data": [{"secretKey": "v", "remoteRef": {"key": key}}]}))
        assert caught.value.reason in ("BackendNotAllowed", "KeyNotAllowed")
    assert store.asked == []
    assert cluster.secrets == {}


def test_unscoped_backends_still_refuse_ambiguous_keys() -> None:
    # No remoteKeys: any key may be read, but an ambiguous one is still refused (the same manifest must
    # mean the same thing everywhere).
    store = NaiveStore({"apps/team-b/db": CANARY})
    sync, _ = reconciler(store, [])
    with pytest.raises(KeyNotAllowed):
        sync.sync(
            managed("team-a", {"data": [{"secretKey": "v", "remoteRef": {"key": "x/../apps/team-b/db"}}]})
        )
    assert sync.sync(
        managed("team-a", {"data": [{"secretKey": "v", "remoteRef": {"key": "apps/team-b/db"}}]})
    )
    assert store.asked == [RemoteKey("apps/team-b/db")]


def test_canonicalizer_falls_back_to_the_strict_rule() -> None:
    plain = NaiveStore({})
    with pytest.raises(KeyNotAllowed):
        canonicalizer(plain, LABEL)(RemoteKey("/a"))
    assert canonicalizer(plain, LABEL)(RemoteKey("a/b")) == RemoteKey("a/b")
