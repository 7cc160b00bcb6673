"""AWS Secrets Manager and SSM Parameter Store against moto's server (IAM enforced), plus AWS-only cases:
staging labels, ARNs, BatchGetSecretValue, assume-role with an external id, web identity, the default
credential chain."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.moto_server import AccessKeys, MotoServer
from managed_secrets.core.reads import ReadCache
from managed_secrets.errors import (
    AuthFailed,
    InvalidBackend,
    RemoteKeyNotFound,
    VersionNotFound,
)
from managed_secrets.providers.base import BatchingProvider, RemoteKey, SecretProvider
from managed_secrets.testing.contract import ProviderContract, Value

from .conftest import NAMESPACE, InMemoryCredentials, make_provider

OPTIONS = {"timeout_seconds": 3, "max_attempts": 1}


def _encode(value: Value) -> bytes:
    if isinstance(value, dict):
        return json.dumps(value).encode()
    return value if isinstance(value, bytes) else value.encode()


class SecretsManagerRemote:
    supports_binary = True
    max_value_size = 64 * 1024

    def __init__(self, moto: MotoServer) -> None:
        self.moto = moto

    def new_key(self) -> str:
        return f"contract/{uuid.uuid4().hex[:12]}"

    def put(self, key: str, value: Value) -> str:
        client = self.moto.client("secretsmanager")
        field = (
            {"SecretBinary": value} if isinstance(value, bytes) else {"SecretString": _encode(value).decode()}
        )
        try:
            return str(client.put_secret_value(SecretId=key, **field)["VersionId"])
        except client.exceptions.ResourceNotFoundException:
            return str(client.create_secret(Name=key, **field)["VersionId"])

    def delete(self, key: str) -> None:
        self.moto.client("secretsmanager").delete_secret(SecretId=key, ForceDeleteWithoutRecovery=True)

    def expected(self, value: Value) -> bytes:
        return _encode(value)

    def missing_version(self) -> str:
        return str(uuid.uuid4())

    def stop_server(self) -> None:
        self.moto.stop()

    def start_server(self) -> None:
        self.moto.start()


class ParameterStoreRemote(SecretsManagerRemote):
    supports_binary = False
    max_value_size = 4096  # standard tier

    def new_key(self) -> str:
        return f"/contract/{uuid.uuid4().hex[:12]}"

    def put(self, key: str, value: Value) -> str:
        client = self.moto.client("ssm")
        response = client.put_parameter(
            Name=key, Value=_encode(value).decode(), Type="SecureString", Overwrite=True
        )
        return str(response["Version"])

    def delete(self, key: str) -> None:
        self.moto.client("ssm").delete_parameter(Name=key)

    def missing_version(self) -> str:
        return "999"


def reader_credentials(moto: MotoServer) -> InMemoryCredentials:
    """The reader's keys, read from the store at each call: a restarted moto hands out new keys."""

    def keys() -> AccessKeys:
        assert moto.reader is not None
        return moto.reader

    return InMemoryCredentials(
        {
            (NAMESPACE, "aws", "id"): lambda: keys().access_key_id,
            (NAMESPACE, "aws", "secret"): lambda: keys().secret_access_key,
        }
    )


def static_auth(namespace: str | None = None) -> dict[str, Any]:
    ref = {"name": "aws", "namespace": namespace} if namespace else {"name": "aws"}
    return {"secretRef": {"accessKeyID": {**ref, "key": "id"}, "secretAccessKey": {**ref, "key": "secret"}}}


def aws_config(moto: MotoServer, **extra: Any) -> dict[str, Any]:
    return {"region": moto.region, "endpoint": moto.endpoint, **extra}


