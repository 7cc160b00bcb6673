"""Operator settings from command-line flags or environment (``MANAGED_SECRETS_*``)."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: Where Kubernetes mounts the pod's service-account namespace.
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_OPERATOR_NAMESPACE = "managed-secrets-system"
N = TypeVar("N", int, float)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MANAGED_SECRETS_{name}", default)


def _number(name: str, default: str, kind: type[N]) -> N:
    text = _env(name, default)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(
            f"MANAGED_SECRETS_{name}={text!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None


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


def default_instance(environ: Mapping[str, str] | None = None) -> str:
    """MANAGED_SECRETS_INSTANCE, else POD_NAME (the chart sets it from the Downward API), else the host
    name: the replica's name in its Events (``reportingInstance``)."""
    env = os.environ if environ is None else environ
    for name in ("MANAGED_SECRETS_INSTANCE", "POD_NAME"):
        if value := env.get(name, "").strip():
            return value
    return socket.gethostname() or "managed-secrets"


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item for item in _env(name, "").replace(",", " ").split() if item)


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
    #: Seconds between validations of an unchanged backend (its Ready condition); 0: only on change.
    backend_validation_interval: float = 300.0
    #: A value the store says expires within this many seconds gets ExpiresSoon=True and a Warning event.
    expiry_warning: float = 14 * 86400.0
    #: Write the backends' Ready condition; off for an operator that must leave it to another one.
    backend_status: bool = True
    #: Passed to providers (timeouts, test hooks); no credentials here.
    provider_options: dict[str, Any] = field(default_factory=dict)
    #: Kubeconfig to use; empty: in-cluster, else the usual KUBECONFIG / ~/.kube/config.
    kubeconfig: str = ""
    #: The operator's own namespace; holds the HMAC key Secret (see default_operator_namespace).
    operator_namespace: str = field(default_factory=default_operator_namespace)
    #: This replica's name, in its Events (see default_instance).
    instance: str = field(default_factory=default_instance)
    #: Secret (created when absent) with the key of the restart annotations and of status.dataHash.
    hmac_key_secret: str = "managed-secrets-hmac-key"  # noqa: S105 - the name of a Secret
    #: Store endpoints (scheme://host[:port], ``*`` for one host label or any port) credentials may be
    #: sent to, besides the public cloud endpoints built in (providers/guard.py).
    allowed_store_endpoints: tuple[str, ...] = ()
    #: Audiences the Kubernetes API server accepts, never requested for a store, besides the well-known
    #: ones and those of the operator's own token (a TokenReview checks every token as well).
    api_audiences: tuple[str, ...] = ()
    #: Let namespaced SecretBackends use the operator pod's own cloud identity (default: only
    #: ClusterSecretBackends may).
    allow_operator_identity_for_secretbackends: bool = False

    def __post_init__(self) -> None:
        # A zero, negative or NaN backoff would retry failures in a tight loop against the store.
        if not (math.isfinite(self.backoff_base) and 0 < self.backoff_base <= self.backoff_max):
            raise ValueError(
                f"backoff must satisfy 0 < base <= max (finite seconds), got base={self.backoff_base}"
                f" max={self.backoff_max}"
            )
        if not math.isfinite(self.backoff_max):
            raise ValueError(f"backoff max must be finite seconds, got {self.backoff_max}")
        if not (math.isfinite(self.backend_validation_interval) and self.backend_validation_interval >= 0):
            raise ValueError(
                f"backend validation interval must be finite seconds >= 0, got {self.backend_validation_interval}"
            )
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if not (math.isfinite(self.expiry_warning) and self.expiry_warning >= 0):
            raise ValueError(f"expiry warning must be finite seconds >= 0, got {self.expiry_warning}")

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            namespaces=_env_list("NAMESPACES"),
            log_level=_env("LOG_LEVEL", "INFO").upper(),
            log_format=_env("LOG_FORMAT", "text"),
            metrics_port=_number("METRICS_PORT", "0", int),
            health_port=_number("HEALTH_PORT", "0", int),
            workers=_number("WORKERS", "32", int),
            workers_per_namespace=_number("WORKERS_PER_NAMESPACE", "0", int),
            stall_timeout=_number("STALL_TIMEOUT", "120", float),
            template_timeout=_number("TEMPLATE_TIMEOUT", "2", float),
            template_max_output=_number("TEMPLATE_MAX_OUTPUT", str(1 << 20), int),
            template_memory_mib=_number("TEMPLATE_MEMORY_MIB", "128", int),
            template_processes=_number("TEMPLATE_PROCESSES", "2", int),
            backoff_base=_number("BACKOFF_BASE", "5", float),
            backoff_max=_number("BACKOFF_MAX", "300", float),
            backend_validation_interval=_number("BACKEND_VALIDATION_INTERVAL", "300", float),
            expiry_warning=_number("EXPIRY_WARNING", str(14 * 86400), float),
            backend_status=_env("BACKEND_STATUS", "true").lower() in ("1", "true", "yes"),
            kubeconfig=_env("KUBECONFIG", os.environ.get("KUBECONFIG", "")),
            allowed_store_endpoints=_env_list("ALLOWED_STORE_ENDPOINTS"),
            api_audiences=_env_list("API_AUDIENCES"),
            allow_operator_identity_for_secretbackends=_env(
                "ALLOW_OPERATOR_IDENTITY_FOR_SECRETBACKENDS", "false"
            ).lower()
            in ("1", "true", "yes"),
        )
