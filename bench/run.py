"""`make bench`: how fast and how lean the operator is, against the real local control plane and OpenBao.

Every figure comes from one run on this machine, so ratios compare like with like. The operator runs as a
separate process (`managed-secrets run`), as in a cluster; its CPU and memory are read from /proc, its
writes and provider calls from its own Prometheus metrics. Results: a table on stdout and a JSON file.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from prometheus_client.parser import text_string_to_metric_families

from managed_secrets.api import ALLOWED_BACKENDS_ANNOTATION as ALLOWED_BACKENDS
from managed_secrets.api import GROUP, VERSION

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness.controlplane import DEFAULT_CRD_DIR, ControlPlane, free_port  # noqa: E402
from harness.openbao import OpenBao  # noqa: E402
from harness.postgres import PostgresServer  # noqa: E402

CLIENT_THREADS = 16
PATHS = 100
REFRESH = "60s"
PROFILE_DIR: Path | None = None
WORKERS = 0  # 0: the operator's default
DRIFT_DELETES = 50


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


# -- the operator process ------------------------------------------------------------------------------------


class OperatorProcess:
    def __init__(self, cp: ControlPlane, log_path: Path) -> None:
        self.cp = cp
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.cp.operator_kubeconfig)}
        argv = [
            sys.executable,
            "-m",
            "managed_secrets",
            "run",
            "--log-level",
            "WARNING",
            "--metrics-port",
            str(self.port),
            "--metrics-address",
            "127.0.0.1",
            *(["--workers", str(WORKERS)] if WORKERS else []),
            # The bench's OpenBao listens on 127.0.0.1: the one store endpoint the token may go to.
            "--allowed-store-endpoint",
            "http://127.0.0.1:*",
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.metrics()
            except OSError:
                time.sleep(0.1)
            else:
                return
        raise RuntimeError("operator metrics endpoint did not come up")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def metrics(self) -> dict[str, float]:
        """Sum of each metric's samples, and per-label sums as name{label=value}."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
                for label, value in sample.labels.items():
                    key = f"{sample.name}{{{label}={value}}}"
                    sums[key] = sums.get(key, 0.0) + sample.value
        return sums

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return process_cpu(self.proc.pid)

    def rss_mib(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB."""
        assert self.proc is not None
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(cp: ControlPlane) -> dict[str, int]:
    """PIDs of this control plane's servers, found by their work folder on the command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and str(cp.workdir).encode() in b" ".join(argv):
            found[Path(argv[0].decode()).name] = int(entry.name)
    return {
        name: pid
        for name, pid in found.items()
        if name in ("etcd", "kube-apiserver", "kube-controller-manager")
    }


class CpuMeter:
    """CPU seconds used during a phase by each server, the operator and this benchmark's own client."""

    def __init__(self, cp: ControlPlane, operator: OperatorProcess | None = None) -> None:
        self.pids = {**server_pids(cp), "bench client": os.getpid()}
        if operator is not None and operator.proc is not None:
            self.pids["operator"] = operator.proc.pid
        self.start = {name: process_cpu(pid) for name, pid in self.pids.items()}

    def used(self) -> dict[str, float]:
        return {name: round(process_cpu(pid) - self.start[name], 2) for name, pid in self.pids.items()}


def counter(metrics: dict[str, float], name: str) -> float:
    return metrics.get(name, 0.0)


def writes(metrics: dict[str, float]) -> dict[str, float]:
    return {
        "secret": counter(metrics, "managedsecrets_secret_writes_total"),
        "status": counter(metrics, "managedsecrets_status_writes_total"),
        "restarts": counter(metrics, "managedsecrets_workload_restarts_total"),
        "provider_calls": counter(metrics, "managedsecrets_provider_calls_total"),
        "provider_keys": counter(metrics, "managedsecrets_provider_keys_fetched_total"),
        "syncs_ok": counter(metrics, "managedsecrets_syncs_total{result=success}"),
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


# -- cluster helpers -----------------------------------------------------------------------------------------


def parallel(fn: Callable[[int], Any], count: int, threads: int = CLIENT_THREADS) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, range(count)):
            pass


class ReadyTracker:
    """Watches the ManagedSecrets of a namespace and notes when `expected` of them are Ready=True."""

    def __init__(self, api: k8s.ApiClient, namespace: str, expected: int) -> None:
        # A client of its own: a watch must not share a connection pool with the load generator.
        self.custom = k8s.CustomObjectsApi(k8s.ApiClient(api.configuration))
        self.namespace, self.expected = namespace, expected
        self.ready: set[str] = set()
        self.done = threading.Event()
        self.done_at: float | None = None
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        version = None
        while not self._stop:
            try:
                version = self._watch(version)
            except Exception as error:
                log(f"watch interrupted ({type(error).__name__}); resuming")
                version = None

    def _watch(self, version: str | None) -> str | None:
        stream = watch.Watch()
        for event in stream.stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "managedsecrets",
            timeout_seconds=60,
            resource_version=version,
        ):
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            name = obj["metadata"]["name"]
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                self.ready.add(name)
            else:
                self.ready.discard(name)
            if len(self.ready) >= self.expected and not self.done.is_set():
                self.done_at = time.monotonic()
                self.done.set()
            if self._stop:
                stream.stop()
        return version

    def wait(self, timeout: float) -> float:
        if not self.done.wait(timeout):
            raise RuntimeError(f"only {len(self.ready)}/{self.expected} Ready after {timeout}s")
        self._stop = True
        assert self.done_at is not None
        return self.done_at


