"""The one translation of the Kubernetes client's failures (kube/edge.py), and every adapter using it.

The adapters run on a real ``kubernetes.client.ApiClient`` whose ``call_api`` (where every generated API
method ends) answers or fails as each test scripts: no server, but the real client code above it.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from leaks import assert_absent
from managed_secrets import errors
from managed_secrets.core.ports import SecretObject
from managed_secrets.core.restarts import (
    RolloutFailed,
    RolloutForbidden,
    Workload,
    WorkloadNotFound,
    WorkloadRef,
)
from managed_secrets.kube.cluster import KubeCluster
from managed_secrets.kube.edge import Translation, call, call_or_none, describe_api_error, send, translated
from managed_secrets.kube.workloads import KubeWorkloads
from managed_secrets.models.managedsecret import BackendKind, ManagedSecretRef, RolloutKind

CANARY = "canary-value-7d3e91b2c4"
NS = "team-a"


def api_error(status: int, reason: str = "Reason", *, fields: tuple[str, ...] = ()) -> ApiException:
    """An ApiException whose body, like a real one's, quotes what was sent (here: the canary)."""
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps(
        {
            "kind": "Status",
            "reason": reason,
            "message": f"Secret is invalid: data[password]: {CANARY}",
            "details": {"causes": [{"field": f, "message": CANARY} for f in fields]},
        }
    )
    return error


#: Foreign failures below HTTP; each message quotes the canary, which must not travel on.
TRANSPORT = [
    urllib3.exceptions.ProtocolError(f"Connection aborted {CANARY}"),
    urllib3.exceptions.ReadTimeoutError(None, "/api/v1", f"Read timed out {CANARY}"),  # type: ignore[arg-type]
    urllib3.exceptions.ConnectTimeoutError(f"timed out {CANARY}"),
    urllib3.exceptions.MaxRetryError(None, "/api/v1", OSError(CANARY)),  # type: ignore[arg-type]
    urllib3.exceptions.SSLError(f"certificate verify failed {CANARY}"),
    ConnectionResetError(f"reset {CANARY}"),
    TimeoutError(f"timed out {CANARY}"),
    http.client.IncompleteRead(CANARY.encode()),
]


class Response:
    """What the client returns with ``_preload_content=False``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.released = False

    def release_conn(self) -> None:
        self.released = True

    def drain_conn(self) -> None:
        pass


class ScriptedClient(client.ApiClient):  # type: ignore[misc]
    """``call_api`` raises ``fail`` or answers ``answer`` (JSON), and records the calls' paths."""

    def __init__(self) -> None:
        super().__init__(client.Configuration())
        self.fail: BaseException | None = None
        self.answer: Any = {}
        self.raw: bytes | None = None
        self.paths: list[str] = []

    def call_api(self, resource_path: str, method: str, *args: Any, **kwargs: Any) -> Response:
        self.paths.append(f"{method} {resource_path}")
        assert kwargs.get("_preload_content") is False, "every adapter reads raw JSON"
        if self.fail is not None:
            raise self.fail
        return Response(self.raw if self.raw is not None else json.dumps(self.answer).encode())


def secret(name: str = "app") -> SecretObject:
    return SecretObject(namespace=NS, name=name, data={"password": CANARY.encode()})


REF = ManagedSecretRef(namespace=NS, name="app")
INVOLVED = {"apiVersion": "v1", "kind": "Deployment", "namespace": NS, "name": "web"}

