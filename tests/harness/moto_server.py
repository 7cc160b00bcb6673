"""moto's standalone server (AWS Secrets Manager, SSM Parameter Store, STS, IAM) for integration tests.

``moto_server -H 127.0.0.1 -p <port>`` runs as its own process, so stop()/start() is a real outage on the
same port, and its own DEBUG logs (which echo request bodies) stay out of the test process.

IAM is enforced: after each start the harness creates, with authentication still off, a ``reader`` user
and a ``admin`` user (both allowed everything, with fresh access keys each start), and a role the
assume-role tests assume; then it turns authentication on, so unknown keys are refused like AWS would.
``auth_disabled()`` turns it off for a block: moto cannot authenticate unsigned calls such as
AssumeRoleWithWebIdentity (it fails on the missing Authorization header). Data does not survive a
restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import boto3
from botocore.config import Config

from .controlplane import HarnessError, ServerProcess, find_executable, free_port, log_tail
from .lifecycle import ProcessHarness

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
ROLE_NAME = "managed-secrets-reader"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
TRUST_ANYONE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": {"Federated": "*"}, "Action": "sts:AssumeRoleWithWebIdentity"},
        ],
    }
)


@dataclass(frozen=True)
class AccessKeys:
    access_key_id: str
    secret_access_key: str


class MotoServer(ProcessHarness):
    """``moto_server`` on 127.0.0.1:<port>; the port stays the same across stop()/start()."""

    def __init__(self, *, port: int | None = None, start_timeout: float = 60.0) -> None:
        self.port = port if port is not None else free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.region = REGION
        self.start_timeout = start_timeout
        self.moto_path = find_executable("moto_server")
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-moto-"))
        self.log_path = self.workdir / "moto.log"
        self.role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}"
        self.reader: AccessKeys | None = None
        self.admin: AccessKeys | None = None
        self._server: ServerProcess | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self.running:
            raise HarnessError("moto already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        server = ServerProcess(
            "moto", [self.moto_path, "-H", "127.0.0.1", "-p", str(self.port)], self.log_path, env=env
        )
        self._launch(
            server,
            self._healthy,
            what=f"moto at {self.endpoint}",
            timeout=self.start_timeout,
            then=self._bootstrap,
        )
        return self

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- IAM ------------------------------------------------------------------------------------------

    def _set_auth(self, initial_no_auth_action_count: str) -> str:
        request = urllib.request.Request(  # noqa: S310 - our own server on 127.0.0.1
            f"{self.endpoint}/moto-api/reset-auth",
            data=initial_no_auth_action_count.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return str(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])

    def _bootstrap(self) -> None:
        self._set_auth("inf")
        iam = self.client("iam", keys=AccessKeys("bootstrap", "bootstrap"))
        keys: dict[str, AccessKeys] = {}
        for user in ("reader", "admin"):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=ALLOW_ALL)
            created = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = AccessKeys(created["AccessKeyId"], created["SecretAccessKey"])
        iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=TRUST_ANYONE)
        iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="all", PolicyDocument=ALLOW_ALL)
        self.reader, self.admin = keys["reader"], keys["admin"]
        self._set_auth("0")

    @contextlib.contextmanager
    def auth_disabled(self) -> Iterator[None]:
        """No signature or permission checks inside the block (moto cannot check unsigned STS calls)."""
        previous = self._set_auth("inf")
        try:
            yield
        finally:
            self._set_auth(previous if previous != "inf" else "0")

    # -- clients --------------------------------------------------------------------------------------

    def client(self, service: str, *, keys: AccessKeys | None = None) -> Any:
        """A boto3 client for this server, with the admin keys unless ``keys`` is given."""
        keys = keys or self.admin
        if keys is None:
            raise HarnessError("moto is not started")
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            config=Config(retries={"max_attempts": 1}),
        )
