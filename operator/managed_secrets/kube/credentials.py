"""``providers.base.CredentialSource`` on the API server: credential Secrets, ServiceAccounts, TokenRequests.

Any failure to get a credential is AuthFailed: the provider cannot log in, whatever the cause.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from kubernetes import client

from managed_secrets import errors
from managed_secrets.kube.edge import Translation, call
from managed_secrets.providers.base import CredentialValue
from managed_secrets.providers.guard import TOKEN_EXPIRATION_SECONDS, issued_token_refusal

READ_CREDENTIAL = Translation(errors.AuthFailed)


def _not_found(what: str) -> Translation:
    return READ_CREDENTIAL.but({404: lambda _what, _described: errors.AuthFailed(f"{what} not found")})


class KubeCredentials:
    """Implements ``providers.base.CredentialSource`` (the guards are applied by ``ProviderContext``)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._authn = client.AuthenticationV1Api(api_client)

    def read_secret_key(self, namespace: str, name: str, key: str) -> CredentialValue:
        body = call(
            f"reading credentials Secret {namespace}/{name}",
            _not_found(f"credentials Secret {namespace}/{name}"),
            self._core.read_namespaced_secret,
            name,
            namespace,
        )
        data = body.get("data") or {}
        annotations = dict((body.get("metadata") or {}).get("annotations") or {})
        value = base64.b64decode(data[key]) if key in data else None
        return CredentialValue(annotations=annotations, value=value)

    def service_account_annotations(self, namespace: str, name: str) -> Mapping[str, str]:
        body = call(
            f"reading ServiceAccount {namespace}/{name}",
            _not_found(f"ServiceAccount {namespace}/{name}"),
            self._core.read_namespaced_service_account,
            name,
            namespace,
        )
        return dict((body.get("metadata") or {}).get("annotations") or {})

    def request_token(self, namespace: str, service_account: str, audiences: Sequence[str]) -> str:
        """A TokenRequest token for exactly ``audiences``, released only after three checks: its ``aud``
        is what was asked, it lives no longer than asked, and the API server itself refuses it."""
        what = f"TokenRequest for ServiceAccount {namespace}/{service_account}"
        if not audiences:  # an empty list would mean the API server's own audiences
            raise errors.InvalidBackend(f"{what}: no audience")
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": list(audiences), "expirationSeconds": TOKEN_EXPIRATION_SECONDS},
        }
        body = call(
            what,
            READ_CREDENTIAL,
            self._core.create_namespaced_service_account_token,
            service_account,
            namespace,
            request,
        )
        token: str = body["status"]["token"]
        refusal = issued_token_refusal(token, audiences, TOKEN_EXPIRATION_SECONDS)
        if refusal is not None:
            raise errors.AuthFailed(f"{what}: {refusal}; not used")
        if self._api_server_accepts(token, what):
            raise errors.InvalidBackend(
                f"{what}: the Kubernetes API server accepts a token for audience {', '.join(audiences)},"
                " so it would work against the Kubernetes API; not used: set serviceAccountRef.audiences"
                " to an audience only the store accepts"
            )
        return token

    def _api_server_accepts(self, token: str, what: str) -> bool:
        """TokenReview without audiences: would the API server authenticate this token for itself?"""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        # Fail closed: without the answer the token is not handed to anybody.
        body = call(
            f"{what}: cannot check that the API server refuses the token (TokenReview)",
            READ_CREDENTIAL,
            self._authn.create_token_review,
            review,
        )
        return bool((body.get("status") or {}).get("authenticated"))
