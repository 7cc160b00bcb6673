"""A SecretBackend is not a confused deputy: attacks of a tenant of one namespace on the real control plane.

The tenant may create SecretBackends and ManagedSecrets in its namespace, nothing more. It points its
backends at a listener it runs (tests/harness/listener.py, on 127.0.0.1, which the test operator allows
as a store endpoint) or at hosts outside the allowlist, and references credentials of the namespace it
cannot read: an unmarked Secret, a ServiceAccount bound to cluster-admin. Each attack must end with
Ready=False and a stable reason, nothing (or nothing usable) at the listener, and no value in the log.
"""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from conftest import DebugLogCapture
from harness.controlplane import API_AUDIENCE, ControlPlane
from harness.listener import RecordingListener
from harness.operator import OperatorRunner
from kube import Kube, allowed_for, wait_for
from leaks import assert_absent
from managed_secrets.errors import InvalidBackend
from managed_secrets.providers.guard import TOKEN_EXPIRATION_SECONDS, claim_audiences, token_claims

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def listener() -> Iterator[RecordingListener]:
    with RecordingListener() as server:
        yield server


@pytest.fixture
def cluster_admin_sa(kube: Kube, namespace: str) -> Iterator[str]:
    """A ServiceAccount `admin` of the namespace, bound to cluster-admin (its owner did not opt it in)."""
    kube.create_service_account(namespace, "admin")
    rbac = k8s.RbacAuthorizationV1Api(kube.api)
    binding = f"deputy-admin-{namespace}"
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": binding},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "admin", "namespace": namespace}],
        }
    )
    yield "admin"
    rbac.delete_cluster_role_binding(binding)


def vault_backend(kube: Kube, namespace: str, name: str, server: str, auth: dict[str, Any]) -> None:
    kube.create_backend(namespace, name, {"vault": {"server": server, "auth": auth}})


def managed_secret(kube: Kube, namespace: str, name: str, backend: str, kind: str = "SecretBackend") -> None:
    kube.create_ms(
        namespace,
        name,
        {
            "backendRef": {"name": backend, "kind": kind},
            "data": [{"secretKey": "v", "remoteRef": {"key": f"{namespace}/anything", "property": "v"}}],
        },
    )


def token_auth(secret: str) -> dict[str, Any]:
    return {"token": {"secretRef": {"name": secret, "key": "token"}}}


