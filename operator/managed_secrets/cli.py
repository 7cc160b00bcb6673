"""`managed-secrets run | check`: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace

from managed_secrets.config import OperatorConfig
from managed_secrets.logsafety import configure_logging
from managed_secrets.memory import limit_malloc_arenas


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
    check = commands.add_parser("check", help="validate manifests offline (for GitOps CI)")
    check.add_argument("files", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        from managed_secrets.check import check_files  # noqa: PLC0415

        return check_files(args.files)
    limit_malloc_arenas()
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
        "template_timeout": args.template_timeout,
        "template_max_output": args.template_max_output,
        "template_memory_mib": args.template_memory_mib,
        "template_processes": args.template_processes,
        "kubeconfig": args.kubeconfig,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    configure_logging(config.log_level, config.log_format)
    if config.metrics_port:
        from prometheus_client import start_http_server  # noqa: PLC0415

        from managed_secrets.metrics import REGISTRY  # noqa: PLC0415

        start_http_server(config.metrics_port, addr=args.metrics_address, registry=REGISTRY)
    from managed_secrets.handlers.operator import run_operator  # noqa: PLC0415

    liveness = f"http://{args.health_address}:{config.health_port}/healthz" if config.health_port else None
    asyncio.run(run_operator(config, liveness_endpoint=liveness))
    return 0


if __name__ == "__main__":
    sys.exit(main())
