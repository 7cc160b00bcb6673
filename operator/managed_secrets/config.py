"""Operator settings from command-line flags or environment (``MANAGED_SECRETS_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MANAGED_SECRETS_{name}", default)


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
    #: Store endpoints (scheme://host[:port], ``*`` for one host label or any port) credentials may be
    #: sent to, besides the public cloud endpoints built in (providers/guard.py).
    allowed_store_endpoints: tuple[str, ...] = ()
    #: Audiences the Kubernetes API server accepts, never requested for a store, besides the well-known
    #: ones and those of the operator's own token (a TokenReview checks every token as well).
    api_audiences: tuple[str, ...] = ()
    #: Let namespaced SecretBackends use the operator pod's own cloud identity (default: only
    #: ClusterSecretBackends may).
    allow_operator_identity_for_secretbackends: bool = False

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            namespaces=_env_list("NAMESPACES"),
            log_level=_env("LOG_LEVEL", "INFO").upper(),
            log_format=_env("LOG_FORMAT", "text"),
            metrics_port=int(_env("METRICS_PORT", "0")),
            health_port=int(_env("HEALTH_PORT", "0")),
            workers=int(_env("WORKERS", "32")),
            backoff_base=float(_env("BACKOFF_BASE", "5")),
            backoff_max=float(_env("BACKOFF_MAX", "300")),
            kubeconfig=_env("KUBECONFIG", os.environ.get("KUBECONFIG", "")),
            allowed_store_endpoints=_env_list("ALLOWED_STORE_ENDPOINTS"),
            api_audiences=_env_list("API_AUDIENCES"),
            allow_operator_identity_for_secretbackends=_env(
                "ALLOW_OPERATOR_IDENTITY_FOR_SECRETBACKENDS", "false"
            ).lower()
            in ("1", "true", "yes"),
        )