#: Every call of every port, with the error its failures become (None: post_event logs instead).
CALLS: list[tuple[str, Callable[[KubeCluster], object], type[errors.SyncError] | None]] = [
    ("get", lambda c: c.get(NS, "app"), errors.WriteFailed),
    ("create", lambda c: c.create(secret()), errors.WriteFailed),
    ("replace", lambda c: c.replace(secret()), errors.WriteFailed),
    ("check_create", lambda c: c.check_create(secret()), errors.WriteFailed),
    ("delete", lambda c: c.delete(NS, "app", uid="u"), errors.WriteFailed),
    (
        "get_backend",
        lambda c: c.get_backend(BackendKind.SECRET_BACKEND, "vault", NS),
        errors.BackendUnavailable,
    ),
    (
        "get_cluster_backend",
        lambda c: c.get_backend(BackendKind.CLUSTER_SECRET_BACKEND, "vault", None),
        errors.BackendUnavailable,
    ),
    ("namespace_labels", lambda c: c.namespace_labels(NS), errors.BackendUnavailable),
    ("managed_secret_info", lambda c: c.managed_secret_info(NS, "other"), errors.WriteFailed),
    ("read_secret_key", lambda c: c.read_secret_key(NS, "creds", "token"), errors.AuthFailed),
    ("service_account_annotations", lambda c: c.service_account_annotations(NS, "sa"), errors.AuthFailed),
    ("request_token", lambda c: c.request_token(NS, "sa", ["vault"]), errors.AuthFailed),
    ("patch_status", lambda c: c.patch_status(REF, {"phase": "x"}), errors.WriteFailed),
    ("set_finalizers", lambda c: c.set_finalizers(REF, [], "1"), errors.WriteFailed),
    ("post_event", lambda c: c.post_event(INVOLVED, reason="Restarted", message="m"), None),
]
CALL_IDS = [name for name, _, _ in CALLS]


@pytest.fixture
def api() -> ScriptedClient:
    return ScriptedClient()


@pytest.fixture
def cluster(api: ScriptedClient) -> KubeCluster:
    return KubeCluster(api)


# -- the translation itself --------------------------------------------------------------------------------

WRITE = Translation(
    errors.WriteFailed,
    {422: lambda what, d: errors.TargetRejected(f"{what}: the apiserver rejected it: {d}")},
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, errors.WriteFailed),
        (401, errors.WriteFailed),
        (403, errors.WriteFailed),
        (404, errors.WriteFailed),
        (409, errors.WriteFailed),
        (422, errors.TargetRejected),
        (429, errors.WriteFailed),
        (500, errors.WriteFailed),
        (503, errors.WriteFailed),
    ],
)
def test_an_api_error_becomes_the_rule_for_its_status_else_the_default(
    status: int, expected: type[errors.SyncError]
) -> None:
    with pytest.raises(errors.SyncError) as raised, translated("updating Secret app", WRITE):
        raise api_error(status, "Invalid", fields=("data[password]",))
    assert type(raised.value) is expected
    assert raised.value.message.startswith("updating Secret app: ")
    assert f"HTTP {status} Invalid (data[password])" in raised.value.message, "code, reason and field"
    assert_absent(CANARY, raised.value.message, "the message")
    assert raised.value.__cause__ is None, "no foreign exception (and its body) chained"
    assert raised.value.__suppress_context__


@pytest.mark.parametrize("failure", TRANSPORT, ids=lambda e: type(e).__name__)
def test_a_transport_failure_becomes_the_default_naming_its_type_only(failure: Exception) -> None:
    with pytest.raises(errors.SyncError) as raised, translated("reading Secret team-a/app", WRITE):
        raise failure
    assert type(raised.value) is errors.WriteFailed
    assert raised.value.message == f"reading Secret team-a/app: {type(failure).__name__}"
    assert raised.value.__suppress_context__


@pytest.mark.parametrize("raw", [b"<html>" + CANARY.encode(), b'{"data": "' + CANARY.encode(), b"\xff\xfe"])
def test_an_answer_that_is_not_json_becomes_the_default(raw: bytes) -> None:
    def answer(**_: Any) -> Any:  # a client method: untyped
        return Response(raw)

    with pytest.raises(errors.AuthFailed) as raised:
        call("reading ServiceAccount a/b", Translation(errors.AuthFailed), answer)
    assert raised.value.message.startswith("reading ServiceAccount a/b: the API server's answer is not JSON")
    assert_absent(CANARY, raised.value.message, "the message")


def test_the_description_leaves_out_the_servers_message_even_when_the_body_is_not_json() -> None:
    error = ApiException(status=500, reason="Internal Server Error")
    error.body = f"panic: {CANARY}"
    assert describe_api_error(error) == "HTTP 500 Internal Server Error"
    assert describe_api_error(api_error(409, "AlreadyExists")) == "HTTP 409 AlreadyExists"


