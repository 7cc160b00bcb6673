"""`managed-secrets run | check | exec | render`: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from managed_secrets.config import OperatorConfig
from managed_secrets.logsafety import configure_logging
from managed_secrets.memory import limit_malloc_arenas
from managed_secrets.providers.guard import EndpointAllowlist, EndpointError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="managed-secrets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    run.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)"
    )
    run.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    run.add_argument("--log-format", choices=["text", "json"], default=None)
    run.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    run.add_argument("--metrics-address", default="0.0.0.0", help="address for the metrics server")  # noqa: S104
    run.add_argument("--health-port", type=int, default=None, help="serve /healthz on this port")
    run.add_argument("--health-address", default="0.0.0.0", help="address for the health endpoint")  # noqa: S104
    run.add_argument("--workers", type=int, default=None, help="concurrent reconciles (default 32)")
    run.add_argument(
        "--workers-per-namespace",
        type=int,
        default=None,
        help="most reconciles of one namespace at once, so one tenant cannot take every worker "
        "(default: half of --workers)",
    )
    run.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        help="seconds without any reconcile finishing, while work waits or runs, after which /healthz "
        "fails (default 120)",
    )
    run.add_argument(
        "--backend-validation-interval",
        type=float,
        default=None,
        help="seconds between checks that each SecretBackend's and ClusterSecretBackend's credentials"
        " still work (their Ready condition; jittered; 0: only when a backend changes; default 300)",
    )
    run.add_argument(
        "--expiry-warning",
        type=float,
        default=None,
        help="seconds before a value's expiry (where the store says when: Azure Key Vault expires, GCP"
        " expireTime) that its ManagedSecret gets ExpiresSoon=True and a Warning event (default 1209600,"
        " 14 days)",
    )
    run.add_argument(
        "--no-backend-status",
        dest="backend_status",
        action="store_const",
        const=False,
        default=None,
        help="validate no backend and leave their status alone (when another operator reports it)",
    )
    run.add_argument(
        "--template-timeout",
        type=float,
        default=None,
        help="wall-clock seconds to render one Secret's templates; over it: TemplateError (default 2)",
    )
    run.add_argument(
        "--template-max-output",
        type=int,
        default=None,
        help="bytes of rendered data per Secret (default 1048576)",
    )
    run.add_argument(
        "--template-memory-mib",
        type=int,
        default=None,
        help="memory (address space) of a render process, MiB (default 128)",
    )
    run.add_argument(
        "--template-processes",
        type=int,
        default=None,
        help="render processes, started on first use (default 2)",
    )
    run.add_argument("--kubeconfig", default=None)
    run.add_argument(
        "--operator-namespace",
        default=None,
        help="the operator's own namespace, where it keeps the HMAC key Secret of its restart annotations "
        "(created when absent). Default: $MANAGED_SECRETS_OPERATOR_NAMESPACE, else $POD_NAMESPACE, else the "
        "in-cluster service account's namespace, else managed-secrets-system. Checked at start: when the "
        "operator can neither read nor create that Secret there, it exits with status 1",
    )
    run.add_argument(
        "--allowed-store-endpoint",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a store endpoint credentials may be sent to, besides the public AWS, Azure and Google Cloud"
        " endpoints: scheme://host[:port], '*' for one host label or for any port, e.g."
        " https://vault.example.com:8200 (repeatable; env MANAGED_SECRETS_ALLOWED_STORE_ENDPOINTS)",
    )
    run.add_argument(
        "--api-audience",
        action="append",
        default=[],
        metavar="AUDIENCE",
        help="an audience the Kubernetes API server accepts, never requested for a store token, besides"
        " the well-known ones and those of the operator's own token (repeatable; env"
        " MANAGED_SECRETS_API_AUDIENCES)",
    )
    run.add_argument(
        "--allow-operator-identity-for-secretbackends",
        action="store_true",
        default=None,
        help="let namespaced SecretBackends use the operator pod's own cloud identity (default: only"
        " ClusterSecretBackends may)",
    )
    check = commands.add_parser("check", help="validate manifests offline (for GitOps CI)")
    check.add_argument("files", nargs="+")
    execute = commands.add_parser(
        "exec",
        help="run a command with the values of ManagedSecret manifests, resolved with your credentials",
    )
    _local_arguments(execute)
    execute.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    render = commands.add_parser("render", help="print the Secrets the operator would write (masked)")
    _local_arguments(render)
    render.add_argument("--format", choices=["env", "dotenv", "json", "yaml-secret"], default="yaml-secret")
    render.add_argument("--reveal", action="store_true", help="print the values, not ****")
    render.add_argument("-o", "--output", default=None, help="write to this file (mode 0600), not stdout")
    sandbox = commands.add_parser("sandbox", help="a local OpenBao with fake values for the manifests' keys")
    sandbox.add_argument("-f", "--filename", action="append", required=True, metavar="PATH")
    sandbox.add_argument("-n", "--namespace", default=None)
    sandbox.add_argument(
        "--fixtures", default=None, metavar="FILE", help="fake values to use (YAML, never real)"
    )
    sandbox.add_argument(
        "--bao", default=None, metavar="PATH", help="the OpenBao binary (default: bao on PATH)"
    )
    sandbox.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    return parser


def _local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="manifest file or folder (repeatable)",
    )
    parser.add_argument(
        "-n", "--namespace", default=None, help="namespace of manifests that name none; only this one"
    )
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="only this ManagedSecret")
    parser.add_argument("--overrides", default=None, metavar="FILE", help="local overrides file")
    parser.add_argument(
        "--allowed-store-endpoint",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a store endpoint your credentials may be sent to, besides the public cloud ones and loopback",
    )


def _config(args: argparse.Namespace) -> OperatorConfig:
    """The environment's settings (MANAGED_SECRETS_*), overridden by the flags given."""
    config = OperatorConfig.from_env()
    overrides = {
        "namespaces": tuple(args.namespace) or None,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "metrics_port": args.metrics_port,
        "health_port": args.health_port,
        "workers": args.workers,
        "workers_per_namespace": args.workers_per_namespace,
        "stall_timeout": args.stall_timeout,
        "backend_validation_interval": args.backend_validation_interval,
        "expiry_warning": args.expiry_warning,
        "backend_status": args.backend_status,
        "template_timeout": args.template_timeout,
        "template_max_output": args.template_max_output,
        "template_memory_mib": args.template_memory_mib,
        "template_processes": args.template_processes,
        "kubeconfig": args.kubeconfig,
        "operator_namespace": args.operator_namespace,
        "allowed_store_endpoints": tuple(args.allowed_store_endpoint) or None,
        "api_audiences": tuple(args.api_audience) or None,
        "allow_operator_identity_for_secretbackends": args.allow_operator_identity_for_secretbackends,
    }
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        from managed_secrets.check import check_files  # noqa: PLC0415

        return check_files(args.files)
    if args.command == "sandbox":
        from managed_secrets.local.sandbox import SandboxError, run_sandbox  # noqa: PLC0415

        try:
            return run_sandbox(
                args.filename,
                namespace=args.namespace,
                fixtures_path=args.fixtures,
                bao=args.bao,
                port=args.port,
            )
        except SandboxError as error:
            parser.exit(1, f"managed-secrets sandbox: {error}\n")
    if args.command in ("exec", "render"):
        from managed_secrets.local.main import run_local  # noqa: PLC0415

        return run_local(args, parser)
    limit_malloc_arenas()
    try:
        config = _config(args)
        EndpointAllowlist.from_patterns(config.allowed_store_endpoints)
    except EndpointError as error:
        parser.error(str(error))
    except ValueError as error:  # a malformed flag or MANAGED_SECRETS_* variable: usage, not a traceback
        parser.error(str(error))
    configure_logging(config.log_level, config.log_format)
    if config.metrics_port:
        from prometheus_client import start_http_server  # noqa: PLC0415

        from managed_secrets.metrics import REGISTRY  # noqa: PLC0415

        start_http_server(config.metrics_port, addr=args.metrics_address, registry=REGISTRY)
    from managed_secrets.handlers.operator import run_operator  # noqa: PLC0415
    from managed_secrets.runtime.factory import StartupError  # noqa: PLC0415

    liveness = f"http://{args.health_address}:{config.health_port}/healthz" if config.health_port else None
    try:
        asyncio.run(run_operator(config, liveness_endpoint=liveness))
    except StartupError as error:
        logging.getLogger("managed_secrets").error("cannot start: %s", error)  # noqa: TRY400 - one clear line
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
