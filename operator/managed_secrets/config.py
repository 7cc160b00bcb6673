"""Operator settings from command-line flags or environment (``MANAGED_SECRETS_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MANAGED_SECRETS_{name}", default)


@dataclass(frozen=True)
class OperatorConfig:
    #: Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"
    metrics_port: int = 0  # 0: no metrics server
    health_port: int = 0  # 0: no health endpoint
    workers: int = 32
    #: Most workers one namespace may hold at once; 0: half of the workers.
    workers_per_namespace: int = 0
    #: Liveness fails when work waits or runs this long (seconds) without any reconcile finishing.
    stall_timeout: float = 120.0
    #: Limits of one Secret's templates: wall-clock seconds, rendered bytes, MiB of the render process.
    template_timeout: float = 2.0
    template_max_output: int = 1 << 20
    template_memory_mib: int = 128
    #: Render processes (each about 20 MiB; started when the first template renders).
    template_processes: int = 2
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    #: Passed to providers (timeouts); no credentials here.
    provider_options: dict[str, str] = field(default_factory=dict)
    #: Kubeconfig to use; empty: in-cluster, else the usual KUBECONFIG / ~/.kube/config.
    kubeconfig: str = ""
    #: The operator's own namespace (POD_NAMESPACE, from the Downward API); holds the HMAC key Secret.
    operator_namespace: str = field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE") or "managed-secrets-system"
    )
    #: Secret (created when absent) with the key of the restart annotations and of status.dataHash.
    hmac_key_secret: str = "managed-secrets-hmac-key"  # noqa: S105 - the name of a Secret

    @classmethod
    def from_env(cls) -> OperatorConfig:
        namespaces = tuple(n for n in _env("NAMESPACES", "").replace(",", " ").split() if n)
        return cls(
            namespaces=namespaces,
            log_level=_env("LOG_LEVEL", "INFO").upper(),
            log_format=_env("LOG_FORMAT", "text"),
            metrics_port=int(_env("METRICS_PORT", "0")),
            health_port=int(_env("HEALTH_PORT", "0")),
            workers=int(_env("WORKERS", "32")),
            workers_per_namespace=int(_env("WORKERS_PER_NAMESPACE", "0")),
            stall_timeout=float(_env("STALL_TIMEOUT", "120")),
            template_timeout=float(_env("TEMPLATE_TIMEOUT", "2")),
            template_max_output=int(_env("TEMPLATE_MAX_OUTPUT", str(1 << 20))),
            template_memory_mib=int(_env("TEMPLATE_MEMORY_MIB", "128")),
            template_processes=int(_env("TEMPLATE_PROCESSES", "2")),
            backoff_base=float(_env("BACKOFF_BASE", "5")),
            backoff_max=float(_env("BACKOFF_MAX", "300")),
            kubeconfig=_env("KUBECONFIG", os.environ.get("KUBECONFIG", "")),
        )