def test_other_errors_pass_through_untranslated() -> None:
    """Only the client's failures are foreign here; a bug of ours must not turn into a stable reason."""
    with pytest.raises(KeyError), translated("x", WRITE):
        raise KeyError("k")


def test_not_found_is_none_or_false_only_where_asked() -> None:
    def missing(**_: Any) -> Any:  # a client method: untyped
        raise api_error(404, "NotFound")

    assert call_or_none("reading Secret a/b", WRITE, missing) is None
    assert send("deleting Secret a/b", WRITE, missing, missing_ok=True) is False
    with pytest.raises(errors.WriteFailed, match="HTTP 404 NotFound"):
        send("deleting Secret a/b", WRITE, missing)
    with pytest.raises(errors.WriteFailed, match="HTTP 404 NotFound"):
        call("reading Secret a/b", WRITE, missing)


def test_a_translation_can_produce_any_exception_class() -> None:
    """The rollouts' errors are no SyncError; adapters such as backend_status pick their own."""
    rules = Translation(RolloutFailed).but({403: lambda what, d: RolloutForbidden(f"{what} ({d})")})
    with (
        pytest.raises(RolloutForbidden, match=r"^patching web \(HTTP 403 Forbidden\)$"),
        translated("patching web", rules),
    ):
        raise api_error(403, "Forbidden")


# -- every call of every adapter -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure", [*TRANSPORT, api_error(500, "InternalError")], ids=lambda e: type(e).__name__
)
@pytest.mark.parametrize(("name", "invoke", "expected"), CALLS, ids=CALL_IDS)
def test_every_call_translates_every_failure(
    cluster: KubeCluster,
    api: ScriptedClient,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
    name: str,
    invoke: Callable[[KubeCluster], object],
    expected: type[errors.SyncError] | None,
) -> None:
    api.fail = failure
    if expected is None:
        with caplog.at_level(logging.WARNING):
            invoke(cluster)  # logged, not raised
        assert "could not post event: posting event Restarted on team-a/web: " in caplog.text
        assert_absent(CANARY, caplog.text, "the log")
        return
    with pytest.raises(errors.SyncError) as raised:
        invoke(cluster)
    assert type(raised.value) is expected, name
    assert_absent(CANARY, raised.value.message, "the message")
    assert api.paths, "the call reached the client"
    assert cluster.secret_writes == {"create": 0, "replace": 0, "delete": 0}, "a failed write is not counted"


#: The calls that read their answer (the others discard it).
READING = [
    c for c in CALLS if c[0] not in {"check_create", "delete", "patch_status", "set_finalizers", "post_event"}
]


@pytest.mark.parametrize(("name", "invoke", "expected"), READING, ids=[c[0] for c in READING])
def test_every_call_translates_a_body_that_is_not_json(
    cluster: KubeCluster,
    api: ScriptedClient,
    name: str,
    invoke: Callable[[KubeCluster], object],
    expected: type[errors.SyncError] | None,
) -> None:
    api.raw = b"{" + CANARY.encode()
    with pytest.raises(errors.SyncError) as raised:
        invoke(cluster)
    assert type(raised.value) is expected
    assert "not JSON" in raised.value.message
    assert_absent(CANARY, raised.value.message, "the message")


# -- the statuses with a meaning of their own --------------------------------------------------------------


def test_secret_store_statuses(cluster: KubeCluster, api: ScriptedClient) -> None:
    api.fail = api_error(404, "NotFound")
    assert cluster.get(NS, "app") is None
    cluster.delete(NS, "app")  # already gone: done, not counted
    assert cluster.secret_writes["delete"] == 0
    api.fail = api_error(409, "AlreadyExists")
    with pytest.raises(errors.TargetExists, match=r"^Secret app appeared while it was being created$"):
        cluster.create(secret())
    api.fail = api_error(422, "Invalid", fields=("data[..]",))
    with pytest.raises(errors.TargetRejected, match=r"^updating Secret app: the apiserver rejected it"):
        cluster.replace(secret())
    api.fail = api_error(409, "Conflict")
    with pytest.raises(errors.WriteFailed, match=r"^updating Secret app: HTTP 409 Conflict$"):
        cluster.replace(secret())
    for status in (400, 403, 422):
        api.fail = api_error(status, "Refused")
        with pytest.raises(errors.TargetRejected, match=r"^the API server would refuse Secret app"):
            cluster.check_create(secret())
    assert not cluster.own_writes._in_flight, "every write ended, failed or not"


