"""A Google Cloud Secret Manager v1 gRPC server for integration tests, run as its own process.

Why not the Go emulator (github.com/blackwell-systems/gcp-secret-manager-emulator): the Go module proxy
reachable here refuses that module (``403 ... This module version is not available`` for every version,
including the ``@v/list``), so it cannot be built on this machine or in CI. This module is the stand-in:
a real gRPC server speaking ``google.cloud.secretmanager.v1.SecretManagerService`` with the official
protobuf messages (from google-cloud-secret-manager), so the provider is exercised through the real
Python client, the real gRPC stack and real status codes. Its behaviour follows the public API docs:

- ``latest`` is the newest ENABLED version; none -> NOT_FOUND.
- Missing secret or version -> NOT_FOUND; a DISABLED or DESTROYED version -> FAILED_PRECONDITION.
- Payloads above 64 KiB, or whose ``data_crc32c`` does not match, are refused with INVALID_ARGUMENT.
- Access answers carry ``data_crc32c`` (as Google does). A secret labelled
  ``emulator-corrupt-crc32c=true`` gets a wrong checksum, so tests can prove the client verifies it.
- With ``--auth-keys FILE`` every call needs ``authorization: Bearer <JWT>`` signed by one of the listed
  service-account keys (self-signed JWT access, as Google's client libraries send); anything else is
  UNAUTHENTICATED.

Server and harness live in one file: ``python -m harness.gcp_emulator --port N`` runs the server (it binds
127.0.0.1 only); ``GcpSecretManagerEmulator`` starts it as a subprocess and stop()/start() is a real
outage on the same port. Data does not survive a restart.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import grpc
from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from google.cloud.secretmanager_v1.types import resources, service
from google.protobuf import empty_pb2, timestamp_pb2

from harness.lifecycle import ServerHarness

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
MAX_PAYLOAD = 64 * 1024
CORRUPT_LABEL = "emulator-corrupt-crc32c"
State = resources.SecretVersion.State


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Version:
    number: int
    data: bytes
    crc: int
    created: float
    state: int = State.ENABLED


@dataclass
class _Secret:
    secret: resources.Secret
    versions: list[_Version] = field(default_factory=list)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class SecretManagerServicer:
    def __init__(self, auth_keys: Mapping[str, str] | None) -> None:
        self._auth_keys = dict(auth_keys) if auth_keys is not None else None
        self._lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}

    # -- plumbing -------------------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Any, Any, Callable[[Any], Any]]] = {
            "CreateSecret": (service.CreateSecretRequest, resources.Secret, self.create_secret),
            "GetSecret": (service.GetSecretRequest, resources.Secret, self.get_secret),
            "DeleteSecret": (service.DeleteSecretRequest, None, self.delete_secret),
            "ListSecrets": (service.ListSecretsRequest, service.ListSecretsResponse, self.list_secrets),
            "AddSecretVersion": (service.AddSecretVersionRequest, resources.SecretVersion, self.add_version),
            "GetSecretVersion": (service.GetSecretVersionRequest, resources.SecretVersion, self.get_version),
            "AccessSecretVersion": (
                service.AccessSecretVersionRequest,
                service.AccessSecretVersionResponse,
                self.access_version,
            ),
            "DisableSecretVersion": (
                service.DisableSecretVersionRequest,
                resources.SecretVersion,
                lambda r: self.set_state(r.name, State.DISABLED),
            ),
            "EnableSecretVersion": (
                service.EnableSecretVersionRequest,
                resources.SecretVersion,
                lambda r: self.set_state(r.name, State.ENABLED),
            ),
            "DestroySecretVersion": (
                service.DestroySecretVersionRequest,
                resources.SecretVersion,
                lambda r: self.set_state(r.name, State.DESTROYED),
            ),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(implementation),
                request_deserializer=request_type.deserialize,
                response_serializer=(
                    response_type.serialize
                    if response_type is not None
                    else empty_pb2.Empty.SerializeToString
                ),
            )
            for name, (request_type, response_type, implementation) in methods.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _wrap(self, implementation: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                self._authenticate(context)
                with self._lock:
                    return implementation(request)
            except Abort as error:
                context.abort(error.code, error.message)

        return call

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        if self._auth_keys is None:
            return
        metadata = dict(context.invocation_metadata())
        header = str(metadata.get("authorization", ""))
        if not header.lower().startswith("bearer "):
            raise Abort(
                grpc.StatusCode.UNAUTHENTICATED, "Request is missing required authentication credential."
            )
        try:
            claims = jwt.decode(header[7:], certs=self._auth_keys, verify=True)  # type: ignore[no-untyped-call]
        except (ValueError, auth_exceptions.GoogleAuthError):
            raise Abort(
                grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials."
            ) from None
        if not claims.get("iss"):
            raise Abort(grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.")

    # -- helpers --------------------------------------------------------------------------------------

    def _secret(self, name: str) -> _Secret:
        entry = self._secrets.get(name)
        if entry is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found or has no versions.")
        return entry

    def _version(self, name: str) -> tuple[_Secret, _Version]:
        secret_name, sep, version_id = name.rpartition("/versions/")
        if not sep:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid resource field value in the request.")
        entry = self._secret(secret_name)
        if version_id == "latest":
            enabled = [v for v in entry.versions if v.state == State.ENABLED]
            if not enabled:
                raise Abort(
                    grpc.StatusCode.NOT_FOUND, f"Secret [{secret_name}] not found or has no versions."
                )
            return entry, enabled[-1]
        if not version_id.isdigit():
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid resource field value in the request.")
        for version in entry.versions:
            if version.number == int(version_id):
                return entry, version
        raise Abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{name}] not found.")

    @staticmethod
    def _version_message(secret_name: str, version: _Version) -> resources.SecretVersion:
        message = resources.SecretVersion(
            name=f"{secret_name}/versions/{version.number}", state=version.state
        )
        resources.SecretVersion.pb(message).create_time.CopyFrom(_timestamp(version.created))
        return message

    # -- methods --------------------------------------------------------------------------------------

    def create_secret(self, request: service.CreateSecretRequest) -> resources.Secret:
        if not request.parent.startswith("projects/") or not request.secret_id:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid resource field value in the request.")
        name = f"{request.parent}/secrets/{request.secret_id}"
        if name in self._secrets:
            raise Abort(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{name}] already exists.")
        secret = resources.Secret(name=name, labels=dict(request.secret.labels))
        resources.Secret.pb(secret).create_time.CopyFrom(_timestamp(time.time()))
        self._secrets[name] = _Secret(secret)
        return secret

    def get_secret(self, request: service.GetSecretRequest) -> resources.Secret:
        return self._secret(request.name).secret

    def delete_secret(self, request: service.DeleteSecretRequest) -> None:
        self._secret(request.name)
        del self._secrets[request.name]

    def list_secrets(self, request: service.ListSecretsRequest) -> service.ListSecretsResponse:
        prefix = f"{request.parent}/secrets/"
        secrets = [entry.secret for name, entry in sorted(self._secrets.items()) if name.startswith(prefix)]
        return service.ListSecretsResponse(secrets=secrets, total_size=len(secrets))

    def add_version(self, request: service.AddSecretVersionRequest) -> resources.SecretVersion:
        entry = self._secret(request.parent)
        data = bytes(request.payload.data)
        if len(data) > MAX_PAYLOAD:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Secret Payload cannot be larger than 64KiB.")
        crc = crc32c(data)
        if "data_crc32c" in request.payload and request.payload.data_crc32c != crc:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Checksum mismatch.")
        version = _Version(number=len(entry.versions) + 1, data=data, crc=crc, created=time.time())
        entry.versions.append(version)
        return self._version_message(request.parent, version)

    def get_version(self, request: service.GetSecretVersionRequest) -> resources.SecretVersion:
        entry, version = self._version(request.name)
        return self._version_message(entry.secret.name, version)

    def access_version(
        self, request: service.AccessSecretVersionRequest
    ) -> service.AccessSecretVersionResponse:
        entry, version = self._version(request.name)
        name = f"{entry.secret.name}/versions/{version.number}"
        if version.state != State.ENABLED:
            state = State(version.state).name
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"Secret Version [{name}] is in {state} state.")
        crc = version.crc
        if entry.secret.labels.get(CORRUPT_LABEL) == "true":
            crc ^= 0x1
        return service.AccessSecretVersionResponse(
            name=name, payload=resources.SecretPayload(data=version.data, data_crc32c=crc)
        )

    def set_state(self, name: str, state: int) -> resources.SecretVersion:
        entry, version = self._version(name)
        if version.state == State.DESTROYED:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"Secret Version [{name}] is destroyed.")
        version.state = state
        if state == State.DESTROYED:
            version.data = b""
        return self._version_message(entry.secret.name, version)


def serve(port: int, auth_keys_file: str | None) -> None:
    auth_keys = None
    if auth_keys_file:
        auth_keys = json.loads(Path(auth_keys_file).read_text())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((SecretManagerServicer(auth_keys).handler(),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        sys.exit(f"cannot bind 127.0.0.1:{port}")
    server.start()
    print(f"secret manager emulator listening on 127.0.0.1:{port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=0.5).wait()


# ---------------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict[str, str]
    public_pem: str

    @property
    def json(self) -> str:
        return json.dumps(self.info)


def new_service_account_key(project: str, name: str) -> ServiceAccountKey:
    """A fresh RSA service-account key in Google's JSON key format (never registered with Google)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    key_id = os.urandom(20).hex()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": key_id,
        "private_key": private_pem,
        "client_email": f"{name}@{project}.iam.gserviceaccount.com",
        "client_id": str(int.from_bytes(os.urandom(8), "big")),
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return ServiceAccountKey(info, public_pem)