def expected_data(index: int) -> dict[str, str]:
    path = index % PATHS
    return {f"k{j}": f"value-{path}-{j}" for j in range(3)}


def verify_secrets(core: k8s.CoreV1Api, namespace: str, count: int) -> None:
    found: dict[str, dict[str, str]] = {}
    token = None
    while True:
        page = core.list_namespaced_secret(
            namespace, label_selector="managedsecrets.io/managed=true", limit=500, _continue=token
        )
        for secret in page.items:
            found[secret.metadata.name] = {
                k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()
            }
        token = page.metadata._continue  # noqa: SLF001
        if not token:
            break
    wrong = [i for i in range(count) if found.get(f"ms-{i}") != expected_data(i)]
    if wrong:
        raise RuntimeError(f"{len(wrong)} Secrets are missing or wrong, e.g. ms-{wrong[0]}")


# -- the scenarios -------------------------------------------------------------------------------------------


def raw_floor(core: k8s.CoreV1Api, namespace: str, count: int) -> float:
    core.create_namespace({"metadata": {"name": namespace}})
    started = time.monotonic()
    parallel(
        lambda i: core.create_namespaced_secret(
            namespace, {"metadata": {"name": f"s-{i}"}, "stringData": expected_data(i)}
        ),
        count,
    )
    return time.monotonic() - started


def manifest(namespace: str, index: int) -> dict[str, Any]:
    path = f"bench/p{index % PATHS}"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ManagedSecret",
        "metadata": {"name": f"ms-{index}", "namespace": namespace},
        "spec": {
            "backendRef": {"name": "vault"},
            "refreshInterval": REFRESH,
            "data": [
                {"secretKey": f"k{j}", "remoteRef": {"key": path, "property": f"k{j}"}} for j in range(3)
            ],
        },
    }


def run_size(
    cp: ControlPlane,
    bao: OpenBao,
    api: k8s.ApiClient,
    count: int,
    workdir: Path,
    rotations: int,
    unrelated: int,
) -> dict[str, Any]:
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    result: dict[str, Any] = {"n": count}
    log(f"N={count}: raw floor (plain client, {CLIENT_THREADS} threads, {count} Secrets)")
    meter = CpuMeter(cp)
    result["raw_floor_s"] = raw_floor(core, f"floor-{count}", count)
    result["raw_floor_cpu_s"] = meter.used()
    operator = OperatorProcess(cp, workdir / f"operator-{count}.log")
    try:
        existing_start(cp, bao, api, operator, count, result)
        namespace = f"bench-{count}"
        create_backend(core, custom, bao, namespace)
        operator.start()
        return measure(cp, bao, api, operator, namespace, count, rotations, unrelated, result)
    finally:
        operator.stop()


def create_backend(core: k8s.CoreV1Api, custom: k8s.CustomObjectsApi, bao: OpenBao, namespace: str) -> None:
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_secret(
        namespace,
        {
            # Opted in for the SecretBackend below (docs/security.md).
            "metadata": {"name": "vault-token", "annotations": {ALLOWED_BACKENDS: "SecretBackend/vault"}},
            "stringData": {"token": bao.root_token},
        },
    )
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "secretbackends",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SecretBackend",
            "metadata": {"name": "vault"},
            "spec": {
                "vault": {
                    "server": bao.addr,
                    "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
                }
            },
        },
    )


