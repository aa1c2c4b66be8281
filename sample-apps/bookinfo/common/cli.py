"""The command line every Bookinfo app shares: listen address/port and log level, defaulting from env."""

from __future__ import annotations

import argparse
import os

from isthmus.log import LEVEL_NAMES, parse_level

from .settings import listen_from_env

COMMON_ENV_HELP = """\
environment:
  LISTEN_ADDRESS, LISTEN_PORT   where to listen (default 0.0.0.0:9080); flags win over these
  ISTHMUS_LOG_LEVEL             log level when --log-level is not given (default info)
  HTTP_PROXY, NO_PROXY          proxy for upstream calls (a sidecar's outbound listener)
"""


def build_parser(prog: str, description: str, env_help: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=env_help + COMMON_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", help="address to listen on (env LISTEN_ADDRESS, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (env LISTEN_PORT, default 9080)")
    parser.add_argument(
        "--log-level",
        choices=LEVEL_NAMES,
        metavar="LEVEL",
        help=f"one of {', '.join(LEVEL_NAMES)} (env ISTHMUS_LOG_LEVEL, default info)",
    )
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags and fill address/port from the environment; bad env values exit 2 with usage."""
    args = parser.parse_args(argv)
    try:
        address, port = listen_from_env(os.environ)
        parse_level(args.log_level)
    except ValueError as e:
        parser.error(str(e))
    args.address = args.address or address
    args.port = port if args.port is None else args.port
    return args
