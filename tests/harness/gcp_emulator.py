"""The real GCP Secret Manager emulator (blackwell-systems/gcp-secret-manager-emulator, Go, gRPC) for tests.

hack/build-gcp-emulator.sh gets the binary (see harness.servers); ``GcpSecretManagerEmulator`` runs it on
127.0.0.1:<free port> with IAM off, and stop()/start() is a real outage on the same port. Everything is
in memory: a restart is a reset. What the emulator does not do, so the tests do not rely on it:

- it checks no credentials (with ``IAM_MODE`` unset any token, or none, is accepted), so refused
  credentials can only be proven on the client side (a key the client cannot use);
- it sends no ``data_crc32c`` and accepts a wrong one, so the provider's checksum check is proven with a
  narrow fake of the access call (tests/contract/test_gcp.py says which test);
- its ListSecrets ignores ``filter``, and ``latest`` is the highest ENABLED version.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import grpc
from google.api_core.exceptions import NotFound

from .controlplane import HarnessError, ServerProcess, free_port
from .lifecycle import ProcessHarness
from .servers import GCP_EMULATOR_SCRIPT, build_server

if TYPE_CHECKING:
    from managed_secrets.testing.contract import Value


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict[str, str]

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
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": os.urandom(20).hex(),
        "private_key": private_pem,
        "client_email": f"{name}@{project}.iam.gserviceaccount.com",
        "client_id": str(int.from_bytes(os.urandom(8), "big")),
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return ServiceAccountKey(info)


def emulator_binary() -> Path:
    """The emulator's gRPC binary; raises harness.servers.ServerUnavailable when it cannot be had."""
    return build_server(GCP_EMULATOR_SCRIPT)


class GcpSecretManagerEmulator(ProcessHarness):
    """The emulator on 127.0.0.1:<port> as a subprocess; the port stays the same across restarts.

    ``reader`` is a service-account key for the provider (the emulator does not check it, but the
    provider builds and sends its JWT as against Google).
    """

    def __init__(
        self, *, project: str = "ms-test", port: int | None = None, start_timeout: float = 30.0
    ) -> None:
        self.binary = emulator_binary()
        self.project = project
        self.port = port if port is not None else free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-gcp-"))
        self.log_path = self.workdir / "emulator.log"
        self.reader = new_service_account_key(project, "reader")
        self._server: ServerProcess | None = None

    def start(self) -> Self:
        if self.running:
            raise HarnessError("emulator already running")
        # IAM_MODE=permissive|strict would ask a gcp-iam-emulator we do not run for every call.
        env = {k: v for k, v in os.environ.items() if k not in ("IAM_MODE", "IAM_EMULATOR_HOST")}
        # The source build binds 127.0.0.1 by default (its --host patch); --host is not passed because
        # an upstream binary does not know it.
        env.update(GCP_MOCK_HOST="127.0.0.1", GCP_MOCK_PORT=str(self.port))
        server = ServerProcess(
            "gcp-secret-manager-emulator", [self.binary, "--port", str(self.port)], self.log_path, env=env
        )
        self._launch(server, self._ready, what=f"emulator at {self.endpoint}", timeout=self.start_timeout)
        return self

    def _ready(self) -> bool:
        # The listener is bound before the server logs "Ready to accept connections".
        with grpc.insecure_channel(self.endpoint) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
            except grpc.FutureTimeoutError:
                return False
            return True

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """An admin SecretManagerServiceClient on a plaintext channel (the emulator wants no credentials)."""
        from google.cloud.secretmanager_v1 import SecretManagerServiceClient
        from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (
            SecretManagerServiceGrpcTransport,
        )

        channel = grpc.insecure_channel(self.endpoint)
        try:
            yield SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))
        finally:
            channel.close()


class SecretManagerRemote:
    supports_binary = True
    max_value_size = 64 * 1024

    def __init__(self, emulator: GcpSecretManagerEmulator) -> None:
        self.emulator = emulator

    def new_key(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    def _parent(self, key: str) -> str:
        return f"projects/{self.emulator.project}/secrets/{key}"

    def create(self, key: str, labels: dict[str, str] | None = None) -> None:
        # With replication, as real GCP requires (the emulator would accept a secret without).
        with self.emulator.client() as client:
            client.create_secret(
                request={
                    "parent": f"projects/{self.emulator.project}",
                    "secret_id": key,
                    "secret": {"replication": {"automatic": {}}, "labels": labels or {}},
                }
            )

    def put(self, key: str, value: Value) -> str:
        with self.emulator.client() as client:
            try:
                client.get_secret(request={"name": self._parent(key)})
            except NotFound:
                self.create(key)
            version = client.add_secret_version(
                request={"parent": self._parent(key), "payload": {"data": self.expected(value)}}
            )
        return str(version.name.rsplit("/", 1)[-1])

    def delete(self, key: str) -> None:
        with self.emulator.client() as client:
            client.delete_secret(request={"name": self._parent(key)})

    def disable(self, key: str, version: str) -> None:
        with self.emulator.client() as client:
            client.disable_secret_version(request={"name": f"{self._parent(key)}/versions/{version}"})

    def expected(self, value: Value) -> bytes:
        if isinstance(value, dict):
            return json.dumps(value).encode()
        return value if isinstance(value, bytes) else value.encode()

    def missing_version(self) -> str:
        return "999"

    def stop_server(self) -> None:
        self.emulator.stop()

    def start_server(self) -> None:
        self.emulator.start()

    def enable(self, key: str, version: str) -> None:
        with self.emulator.client() as client:
            client.enable_secret_version(request={"name": f"{self._parent(key)}/versions/{version}"})
