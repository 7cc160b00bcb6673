"""Wiring: builds the object graph of a running operator from its configuration."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes import config as kube_config

from managed_secrets import metrics
from managed_secrets.config import OperatorConfig
from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.reconcile import Reconciler, render_owner
from managed_secrets.core.render import RenderLimits
from managed_secrets.errors import SyncError
from managed_secrets.kube.backend_status import KubeBackendStatus
from managed_secrets.kube.cluster import KubeCluster
from managed_secrets.kube.secretwatch import SecretChange, SecretWatch
from managed_secrets.kube.workloads import KubeWorkloads
from managed_secrets.providers.guard import (
    WELL_KNOWN_API_AUDIENCES,
    CredentialPolicy,
    EndpointAllowlist,
    claim_audiences,
    token_claims,
)
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.runtime.backend_status import BackendStatusReporter, BackendStatusSettings
from managed_secrets.runtime.controller import Controller, ControllerSettings
from managed_secrets.runtime.render_pool import RenderPool
from managed_secrets.runtime.rollout_stage import RolloutStage, ensure_hmac_key

log = logging.getLogger(__name__)


def make_api_client(config: OperatorConfig) -> client.ApiClient:
    configuration = client.Configuration()
    if config.kubeconfig:
        kube_config.load_kube_config(config_file=config.kubeconfig, client_configuration=configuration)
    else:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException:
            kube_config.load_kube_config(client_configuration=configuration)
    # One connection per worker thread, or urllib3 drops and reopens connections under load.
    configuration.connection_pool_maxsize = max(config.workers + 8, 16)
    return client.ApiClient(configuration)


class StartupError(Exception):
    """The operator cannot run as configured; the message says what to change."""


def verify_operator_namespace(config: OperatorConfig) -> None:
    """Read (or create) the HMAC key Secret in the operator's namespace once before starting: without it no
    workload is ever restarted, which would otherwise show only as an error per sync. StartupError if not."""
    where = f"{config.operator_namespace}/{config.hmac_key_secret}"
    try:
        api = make_api_client(config)
    except kube_config.ConfigException as error:
        raise StartupError(f"no Kubernetes configuration: {error}") from None
    try:
        ensure_hmac_key(KubeCluster(api), config.operator_namespace, config.hmac_key_secret)
    except SyncError as error:
        cause = error.message
        if not _namespace_exists(api, config.operator_namespace):
            cause = f"namespace {config.operator_namespace} does not exist"
        raise StartupError(
            f"cannot read or create the HMAC key Secret {where}: {cause}. Point --operator-namespace "
            "(or MANAGED_SECRETS_OPERATOR_NAMESPACE, POD_NAMESPACE) at an existing namespace in which the "
            "operator may get and create Secrets"
        ) from None
    finally:
        api.close()


def _namespace_exists(api: client.ApiClient, namespace: str) -> bool:
    """False only when the API server says the namespace is not there (any other answer: unknown)."""
    try:
        client.CoreV1Api(api).read_namespace(namespace)
    except client.ApiException as error:
        return bool(error.status != 404)
    except Exception:  # only used to word a message better
        return True
    return True


#: The operator's own token in a pod; its ``aud`` and ``iss`` are audiences the API server accepts.
OWN_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def credential_policy(config: OperatorConfig, own_token_file: Path = OWN_TOKEN_FILE) -> CredentialPolicy:
    """The confused-deputy guards of this operator (providers/guard.py), from its flags."""
    api_audiences = set(WELL_KNOWN_API_AUDIENCES) | set(config.api_audiences)
    try:
        claims = token_claims(own_token_file.read_text())
    except OSError:
        claims = {}  # not in a pod: the well-known audiences, the flag and the TokenReview remain
    api_audiences |= set(claim_audiences(claims))
    if isinstance(claims.get("iss"), str):
        api_audiences.add(claims["iss"])
    policy = CredentialPolicy(
        endpoints=EndpointAllowlist.from_patterns(config.allowed_store_endpoints),
        api_audiences=frozenset(api_audiences),
        operator_identity_for_secretbackends=config.allow_operator_identity_for_secretbackends,
    )
    log.info(
        "credentials go only to the public cloud endpoints and %s; tokens are never requested for %s",
        ", ".join(config.allowed_store_endpoints) or "no other store endpoint",
        ", ".join(sorted(api_audiences)),
    )
    return policy


def _once(load: Callable[[], bytes]) -> Callable[[], bytes]:
    """``load`` until it succeeds once, then its result; from any thread."""
    lock = threading.Lock()
    loaded: list[bytes] = []

    def get() -> bytes:
        with lock:
            if not loaded:
                loaded.append(load())
            return loaded[0]

    return get


@dataclass
class Runtime:
    config: OperatorConfig
    cluster: KubeCluster
    providers: ProviderPool
    reads: ReadCache
    reconciler: Reconciler
    controller: Controller
    rollouts: RolloutStage
    #: Started and stopped with the controller (handlers/operator.py).
    secret_watch: SecretWatch
    renderer: RenderPool
    #: The Ready condition of the backends (started and stopped with the controller).
    backend_status: BackendStatusReporter

    async def stop(self) -> None:
        """Stop within a bound: reconciles in flight get the controller's grace, then renders are killed."""
        await asyncio.to_thread(self.secret_watch.stop)
        await self.backend_status.stop()
        await self.controller.stop()
        self.renderer.close()
        self.close()

    def close(self) -> None:
        self.renderer.close()
        self.rollouts.close()
        self.providers.close()