def existing_start(
    cp: ControlPlane,
    bao: OpenBao,
    api: k8s.ApiClient,
    operator: OperatorProcess,
    count: int,
    result: dict[str, Any],
) -> None:
    """Input floor (creating N ManagedSecrets, no operator), then the operator's start with all N waiting."""
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    namespace = f"start-{count}"
    create_backend(core, custom, bao, namespace)
    log(f"N={count}: input floor (plain client creates {count} ManagedSecrets, no operator running)")
    started, meter = time.monotonic(), CpuMeter(cp)
    parallel(
        lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "managedsecrets", manifest(namespace, i)
        ),
        count,
    )
    result["input_floor_s"] = time.monotonic() - started
    result["input_floor_cpu_s"] = meter.used()
    log(f"N={count}: operator start with {count} ManagedSecrets waiting")
    tracker = ReadyTracker(api, namespace, count)
    started = time.monotonic()
    operator.start()
    meter = CpuMeter(cp, operator)
    done_at = tracker.wait(600)
    verify_secrets(core, namespace, count)
    elapsed = done_at - started
    result["existing_start"] = {
        "seconds": elapsed,
        "per_second": count / elapsed,
        "ratio_to_floor": elapsed / result["raw_floor_s"],
        "cpu_by_process_s": meter.used(),
        **writes(operator.metrics()),
    }
    operator.stop()
    core.delete_namespace(namespace)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(
        ns.metadata.name == namespace for ns in core.list_namespace().items
    ):
        time.sleep(1)  # gone before the next phase, so its deletion does not compete for CPU


