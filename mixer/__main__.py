"""`python -m mixer`: parse flags, then serve. Scaffold: only the HTTP /ready and /metrics endpoint runs."""

import argparse
import logging
import sys

from isthmus import flags, log
from mixer.server import health


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mixer",
        description="mixer: policy (Envoy ext_authz v3), quotas (rate limit v3) and telemetry (access log "
        "service v3, Prometheus), with a dashboard. "
        "SCAFFOLD: only the HTTP /ready and /metrics endpoint is implemented so far.",
    )
    p.add_argument("--config", metavar="FILE", help="mixer configuration (YAML)")
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis for shared quota state, e.g. redis://127.0.0.1:6379/0 (default: in memory)",
    )
    p.add_argument(
        "--grpc-addr",
        type=flags.host_port,
        default="127.0.0.1:9091",
        metavar="HOST:PORT",
        help="gRPC address: ext_authz, rate limit, access logs (default 127.0.0.1:9091)",
    )
    p.add_argument(
        "--http-addr",
        type=flags.host_port,
        default="127.0.0.1:20001",
        metavar="HOST:PORT",
        help="HTTP address: dashboard, JSON API, /metrics, /ready (default 127.0.0.1:20001)",
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
    log.setup("mixer", args.log_level)
    log.event(
        logging.getLogger("mixer"),
        logging.WARNING,
        "scaffold.not_implemented",
        detail="ext_authz, rate limit, access logs, dashboard",
        grpc_addr=f"{args.grpc_addr[0]}:{args.grpc_addr[1]}",
    )
    return health.serve(args.http_addr)


if __name__ == "__main__":
    sys.exit(main())
