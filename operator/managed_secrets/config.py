"""Operator settings from command-line flags or environment (``MANAGED_SECRETS_*``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where Kubernetes mounts the pod's service-account namespace.
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_OPERATOR_NAMESPACE = "managed-secrets-system"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MANAGED_SECRETS_{name}", default)


def default_operator_namespace(
    environ: Mapping[str, str] | None = None, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE
) -> str:
    """MANAGED_SECRETS_OPERATOR_NAMESPACE, else POD_NAMESPACE (the chart sets it from the Downward API),
    else the namespace of the pod's service account, else managed-secrets-system."""
    env = os.environ if environ is None else environ
    for name in ("MANAGED_SECRETS_OPERATOR_NAMESPACE", "POD_NAMESPACE"):
        if value := env.get(name, "").strip():
            return value
    try:
        from_file = service_account_file.read_text(encoding="utf-8").strip()
    except OSError:
        from_file = ""
    return from_file or DEFAULT_OPERATOR_NAMESPACE


@dataclass(frozen=True)
class OperatorConfig:
    #: Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"
    metrics_port: int = 0  # 0: no metrics server
    health_port: int = 0  # 0: no health endpoint
    workers: int = 32
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    #: Passed to providers (timeouts, test hooks); no credentials here.
    provider_options: dict[str, Any] = field(default_factory=dict)
    #: Kubeconfig to use; empty: in-cluster, else the usual KUBECONFIG / ~/.kube/config.
    kubeconfig: str = ""
    #: The operator's own namespace; holds the HMAC key Secret (see default_operator_namespace).
    operator_namespace: str = field(default_factory=default_operator_namespace)
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
            backoff_base=float(_env("BACKOFF_BASE", "5")),
            backoff_max=float(_env("BACKOFF_MAX", "300")),
            kubeconfig=_env("KUBECONFIG", os.environ.get("KUBECONFIG", "")),
        )
