"""A recording gRPC proxy in front of the GCP emulator, and a check of the JWTs it saw.

The emulator accepts any token (IAM off), so what a client sends is proven here instead: every unary call
is passed through byte for byte to the real emulator, and the ``authorization`` metadata of each is kept.
``verify_self_signed_jwt`` checks such a token the way Google does for self-signed JWT access: signed by
the service-account key named in the header, issued by and for the account, scoped or addressed to the
API, and short-lived.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Self

import grpc

from .controlplane import free_port


@dataclass(frozen=True)
class SeenCall:
    method: str
    authorization: str | None


def _identity(data: bytes) -> bytes:
    return data


class RecordingGrpcProxy:
    """127.0.0.1:<port> -> ``target``: unary-unary calls forwarded unchanged, their metadata recorded."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.calls: list[SeenCall] = []
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(target)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers([_Forwarder(self)])
        self._server.add_insecure_port(self.endpoint)

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def record(self, call: SeenCall) -> None:
        with self._lock:
            self.calls.append(call)

    def forward(self, method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        upstream = self._channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = dict(context.invocation_metadata())
            self.record(SeenCall(method, metadata.get("authorization")))
            try:
                return bytes(upstream(request, timeout=context.time_remaining()))
            except grpc.RpcError as error:
                context.abort(error.code(), error.details() or "")
                raise  # abort raises; for the type checker

        return handle

    def tokens(self) -> list[str]:
        """The bearer tokens of the calls seen so far, in order (calls without one are left out)."""
        with self._lock:
            return [
                c.authorization.removeprefix("Bearer ")
                for c in self.calls
                if c.authorization and c.authorization.startswith("Bearer ")
            ]


class _Forwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, proxy: RecordingGrpcProxy) -> None:
        self._proxy = proxy

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            self._proxy.forward(handler_call_details.method),
            request_deserializer=_identity,
            response_serializer=_identity,
        )


def verify_self_signed_jwt(token: str, key_info: dict[str, str]) -> dict[str, Any]:
    """The claims of ``token`` after checking it as Google checks a service account's self-signed JWT."""
    from cryptography.hazmat.primitives import serialization
    from google.auth import jwt

    private = serialization.load_pem_private_key(key_info["private_key"].encode(), password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
    assert header["alg"] == "RS256", header
    assert header["kid"] == key_info["private_key_id"], "signed with another key id"
    claims: dict[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
        token, certs=public_pem, verify=True, audience=None
    )
    email = key_info["client_email"]
    assert claims["iss"] == email, claims
    assert claims["sub"] == email, claims
    # Self-signed JWT access carries either the API's audience or the requested scope.
    assert claims.get("aud") == "https://secretmanager.googleapis.com/" or "cloud-platform" in claims.get(
        "scope", ""
    ), claims
    now = time.time()
    assert claims["iat"] <= now + 60, claims
    assert now < claims["exp"] <= claims["iat"] + 3600, claims
    return claims
