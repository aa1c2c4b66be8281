"""`python -m pilot`: parse flags, then serve. Scaffold: only the HTTP /ready and /metrics endpoint runs."""

import argparse
import logging
import sys

from isthmus import flags, log
from pilot.server import health


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pilot",
        description="pilot: reads Istio configuration (YAML) and serves Envoy xDS v3 to the proxies. "
        "SCAFFOLD: only the HTTP /ready and /metrics endpoint is implemented so far.",
    )
    p.add_argument("--config-dir", metavar="DIR", help="directory of Istio YAML to load and watch")
    p.add_argument("--domain", default="cluster.local", help="DNS domain suffix (default cluster.local)")
    p.add_argument(
        "--root-namespace",
        default="istio-system",
        help="namespace whose config applies mesh-wide (default istio-system)",
    )
    p.add_argument(
        "--grpc-addr",
        type=flags.host_port,
        default="127.0.0.1:15010",
        metavar="HOST:PORT",
        help="xDS gRPC address (default 127.0.0.1:15010)",
    )
    p.add_argument(
        "--http-addr",
        type=flags.host_port,
        default="127.0.0.1:15014",
        metavar="HOST:PORT",
        help="HTTP address: apply API, debug, /metrics, /ready (default 127.0.0.1:15014)",
    )
    p.add_argument(
        "--log-level",
        choices=log.LEVEL_NAMES,
        metavar="LEVEL",
        help=f"one of {', '.join(log.LEVEL_NAMES)} (env {log.ENV_VAR}, default info)",
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    log.setup("pilot", args.log_level)
    log.event(
        logging.getLogger("pilot"),
        logging.WARNING,
        "scaffold.not_implemented",
        detail="xDS server, config loading",
        grpc_addr=f"{args.grpc_addr[0]}:{args.grpc_addr[1]}",
    )
    return health.serve(args.http_addr)


if __name__ == "__main__":
    sys.exit(main())
