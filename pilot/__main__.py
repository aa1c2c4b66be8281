"""`python -m pilot`: parse flags, then run pilot (``pilot.server.app``) until SIGINT/SIGTERM."""

import argparse
import asyncio
import signal
import sys

from isthmus import flags, log
from pilot.model.mesh import MeshConfigError, load_mesh_config
from pilot.server.app import Pilot, Settings


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pilot",
        description="pilot: reads Istio configuration (YAML) and serves Envoy xDS v3 (SotW and Delta ADS) "
        "to the proxies and to gRPC xDS clients.",
    )
    p.add_argument("--config-dir", metavar="DIR", help="directory of Istio YAML to load and watch")
    p.add_argument(
        "--config-store",
        metavar="DIR",
        help="directory where config applied through the API is kept (one JSON file per resource, "
        "written atomically) and loaded from at start-up, so it survives a restart; created if missing",
    )
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
        "--debounce-after",
        type=flags.duration,
        default=0.1,
        metavar="DURATION",
        help="quiet period after a change before pushing, e.g. 100ms (default 100ms; Istio's PILOT_DEBOUNCE_AFTER)",
    )
    p.add_argument(
        "--debounce-max",
        type=flags.duration,
        default=1.0,
        metavar="DURATION",
        help="longest a change waits for the quiet period (default 1s; Istio's PILOT_DEBOUNCE_MAX)",
    )
    p.add_argument(
        "--push-concurrency",
        type=positive_int,
        default=100,
        metavar="N",
        help="proxies pushed at the same time (default 100; Istio's PILOT_PUSH_THROTTLE)",
    )
    p.add_argument(
        "--unregister-grace",
        type=flags.duration,
        default=10.0,
        metavar="DURATION",
        help="how long a disconnected proxy's workload stays registered (default 10s)",
    )
    p.add_argument(
        "--mesh-config",
        metavar="FILE",
        help="Istio MeshConfig YAML: extensionProviders (envoyExtAuthzGrpc, envoyHttpAls, envoyTcpAls), "
        "defaultProviders.accessLogging, trustDomain, outboundTrafficPolicy",
    )
    p.add_argument(
        "--mixer-address",
        type=flags.host_port,
        metavar="HOST:PORT",
        help="mixer's gRPC address, e.g. 127.0.0.4:9091: providers 'mixer' (CUSTOM ext_authz) and "
        "'mixer-telemetry'/'mixer-tcp-telemetry' (default access logs) for every sidecar and gateway",
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
    if args.debounce_max < args.debounce_after:
        parser.error("--debounce-max must not be shorter than --debounce-after")
    log.setup("pilot", args.log_level)
    settings = Settings(
        grpc_addr=args.grpc_addr,
        http_addr=args.http_addr,
        config_dir=args.config_dir,
        config_store=args.config_store,
        domain=args.domain,
        root_namespace=args.root_namespace,
        debounce_after=args.debounce_after,
        debounce_max=args.debounce_max,
        push_concurrency=args.push_concurrency,
        unregister_grace=args.unregister_grace,
        mesh_config=args.mesh_config,
        mixer_address=args.mixer_address,
    )
    if args.mesh_config:
        try:
            load_mesh_config(args.mesh_config)  # a bad mesh config stops here, with its path
        except MeshConfigError as e:
            parser.error(str(e))
    return asyncio.run(_run(settings))


async def _run(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await Pilot(settings).run(stop)


if __name__ == "__main__":
    sys.exit(main())
