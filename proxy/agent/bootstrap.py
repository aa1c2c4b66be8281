"""The proxy's Envoy v3 bootstrap, as Istio's pilot-agent writes it (pure: options in, a JSON-able dict out).

What it carries, and why:

* ``node``: Istio's node id ``<type>~<ip>~<name>.<ns>~<ns>.svc.<domain>`` (``sidecar`` or ``router``)
  and Istio's metadata keys (``NAMESPACE``, ``LABELS``, ``SERVICE_ACCOUNT``, ``INSTANCE_IPS``,
  ``WORKLOAD_NAME``, ``CLUSTER_ID``, ``INTERCEPTION_MODE``), plus the Isthmus keys pilot's
  auto-registration reads (``ISTHMUS_SERVICE``, ``ISTHMUS_SERVICE_PORTS``; see
  pilot/serviceregistry/autoregister.py), ``ISTHMUS_ADMIN`` (the admin address, for the CLI) and, in
  local mode, ``ISTHMUS_APP_ADDRESS`` (the app's private address: the sidecar binds ``<ip>:<port>`` with
  inbound listeners and forwards to the app there; see docs/pilot-architecture.md).
* ``admin`` on ``<ip>:<admin port>`` (15000).
* ``dynamic_resources``: ADS (SotW ``GRPC`` or ``DELTA_GRPC``) to the static ``xds-grpc`` cluster (pilot);
  listeners and clusters over ADS with ``initial_fetch_timeout: 0s`` as Istio sets it (the proxy is not
  ready until pilot has configured it).
* ``sds-grpc``: a STATIC cluster whose one endpoint is a ``pipe`` address, the agent's SDS Unix socket.
  The name is the one pilot's TLS contexts point at (pilot/networking/tls.py ``SDS_CLUSTER``).
* Prometheus on ``<ip>:15090``: a static listener routing ``/stats/prometheus`` to the static
  ``prometheus_stats`` cluster, which is the admin address (Istio's way).

Only fields the Isthmus proxy implements are generated: it rejects the rest, as Envoy would not.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

SIDECAR = "sidecar"
ROUTER = "router"
PROXY_TYPES = (SIDECAR, ROUTER)
INTERCEPTION_MODES = ("NONE", "REDIRECT")

XDS_CLUSTER = "xds-grpc"
SDS_CLUSTER = "sds-grpc"  # must match pilot/networking/tls.py SDS_CLUSTER
PROMETHEUS_CLUSTER = "prometheus_stats"
PROMETHEUS_LISTENER = "prometheus_stats"
PROMETHEUS_PATH = "/stats/prometheus"

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# Istio's circuit breakers on the control-plane clusters: never let a breaker cut pilot or the agent off.
_CONTROL_PLANE_BREAKERS = {
    "thresholds": [
        {
            "priority": priority,
            "max_connections": 100000,
            "max_pending_requests": 100000,
            "max_requests": 100000,
        }
        for priority in ("DEFAULT", "HIGH")
    ]
}

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SERVICE_PORT = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_]*:\d{1,5}(:\d{1,5})?$")


class BootstrapError(ValueError):
    """An option the bootstrap cannot be built from (names the option)."""


@dataclass(frozen=True)
class BootstrapOptions:
    name: str  # the workload (pod) name
    ip: str = "127.0.0.1"
    proxy_type: str = SIDECAR
    namespace: str = "default"
    service_account: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    service: str = ""  # ISTHMUS_SERVICE (comma-separated names)
    service_ports: str = ""  # ISTHMUS_SERVICE_PORTS ("http:9080" or "http:9080:19080,...")
    discovery_address: str = "127.0.0.1:15010"
    delta: bool = False
    sds_socket: str = "./etc/istio/proxy/SDS"
    admin_port: int = 15000
    stats_port: int = 15090  # 0: no Prometheus listener
    interception_mode: str = "NONE"
    cluster_id: str = "Kubernetes"
    dns_domain: str = "cluster.local"
    # ISTHMUS_APP_ADDRESS: where the app listens when the sidecar owns <ip>:<port> (local mode, no capture)
    app_address: str = ""


def split_host_port(address: str, option: str = "--discovery-address") -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BootstrapError(f"{option} {address!r}: expected HOST:PORT")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def validate(opts: BootstrapOptions) -> None:
    if opts.proxy_type not in PROXY_TYPES:
        raise BootstrapError(f"--type {opts.proxy_type!r}: expected one of {', '.join(PROXY_TYPES)}")
    if not _is_ip(opts.ip):
        raise BootstrapError(f"--ip {opts.ip!r} is not an IP address")
    if not _NAME.match(opts.name):
        raise BootstrapError(f"--name {opts.name!r}: expected a DNS-1123 name (lower case, digits, '-', '.')")
    if not _NAME.match(opts.namespace) or "." in opts.namespace:
        raise BootstrapError(f"--namespace {opts.namespace!r}: expected a DNS-1123 label")
    if not opts.service_account:
        raise BootstrapError("--service-account must not be empty")
    for key in opts.labels:
        if not _LABEL_KEY.match(key):
            raise BootstrapError(f"--label {key!r}: not a valid label key")
    if opts.interception_mode not in INTERCEPTION_MODES:
        raise BootstrapError(
            f"--interception-mode {opts.interception_mode!r}: expected one of {', '.join(INTERCEPTION_MODES)}"
        )
    ports = [p.strip() for p in opts.service_ports.split(",") if p.strip()]
    for item in ports:
        if not _SERVICE_PORT.match(item) or not all(0 < int(n) < 65536 for n in item.split(":")[1:]):
            raise BootstrapError(f"--service-ports: {item!r} is not name:port or name:port:targetPort")
    if opts.service and not ports:
        raise BootstrapError("--service needs --service-ports (pilot registers the service on those ports)")
    if opts.app_address and not _is_ip(opts.app_address):
        raise BootstrapError(f"--app-address {opts.app_address!r} is not an IP address")
    if opts.app_address and opts.app_address == opts.ip:
        raise BootstrapError(
            f"--app-address {opts.app_address}: must differ from --ip (the sidecar binds --ip)"
        )
    split_host_port(opts.discovery_address)
    for option, port in (("--proxy-admin-port", opts.admin_port), ("--stats-port", opts.stats_port)):
        if not 0 <= port < 65536 or (port == 0 and option == "--proxy-admin-port"):
            raise BootstrapError(f"{option} {port}: outside 1..65535")
    if not opts.sds_socket:
        raise BootstrapError("--sds-socket must not be empty")


def node_id(opts: BootstrapOptions) -> str:
    return f"{opts.proxy_type}~{opts.ip}~{opts.name}.{opts.namespace}~{opts.namespace}.svc.{opts.dns_domain}"


def admin_address(opts: BootstrapOptions) -> str:
    return f"{opts.ip}:{opts.admin_port}"


def node_metadata(opts: BootstrapOptions) -> dict[str, object]:
    meta: dict[str, object] = {
        "NAMESPACE": opts.namespace,
        "LABELS": dict(sorted(opts.labels.items())),
        "SERVICE_ACCOUNT": opts.service_account,
        "INSTANCE_IPS": opts.ip,
        "WORKLOAD_NAME": opts.name,
        "CLUSTER_ID": opts.cluster_id,
        "INTERCEPTION_MODE": opts.interception_mode,
        "ISTHMUS_ADMIN": admin_address(opts),
    }
    if opts.app_address:
        meta["ISTHMUS_APP_ADDRESS"] = opts.app_address
    if opts.service:
        meta["ISTHMUS_SERVICE"] = opts.service
    if opts.service_ports:
        meta["ISTHMUS_SERVICE_PORTS"] = ",".join(
            p.strip() for p in opts.service_ports.split(",") if p.strip()
        )
    return meta


def _socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, address: dict, connect_timeout: str, **extra) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
        **extra,
    }


def xds_cluster(opts: BootstrapOptions) -> dict:
    host, port = split_host_port(opts.discovery_address)
    cluster = _static_cluster(
        XDS_CLUSTER, _socket_address(host, port), "1s", circuit_breakers=_CONTROL_PLANE_BREAKERS
    )
    if not _is_ip(host):
        # a name (compose: "pilot"): resolved by DNS, as Istio's STRICT_DNS xds-grpc cluster
        cluster["type"] = "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
    return cluster


def sds_cluster(opts: BootstrapOptions) -> dict:
    return _static_cluster(
        SDS_CLUSTER, {"pipe": {"path": opts.sds_socket}}, "1s", circuit_breakers=_CONTROL_PLANE_BREAKERS
    )


def prometheus_cluster(opts: BootstrapOptions) -> dict:
    return _static_cluster(PROMETHEUS_CLUSTER, _socket_address(opts.ip, opts.admin_port), "0.250s")


def prometheus_listener(opts: BootstrapOptions) -> dict:
    hcm = {
        "@type": HCM_TYPE,
        "codec_type": "AUTO",
        "stat_prefix": "stats",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": PROMETHEUS_PATH}, "route": {"cluster": PROMETHEUS_CLUSTER}}
                    ],
                }
            ]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "name": PROMETHEUS_LISTENER,
        "address": _socket_address(opts.ip, opts.stats_port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _ads_source() -> dict:
    return {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}


def service_cluster(opts: BootstrapOptions) -> str:
    """Istio's node.cluster: the canonical service (the ``app`` label, else the workload) and namespace."""
    return f"{opts.labels.get('app') or opts.name}.{opts.namespace}"


def build_bootstrap(opts: BootstrapOptions) -> dict:
    """The bootstrap as a dict (json.dumps it; it parses into envoy.config.bootstrap.v3.Bootstrap)."""
    validate(opts)
    listeners = [prometheus_listener(opts)] if opts.stats_port else []
    clusters = [xds_cluster(opts), sds_cluster(opts)]
    if opts.stats_port:
        clusters.append(prometheus_cluster(opts))
    return {
        "node": {"id": node_id(opts), "cluster": service_cluster(opts), "metadata": node_metadata(opts)},
        "admin": {"address": _socket_address(opts.ip, opts.admin_port)},
        "dynamic_resources": {
            "lds_config": _ads_source(),
            "cds_config": _ads_source(),
            "ads_config": {
                "api_type": "DELTA_GRPC" if opts.delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
        },
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def parse_labels(items: list[str]) -> dict[str, str]:
    """Repeated ``--label k=v`` into a dict; raise BootstrapError naming the bad item."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BootstrapError(f"--label {item!r}: expected KEY=VALUE")
        if key in labels and labels[key] != value:
            raise BootstrapError(f"--label {key!r} given twice with different values")
        labels[key] = value
    return labels