def measure(
    cp: ControlPlane,
    bao: OpenBao,
    api: k8s.ApiClient,
    operator: OperatorProcess,
    namespace: str,
    count: int,
    rotations: int,
    unrelated: int,
    result: dict[str, Any],
) -> dict[str, Any]:
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    time.sleep(1)
    result["idle_rss_mib"] = operator.rss_mib()[0]

    log(f"N={count}: cold sync")
    tracker = ReadyTracker(api, namespace, count)
    before, cpu0 = writes(operator.metrics()), operator.cpu_seconds()
    meter = CpuMeter(cp, operator)
    profiler = None
    if PROFILE_DIR is not None:
        assert operator.proc is not None
        profiler = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--gil",
                "--format",
                "raw",
                "--rate",
                "100",
                "--pid",
                str(operator.proc.pid),
                "-o",
                str(PROFILE_DIR / f"cold-{count}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
    started = time.monotonic()
    parallel(
        lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "managedsecrets", manifest(namespace, i)
        ),
        count,
    )
    created = time.monotonic() - started
    done_at = tracker.wait(600)
    cold = done_at - started
    if profiler is not None:
        profiler.send_signal(2)
        profiler.wait(30)
    verify_secrets(core, namespace, count)
    result["cold"] = {
        "seconds": cold,
        "create_calls_s": created,
        "per_second": count / cold,
        "ratio_to_floor": cold / result["raw_floor_s"],
        "ratio_to_input_floor": cold / result["input_floor_s"],
        "cpu_by_process_s": meter.used(),
        "cpu_s": operator.cpu_seconds() - cpu0,
        **delta(writes(operator.metrics()), before),
    }
    result["rss_after_cold_mib"], result["peak_rss_mib"] = operator.rss_mib()

    log(f"N={count}: operator restart with everything in sync")
    result["restart"] = restart(operator, count)
    result["rss_after_restart_mib"] = operator.rss_mib()[0]

    log(f"N={count}: one steady refresh cycle ({REFRESH})")
    before, cpu0, started = writes(operator.metrics()), operator.cpu_seconds(), time.monotonic()
    deadline = started + 120
    while writes(operator.metrics())["syncs_ok"] - before["syncs_ok"] < count and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    result["steady"] = {
        "seconds": time.monotonic() - started,
        "cpu_s": operator.cpu_seconds() - cpu0,
        "distinct_keys": PATHS,
        **delta(writes(operator.metrics()), before),
    }
    result["rss_steady_mib"] = operator.rss_mib()[0]

    log(f"N={count}: rotation latency with force-sync ({rotations} rotations)")
    result["rotation"] = rotation_latency(bao, core, custom, namespace, rotations)

    deleted = min(DRIFT_DELETES, count)
    log(f"N={count}: drift: {deleted} managed Secrets deleted by hand at once, until all are back")
    before = writes(operator.metrics())
    result["drift"] = {**drift_repair(core, namespace, deleted), **delta(writes(operator.metrics()), before)}

    if unrelated:
        log(f"N={count}: {unrelated} unrelated 10 KiB Secrets, then restart and compare memory")
        noise = "unrelated"
        core.create_namespace({"metadata": {"name": noise}})
        blob = base64.b64encode(os.urandom(10 * 1024 * 3 // 4)).decode()
        parallel(
            lambda i: core.create_namespaced_secret(
                noise, {"metadata": {"name": f"u-{i}"}, "data": {"blob": blob}}
            ),
            unrelated,
        )
        result["restart_with_unrelated"] = restart(operator, count)
        result["rss_with_unrelated_mib"] = operator.rss_mib()[0]
        result["unrelated_delta_mib"] = result["rss_with_unrelated_mib"] - result["rss_after_restart_mib"]
    # The next size starts from an empty cluster: delete this size's objects and wait until they are gone.
    for ns in (namespace, f"floor-{count}", "unrelated"):
        try:
            core.delete_namespace(ns)
        except k8s.ApiException:
            continue
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(
        ns.metadata.name in (namespace, f"floor-{count}", "unrelated") for ns in core.list_namespace().items
    ):
        time.sleep(1)
    return result


def restart(operator: OperatorProcess, count: int) -> dict[str, float]:
    operator.stop()
    started = time.monotonic()
    operator.start()
    cpu0 = operator.cpu_seconds()
    while writes(operator.metrics())["syncs_ok"] < count:
        if time.monotonic() - started > 600:
            raise RuntimeError("restart re-verification did not finish")
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    time.sleep(1)  # anything written late would show here
    return {"seconds": elapsed, "cpu_s": operator.cpu_seconds() - cpu0, **writes(operator.metrics())}


def rotation_latency(
    bao: OpenBao, core: k8s.CoreV1Api, custom: k8s.CustomObjectsApi, namespace: str, rotations: int
) -> dict[str, float]:
    kv = bao.client().secrets.kv.v2
    kv.create_or_update_secret(path="bench/rot", secret={"v": "0"}, mount_point="secret")
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "managedsecrets",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ManagedSecret",
            "metadata": {"name": "rot"},
            "spec": {
                "backendRef": {"name": "vault"},
                "refreshInterval": "1h",
                "data": [{"secretKey": "v", "remoteRef": {"key": "bench/rot", "property": "v"}}],
            },
        },
    )
    wait_value(core, namespace, "0", 30)
    samples = []
    for i in range(1, rotations + 1):
        kv.create_or_update_secret(path="bench/rot", secret={"v": str(i)}, mount_point="secret")
        started = time.monotonic()
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "managedsecrets",
            "rot",
            {"metadata": {"annotations": {"managedsecrets.io/force-sync": str(i)}}},
        )
        wait_value(core, namespace, str(i), 30)
        samples.append(time.monotonic() - started)
    samples.sort()
    return {
        "count": len(samples),
        "p50_s": statistics.median(samples),
        "p99_s": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "max_s": samples[-1],
    }


def drift_repair(core: k8s.CoreV1Api, namespace: str, deleted: int) -> dict[str, float]:
    """Delete ``deleted`` managed Secrets by hand; seconds until every one is back with its data."""
    started = time.monotonic()
    parallel(lambda i: core.delete_namespaced_secret(f"ms-{i}", namespace), deleted)
    deadline = started + 120
    missing = set(range(deleted))
    while missing and time.monotonic() < deadline:
        for i in list(missing):
            try:
                secret = core.read_namespaced_secret(f"ms-{i}", namespace)
            except k8s.ApiException:
                continue
            if {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()} == expected_data(i):
                missing.discard(i)
        time.sleep(0.05)
    if missing:
        raise RuntimeError(f"{len(missing)} deleted Secrets did not come back")
    time.sleep(1)  # let the repairs' status writes and their echoes settle
    return {"deleted": deleted, "seconds": time.monotonic() - started - 1}