def test_secret_store_success_counts_and_remembers_own_writes(
    cluster: KubeCluster, api: ScriptedClient
) -> None:
    api.answer = {
        "metadata": {"name": "app", "namespace": NS, "resourceVersion": "7", "uid": "u1"},
        "type": "Opaque",
        "data": {"password": "c2VjcmV0"},
    }
    created = cluster.create(secret())
    assert (created.resource_version, created.data) == ("7", {"password": b"secret"})
    cluster.replace(created)
    cluster.check_create(created)
    cluster.delete(NS, "app", uid="u1")
    assert cluster.secret_writes == {"create": 1, "replace": 1, "delete": 1}
    assert api.paths[2] == "POST /api/v1/namespaces/{namespace}/secrets", "the dry run is a create"


def test_reader_and_credential_statuses(cluster: KubeCluster, api: ScriptedClient) -> None:
    api.fail = api_error(404, "NotFound")
    assert cluster.get_backend(BackendKind.SECRET_BACKEND, "vault", NS) is None
    assert cluster.managed_secret_info(NS, "other") is None
    with pytest.raises(errors.BackendUnavailable, match=r"^reading namespace team-a: HTTP 404"):
        cluster.namespace_labels(NS)
    with pytest.raises(errors.AuthFailed, match=r"^credentials Secret team-a/creds not found$"):
        cluster.read_secret_key(NS, "creds", "token")
    with pytest.raises(errors.AuthFailed, match=r"^ServiceAccount team-a/sa not found$"):
        cluster.service_account_annotations(NS, "sa")
    cluster.patch_status(REF, {})  # deleted meanwhile: nothing to do
    cluster.set_finalizers(REF, [], "1")


def test_the_token_review_fails_closed(cluster: KubeCluster, api: ScriptedClient) -> None:
    """A TokenRequest answered, the TokenReview failing: no token is handed out."""
    calls = iter([None, urllib3.exceptions.ReadTimeoutError(None, "/", "t")])  # type: ignore[arg-type]

    def call_api(resource_path: str, method: str, *args: Any, **kwargs: Any) -> Response:
        failure = next(calls)
        if failure is not None:
            raise failure
        return Response(json.dumps({"status": {"token": "not.a.jwt"}}).encode())

    api.call_api = call_api  # type: ignore[method-assign]
    with pytest.raises(errors.AuthFailed):
        cluster.request_token(NS, "sa", ["vault"])


# -- the workloads adapter (rollouts) ------------------------------------------------------------------------


def test_workload_errors(api: ScriptedClient) -> None:
    workloads = KubeWorkloads(api)
    ref = WorkloadRef(RolloutKind.DEPLOYMENT, NS, "web")
    api.fail = api_error(404, "NotFound")
    with pytest.raises(WorkloadNotFound, match=r"not found$"):
        workloads.get(ref)
    api.fail = api_error(403, "Forbidden")
    with pytest.raises(RolloutForbidden, match=r"the operator may not do this \(HTTP 403 Forbidden\)"):
        workloads.list(NS)
    for failure in [*TRANSPORT, api_error(500, "InternalError")]:
        api.fail = failure
        with pytest.raises(RolloutFailed) as raised:
            workloads.restart(Workload(ref=ref, uid="u"), "k", "now")
        assert_absent(CANARY, str(raised.value), "the message")


def test_argo_rollouts_not_installed(api: ScriptedClient) -> None:
    api.fail = api_error(404, "NotFound")
    with pytest.raises(WorkloadNotFound, match="Argo Rollouts is not installed"):
        KubeWorkloads(api).get(WorkloadRef(RolloutKind.ROLLOUT, NS, "web"))
    api.fail = urllib3.exceptions.ProtocolError("x")
    with pytest.raises(RolloutFailed):
        KubeWorkloads(api).get(WorkloadRef(RolloutKind.ROLLOUT, NS, "web"))
