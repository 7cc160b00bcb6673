"""A real Kubernetes control plane for integration tests: etcd + kube-apiserver + kube-controller-manager.

Everything runs as local processes bound to 127.0.0.1 on free ports, with certificates, tokens and
kubeconfigs generated into a temporary folder. No kubelet runs, so pods stay Pending, but everything the
operator talks to is the real thing: CRD validation, status subresource, server-side apply, RBAC,
TokenRequest/TokenReview, garbage collection of owned objects, Deployment -> ReplicaSet rollouts and
namespace deletion.

Usage::

    with ControlPlane(crd_dir=REPO_ROOT / "crds") as cp:
        cp.apply_operator_rbac()
        cp.kubectl("get", "namespaces")
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime as dt
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-testbins.sh"
DEFAULT_CRD_DIR = REPO_ROOT / "crds"
RBAC_RULES_FILE = REPO_ROOT / "charts" / "managed-secrets" / "files" / "rbac-rules.yaml"

OPERATOR_NAMESPACE = "managed-secrets-system"
OPERATOR_SERVICE_ACCOUNT = "managed-secrets"
OPERATOR_USERNAME = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
OPERATOR_GROUPS = (
    "system:serviceaccounts",
    f"system:serviceaccounts:{OPERATOR_NAMESPACE}",
    "system:authenticated",
)
ADMIN_USERNAME = "test-admin"
ADMIN_GROUPS = ("system:masters", "system:authenticated")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
API_AUDIENCE = "https://kubernetes.default.svc"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

# The operator's least-privilege rules; written to RBAC_RULES_FILE when the chart does not ship it yet.
DEFAULT_RBAC_RULES = """\
# Least-privilege RBAC rules of the managed-secrets operator (a list of rbac.authorization.k8s.io/v1
# PolicyRules). The Helm chart's ClusterRole and the integration tests (tests/harness/controlplane.py)
# both read this file, so the tests run the operator with exactly the permissions it ships with.
- apiGroups: ["managedsecrets.io"]
  resources: ["managedsecrets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["managedsecrets.io"]
  resources: ["managedsecrets/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["managedsecrets.io"]
  resources: ["secretbackends", "clustersecretbackends"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
"""

LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 5.0

T = TypeVar("T")


class HarnessError(RuntimeError):
    """A test server could not be built, started or driven."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; str() carries its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


# ---------------------------------------------------------------------------------------------------
# Helpers shared with harness.openbao
# ---------------------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all sockets held open until every port is picked)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def find_executable(name: str) -> Path:
    """A console script of this venv (next to sys.executable), else one on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found is None:
        raise HarnessError(f"{name!r} not found next to {sys.executable} nor on PATH")
    return Path(found)


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str,
    alive: Callable[[], str | None] | None = None,
) -> T:
    """Poll ``probe`` until it returns something other than None/False.

    ``alive`` returns an error text when a process the wait depends on has died, which ends the wait early.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except Exception as exc:  # the probe's error is reported if the wait times out
            last_error = exc
            result = None
        if result is not None and result is not False:
            return result
        if alive is not None and (dead := alive()) is not None:
            raise HarnessError(f"while waiting for {what}: {dead}")
        if time.monotonic() >= deadline:
            raise HarnessError(
                f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})"
            )
        time.sleep(interval)


_LIBC: Any = None
with contextlib.suppress(OSError):
    _LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess:
    """One server process whose stdout+stderr go to a log file."""

    def __init__(
        self, name: str, argv: Sequence[str | Path], log_path: Path, env: Mapping[str, str] | None = None
    ):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        # Tie the server's lifetime to this process (SIGKILL if the test runner dies without cleanup).
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only do it from the main thread.
        on_main_thread = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent if on_main_thread else None,  # noqa: PLW1509 - only prctl()
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_problem(self) -> str | None:
        """An error text when the process has exited, for wait_until(alive=...)."""
        if self.proc is not None and self.proc.poll() is not None:
            return f"{self.name} exited with code {self.proc.returncode}"
        return None

    def signal_stop(self) -> None:
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            self.proc = None
            if self._log is not None:
                self._log.close()
                self._log = None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self.signal_stop()
        self.wait_stopped(time.monotonic() + grace)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return (
            f"===== {self.name} ({self.log_path}), last {lines} lines =====\n{log_tail(self.log_path, lines)}"
        )


# ---------------------------------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------------------------------

_BUILD_RESULT: Path | HarnessError | None = None


def build_testbins(on_slow: Callable[[str], None] | None = None) -> Path:
    """The folder with etcd, kube-apiserver and kube-controller-manager (hack/build-testbins.sh).

    The script returns at once when the binaries are cached; a cold build takes several minutes. Runs
    under a machine-wide lock so concurrent test sessions never build twice at the same time. The result
    (or failure) is remembered for the rest of the process. ``on_slow(message)`` is called once if the
    script has not finished after 2 s. The env var MANAGED_SECRETS_TESTBIN overrides the folder.
    """
    global _BUILD_RESULT  # noqa: PLW0603 - one build per process
    override = os.environ.get("MANAGED_SECRETS_TESTBIN")
    if override:
        return Path(override)
    if _BUILD_RESULT is None:
        _BUILD_RESULT = _run_build_script(on_slow)
    if isinstance(_BUILD_RESULT, HarnessError):
        raise _BUILD_RESULT
    return _BUILD_RESULT


def run_build_script(script: Path, what: str, on_slow: Callable[[str], None] | None) -> tuple[int, str, Path]:
    """Runs a hack/ build script, one per machine at a time (concurrent sessions wait, then find its
    cached output): its exit code, its stdout and the log holding its stderr. ``on_slow`` hears ``what``
    once the script takes more than two seconds (a first build)."""
    tmp = Path(tempfile.gettempdir())
    log_path = tmp / f"managed-secrets-{script.stem}.log"
    with (tmp / f"managed-secrets-{script.stem}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                ["bash", str(script)], stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT
            )
            try:
                stdout, _ = proc.communicate(timeout=2)
            except subprocess.TimeoutExpired:
                if on_slow is not None:
                    on_slow(f"{what} with {script.name} (a first build takes minutes; log: {log_path})")
                stdout, _ = proc.communicate()
    return proc.returncode, stdout, log_path


def _run_build_script(on_slow: Callable[[str], None] | None) -> Path | HarnessError:
    returncode, stdout, log_path = run_build_script(
        BUILD_SCRIPT, "building the control-plane binaries", on_slow
    )
    if returncode != 0:
        return HarnessError(
            f"{BUILD_SCRIPT} failed with code {returncode}; last lines of {log_path}:\n{log_tail(log_path)}"
        )
    lines = stdout.strip().splitlines()
    bin_dir = Path(lines[-1]) if lines else Path()
    missing = [
        n for n in ("etcd", "kube-apiserver", "kube-controller-manager") if not (bin_dir / n).is_file()
    ]
    if missing:
        return HarnessError(f"{BUILD_SCRIPT} printed {str(bin_dir)!r}, which lacks {', '.join(missing)}")
    return bin_dir


# ---------------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------------


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def generate_pki(directory: Path) -> dict[str, Path]:
    """CA, serving cert for 127.0.0.1/localhost/kubernetes.default.svc, and the service-account key pair."""
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=7)

    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "managed-secrets-test-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    serving_key = _new_key()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),  # first IP of the service range
    ]
    serving_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(serving_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    sa_key = _new_key()
    files = {
        "ca_cert": directory / "ca.crt",
        "ca_key": directory / "ca.key",
        "serving_cert": directory / "apiserver.crt",
        "serving_key": directory / "apiserver.key",
        "sa_key": directory / "sa.key",
        "sa_pub": directory / "sa.pub",
    }
    files["ca_cert"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["ca_key"].write_bytes(_pem_key(ca_key))
    files["serving_cert"].write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
    files["serving_key"].write_bytes(_pem_key(serving_key))
    files["sa_key"].write_bytes(_pem_key(sa_key))
    files["sa_pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for key_file in ("ca_key", "serving_key", "sa_key"):
        files[key_file].chmod(0o600)
    return files


# ---------------------------------------------------------------------------------------------------
# The control plane
# ---------------------------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

    Attributes after ``start()``: url, ca_file, ca_pem, admin_token, operator_token, admin_kubeconfig,
    operator_kubeconfig, bin_dir, workdir, startup_seconds.
    """

    url: str
    ca_file: Path
    admin_kubeconfig: Path
    operator_kubeconfig: Path
    bin_dir: Path
    workdir: Path
    startup_seconds: float

    def __init__(
        self,
        *,
        crd_dir: Path | str | None = None,
        start_timeout: float = 180.0,
        keep_workdir: bool | None = None,
    ) -> None:
        """``crd_dir``: CRDs applied after the apiserver is ready and *before* kube-controller-manager
        starts, so the garbage collector knows the custom resources from its first discovery (it re-reads
        discovery only every 30 s). ``keep_workdir`` (default: env MANAGED_SECRETS_KEEP_TESTDIR) keeps
        the temp folder with the logs after stop().
        """
        self.crd_dir = Path(crd_dir) if crd_dir is not None else None
        self.start_timeout = start_timeout
        if keep_workdir is None:
            keep_workdir = os.environ.get("MANAGED_SECRETS_KEEP_TESTDIR", "") not in ("", "0")
        self.keep_workdir = keep_workdir
        self.admin_token = secrets.token_urlsafe(32)
        self.operator_token = secrets.token_urlsafe(32)
        self.kubectl_path = find_executable("kubectl")
        self._servers: list[ServerProcess] = []
        self._started = False
        self._workdir_created = False

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self._started:
            raise HarnessError("ControlPlane already started")
        self.bin_dir = build_testbins()
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-cp-"))
        self._workdir_created = True
        self._started = True
        atexit.register(self.stop)
        try:
            self._start_servers()
        except BaseException as exc:
            tails = "\n".join(server.tail() for server in self._servers)
            print(f"ControlPlane failed to start (workdir {self.workdir}):\n{tails}", file=sys.stderr)
            self.keep_workdir = True  # leave the logs for a post-mortem
            self.stop()
            if isinstance(exc, HarnessError):
                raise HarnessError(f"{exc}\n{tails}") from exc
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop all servers (SIGTERM, SIGKILL after a few seconds); safe to call twice or after a failure."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        # One at a time in reverse start order: the apiserver shuts down cleanly while etcd still runs.
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()
        if self._workdir_created and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self._workdir_created:
            print(f"ControlPlane: kept {self.workdir}", file=sys.stderr)

    @property
    def running(self) -> bool:
        return self._started and all(server.running for server in self._servers)

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of each server, by name (etcd, kube-apiserver, kube-controller-manager)."""
        return {server.name: server.log_path for server in self._servers}

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(server.tail(lines) for server in self._servers)

    # -- start-up steps --------------------------------------------------------------------------------

    def _start_servers(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        etcd_client, etcd_peer, apiserver_port, kcm_port = free_ports(4)
        self.url = f"https://127.0.0.1:{apiserver_port}"
        pki = generate_pki(self.workdir)
        self.ca_file = pki["ca_cert"]

        token_file = self.workdir / "tokens.csv"
        token_file.write_text(
            f'{self.admin_token},{ADMIN_USERNAME},test-admin-uid,"{",".join(ADMIN_GROUPS)}"\n'
            f'{self.operator_token},{OPERATOR_USERNAME},managed-secrets-operator-uid,"{",".join(OPERATOR_GROUPS)}"\n'
        )
        token_file.chmod(0o600)
        self.admin_kubeconfig = self.write_kubeconfig(
            self.workdir / "admin.kubeconfig", "admin", self.admin_token
        )
        self.operator_kubeconfig = self.write_kubeconfig(
            self.workdir / "operator.kubeconfig", "managed-secrets", self.operator_token
        )

        # etcd
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        etcd = self._add_server(
            "etcd",
            [
                self.bin_dir / "etcd",
                "--name=default",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_until(
            lambda: self._http_ok(f"{etcd_url}/health"),
            timeout=max(1.0, deadline - time.monotonic()),
            what="etcd /health",
            alive=etcd.exit_problem,
        )

        # kube-apiserver
        apiserver = self._add_server(
            "kube-apiserver",
            [
                self.bin_dir / "kube-apiserver",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={apiserver_port}",
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki['serving_cert']}",
                f"--tls-private-key-file={pki['serving_key']}",
                f"--client-ca-file={pki['ca_cert']}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki['sa_pub']}",
                f"--service-account-signing-key-file={pki['sa_key']}",
                f"--api-audiences={API_AUDIENCE}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={token_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # No kubelet, no token volume projection needed; pods need no "default" ServiceAccount.
                "--disable-admission-plugins=ServiceAccount",
                # The endpoints of the "kubernetes" Service would be 127.0.0.1, which validation rejects.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until(
            lambda: self._http_ok(f"{self.url}/readyz", token=self.admin_token),
            timeout=max(1.0, deadline - time.monotonic()),
            interval=0.5,
            what="kube-apiserver /readyz",
            alive=apiserver.exit_problem,
        )

        if self.crd_dir is not None:
            self.apply_crds(self.crd_dir)

        # kube-controller-manager
        kcm = self._add_server(
            "kube-controller-manager",
            [
                self.bin_dir / "kube-controller-manager",
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--authentication-kubeconfig={self.admin_kubeconfig}",
                f"--authorization-kubeconfig={self.admin_kubeconfig}",
                # The apiserver has no request-header CA; don't look it up (avoids an error every second).
                "--authentication-skip-lookup=true",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                # Everything on by default except the cloud-provider ones (no cloud here).
                "--controllers=*,-cloud-node-lifecycle-controller,-node-route-controller,-service-lb-controller",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki['sa_key']}",
                f"--root-ca-file={pki['ca_cert']}",
                f"--cluster-signing-cert-file={pki['ca_cert']}",
                f"--cluster-signing-key-file={pki['ca_key']}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until(
            lambda: self._http_ok(f"https://127.0.0.1:{kcm_port}/healthz", verify=False),
            timeout=max(1.0, deadline - time.monotonic()),
            interval=0.5,
            what="kube-controller-manager /healthz",
            alive=kcm.exit_problem,
        )

    def _add_server(self, name: str, argv: Sequence[str | Path]) -> ServerProcess:
        server = ServerProcess(name, argv, self.workdir / f"{name}.log")
        self._servers.append(server)
        server.start()
        return server

    def _http_ok(self, url: str, *, token: str | None = None, verify: bool = True) -> bool:
        if url.startswith("https://"):
            if verify:
                context = ssl.create_default_context(cafile=str(self.ca_file))
            else:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        else:
            context = None
        request = urllib.request.Request(url)  # noqa: S310 - http(s) URLs built above
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def write_kubeconfig(self, path: Path, user: str, token: str, namespace: str = "default") -> Path:
        """Write a kubeconfig for a bearer token (the CA is embedded); used for admin and operator."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": user, "context": {"cluster": "test", "user": user, "namespace": namespace}}
            ],
            "current-context": user,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # -- kubectl and setup helpers ------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | str | None = None,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (admin kubeconfig unless given); raises KubectlError."""
        env = {**os.environ, "KUBECACHEDIR": str(self.workdir / "kubectl-cache")}
        env.pop("KUBECONFIG", None)
        argv = [str(self.kubectl_path), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def apply(self, manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Server-side apply of YAML text or of one/several objects, as the admin."""
        if not isinstance(manifest, str):
            docs = [manifest] if isinstance(manifest, Mapping) else list(manifest)
            manifest = yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=test-harness",
            "-f",
            "-",
            input=manifest,
        )

    def apply_crds(self, path: Path | str = DEFAULT_CRD_DIR, timeout: float = 60.0) -> list[str]:
        """Apply every *.yaml/*.yml (file or folder) and wait until each CRD is Established; returns names."""
        path = Path(path)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        )
        names: list[str] = []
        for file in files:
            names += [
                doc["metadata"]["name"]
                for doc in yaml.safe_load_all(file.read_text())
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
            ]
            self.kubectl(
                "apply", "--server-side", "--force-conflicts", "--field-manager=test-harness", "-f", str(file)
            )
        if names:
            self.kubectl(
                "wait",
                "--for=condition=Established",
                f"--timeout={int(timeout)}s",
                *(f"customresourcedefinition.apiextensions.k8s.io/{name}" for name in names),
                timeout=timeout + 30,
            )
        return names

    def apply_operator_rbac(self, rules_file: Path | str = RBAC_RULES_FILE) -> list[dict[str, Any]]:
        """Namespace + ServiceAccount + ClusterRole/Binding ``managed-secrets`` with the chart's rules.

        ``operator_token``/``operator_kubeconfig`` authenticate as that ServiceAccount's username, so these
        are exactly the permissions the operator gets. Creates ``rules_file`` with DEFAULT_RBAC_RULES if
        it does not exist yet. Returns the rules.
        """
        rules_file = Path(rules_file)
        if not rules_file.exists():
            rules_file.parent.mkdir(parents=True, exist_ok=True)
            rules_file.write_text(DEFAULT_RBAC_RULES)
        rules = yaml.safe_load(rules_file.read_text())
        if not isinstance(rules, list):
            raise HarnessError(f"{rules_file} must hold a YAML list of PolicyRules")
        name = OPERATOR_SERVICE_ACCOUNT
        self.apply(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": name},
                    "rules": rules,
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NAMESPACE}],
                },
            ]
        )
        return rules

    def create_token(
        self,
        service_account: str,
        namespace: str,
        *,
        audiences: Sequence[str] = (),
        expiration_seconds: int = 3600,
    ) -> str:
        """A TokenRequest token for a ServiceAccount (created if missing)."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": service_account, "namespace": namespace},
            }
        )
        args = ["create", "token", service_account, "-n", namespace, f"--duration={expiration_seconds}s"]
        args += [f"--audience={audience}" for audience in audiences]
        return self.kubectl(*args).stdout.strip()

    def get_json(self, *args: str, kubeconfig: Path | str | None = None) -> Any:
        """``kubectl get <args> -o json`` parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig).stdout)
