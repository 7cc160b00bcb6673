"""An OpenBao dev server (the open-source Vault fork, same HTTP API) for integration tests.

``bao server -dev`` keeps everything in memory, so a restart loses all data. Tests stop and start it to
simulate an outage; every helper here (``enable_kv_v1``, ``write_policy``, ``enable_approle``,
``enable_kubernetes_auth``, and any callback passed to ``add_setup``) registers a setup callback that is
run again after each ``start()``, so mounts, policies, roles and credentials come back identical. Secret
*data* written by the tests does not come back.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import hvac

from .controlplane import HarnessError, ServerProcess, find_executable, free_port, log_tail
from .lifecycle import ProcessHarness

if TYPE_CHECKING:
    from .controlplane import ControlPlane

SetupCallback = Callable[[hvac.Client], None]


class OpenBao(ProcessHarness):
    """``bao server -dev`` on 127.0.0.1:<port>; the port stays the same across stop()/start()."""

    def __init__(
        self,
        *,
        port: int | None = None,
        root_token: str = "root",  # noqa: S107 - the dev server's well-known root token
        start_timeout: float = 30.0,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.root_token = root_token
        self.start_timeout = start_timeout
        self.bao_path = find_executable("bao")
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-bao-"))
        self.log_path = self.workdir / "bao.log"
        self._setup: list[SetupCallback] = []
        self._server: ServerProcess | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server (again), wait until healthy, then re-run every setup callback in order."""
        if self.running:
            raise HarnessError("OpenBao already running")
        env = {
            **os.environ,
            "HOME": str(self.workdir),  # the CLI's token helper writes ~/.vault-token; keep it here
            "BAO_ADDR": self.addr,
        }
        for name in ("BAO_TOKEN", "VAULT_TOKEN", "VAULT_ADDR"):
            env.pop(name, None)
        server = ServerProcess(
            "bao",
            [
                self.bao_path,
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ],
            self.log_path,
            env=env,
        )
        self._launch(
            server,
            self._healthy,
            what=f"OpenBao at {self.addr}",
            timeout=self.start_timeout,
            then=self._run_setup,
        )
        return self

    def restart(self) -> None:
        self.stop()
        self.start()

    def _run_setup(self) -> None:
        client = self.client()
        for callback in self._setup:
            callback(client)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def _healthy(self) -> bool:
        # 200 = initialized, unsealed and active; anything else (or no answer) means not yet.
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- clients and setup ----------------------------------------------------------------------------

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client for this server, with the root token unless ``token`` is given."""
        return hvac.Client(url=self.addr, token=token if token is not None else self.root_token, timeout=10)

    def add_setup(self, callback: SetupCallback) -> None:
        """Run ``callback(root_client)`` now (if running) and again after every start()."""
        self._setup.append(callback)
        if self.running:
            callback(self.client())

    def enable_kv_v1(self, mount: str) -> None:
        """Mount a KV version 1 engine at ``mount`` (dev mode already has KV v2 at ``secret/``)."""
        self.add_setup(lambda c: _enable_secrets_engine(c, mount, "kv", {"version": "1"}))

    def enable_kv_v2(self, mount: str) -> None:
        """Mount another KV version 2 engine at ``mount``."""
        self.add_setup(lambda c: _enable_secrets_engine(c, mount, "kv", {"version": "2"}))

    def write_policy(self, name: str, hcl: str) -> None:
        self.add_setup(lambda c: c.sys.create_or_update_policy(name=name, policy=hcl))

    def enable_approle(
        self, mount: str = "approle", role: str = "ms", policies: Sequence[str] = ()
    ) -> tuple[str, str]:
        """Enable AppRole (if needed) and create ``role``; returns (role_id, secret_id).

        The IDs are fixed by the harness, so the same credentials work again after a restart.
        """
        role_id, secret_id = str(uuid.uuid4()), str(uuid.uuid4())

        def setup(c: hvac.Client) -> None:
            _enable_auth_method(c, mount, "approle")
            c.auth.approle.create_or_update_approle(role, token_policies=list(policies), mount_point=mount)
            c.auth.approle.update_role_id(role, role_id, mount_point=mount)
            c.auth.approle.create_custom_secret_id(role, secret_id, mount_point=mount)

        self.add_setup(setup)
        return role_id, secret_id

    def enable_kubernetes_auth(
        self,
        controlplane: ControlPlane,
        *,
        mount: str = "kubernetes",
        role: str = "ms",
        bound_sa_names: Sequence[str],
        bound_sa_namespaces: Sequence[str],
        policies: Sequence[str] = (),
        audience: str | None = None,
    ) -> None:
        """Enable kubernetes auth at ``mount`` against the real apiserver and create ``role``.

        OpenBao validates login JWTs with a TokenReview at ``controlplane.url`` (CA = the control plane's
        CA, reviewer = the admin token). Call again with another ``role`` to add roles to the same mount.
        """
        config: dict[str, Any] = {
            "kubernetes_host": controlplane.url,
            "kubernetes_ca_cert": controlplane.ca_pem,
            "token_reviewer_jwt": controlplane.admin_token,
            "disable_iss_validation": True,
            "disable_local_ca_jwt": True,
        }

        def setup(c: hvac.Client) -> None:
            _enable_auth_method(c, mount, "kubernetes")
            c.write_data(f"auth/{mount}/config", data=config)
            c.auth.kubernetes.create_role(
                role,
                bound_service_account_names=list(bound_sa_names),
                bound_service_account_namespaces=list(bound_sa_namespaces),
                policies=list(policies),
                audience=audience,
                mount_point=mount,
            )

        self.add_setup(setup)


def _enable_secrets_engine(client: hvac.Client, mount: str, backend: str, options: dict[str, str]) -> None:
    if f"{mount.strip('/')}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine(backend, path=mount, options=options)


def _enable_auth_method(client: hvac.Client, mount: str, method: str) -> None:
    if f"{mount.strip('/')}/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method(method, path=mount)
