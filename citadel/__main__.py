"""`python -m citadel`: parse flags, then serve. Scaffold: only the HTTP /ready and /metrics endpoint runs."""

import argparse
import logging
import sys

from citadel.server import health
from isthmus import flags, log


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m citadel",
        description="citadel: the certificate authority; signs workload CSRs over Istio's CA API "
        "(IstioCertificateService/CreateCertificate). "
        "SCAFFOLD: only the HTTP /ready and /metrics endpoint is implemented so far.",
    )
    p.add_argument(
        "--root-dir",
        metavar="DIR",
        default=".isthmus/citadel",
        help="where the CA keeps its keys and certificates (default .isthmus/citadel)",
    )
    p.add_argument(
        "--trust-domain",
        default="cluster.local",
        help="SPIFFE trust domain of issued identities (default cluster.local)",
    )
    p.add_argument(
        "--plugin-certs",
        metavar="DIR",
        help="directory with ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem "
        "(Istio's plug-in CA files); without it a self-signed root is created",
    )
    p.add_argument(
        "--max-ttl",
        type=flags.duration,
        default="2160h",
        metavar="DURATION",
        help="longest lifetime of a workload certificate, e.g. 24h (default 2160h = 90 days)",
    )
    p.add_argument(
        "--grpc-addr",
        type=flags.host_port,
        default="127.0.0.1:8060",
        metavar="HOST:PORT",
        help="CA gRPC address (default 127.0.0.1:8060)",
    )
    p.add_argument(
        "--http-addr",
        type=flags.host_port,
        default="127.0.0.1:8061",
        metavar="HOST:PORT",
        help="HTTP address: /ready, /metrics, root certificate (default 127.0.0.1:8061)",
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
    log.setup("citadel", args.log_level)
    log.event(
        logging.getLogger("citadel"),
        logging.WARNING,
        "scaffold.not_implemented",
        detail="CA and CreateCertificate",
        grpc_addr=f"{args.grpc_addr[0]}:{args.grpc_addr[1]}",
    )
    return health.serve(args.http_addr)


if __name__ == "__main__":
    sys.exit(main())
