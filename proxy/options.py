"""Envoy's command-line flags (the subset Isthmus implements), with Envoy's names and defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from isthmus.log import LEVEL_NAMES


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 with usage on an unknown flag, like Envoy's TCLAP parser does."""


@dataclass
class Options:
    config_path: str = ""
    config_yaml: str = ""
    mode: str = "serve"
    concurrency: int = 1
    service_node: str = ""
    service_cluster: str = ""
    log_level: str = "info"
    drain_time_s: int = 600
    parent_shutdown_time_s: int = 900


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m proxy", description="Isthmus proxy: an Envoy-compatible sidecar.")
    p.add_argument("-c", "--config-path", default="", help="path to a v3 Bootstrap (YAML or JSON)")
    p.add_argument("--config-yaml", default="", help="YAML merged over the file given by --config-path")
    p.add_argument(
        "--mode",
        choices=["serve", "validate"],
        default="serve",
        help="serve (default) or validate: check the configuration and exit",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="number of worker processes sharing each listener (SO_REUSEPORT); 1 (default): one process",
    )
    p.add_argument("--service-node", default="", help="overrides node.id")
    p.add_argument("--service-cluster", default="", help="overrides node.cluster")
    p.add_argument("-l", "--log-level", default="info", choices=LEVEL_NAMES, help="log level")
    p.add_argument(
        "--drain-time-s", type=int, default=600, help="seconds to drain connections on shutdown (default 600)"
    )
    p.add_argument("--parent-shutdown-time-s", type=int, default=900, help="accepted for compatibility")
    return p


def parse_options(argv: list[str] | None = None) -> Options:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.config_path and not ns.config_yaml:
        parser.error("at least one of --config-path or --config-yaml is required")
    if ns.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if ns.drain_time_s < 0:
        parser.error("--drain-time-s must not be negative")
    return Options(
        config_path=ns.config_path,
        config_yaml=ns.config_yaml,
        mode=ns.mode,
        concurrency=ns.concurrency,
        service_node=ns.service_node,
        service_cluster=ns.service_cluster,
        log_level=ns.log_level,
        drain_time_s=ns.drain_time_s,
        parent_shutdown_time_s=ns.parent_shutdown_time_s,
    )
