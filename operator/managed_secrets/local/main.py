"""The ``exec`` and ``render`` commands: arguments in, an exit status out; errors are one line each."""

from __future__ import annotations

import argparse
import os
import sys

from managed_secrets.errors import SyncError
from managed_secrets.local.execute import run
from managed_secrets.local.output import CiSystem, Format, detect_ci, github_masks, render_text, split
from managed_secrets.local.overrides import OverridesError, load_overrides
from managed_secrets.local.resolve import Resolution, Resolver, resolver
from managed_secrets.logsafety import configure_logging


def run_local(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    configure_logging("WARNING", "text")
    argv = list(getattr(args, "argv", None) or [])
    command = argv[1:] if argv[:1] == ["--"] else argv
    if args.command == "exec" and not command:
        parser.error("exec needs a command: managed-secrets exec -f PATH -- COMMAND ARGS...")
    if (
        args.command == "render"
        and args.reveal
        and args.output is None
        and detect_ci(os.environ) is not CiSystem.NONE
    ):
        parser.error("--reveal in CI would print the values into the job log: write them with --output FILE")
    try:
        overrides = load_overrides(args.overrides)
        with resolver(overrides, allowed_endpoints=args.allowed_store_endpoint) as local:
            resolution = local.resolve(args.filename, namespace=args.namespace, only=args.only)
            if args.command == "exec":
                return _exec(command, resolution, local)
            return _render(args, resolution) if _reported(resolution) else 1
    except (OverridesError, ValueError) as error:
        print(f"managed-secrets {args.command}: {error}", file=sys.stderr)
        return 2
    except SyncError as error:
        print(f"managed-secrets {args.command}: {error.reason}: {error.message}", file=sys.stderr)
        return 1


def _reported(resolution: Resolution) -> bool:
    """True when everything resolved; else its errors are printed."""
    for line in resolution.errors():
        print(line, file=sys.stderr)
    return resolution.ok


def _exec(command: list[str], resolution: Resolution, local: Resolver) -> int:
    """Run the command with the values; then revoke the leases issued for it, which outlive it otherwise
    (render leaves them: its output is meant to be used after it exits)."""
    try:
        if not _reported(resolution):
            return 1
        return run(command, split(resolution.secrets))
    finally:
        for problem in local.revoke_leases():
            print(f"managed-secrets exec: {problem}", file=sys.stderr)


def _render(args: argparse.Namespace, resolution: Resolution) -> int:
    text, notes = render_text(resolution.secrets, Format(args.format), reveal=args.reveal)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.reveal and detect_ci(os.environ) is CiSystem.GITHUB:
        for line in github_masks(resolution.secrets):
            print(line)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    handle = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    return 0
