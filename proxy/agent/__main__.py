"""`python -m proxy.agent`: parse flags, then run the certificate manager and SDS server (proxy.agent.app)."""

import argparse
import sys
from pathlib import Path

from isthmus import flags, log
from proxy.agent import app, csr


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy.agent",
        description="The proxy agent: gets the workload's certificate from citadel (the private key is "
        "generated here and never sent), renews it at half its lifetime, and serves it to the proxy over "
        "SDS (resources 'default' and 'ROOTCA') on a Unix socket.",
    )
    p.add_argument(
        "--citadel",
        default="127.0.0.1:8060",
        metavar="HOST:PORT",
        help="citadel's CA gRPC address, for the bootstrap token (default 127.0.0.1:8060)",
    )
    p.add_argument("--citadel-mtls", default="127.0.0.1:8062", metavar="HOST:PORT",
                   help="citadel's renewal address (mutual TLS with the current certificate); "
                   "'off' renews with the token (default 127.0.0.1:8062)")  # fmt: skip
    p.add_argument(
        "--root-cert",
        type=Path,
        required=True,
        metavar="FILE",
        help="citadel's root certificate (root-cert.pem): trusted for citadel and served as ROOTCA",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="bootstrap token (from `isthmus token create`), read at every use",
    )
    p.add_argument(
        "--sds-socket",
        type=Path,
        default=Path("./etc/istio/proxy/SDS"),
        metavar="PATH",
        help="Unix socket to serve SDS on (default ./etc/istio/proxy/SDS)",
    )
    p.add_argument("--namespace", default="default")
    p.add_argument("--service-account", default="default")
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument(
        "--cert-ttl",
        type=flags.duration,
        default="24h",
        metavar="DURATION",
        help="certificate lifetime to ask for (Istio's SECRET_TTL; default 24h)",
    )
    p.add_argument(
        "--retry-max",
        type=flags.duration,
        default="30s",
        metavar="DURATION",
        help="longest wait between attempts while citadel is unreachable (default 30s)",
    )
    p.add_argument("--key-type", choices=csr.KEY_TYPES, default="ec-p256")
    p.add_argument("--log-level", choices=log.LEVEL_NAMES, metavar="LEVEL",
                   help=f"one of {', '.join(log.LEVEL_NAMES)} (env {log.ENV_VAR}, default info)")  # fmt: skip
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cert_ttl < 1:
        parser.error("--cert-ttl must be at least 1s")
    if not args.root_cert.is_file():
        parser.error(f"--root-cert {args.root_cert}: no such file")
    if args.token_file is not None and not args.token_file.is_file():
        parser.error(f"--token-file {args.token_file}: no such file")
    log.setup("agent", args.log_level)
    return app.run(
        app.AgentConfig(
            citadel=args.citadel,
            citadel_mtls=None if args.citadel_mtls == "off" else args.citadel_mtls,
            root_cert=args.root_cert,
            token_file=args.token_file,
            sds_socket=args.sds_socket,
            namespace=args.namespace,
            service_account=args.service_account,
            trust_domain=args.trust_domain,
            cert_ttl=int(args.cert_ttl),
            retry_max=args.retry_max,
            key_type=args.key_type,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
