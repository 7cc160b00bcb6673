"""Session fixtures for the integration tests: a real control plane and an OpenBao dev server.

The servers' logic lives in tests/harness; this file only wires it into pytest.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from harness.controlplane import (
    DEFAULT_CRD_DIR,
    OPERATOR_NAMESPACE,
    ControlPlane,
    HarnessError,
    build_testbins,
)
from harness.gcp_emulator import GcpSecretManagerEmulator
from harness.lifecycle import ServerHarness
from harness.lowkey import KeyVaultServer
from harness.openbao import OpenBao
from harness.operator import AwsCalls, OperatorRunner
from harness.postgres import PostgresServer
from harness.servers import ServerUnavailable
from kube import Kube
from managed_secrets.config import OperatorConfig

# The contract cases ship in the package (managed_secrets.testing): rewrite their asserts like a test
# module's, so a failure shows what was compared. Registered before any test module imports them.
pytest.register_assert_rewrite("managed_secrets.testing")


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager with the project's CRDs and the operator's RBAC.

    Never skipped: if the binaries cannot be built, the tests fail.
    """
    # CRDs go in before kube-controller-manager starts, so its garbage collector knows them from the start.
    with ControlPlane(crd_dir=DEFAULT_CRD_DIR) as cp:
        cp.apply_operator_rbac()
        yield cp


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    with OpenBao() as bao:
        yield bao


@pytest.fixture(scope="session")
def admin_api(controlplane: ControlPlane) -> Iterator[k8s.ApiClient]:
    api = k8s_config.new_client_from_config(config_file=str(controlplane.admin_kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, admin_api: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace per test; deleted afterwards without waiting for the deletion to finish."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base or 'test'}-{secrets.token_hex(3)}"
    core = k8s.CoreV1Api(admin_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find) the control-plane binaries and the GCP/Azure test servers before the first test,
    outside any test's timeout.

    A control-plane failure is remembered and raised by the ``controlplane`` fixture, so those tests fail
    loudly; a GCP/Azure server failure makes their tests skip, and the terminal summary says why.
    """
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def on_slow(message: str) -> None:
        if reporter is not None:
            reporter.write_line(message)

    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    # The GCP emulator and lowkey-vault too (a cold lowkey-vault build takes minutes); a failure is
    # remembered and turned into skips by their fixtures.
    from harness.servers import GCP_EMULATOR_SCRIPT, LOWKEY_VAULT_SCRIPT, build_server

    for fixture, script in (("gcp_emulator", GCP_EMULATOR_SCRIPT), ("keyvault", LOWKEY_VAULT_SCRIPT)):
        if fixture in used:
            with contextlib.suppress(HarnessError):
                build_server(script, on_slow=on_slow)
    if "controlplane" not in used:
        return
    with contextlib.suppress(HarnessError):
        build_testbins(on_slow=on_slow)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which test servers could not be had, and why, so a skipped GCP/Azure run is not missed."""
    from harness.servers import UNAVAILABLE

    if UNAVAILABLE:
        terminalreporter.section("test servers unavailable (their tests were skipped)", yellow=True)
        for text in UNAVAILABLE.values():
            terminalreporter.write_line(text)


# -- the operator under test -----------------------------------------------------------------------------------

#: Store endpoints the test operators may send credentials to: the local test servers.
TEST_STORE_ENDPOINTS = ("http://127.0.0.1:*", "https://127.0.0.1:*")


@pytest.fixture(scope="session")
def aws_calls() -> AwsCalls:
    return AwsCalls()


@pytest.fixture(scope="session")
def operator(
    controlplane: ControlPlane, debug_log: DebugLogCapture, aws_calls: AwsCalls
) -> Iterator[OperatorRunner]:
    """One operator for the session, clusterwide, with the operator's own (RBAC-limited) identity.

    Retries are fast here (backoff from 0.3 s, at most 2 s) so recovery tests finish quickly. Its AWS calls
    are recorded in ``aws_calls``. Every test server listens on 127.0.0.1, so that is the allowed store
    endpoint (any port); attacks use other hosts.
    """
    config = OperatorConfig(
        provider_options={"aws_event_hooks": aws_calls.hooks()},
        kubeconfig=str(controlplane.operator_kubeconfig),
        operator_namespace=OPERATOR_NAMESPACE,  # where the harness made the operator's ServiceAccount
        workers=8,
        backoff_base=0.3,
        backoff_max=2.0,
        log_level="DEBUG",
        allowed_store_endpoints=TEST_STORE_ENDPOINTS,
        # Backend status is tests/test_backend_status.py's, whose operator must be its only writer.
        backend_status=False,
    )
    runner = OperatorRunner(config).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="session")
def kube(admin_api: k8s.ApiClient) -> Kube:
    return Kube(admin_api)


@pytest.fixture
def vault_backend(openbao: OpenBao, kube: Kube, namespace: str) -> str:
    """A SecretBackend `vault` in the test's namespace using OpenBao's KV v2 with a token (opted in)."""
    kube.create_vault_token_backend(namespace, openbao.addr, openbao.root_token)
    return "vault"


class DebugLogCapture(logging.Handler):
    """Every log record of the session, at every level, formatted with arguments and tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.lines.append(f"unformattable record from {record.name}")

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="session")
def debug_log() -> Iterator[DebugLogCapture]:
    handler = DebugLogCapture()
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


# -- the GCP and Azure test servers (the contract suite and the end-to-end tests) ----------------------


def _started_or_skipped(server: Callable[[], ServerHarness], what: str) -> Iterator[Any]:
    """The server, running for the session; the test skipped (saying which build step failed) when it
    cannot be had."""
    try:
        started = server()
    except ServerUnavailable as error:
        pytest.skip(f"{what} unavailable: {error}")
    with started:
        yield started


@pytest.fixture(scope="session")
def gcp_emulator() -> Iterator[GcpSecretManagerEmulator]:
    """The real GCP emulator."""
    yield from _started_or_skipped(GcpSecretManagerEmulator, "GCP Secret Manager emulator")


@pytest.fixture(scope="session")
def keyvault() -> Iterator[KeyVaultServer]:
    """The real lowkey-vault."""
    yield from _started_or_skipped(KeyVaultServer, "lowkey-vault")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1, for OpenBao's database engine."""
    yield from _started_or_skipped(PostgresServer, "PostgreSQL")