def build_runtime(config: OperatorConfig, registry: ProviderRegistry | None = None) -> Runtime:
    api = make_api_client(config)
    cluster = KubeCluster(api, instance=config.instance)
    providers = ProviderPool(
        registry or ProviderRegistry(),
        cluster,
        options=config.provider_options,
        policy=credential_policy(config),
    )
    reads = ReadCache()

    def observe_fetch(backend_type: str, operation: str, keys: int) -> None:
        metrics.PROVIDER_CALLS.labels(backend_type, operation).inc()
        metrics.PROVIDER_KEYS.labels(backend_type).inc(keys)

    # One key for restart hashes and ownership proofs, read (or created) once.
    hmac_key = _once(lambda: ensure_hmac_key(cluster, config.operator_namespace, config.hmac_key_secret))
    renderer = RenderPool(
        RenderLimits(
            timeout=config.template_timeout,
            max_output=config.template_max_output,
            memory_mib=config.template_memory_mib,
        ),
        processes=config.template_processes,
    )
    workloads = KubeWorkloads(api)
    reconciler = Reconciler(
        cluster,
        providers,
        reads,
        observe_fetch=observe_fetch,
        observe_lease=lambda operation, result: metrics.LEASE_OPERATIONS.labels(operation, result).inc(),
        renderer=renderer,
        operator_key=hmac_key,
        workloads=workloads,
    )
    # Built in the operator's start-up handler: its event loop runs the restart timers. A rollout's
    # outcome goes back to the controller (bound below), which records it in the object's status.
    rollouts = RolloutStage(
        workloads,
        cluster,
        cluster,
        hmac_key,
        loop=asyncio.get_running_loop(),
        report=lambda report: controller.rollout_finished(report),  # noqa: PLW0108 - bound below
    )
    controller = Controller(
        reconciler,
        cluster,
        ControllerSettings(
            workers=config.workers,
            backoff_base=config.backoff_base,
            backoff_max=config.backoff_max,
            workers_per_namespace=config.workers_per_namespace or None,
            stall_timeout=config.stall_timeout,
            expiry_warning=config.expiry_warning,
        ),
        rollouts=rollouts,
        on_deleted=lambda ref: renderer.cancel(render_owner(ref)),
    )
    loop = asyncio.get_running_loop()

    def secret_changed(change: SecretChange) -> None:  # in a watch or worker thread
        for owner in change.owners:
            drifted = functools.partial(
                controller.secret_drifted, change.namespace, owner, change.name, deleted=change.deleted
            )
            with contextlib.suppress(RuntimeError):  # the loop is closing: the operator is stopping
                loop.call_soon_threadsafe(drifted)

    # A client of its own: a watch holds its connection for minutes.
    secret_watch = SecretWatch(
        make_api_client(config), cluster.own_writes, secret_changed, namespaces=config.namespaces
    )
    backend_status = BackendStatusReporter(
        providers,
        KubeBackendStatus(api, instance=config.instance),
        BackendStatusSettings(
            enabled=config.backend_status,
            interval=config.backend_validation_interval,
            backoff_base=config.backoff_base,
            backoff_max=config.backoff_max,
        ),
    )
    return Runtime(
        config,
        cluster,
        providers,
        reads,
        reconciler,
        controller,
        rollouts,
        secret_watch,
        renderer,
        backend_status,
    )