class _Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.params: dict[str, list[dict[str, Any]]] = {}
        self.auth_headers: list[str] = []

    def count(self, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        self.calls[operation] = self.calls.get(operation, 0) + 1

    def capture(self, params: dict[str, Any], event_name: str, **_: Any) -> None:
        self.params.setdefault(event_name.rsplit(".", 1)[-1], []).append(dict(params))

    def sent(self, request: Any, **_: Any) -> None:
        self.auth_headers.append(str(request.headers.get("Authorization", b""), "ascii", "replace"))

    def hooks(self) -> list[tuple[str, Callable[..., Any]]]:
        return [
            ("before-call", self.count),
            ("provide-client-params.sts", self.capture),
            ("before-send.secretsmanager", self.sent),
        ]


class TestSecretsManagerContract(ProviderContract):
    @pytest.fixture
    def remote(self, moto: MotoServer) -> SecretsManagerRemote:
        return SecretsManagerRemote(moto)

    @pytest.fixture
    def provider(self, moto: MotoServer) -> Iterator[SecretProvider]:
        provider = make_provider(
            "aws", aws_config(moto, auth=static_auth()), reader_credentials(moto), OPTIONS
        )
        yield provider
        provider.close()

    @pytest.fixture
    def bad_credentials_provider(self, moto: MotoServer) -> Iterator[SecretProvider]:
        credentials = InMemoryCredentials(
            {(NAMESPACE, "aws", "id"): "AKIAIOSFODNN7EXAMPLE", (NAMESPACE, "aws", "secret"): "not-the-secret"}
        )
        provider = make_provider("aws", aws_config(moto, auth=static_auth()), credentials, OPTIONS)
        yield provider
        provider.close()


class TestParameterStoreContract(ProviderContract):
    @pytest.fixture
    def remote(self, moto: MotoServer) -> ParameterStoreRemote:
        return ParameterStoreRemote(moto)

    @pytest.fixture
    def provider(self, moto: MotoServer) -> Iterator[SecretProvider]:
        config = aws_config(moto, service="ParameterStore", auth=static_auth())
        provider = make_provider("aws", config, reader_credentials(moto), OPTIONS)
        yield provider
        provider.close()

    @pytest.fixture
    def bad_credentials_provider(self, moto: MotoServer) -> Iterator[SecretProvider]:
        credentials = InMemoryCredentials(
            {(NAMESPACE, "aws", "id"): "AKIAIOSFODNN7EXAMPLE", (NAMESPACE, "aws", "secret"): "not-the-secret"}
        )
        config = aws_config(moto, service="ParameterStore", auth=static_auth())
        provider = make_provider("aws", config, credentials, OPTIONS)
        yield provider
        provider.close()

    def test_label_selector(self, remote: ParameterStoreRemote, provider: SecretProvider, key: str) -> None:
        remote.put(key, "first")
        remote.put(key, "second")
        remote.moto.client("ssm").label_parameter_version(Name=key, ParameterVersion=1, Labels=["stable"])
        assert provider.fetch(RemoteKey(key, "stable")) == b"first"
        # The store answers ParameterNotFound for both; the operator tells them apart.
        with pytest.raises(VersionNotFound):
            provider.fetch(RemoteKey(key, "no-such-label"))
        with pytest.raises(RemoteKeyNotFound):
            provider.fetch(RemoteKey(remote.new_key(), "stable"))

    def test_fetch_many(self, remote: ParameterStoreRemote, provider: SecretProvider) -> None:
        assert isinstance(provider, BatchingProvider)
        keys = [remote.new_key() for _ in range(3)]
        for index, key in enumerate(keys):
            remote.put(key, f"value-{index}")
        missing = remote.new_key()
        refs = [RemoteKey(k) for k in keys] + [RemoteKey(keys[0], "1"), RemoteKey(missing)]
        results = provider.fetch_many(refs)
        assert [results[RemoteKey(k)] for k in keys] == [b"value-0", b"value-1", b"value-2"]
        assert results[RemoteKey(keys[0], "1")] == b"value-0"
        assert isinstance(results[RemoteKey(missing)], RemoteKeyNotFound)


# ---------------------------------------------------------------------------------------------------
# Secrets Manager specifics
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def remote(moto: MotoServer) -> SecretsManagerRemote:
    return SecretsManagerRemote(moto)


@pytest.fixture
def provider(moto: MotoServer) -> Iterator[SecretProvider]:
    provider = make_provider("aws", aws_config(moto, auth=static_auth()), reader_credentials(moto), OPTIONS)
    yield provider
    provider.close()


def test_staging_labels_and_version_ids(remote: SecretsManagerRemote, provider: SecretProvider) -> None:
    key = remote.new_key()
    first = remote.put(key, "one")
    second = remote.put(key, "two")
    # AWSCURRENT is passed explicitly as well (moto may serve an old value for the implicit current
    # after UpdateSecretVersionStage; plain PutSecretValue, as here, moves the labels correctly).
    assert provider.fetch(RemoteKey(key)) == b"two"
    assert provider.fetch(RemoteKey(key, "AWSCURRENT")) == b"two"
    assert provider.fetch(RemoteKey(key, "AWSPREVIOUS")) == b"one"
    assert provider.fetch(RemoteKey(key, first)) == b"one"
    assert provider.fetch(RemoteKey(key, f"uuid/{second}")) == b"two"
    with pytest.raises(VersionNotFound):
        provider.fetch(RemoteKey(key, "NO-SUCH-STAGE"))
    # A version of a key that does not exist is a missing key, not a missing version.
    with pytest.raises(RemoteKeyNotFound):
        provider.fetch(RemoteKey(remote.new_key(), "AWSPREVIOUS"))


def test_fetch_by_arn(remote: SecretsManagerRemote, provider: SecretProvider) -> None:
    key = remote.new_key()
    remote.put(key, "by-arn")
    arn = remote.moto.client("secretsmanager").describe_secret(SecretId=key)["ARN"]
    assert provider.fetch(RemoteKey(arn)) == b"by-arn"


def test_batch_of_25_keys_takes_two_batch_calls(moto: MotoServer, remote: SecretsManagerRemote) -> None:
    counter = _Counter()
    provider = make_provider(
        "aws",
        aws_config(moto, auth=static_auth()),
        reader_credentials(moto),
        {**OPTIONS, "aws_event_hooks": counter.hooks()},
    )
    assert isinstance(provider, BatchingProvider)
    assert provider.max_batch == 20
    keys = [remote.new_key() for _ in range(24)]
    for index, key in enumerate(keys):
        remote.put(key, f"value-{index}")
    missing = remote.new_key()
    refs = [RemoteKey(k) for k in keys] + [RemoteKey(missing)]  # 25 keys
    results = ReadCache().get_many("aws-test", provider, refs, max_age=60)
    # Each secret's next rotation date, once per version: a describe per key found.
    assert counter.calls == {"BatchGetSecretValue": 2, "DescribeSecret": 24}
    counter.calls.clear()
    provider.fetch_many(refs)
    assert counter.calls == {"BatchGetSecretValue": 2}, "the same versions are not described again"
    assert [results[RemoteKey(k)] for k in keys] == [f"value-{i}".encode() for i in range(24)]
    assert isinstance(results[RemoteKey(missing)], RemoteKeyNotFound)
    # Pinned versions are read one by one, next to a batch of the current ones.
    counter.calls.clear()
    mixed = [
        RemoteKey(keys[0]),
        RemoteKey(keys[1]),
        RemoteKey(keys[2], "AWSCURRENT"),
        RemoteKey(keys[3], "AWSPREVIOUS"),
    ]
    outcome = provider.fetch_many(mixed)
    assert counter.calls == {"BatchGetSecretValue": 1, "GetSecretValue": 1, "DescribeSecret": 1}
    assert outcome[mixed[0]] == b"value-0"
    assert outcome[mixed[2]] == b"value-2"
    assert isinstance(outcome[mixed[3]], VersionNotFound)  # one version only: no AWSPREVIOUS yet
    provider.close()


def test_batch_falls_back_to_single_reads_when_batch_is_denied(
    moto: MotoServer, remote: SecretsManagerRemote
) -> None:
    iam = moto.client("iam")
    user = f"no-batch-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="get-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": "*"}
                ],
            }
        ),
    )
    created = iam.create_access_key(UserName=user)["AccessKey"]
    credentials = InMemoryCredentials(
        {
            (NAMESPACE, "aws", "id"): created["AccessKeyId"],
            (NAMESPACE, "aws", "secret"): created["SecretAccessKey"],
        }
    )
    counter = _Counter()
    provider = make_provider(
        "aws",
        aws_config(moto, auth=static_auth()),
        credentials,
        {**OPTIONS, "aws_event_hooks": counter.hooks()},
    )
    assert isinstance(provider, BatchingProvider)
    keys = [remote.new_key() for _ in range(3)]
    for key in keys:
        remote.put(key, key)
    results = provider.fetch_many([RemoteKey(k) for k in keys])
    assert {k: results[RemoteKey(k)] for k in keys} == {k: k.encode() for k in keys}
    assert counter.calls["GetSecretValue"] == 3
    provider.close()


