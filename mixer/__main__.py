"""`python -m mixer`: parse flags, then serve (mixer.server.app)."""

import argparse
import sys
from urllib.parse import urlparse

from isthmus import flags, log
from mixer.server import app


def _redis_url(text: str) -> str:
    parsed = urlparse(text)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.hostname or parsed.path):
        raise argparse.ArgumentTypeError(
            f"expected redis://HOST:PORT[/DB], rediss://... or unix://PATH, got {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mixer",
        description="mixer: policy (Envoy ext_authz v3), quotas (rate limit v3) and telemetry (access log "
        "service v3, Istio's Prometheus metrics), with a JSON API for the dashboard.",
    )
    p.add_argument("--config", metavar="FILE", help="mixer configuration (YAML), reloaded when it changes")
    p.add_argument(
        "--redis-url",
        type=_redis_url,
        metavar="URL",
        help="Redis for quota counters shared between replicas, e.g. redis://127.0.0.1:6379/0 (default: in memory)",
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
    return app.run(
        app.MixerOptions(
            config_path=args.config,
            redis_url=args.redis_url,
            grpc_addr=args.grpc_addr,
            http_addr=args.http_addr,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
