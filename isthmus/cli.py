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
from isthmus.launcher.state import DEFAULT_STATE_DIR
from isthmus.launcher.topology import (
    APP_PORT,
    DEFAULT_ADDRESS_BASE,
    DEFAULT_CONTROL_ADDRESS,
    bookinfo,
    local_addressing,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus", description="Isthmus: a service mesh in Python, modelled on Istio and Envoy."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up = commands.add_parser(
        "up",
        help="run the whole mesh with Bookinfo locally, one loopback address per workload",
        description="Start the mesh as local processes: citadel, pilot and mixer on --control-address, "
        "then for each Bookinfo workload its agent and sidecar and, once the sidecar is ready, the app "
        "(productpage on the base address, then details, reviews-v1, reviews-v2, reviews-v3 and ratings "
        "on the next five; apps call each other through their sidecar with HTTP_PROXY), and last the "
        "ingress gateway (bookinfo-gateway.yaml, port 8080). Streams their logs, restarts crashes with "
        "backoff, and on Ctrl-C or SIGTERM stops the gateway, the apps, the sidecars (drained) and the "
        "control plane in that order. --apps-only runs Bookinfo alone, without the mesh.",
    )
    up.add_argument(
        "--apps-only",
        action="store_true",
        help="Bookinfo alone, without control plane, sidecars or gateway (productpage balances reviews)",
    )
    up.add_argument(
        "--transparent",
        action="store_true",
        help="root only: each Bookinfo workload (app + sidecar), the control plane and the gateway in its "
        "own network namespace on a bridge (198.18.0.0/24), istio-init's iptables rules capturing the "
        "apps' traffic (outbound to 15001, inbound to 15006), apps calling each other by name with no proxy "
        "settings; the gateway, pilot and the dashboard are forwarded to --control-address as in local mode, "
        "each workload's 9080/15000/15021 to its local-mode address; everything is removed on stop",
    )
    up.add_argument(
        "--control-address",
        default=DEFAULT_CONTROL_ADDRESS,
        metavar="ADDR",
        help="loopback address of citadel (8060-8062), pilot (15010, 15014), mixer (9091, dashboard "
        f"20001) and the gateway (8080) (default {DEFAULT_CONTROL_ADDRESS})",
    )
    up.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"certificates, pilot's config, proxy bootstraps, logs and the PID file (default {DEFAULT_STATE_DIR})",
    )
    up.add_argument(
        "--redis", metavar="URL", help="Redis for mixer's quota counters, e.g. redis://127.0.0.1:6379/0"
    )
    up.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="run in the background; `isthmus status` and `isthmus down` (same --state-dir) follow it",
    )
    up.add_argument(
        "--drain",
        default="2s",
        metavar="DURATION",
        help="how long each sidecar drains on shutdown, after its app has stopped (default 2s)",
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
        default=60.0,
        metavar="SECONDS",
        help="how long a process may take to answer its readiness check (default 60)",
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
    from isthmus.launcher import local, state
    from isthmus.launcher.supervisor import Supervisor

    try:
        addressing = local_addressing(args.address_base)
    except ValueError as e:
        parser.error(f"--address-base: {e}")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if args.apps_only and (args.detach or args.redis or args.transparent):
        parser.error("--apps-only runs Bookinfo alone in the foreground: no -d, no --redis, no --transparent")
    net = None
    if args.transparent:
        from isthmus.launcher import transparent

        refusal = local.transparent_refusal()
        if refusal:
            parser.error(refusal)
        net = transparent.plan()
    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    )
    if args.apps_only:
        supervisor = Supervisor(
            bookinfo(addressing, args.port),
            color=color,
            ready_timeout=args.ready_timeout,
            log_level=args.log_level,
        )
        return asyncio.run(supervisor.run())
    try:
        options = local.options_from_args(args)
        topology = local.prepare(options, net)
    except ValueError as e:
        parser.error(str(e))
    if args.detach:
        return local.detach(options, args)
    namespaces = None
    if net is not None:
        from isthmus.launcher.netns_runner import NetnsError, NetnsMesh

        try:
            namespaces = NetnsMesh(net).apply()  # removed again on failure, at exit and on SIGTERM/SIGHUP
        except NetnsError as e:
            print(f"isthmus up --transparent: {e}", file=sys.stderr)
            return 1
    supervisor = Supervisor(
        topology,
        color=color,
        ready_timeout=args.ready_timeout,
        log_level=args.log_level,
        prepare=local.token_writer(options),
        on_ready=local.state_recorder(options, net=net),
        log_dir=state.logs_dir(options.state_dir),
    )
    try:
        return asyncio.run(supervisor.run())
    finally:
        if namespaces is not None:
            for problem in namespaces.teardown():  # every namespace, veth, bridge and /etc/netns dir
                print(f"isthmus up --transparent: cleanup: {problem}", file=sys.stderr)
        local.forget(options)


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