def test_static_keys_with_session_token(moto: MotoServer, remote: SecretsManagerRemote) -> None:
    assert moto.reader is not None
    # Temporary keys with a session token (from AssumeRole: moto's IAM checks know those, not the ones
    # from GetSessionToken).
    session = moto.client("sts", keys=moto.reader).assume_role(
        RoleArn=moto.role_arn, RoleSessionName="handed-out"
    )["Credentials"]
    credentials = InMemoryCredentials(
        {
            ("other-ns", "aws", "id"): session["AccessKeyId"],
            ("other-ns", "aws", "secret"): session["SecretAccessKey"],
            ("other-ns", "aws", "token"): session["SessionToken"],
        }
    )
    auth = static_auth("other-ns")
    auth["secretRef"]["sessionToken"] = {"name": "aws", "namespace": "other-ns", "key": "token"}
    key = remote.new_key()
    remote.put(key, "via-session-token")
    # A ClusterSecretBackend (no default namespace): the references name theirs.
    provider = make_provider("aws", aws_config(moto, auth=auth), credentials, OPTIONS, namespace=None)
    assert provider.fetch(RemoteKey(key)) == b"via-session-token"
    assert ("other-ns", "aws", "token") in credentials.reads
    provider.close()


def test_assume_role_with_external_id(moto: MotoServer, remote: SecretsManagerRemote) -> None:
    counter = _Counter()
    config = aws_config(moto, auth=static_auth(), role=moto.role_arn, externalID="ext-1234")
    provider = make_provider(
        "aws", config, reader_credentials(moto), {**OPTIONS, "aws_event_hooks": counter.hooks()}
    )
    key = remote.new_key()
    remote.put(key, "via-assumed-role")
    assert provider.fetch(RemoteKey(key)) == b"via-assumed-role"
    assert provider.fetch(RemoteKey(key)) == b"via-assumed-role"
    (assume,) = counter.params["AssumeRole"]  # assumed once, reused while valid
    assert assume["RoleArn"] == moto.role_arn
    assert assume["ExternalId"] == "ext-1234"
    # Secrets Manager saw the role's temporary credentials (ASIA...), which moto checked against IAM.
    assert counter.auth_headers
    assert all("Credential=ASIA" in header for header in counter.auth_headers)
    provider.close()