def wait_value(core: k8s.CoreV1Api, namespace: str, value: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            secret = core.read_namespaced_secret("rot", namespace)
            if base64.b64decode((secret.data or {}).get("v", "")).decode() == value:
                return
        except k8s.ApiException:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"rotation to {value} not seen in {timeout}s")


# -- report --------------------------------------------------------------------------------------------------


# -- dynamic secrets: the renewal load -----------------------------------------------------------------------

#: The leases' duration: renewed at about two thirds of it.
LEASE_TTL = "90s"
LEASE_WINDOW = 180.0


def lease_counts(operator: OperatorProcess) -> dict[str, float]:
    metrics = operator.metrics()
    return {
        op: counter(metrics, f"managedsecrets_lease_operations_total{{operation={op}}}")
        for op in ("issue", "renew", "revoke")
    }


def lease_window(operator: OperatorProcess, seconds: float) -> dict[str, float]:
    """Lease calls over ``seconds``, sampled each second: per minute, and the busiest second's renewals."""
    first = previous = lease_counts(operator)
    busiest = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        now = lease_counts(operator)
        busiest = max(busiest, now["renew"] - previous["renew"])
        previous = now
    calls = delta(previous, first)
    return {
        "renew_per_min": calls["renew"] * 60 / seconds,
        "issue": calls["issue"],
        "revoke": calls["revoke"],
        "busiest_second_renewals": busiest,
    }


def dynamic_manifest(namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ManagedSecret",
        "metadata": {"name": f"db-{index}", "namespace": namespace},
        "spec": {
            "backendRef": {"name": "vault"},
            "refreshInterval": "1h",
            "dynamic": {"path": "database/creds/app"},
        },
    }


def run_leases(
    cp: ControlPlane, bao: OpenBao, api: k8s.ApiClient, count: int, workdir: Path
) -> dict[str, Any]:
    """``count`` dynamic ManagedSecrets on OpenBao's database engine (a real PostgreSQL), leases of
    LEASE_TTL: the OpenBao calls per minute in steady state, and in the window after an operator restart
    (issues must stay 0, renewals spread as before)."""
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    result: dict[str, Any] = {"n": count, "lease_ttl": LEASE_TTL}
    with PostgresServer() as postgres:
        client = bao.client()
        client.sys.enable_secrets_engine("database", path="database")
        client.write(
            "database/config/pg",
            plugin_name="postgresql-database-plugin",
            connection_url=postgres.connection_url,
            username=postgres.ADMIN,
            password=postgres.admin_password,
            allowed_roles="app",
        )
        client.write(
            "database/roles/app",
            db_name="pg",
            creation_statements=["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';"],
            default_ttl=LEASE_TTL,
            max_ttl="24h",
        )
        namespace = f"leases-{count}"
        create_backend(core, custom, bao, namespace)
        operator = OperatorProcess(cp, workdir / f"operator-leases-{count}.log")
        operator.start()
        try:
            log(f"leases N={count}: creating {count} dynamic ManagedSecrets")
            tracker = ReadyTracker(api, namespace, count)
            started = time.monotonic()
            parallel(
                lambda i: custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "managedsecrets", dynamic_manifest(namespace, i)
                ),
                count,
            )
            tracker.wait(900)
            result["cold_sync_s"] = time.monotonic() - started
            result["issued"] = lease_counts(operator)["issue"]
            log(f"leases N={count}: steady state, {LEASE_WINDOW:.0f} s")
            meter = CpuMeter(cp, operator)
            result["steady"] = {**lease_window(operator, LEASE_WINDOW), "cpu_by_process_s": meter.used()}
            log(f"leases N={count}: operator restart, then {LEASE_WINDOW:.0f} s")
            operator.stop()
            operator.start()
            result["after_restart"] = lease_window(operator, LEASE_WINDOW)
            result["after_restart"]["secret_writes"] = writes(operator.metrics())["secret"]
        finally:
            operator.stop()
            core.delete_namespace(namespace)
    return result