class GcpSecretManagerEmulator(ServerHarness):
    """The server above on 127.0.0.1:<port>, as a subprocess; the port stays the same across restarts.

    ``reader`` and ``admin`` are service-account keys the server accepts; ``new_unregistered_key()``
    gives one it refuses. ``require_auth=False`` accepts calls without credentials.
    """

    def __init__(
        self,
        *,
        project: str = "ms-test",
        port: int | None = None,
        require_auth: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        from .controlplane import free_port

        self.project = project
        self.port = port if port is not None else free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-gcp-"))
        self.log_path = self.workdir / "emulator.log"
        self.reader = new_service_account_key(project, "reader")
        self.admin = new_service_account_key(project, "admin")
        self.require_auth = require_auth
        self.keys_file = self.workdir / "auth-keys.json"
        self.keys_file.write_text(
            json.dumps({k.info["private_key_id"]: k.public_pem for k in (self.reader, self.admin)})
        )
        self._server: Any = None

    def new_unregistered_key(self) -> ServiceAccountKey:
        return new_service_account_key(self.project, "stranger")

    def start(self) -> Self:
        from .controlplane import HarnessError, ServerProcess, wait_until

        if self.running:
            raise HarnessError("emulator already running")
        argv = [sys.executable, "-m", "harness.gcp_emulator", "--port", str(self.port)]
        if self.require_auth:
            argv += ["--auth-keys", str(self.keys_file)]
        tests_dir = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
        }
        server = ServerProcess("gcp-secret-manager-emulator", argv, self.log_path, env=env)
        self._server = server
        atexit.register(self.stop)
        server.start()
        try:
            wait_until(
                self._ready,
                timeout=self.start_timeout,
                what=f"emulator at {self.endpoint}",
                alive=server.exit_problem,
            )
        except BaseException:
            print(f"emulator failed to start:\n{server.tail()}", file=sys.stderr)
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        with grpc.insecure_channel(self.endpoint) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
            except grpc.FutureTimeoutError:
                return False
            return True

    def stop(self) -> None:
        if self._server is None:
            return
        atexit.unregister(self.stop)
        self._server.stop()
        self._server = None

    def close(self) -> None:
        self.stop()
        if os.environ.get("MANAGED_SECRETS_KEEP_TESTDIR", "") in ("", "0"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- an admin client ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A SecretManagerServiceClient on a plaintext channel, signed with the admin key."""
        from google.cloud.secretmanager_v1 import SecretManagerServiceClient
        from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (
            SecretManagerServiceGrpcTransport,
        )

        channel = grpc.insecure_channel(self.endpoint)
        intercepted = grpc.intercept_channel(channel, _AdminAuth(self.admin.info))
        try:
            yield SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=intercepted))
        finally:
            channel.close()


class _AdminAuth(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, info: Mapping[str, str]) -> None:
        self._credentials = jwt.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            dict(info), audience="https://secretmanager.googleapis.com/"
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        headers: dict[str, str] = {}
        self._credentials.before_request(None, "POST", "", headers)
        metadata = [*(details.metadata or ()), ("authorization", headers["authorization"])]
        return continuation(details._replace(metadata=metadata), request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auth-keys", help="JSON map of key id -> public key PEM; enables auth")
    args = parser.parse_args()
    serve(args.port, args.auth_keys)


if __name__ == "__main__":
    main()
