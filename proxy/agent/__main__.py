"""`python -m proxy.agent`: parse flags, then run the agent (proxy.agent.app): certificates and SDS, and the
proxy it bootstraps, supervises and drains (unless --no-proxy)."""

import argparse
import sys
from pathlib import Path

from isthmus import flags, log
from proxy.agent import app, csr
from proxy.agent import bootstrap as bootstrap_builder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy.agent",
        description="The proxy agent (pilot-agent): gets the workload's certificate from citadel (the private "
        "key is generated here and never sent), renews it at half its lifetime, and serves it to the proxy over "
        "SDS (resources 'default' and 'ROOTCA') on a Unix socket. It writes the proxy's bootstrap, starts "
        "`python -m proxy` once the certificate is there, restarts it with back-off if it dies, reports its "
        "readiness on the status port, and drains it on SIGTERM before stopping it.",
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
        help="Unix socket to serve SDS on (default ./etc/istio/proxy/SDS); a path longer than 107 bytes "
        "is served under a shorter name (relative, or a private dir under $XDG_RUNTIME_DIR or /tmp)",
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
    w = p.add_argument_group("the proxy (ignored with --no-proxy)")
    w.add_argument("--no-proxy", action="store_true", help="certificates and SDS only: do not run a proxy")
    w.add_argument("--type", dest="proxy_type", choices=bootstrap_builder.PROXY_TYPES, default="sidecar",
                   help="sidecar (default) or router (a gateway)")  # fmt: skip
    w.add_argument(
        "--ip", default="127.0.0.1", help="the workload's IP: node id, admin, stats and status address"
    )
    w.add_argument("--name", help="the workload (pod) name; required unless --no-proxy")
    w.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a workload label (repeatable), e.g. --label app=reviews --label version=v1")  # fmt: skip
    w.add_argument("--service", default="", metavar="NAME[,NAME]",
                   help="service(s) this workload serves, registered by pilot (ISTHMUS_SERVICE)")  # fmt: skip
    w.add_argument("--service-ports", default="", metavar="NAME:PORT[:TARGET],...",
                   help="the service ports, e.g. http:9080 (ISTHMUS_SERVICE_PORTS)")  # fmt: skip
    w.add_argument("--discovery-address", default="127.0.0.1:15010", metavar="HOST:PORT",
                   help="pilot's xDS address (default 127.0.0.1:15010)")  # fmt: skip
    w.add_argument("--xds-type", choices=("sotw", "delta"), default="sotw",
                   help="ADS flavour: sotw (GRPC, default) or delta (DELTA_GRPC)")  # fmt: skip
    w.add_argument("--interception-mode", choices=bootstrap_builder.INTERCEPTION_MODES, default="NONE",
                   help="NONE (local mode: listeners bind --ip; default) or REDIRECT (iptables capture)")  # fmt: skip
    w.add_argument("--app-address", default="", metavar="IP",
                   help="with --interception-mode NONE: the app's private address; the sidecar then binds "
                   "--ip:<workload port> itself (mTLS, telemetry) and forwards to the app here "
                   "(ISTHMUS_APP_ADDRESS node metadata)")  # fmt: skip
    w.add_argument("--cluster-id", default="Kubernetes", help="CLUSTER_ID node metadata (default Kubernetes)")
    w.add_argument(
        "--domain", default="cluster.local", help="DNS domain of the node id (default cluster.local)"
    )
    w.add_argument(
        "--proxy-admin-port", type=int, default=15000, help="the proxy's admin port (default 15000)"
    )
    w.add_argument("--stats-port", type=int, default=15090,
                   help="the proxy's Prometheus listener port, 0 for none (default 15090)")  # fmt: skip
    w.add_argument("--status-port", type=int, default=15021,
                   help="the agent's status port: /healthz/ready, /status (default 15021)")  # fmt: skip
    w.add_argument("--drain-duration", type=flags.duration, default="5s", metavar="DURATION",
                   help="on SIGTERM, how long the proxy drains before it is stopped (Istio's "
                   "terminationDrainDuration; default 5s)")  # fmt: skip
    w.add_argument("--cert-wait", type=flags.duration, default="10s", metavar="DURATION",
                   help="longest wait for the first certificate before the proxy starts anyway (default 10s)")  # fmt: skip
    w.add_argument("--bootstrap", type=Path, default=Path("./etc/istio/proxy/envoy-rev.json"), metavar="FILE",
                   help="where to write the proxy's bootstrap (default ./etc/istio/proxy/envoy-rev.json)")  # fmt: skip
    w.add_argument("--proxy-log-level", choices=log.LEVEL_NAMES, metavar="LEVEL",
                   help="the proxy's -l/--log-level (default: the proxy's own)")  # fmt: skip
    w.add_argument("--restart-max", type=flags.duration, default="30s", metavar="DURATION",
                   help="longest wait between proxy restarts (default 30s; the first is 0.2s)")  # fmt: skip
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
    proxy = None
    if not args.no_proxy:
        if not args.name:
            parser.error("--name is required (or --no-proxy to serve certificates only)")
        for flag, port in (
            ("--status-port", args.status_port),
            ("--proxy-admin-port", args.proxy_admin_port),
        ):
            if not 0 < port < 65536:
                parser.error(f"{flag} {port}: outside 1..65535")
        try:
            options = bootstrap_builder.BootstrapOptions(
                name=args.name,
                ip=args.ip,
                proxy_type=args.proxy_type,
                namespace=args.namespace,
                service_account=args.service_account,
                labels=bootstrap_builder.parse_labels(args.label),
                service=args.service,
                service_ports=args.service_ports,
                discovery_address=args.discovery_address,
                delta=args.xds_type == "delta",
                sds_socket=str(args.sds_socket.absolute()),
                admin_port=args.proxy_admin_port,
                stats_port=args.stats_port,
                interception_mode=args.interception_mode,
                cluster_id=args.cluster_id,
                dns_domain=args.domain,
                app_address=args.app_address,
            )
            bootstrap_builder.validate(options)
        except bootstrap_builder.BootstrapError as e:
            parser.error(str(e))
        proxy = app.ProxyConfig(
            bootstrap=options,
            bootstrap_path=args.bootstrap,
            status_port=args.status_port,
            drain_duration=args.drain_duration,
            cert_wait=args.cert_wait,
            log_level=args.proxy_log_level,
            restart_max=args.restart_max,
        )
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
            proxy=proxy,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