def test_web_identity(moto: MotoServer, remote: SecretsManagerRemote) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbS1hOmFwcCJ9.c2ln"
    credentials = InMemoryCredentials(tokens={(NAMESPACE, "app"): token})
    counter = _Counter()
    config = aws_config(moto, auth={"jwt": {"serviceAccountRef": {"name": "app"}}}, role=moto.role_arn)
    provider = make_provider("aws", config, credentials, {**OPTIONS, "aws_event_hooks": counter.hooks()})
    key = remote.new_key()
    remote.put(key, "via-web-identity")
    # moto cannot authenticate the unsigned AssumeRoleWithWebIdentity call while IAM checks are on.
    with moto.auth_disabled():
        assert provider.fetch(RemoteKey(key)) == b"via-web-identity"
    assert credentials.token_requests == [(NAMESPACE, "app", ("sts.amazonaws.com",))]
    (call,) = counter.params["AssumeRoleWithWebIdentity"]
    assert call["RoleArn"] == moto.role_arn
    assert call["WebIdentityToken"] == token
    assert all("Credential=ASIA" in header for header in counter.auth_headers)
    provider.close()


def test_default_credential_chain(
    moto: MotoServer, remote: SecretsManagerRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert moto.reader is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.reader.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.reader.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    key = remote.new_key()
    remote.put(key, "via-default-chain")
    provider = make_provider("aws", aws_config(moto), InMemoryCredentials(), OPTIONS)
    assert provider.fetch(RemoteKey(key)) == b"via-default-chain"
    provider.close()


def test_missing_credentials_secret_is_auth_failed(moto: MotoServer, remote: SecretsManagerRemote) -> None:
    provider = make_provider("aws", aws_config(moto, auth=static_auth()), InMemoryCredentials(), OPTIONS)
    with pytest.raises(AuthFailed):
        provider.fetch(RemoteKey(remote.new_key()))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"endpoint": "http://127.0.0.1:1"}, "region"),
        ({"region": "us-east-1", "auth": {"jwt": {"serviceAccountRef": {"name": "app"}}}}, "aws.role"),
        ({"region": "us-east-1", "externalID": "ext-1234"}, "aws.role"),
        ({"region": "us-east-1", "service": "Elsewhere"}, "service"),
    ],
)
def test_invalid_configuration(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidBackend) as caught:
        make_provider("aws", config)
    assert message in str(caught.value)