def kubernetes_auth(account: str, audiences: list[str] | None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": account}
    if audiences is not None:
        ref["audiences"] = audiences
    return {"kubernetes": {"role": "anything", "serviceAccountRef": ref}}


def assert_nothing_leaked(
    kube: Kube, namespace: str, debug_log: DebugLogCapture, values: list[str], names: list[str]
) -> None:
    log_text = debug_log.text()
    events = "\n".join(f"{e.reason} {e.message}" for e in kube.events(namespace))
    for value in values:
        assert_absent(value, log_text, "the DEBUG log")
        assert_absent(value, events, "events")
        for name in names:
            assert_absent(value, json.dumps(kube.get_ms(namespace, name)), f"ManagedSecret {name}")


def api_server_status(controlplane: ControlPlane, token: str) -> int:
    """What the API server answers a request made with ``token`` (a read of every Secret)."""
    context = ssl.create_default_context(cafile=str(controlplane.ca_file))
    request = urllib.request.Request(f"{controlplane.url}/api/v1/secrets")  # noqa: S310 - https to the test apiserver
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


# -- (i) Secrets of the namespace ------------------------------------------------------------------------


def test_unmarked_secret_is_never_sent(
    operator: OperatorRunner,
    kube: Kube,
    namespace: str,
    listener: RecordingListener,
    debug_log: DebugLogCapture,
) -> None:
    canary = "canary-" + secrets.token_hex(12)
    kube.create_secret(namespace, "db-password", {"token": canary})
    kube.create_secret(namespace, "vault-token", {"token": canary + "-2"}, annotations=allowed_for("vault"))
    vault_backend(kube, namespace, "evil", listener.url, token_auth("db-password"))
    vault_backend(kube, namespace, "evil-too", listener.url, token_auth("vault-token"))
    managed_secret(kube, namespace, "steal", "evil")
    managed_secret(kube, namespace, "steal-too", "evil-too")

    cond = kube.wait_ready(namespace, "steal", "False", "CredentialNotAllowed")
    assert (
        f"kubectl -n {namespace} annotate secret db-password managedsecrets.io/allowed-backends=SecretBackend/evil"
        in cond["message"]
    ), cond["message"]
    # Opted in for another backend of the namespace is not opted in for this one.
    cond = kube.wait_ready(namespace, "steal-too", "False", "CredentialNotAllowed")
    assert "allowed-backends=SecretBackend/vault,SecretBackend/evil-too --overwrite" in cond["message"]
    assert listener.received == [], "the listener got a request"
    assert_nothing_leaked(kube, namespace, debug_log, [canary, canary + "-2"], ["steal", "steal-too"])


def test_opt_in_is_picked_up_without_an_event(
    operator: OperatorRunner, kube: Kube, namespace: str, listener: RecordingListener
) -> None:
    """The mark is the owner's consent: once added, the next retry uses the Secret (its store refuses it)."""
    canary = "canary-" + secrets.token_hex(12)
    kube.create_secret(namespace, "tok", {"token": canary})
    vault_backend(kube, namespace, "mine", listener.url, token_auth("tok"))
    managed_secret(kube, namespace, "app", "mine")
    kube.wait_ready(namespace, "app", "False", "CredentialNotAllowed")
    assert listener.received == []
    kube.annotate("Secret", namespace, "tok", allowed_for("mine"))
    kube.wait_ready(namespace, "app", "False", "AuthFailed")  # the listener answers 403
    assert all(r.header("X-Vault-Token") == canary for r in listener.received)


def test_cluster_backend_needs_the_opt_in_too(
    operator: OperatorRunner, kube: Kube, namespace: str, listener: RecordingListener
) -> None:
    canary = "canary-" + secrets.token_hex(12)
    kube.create_secret(namespace, "tok", {"token": canary})
    name = f"shared-{namespace}"
    auth = {"token": {"secretRef": {"name": "tok", "key": "token", "namespace": namespace}}}
    kube.create_cluster_backend(
        name, {"vault": {"server": listener.url, "auth": auth}, "conditions": [{"namespaces": [namespace]}]}
    )
    try:
        managed_secret(kube, namespace, "app", name, kind="ClusterSecretBackend")
        cond = kube.wait_ready(namespace, "app", "False", "CredentialNotAllowed")
        assert f"allowed-backends=ClusterSecretBackend/{name}" in cond["message"]
        assert listener.received == []
    finally:
        kube.delete_cluster_backend(name)


# -- (ii) ServiceAccounts of the namespace ---------------------------------------------------------------


def test_unmarked_service_account_gets_no_token(
    operator: OperatorRunner, kube: Kube, namespace: str, listener: RecordingListener, cluster_admin_sa: str
) -> None:
    vault_backend(kube, namespace, "evil", listener.url, kubernetes_auth(cluster_admin_sa, None))
    managed_secret(kube, namespace, "steal", "evil")
    cond = kube.wait_ready(namespace, "steal", "False", "CredentialNotAllowed")
    assert f"annotate serviceaccount {cluster_admin_sa} managedsecrets.io/allowed-backends" in cond["message"]
    assert listener.received == []


@pytest.mark.parametrize(
    "audiences",
    [
        [API_AUDIENCE],  # exactly the API server's
        ["vault", API_AUDIENCE],  # the store's and the API server's
        ["https://kubernetes.default.svc.cluster.local"],  # a well-known API server audience
    ],
    ids=["api-audience", "mixed", "well-known"],
)
def test_token_for_an_api_server_audience_is_never_requested(
    operator: OperatorRunner,
    kube: Kube,
    namespace: str,
    listener: RecordingListener,
    cluster_admin_sa: str,
    audiences: list[str],
) -> None:
    """Even with the ServiceAccount opted in (its owner is the attacker), no API-server token is minted."""
    kube.annotate("ServiceAccount", namespace, cluster_admin_sa, allowed_for("evil"))
    vault_backend(kube, namespace, "evil", listener.url, kubernetes_auth(cluster_admin_sa, audiences))
    managed_secret(kube, namespace, "steal", "evil")
    cond = kube.wait_ready(namespace, "steal", "False", "InvalidBackend")
    assert "accepted by the Kubernetes API server" in cond["message"], cond["message"]
    assert listener.received == []


def test_token_review_refuses_a_token_the_api_server_accepts(
    operator: OperatorRunner, namespace: str, cluster_admin_sa: str
) -> None:
    """Behind the audience list, the kube layer asks the API server itself (TokenReview, with the
    operator's own RBAC) and never releases a token it would accept."""
    cluster = operator.runtime.cluster
    with pytest.raises(InvalidBackend, match="the Kubernetes API server accepts a token"):
        cluster.request_token(namespace, cluster_admin_sa, [API_AUDIENCE])
    with pytest.raises(InvalidBackend, match="no audience"):  # [] would mean the API server's audiences
        cluster.request_token(namespace, cluster_admin_sa, [])


@pytest.mark.parametrize(
    ("audiences", "expected"),
    [
        (None, ["vault"]),
        ([], ["vault"]),  # an empty list is the store's default, never the API server's
        (
            ["HTTPS://KUBERNETES.DEFAULT.SVC"],
            ["HTTPS://KUBERNETES.DEFAULT.SVC"],
        ),  # the API server compares exactly
    ],
    ids=["default-audience", "empty-list", "case-variant"],
)
def test_a_store_token_is_useless_against_the_api_server(
    operator: OperatorRunner,
    controlplane: ControlPlane,
    kube: Kube,
    namespace: str,
    listener: RecordingListener,
    cluster_admin_sa: str,
    debug_log: DebugLogCapture,
    audiences: list[str] | None,
    expected: list[str],
) -> None:
    """An opted-in ServiceAccount's token does reach the (allowed) store: it is for the store's audience
    only, lives 600 s, and the API server refuses it, however powerful the ServiceAccount."""
    kube.annotate("ServiceAccount", namespace, cluster_admin_sa, allowed_for("evil"))
    vault_backend(kube, namespace, "evil", listener.url, kubernetes_auth(cluster_admin_sa, audiences))
    managed_secret(kube, namespace, "steal", "evil")
    kube.wait_ready(namespace, "steal", "False", "AuthFailed")  # the listener refuses the login
    logins = wait_for(lambda: [r for r in listener.received if b"/auth/kubernetes/login" in r.raw], 30)
    jwt = json.loads(logins[0].raw.split(b"\r\n\r\n", 1)[1])["jwt"]
    claims = token_claims(jwt)
    assert claim_audiences(claims) == expected
    assert claims["exp"] - claims["iat"] == TOKEN_EXPIRATION_SECONDS
    assert api_server_status(controlplane, jwt) == 401, "the store token works against the API server"
    assert_absent(jwt, debug_log.text(), "the DEBUG log")


# -- (iii) endpoints outside the allowlist ---------------------------------------------------------------


def test_endpoints_outside_the_allowlist_get_nothing(
    operator: OperatorRunner,
    kube: Kube,
    namespace: str,
    listener: RecordingListener,
    debug_log: DebugLogCapture,
) -> None:
    """Every provider's endpoint, with credentials opted in (the worst case): refused before any read.

    ``localhost`` reaches the listener but is not the allowed ``127.0.0.1``; the other URLs hide the
    listener behind parser tricks (user info, fragments) that a lenient check would read differently
    from the HTTP client."""
    canary = "canary-" + secrets.token_hex(12)
    port = listener.port
    local = f"localhost:{port}"
    ref = {"name": "creds", "key": "token"}
    backends: dict[str, dict[str, Any]] = {
        "vault-localhost": {"vault": {"server": f"http://{local}", "auth": token_auth("creds")}},
        "vault-userinfo": {
            "vault": {"server": f"http://127.0.0.1:{port}@{local}/", "auth": token_auth("creds")}
        },
        "vault-fragment": {
            "vault": {"server": f"http://{local}#@127.0.0.1:{port}", "auth": token_auth("creds")}
        },
        "aws": {
            "aws": {
                "region": "us-east-1",
                "endpoint": f"http://{local}",
                "auth": {"secretRef": {"accessKeyID": ref, "secretAccessKey": ref}},
            }
        },
        "gcp": {
            "gcp": {"projectID": "p", "endpoint": local, "auth": {"secretRef": {"secretAccessKey": ref}}}
        },
        "azure": {
            "azure": {
                "vaultURL": f"https://{local}",
                "tenantID": "t",
                "authSecretRef": {"clientID": ref, "clientSecret": ref},
            }
        },
    }
    kube.create_secret(namespace, "creds", {"token": canary}, annotations=allowed_for(*backends))
    for name, spec in backends.items():
        kube.create_backend(namespace, name, spec)
        managed_secret(kube, namespace, name, name)
    for name in backends:
        cond = kube.wait_ready(namespace, name, "False", "EndpointNotAllowed")
        assert "store endpoint" in cond["message"] or "plain http(s)" in cond["message"], cond["message"]
    assert listener.received == [], "the listener got a request"
    assert_nothing_leaked(kube, namespace, debug_log, [canary], list(backends))


def test_a_redirect_does_not_carry_the_token_elsewhere(
    operator: OperatorRunner, kube: Kube, namespace: str, listener: RecordingListener
) -> None:
    """An allowed store that redirects (a Vault standby, an open redirect) to a host outside the allowlist:
    requests would carry X-Vault-Token along; the operator refuses the redirect."""
    with RecordingListener(redirect_to=f"http://localhost:{listener.port}") as redirector:
        canary = "canary-" + secrets.token_hex(12)
        kube.create_secret(namespace, "tok", {"token": canary}, annotations=allowed_for("hop"))
        vault_backend(kube, namespace, "hop", redirector.url, token_auth("tok"))
        managed_secret(kube, namespace, "app", "hop")
        cond = kube.wait_ready(namespace, "app", "False", "EndpointNotAllowed")
        assert "redirect" in cond["message"]
        assert redirector.received, "the allowed store was asked"
    assert listener.received == [], "the token followed the redirect"


# -- the operator's own identity ---------------------------------------------------------------------------


def test_the_operator_identity_is_not_lent_to_a_secretbackend(
    operator: OperatorRunner, kube: Kube, namespace: str, listener: RecordingListener
) -> None:
    """No auth block (AWS default chain, GCP ADC) or a managed identity would be the operator pod's own
    cloud identity: a namespaced SecretBackend may not borrow it."""
    backends = {
        "aws": {"aws": {"region": "us-east-1", "endpoint": listener.url}},
        "gcp": {"gcp": {"projectID": "p", "endpoint": f"127.0.0.1:{listener.port}"}},
        "azure": {"azure": {"vaultURL": f"https://127.0.0.1:{listener.port}", "authType": "ManagedIdentity"}},
    }
    for name, spec in backends.items():
        kube.create_backend(namespace, name, spec)
        managed_secret(kube, namespace, name, name)
    for name in backends:
        cond = kube.wait_ready(namespace, name, "False", "CredentialNotAllowed")
        assert "operator's own identity" in cond["message"]
    assert listener.received == []
