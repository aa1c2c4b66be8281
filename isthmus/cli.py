"""The `isthmus` command: `up` lives here; the other subcommands are modules of `isthmus.commands`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import pkgutil
import sys

import isthmus.commands
from isthmus import log
from isthmus.launcher.topology import APP_PORT, DEFAULT_ADDRESS_BASE, bookinfo, local_addressing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus", description="Isthmus: a service mesh in Python, modelled on Istio and Envoy."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up = commands.add_parser(
        "up",
        help="run Bookinfo locally, one loopback address per workload",
        description="Start Bookinfo as local processes, each workload on its own 127.0.0.x address: "
        "productpage on the base address, then details, reviews-v1, reviews-v2, reviews-v3 "
        "and ratings on the next five. Waits for each to be ready before starting what "
        "depends on it, streams their logs, restarts crashes with backoff, and stops "
        "everything on Ctrl-C or SIGTERM. (No sidecars yet: later issues add the mesh.)",
    )
    up.add_argument(
        "--address-base",
        default=DEFAULT_ADDRESS_BASE,
        metavar="ADDR",
        help=f"first of six consecutive loopback addresses (default {DEFAULT_ADDRESS_BASE})",
    )
    up.add_argument(
        "--port",
        type=int,
        default=APP_PORT,
        help=f"the port every Bookinfo app listens on, on its own address (default {APP_PORT})",
    )
    up.add_argument(
        "--ready-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a process may take to answer its readiness check (default 30)",
    )
    up.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the per-process log prefix (default auto: when stdout is a terminal)",
    )
    up.add_argument(
        "--log-level",
        choices=log.LEVEL_NAMES,
        metavar="LEVEL",
        help=f"for isthmus and every process it starts: {', '.join(log.LEVEL_NAMES)} "
        f"(env {log.ENV_VAR}, default info)",
    )
    up.set_defaults(run=cmd_up, parser=up)
    for module in sorted(m.name for m in pkgutil.iter_modules(isthmus.commands.__path__)):
        importlib.import_module(f"isthmus.commands.{module}").register(commands)
    return parser


def cmd_up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from isthmus.launcher.supervisor import Supervisor

    try:
        addressing = local_addressing(args.address_base)
    except ValueError as e:
        parser.error(f"--address-base: {e}")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    )
    supervisor = Supervisor(
        bookinfo(addressing, args.port),
        color=color,
        ready_timeout=args.ready_timeout,
        log_level=args.log_level,
    )
    return asyncio.run(supervisor.run())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # report it with the subcommand's usage, which is the one that helps
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        log.setup("isthmus", getattr(args, "log_level", None))
    except ValueError as e:  # a bad ISTHMUS_LOG_LEVEL
        parser.error(str(e))
    return args.run(args, args.parser)


if __name__ == "__main__":
    sys.exit(main())
