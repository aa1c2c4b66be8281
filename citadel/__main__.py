"""`python -m citadel`: parse flags, then run the CA (citadel.server.app)."""

import argparse
import sys
from pathlib import Path

from citadel.ca import keys, spiffe
from citadel.server import app
from isthmus import flags, log

DEFAULT_DNS = "localhost,citadel,istiod,istiod.istio-system.svc,istio-ca"


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _trust_domain(text: str) -> str:
    try:
        return spiffe.check_trust_domain(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _optional_host_port(text: str):
    return None if text == "off" else flags.host_port(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m citadel",
        description="citadel: the certificate authority; signs workload CSRs over Istio's CA API "
        "(istio.v1.auth.IstioCertificateService/CreateCertificate) on gRPC over TLS, and serves "
        "/ready, /metrics and /root-cert over HTTP.",
    )
    p.add_argument(
        "--root-dir",
        metavar="DIR",
        type=Path,
        default=Path(".isthmus/citadel"),
        help="where the CA keeps its root key and certificate (root-cert.pem) and its token key; "
        "created on first start, reused afterwards (default .isthmus/citadel)",
    )
    p.add_argument(
        "--trust-domain",
        type=_trust_domain,
        default="cluster.local",
        help="SPIFFE trust domain of issued identities (default cluster.local)",
    )
    p.add_argument(
        "--plugin-certs",
        metavar="DIR",
        type=Path,
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
        "--default-ttl",
        type=flags.duration,
        default="24h",
        metavar="DURATION",
        help="lifetime when the request asks for none (default 24h, never above --max-ttl)",
    )
    p.add_argument(
        "--key-type",
        choices=keys.KEY_TYPES,
        default="ec-p256",
        help="key type of a newly created self-signed root (default ec-p256)",
    )
    p.add_argument(
        "--grpc-addr",
        type=flags.host_port,
        default="127.0.0.1:8060",
        metavar="HOST:PORT",
        help="CA gRPC address, TLS (default 127.0.0.1:8060)",
    )
    p.add_argument(
        "--grpc-mtls-addr",
        type=_optional_host_port,
        default="127.0.0.1:8062",
        metavar="HOST:PORT",
        help="CA gRPC address for renewals over mutual TLS: the caller's current certificate is its "
        "credential, and one is required ('off' disables; default 127.0.0.1:8062)",
    )
    p.add_argument(
        "--http-addr",
        type=flags.host_port,
        default="127.0.0.1:8061",
        metavar="HOST:PORT",
        help="HTTP address: /ready, /metrics, /root-cert (default 127.0.0.1:8061)",
    )
    p.add_argument(
        "--server-dns",
        type=_names,
        default=DEFAULT_DNS,
        metavar="NAMES",
        help=f"comma-separated DNS SANs of citadel's serving certificate (default {DEFAULT_DNS})",
    )
    p.add_argument(
        "--server-ips",
        type=_names,
        default="127.0.0.1",
        metavar="IPS",
        help="comma-separated IP SANs of citadel's serving certificate (default 127.0.0.1)",
    )
    p.add_argument(
        "--log-level",
        choices=log.LEVEL_NAMES,
        metavar="LEVEL",
        help=f"one of {', '.join(log.LEVEL_NAMES)} (env {log.ENV_VAR}, default info)",
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup("citadel", args.log_level)
    return app.run(
        app.CitadelConfig(
            root_dir=args.root_dir,
            trust_domain=args.trust_domain,
            plugin_certs=args.plugin_certs,
            max_ttl=args.max_ttl,
            default_ttl=args.default_ttl,
            key_type=args.key_type,
            grpc_addr=args.grpc_addr,
            grpc_mtls_addr=args.grpc_mtls_addr,
            http_addr=args.http_addr,
            server_dns=args.server_dns,
            server_ips=args.server_ips,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
