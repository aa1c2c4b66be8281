"""Settings from environment variables, the way Istio's Bookinfo reads them (pure; no I/O).

Each app listens on LISTEN_ADDRESS:LISTEN_PORT (default 0.0.0.0:9080, Istio's app port) and finds an
upstream at `<NAME>_HOSTNAME[.SERVICES_DOMAIN]:<NAME>_SERVICE_PORT` (defaults: the service name, 9080).
Upstream calls go through the HTTP proxy named by HTTP_PROXY/NO_PROXY when those are set: that is how
a sidecar is put in front of an app in local mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PORT = 9080
DEFAULT_ADDRESS = "0.0.0.0"


@dataclass(frozen=True)
class Upstream:
    """Where an upstream service is. `hosts` has more than one entry only without a mesh (see README)."""

    name: str
    hosts: tuple[str, ...]
    port: int

    def base_urls(self) -> list[str]:
        return [f"http://{host}:{self.port}" for host in self.hosts]


def parse_port(value: str, what: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{what} must be a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} must be between 0 and 65535, got {port}")
    return port


def upstream_from_env(name: str, env: Mapping[str, str]) -> Upstream:
    """`upstream_from_env("details", os.environ)` reads DETAILS_HOSTNAME and DETAILS_SERVICE_PORT.

    The hostname may be a comma-separated list; callers then spread requests over the hosts in turn.
    """
    prefix = name.upper()
    domain = env.get("SERVICES_DOMAIN", "")
    raw_hosts = env.get(f"{prefix}_HOSTNAME") or name
    hosts = tuple(h.strip() + (f".{domain}" if domain else "") for h in raw_hosts.split(",") if h.strip())
    if not hosts:
        raise ValueError(f"{prefix}_HOSTNAME names no host: {raw_hosts!r}")
    port = parse_port(env.get(f"{prefix}_SERVICE_PORT", str(DEFAULT_PORT)), f"{prefix}_SERVICE_PORT")
    return Upstream(name=name, hosts=hosts, port=port)


def listen_from_env(env: Mapping[str, str]) -> tuple[str, int]:
    address = env.get("LISTEN_ADDRESS") or DEFAULT_ADDRESS
    port = parse_port(env.get("LISTEN_PORT", str(DEFAULT_PORT)), "LISTEN_PORT")
    return address, port