def lease_table(result: dict[str, Any]) -> str:
    steady, after = result["steady"], result["after_restart"]
    head = f"dynamic leases: N={result['n']}, lease {result['lease_ttl']}, cold sync {result['cold_sync_s']:.1f}s"
    lines = [f"{head} ({result['issued']:.0f} issued)"]
    for name, window in (("steady:       ", steady), ("after restart:", after)):
        line = (
            f"  {name} {window['renew_per_min']:.0f} renewals/min, busiest second"
            f" {window['busiest_second_renewals']:.0f}, {window['issue']:.0f} issued"
        )
        lines.append(line)
    lines.append(
        f"  Secret writes after the restart: {after['secret_writes']:.0f} (renewals write the lease annotation)"
    )
    return "\n".join(lines)


def table(results: Iterable[dict[str, Any]]) -> str:
    rows = [
        (
            "N",
            "raw floor",
            "input floor",
            "start, N waiting",
            "x floor",
            "cold sync (created at once)",
            "obj/s",
            "x floor",
            "x input floor",
            "restart",
            "restart writes",
            "steady writes (secret/status)",
            "steady provider keys",
            "steady CPU s",
            "rotation p50/p99",
            "drift: deleted, all back in (store keys)",
            "RSS MiB",
            "+10k unrelated",
        )
    ]
    for r in results:
        rows.append(
            (
                str(r["n"]),
                f"{r['raw_floor_s']:.1f}s",
                f"{r['input_floor_s']:.1f}s",
                f"{r['existing_start']['seconds']:.1f}s",
                f"{r['existing_start']['ratio_to_floor']:.2f}",
                f"{r['cold']['seconds']:.1f}s",
                f"{r['cold']['per_second']:.0f}",
                f"{r['cold']['ratio_to_floor']:.2f}",
                f"{r['cold']['ratio_to_input_floor']:.2f}",
                f"{r['restart']['seconds']:.1f}s",
                f"{r['restart']['secret']:.0f}/{r['restart']['status']:.0f}",
                f"{r['steady']['secret']:.0f}/{r['steady']['status']:.0f}",
                f"{r['steady']['provider_keys']:.0f} (distinct {r['steady']['distinct_keys']})",
                f"{r['steady']['cpu_s']:.1f}",
                f"{r['rotation']['p50_s'] * 1000:.0f}/{r['rotation']['p99_s'] * 1000:.0f} ms",
                f"{r['drift']['deleted']} in {r['drift']['seconds']:.1f}s ({r['drift']['provider_keys']:.0f})",
                f"{r['rss_steady_mib']:.0f} (peak {r['peak_rss_mib']:.0f})",
                f"{r['unrelated_delta_mib']:+.1f} MiB" if "unrelated_delta_mib" in r else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-|-".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="500,2000")
    parser.add_argument("--rotations", type=int, default=50)
    parser.add_argument(
        "--unrelated",
        type=int,
        default=10000,
        help="unrelated Secrets for the memory test (at the largest N)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--workers", type=int, default=0, help="operator --workers (default: its own default)"
    )
    parser.add_argument("--profile", help="folder for py-spy profiles of the operator during cold sync")
    parser.add_argument(
        "--leases", type=int, default=2000, help="dynamic ManagedSecrets for the renewal-load phase (0: skip)"
    )
    args = parser.parse_args()
    global PROFILE_DIR, WORKERS  # noqa: PLW0603 - command-line switches
    PROFILE_DIR = Path(args.profile) if args.profile else None
    WORKERS = args.workers
    if PROFILE_DIR is not None:
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with ControlPlane(crd_dir=DEFAULT_CRD_DIR) as cp, OpenBao() as bao:
        cp.apply_operator_rbac()
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(cp.admin_kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = CLIENT_THREADS * 2
        api = k8s.ApiClient(configuration)
        kv = bao.client().secrets.kv.v2
        for p in range(PATHS):
            kv.create_or_update_secret(
                path=f"bench/p{p}", secret={f"k{j}": f"value-{p}-{j}" for j in range(3)}, mount_point="secret"
            )
        for count in sizes:
            results.append(
                run_size(
                    cp,
                    bao,
                    api,
                    count,
                    Path(cp.workdir),
                    args.rotations,
                    args.unrelated if count == max(sizes) else 0,
                )
            )
        leases = run_leases(cp, bao, api, args.leases, Path(cp.workdir)) if args.leases else None
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "kube_apiserver": "v1.36.3 (local, etcd --unsafe-no-fsync)",
        "results": results,
        "leases": leases,
    }
    path = out_dir / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(report, indent=2))
    print()
    if results:
        print(table(results))
    if leases is not None:
        print(lease_table(leases))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
