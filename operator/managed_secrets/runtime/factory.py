"""Wiring: builds the object graph of a running operator from its configuration."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kubernetes import client
from kubernetes import config as kube_config

from managed_secrets import metrics
from managed_secrets.config import OperatorConfig
from managed_secrets.core.clients import ProviderPool
from managed_secrets.core.reads import ReadCache
from managed_secrets.core.reconcile import Reconciler, render_owner
from managed_secrets.core.render import RenderLimits
from managed_secrets.kube.cluster import KubeCluster
from managed_secrets.kube.workloads import KubeWorkloads
from managed_secrets.providers.registry import ProviderRegistry
from managed_secrets.runtime.controller import Controller, ControllerSettings
from managed_secrets.runtime.render_pool import RenderPool
from managed_secrets.runtime.rollouts import Rollouts, ensure_hmac_key

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


@dataclass
class Runtime:
    config: OperatorConfig
    cluster: KubeCluster
    providers: ProviderPool
    reads: ReadCache
    reconciler: Reconciler
    controller: Controller
    rollouts: Rollouts
    renderer: RenderPool

    async def stop(self) -> None:
        """Stop within a bound: reconciles in flight get the controller's grace, then renders are killed."""
        await self.controller.stop()
        self.renderer.close()
        self.close()

    def close(self) -> None:
        self.renderer.close()
        self.rollouts.close()
        self.providers.close()


def build_runtime(config: OperatorConfig, registry: ProviderRegistry | None = None) -> Runtime:
    api = make_api_client(config)
    cluster = KubeCluster(api)
    providers = ProviderPool(registry or ProviderRegistry(), cluster, options=config.provider_options)
    reads = ReadCache()

    def observe_fetch(backend_type: str, operation: str, keys: int) -> None:
        metrics.PROVIDER_CALLS.labels(backend_type, operation).inc()
        metrics.PROVIDER_KEYS.labels(backend_type).inc(keys)

    renderer = RenderPool(
        RenderLimits(
            timeout=config.template_timeout,
            max_output=config.template_max_output,
            memory_mib=config.template_memory_mib,
        ),
        processes=config.template_processes,
    )
    reconciler = Reconciler(cluster, providers, reads, observe_fetch=observe_fetch, renderer=renderer)
    # Built in the operator's start-up handler: its event loop runs the restart timers.
    rollouts = Rollouts(
        KubeWorkloads(api),
        cluster,
        cluster,
        lambda: ensure_hmac_key(cluster, config.operator_namespace, config.hmac_key_secret),
        loop=asyncio.get_running_loop(),
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
        ),
        on_synced=rollouts.on_synced,
        on_deleted=lambda ref: renderer.cancel(render_owner(ref)),
    )
    rollouts.attach(controller)
    return Runtime(config, cluster, providers, reads, reconciler, controller, rollouts, renderer)
