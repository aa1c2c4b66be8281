"""Validation of ``envoy.config.cluster.v3.Cluster``: what Isthmus implements, and the rest rejected by path."""

from __future__ import annotations

import ipaddress

# Imported here so that json_format can resolve this Any in a bootstrap (see DESIGN.md pitfalls).
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf.message import Message

from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported

HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_COMMON_HTTP = {"idle_timeout": True, "max_requests_per_connection": True}
_ENDPOINTS = {
    "locality": True,
    "metadata": True,
    "load_balancing_weight": True,
    "priority": True,
    "lb_endpoints": {
        "endpoint": {
            "address": {
                "socket_address": {"address": True, "port_value": True, "protocol": True},
                "pipe": {"path": True},  # STATIC clusters only (Istio's sds-grpc: the agent's socket)
            },
            "hostname": True,
        },
        "health_status": True,
        "metadata": True,
        "load_balancing_weight": True,
    },
}

CLUSTER_SPEC = {
    "name": True,
    "alt_stat_name": True,
    "type": True,
    "connect_timeout": True,
    "per_connection_buffer_limit_bytes": True,
    "lb_policy": True,
    "load_assignment": {
        "cluster_name": True,
        "endpoints": _ENDPOINTS,
        "policy": {"overprovisioning_factor": True},
    },
    "max_requests_per_connection": True,
    "circuit_breakers": {
        "thresholds": {
            "priority": True,
            "max_connections": True,
            "max_pending_requests": True,
            "max_requests": True,
            "max_retries": True,
            "track_remaining": True,
            "max_connection_pools": True,
        },
    },
    "common_http_protocol_options": _COMMON_HTTP,
    "http_protocol_options": {},  # HTTP/1.1 options: an empty message (as Istio sends) is fine
    "typed_extension_protocol_options": True,  # checked by check_protocol_options
    "dns_refresh_rate": True,
    "dns_failure_refresh_rate": {"base_interval": True, "max_interval": True},
    "dns_lookup_family": True,
    "cleanup_interval": True,
    "ring_hash_lb_config": {"minimum_ring_size": True, "maximum_ring_size": True},
    "maglev_lb_config": {"table_size": True},
    "least_request_lb_config": {"choice_count": True, "active_request_bias": True},
    "original_dst_lb_config": {
        "use_http_header": True,
        "http_header_name": True,
        "upstream_port_override": True,
    },
    "common_lb_config": {"healthy_panic_threshold": True, "locality_weighted_lb_config": True},
    "metadata": True,
    "eds_cluster_config": {"eds_config": True, "service_name": True},  # eds_config checked by EdsCluster
    "transport_socket": True,  # checked by proxy.tls.transport_socket.build_transport_socket
    # Istio's inbound clusters in REDIRECT mode bind 127.0.0.6 so istio-init lets the connection to the
    # app through; only the source address is implemented (checked by bind_source_address).
    "upstream_bind_config": {"source_address": {"address": True, "port_value": True, "protocol": True}},
}

# Clear messages for the fields users most often bring.
_EXPLAINED = {
    "health_checks": "active health checking is not implemented by Isthmus yet",
    "outlier_detection": "outlier detection is not implemented by Isthmus yet",
    "transport_socket_matches": "transport_socket_matches is not supported by Isthmus yet; use transport_socket",
    "cluster_type": "custom cluster types are not supported; use type STATIC, STRICT_DNS, LOGICAL_DNS, "
    "ORIGINAL_DST or EDS",
    "http2_protocol_options": "upstream HTTP/2 is not supported by Isthmus yet",
    "load_balancing_policy": "load_balancing_policy is not supported; use lb_policy",
    "lb_subset_config": "subset load balancing is not supported by Isthmus yet",
}

HTTP_PROTOCOL_OPTIONS_SPEC = {
    "common_http_protocol_options": _COMMON_HTTP,
    "explicit_http_config": {"http_protocol_options": {}},
}


def check_cluster(cluster: Message, path: str) -> None:
    for name, why in _EXPLAINED.items():
        if cluster.HasField(name) if _is_singular(cluster, name) else len(getattr(cluster, name)):
            raise ConfigError(f"{path}.{name}", why)
    reject_unsupported(cluster, CLUSTER_SPEC, path)


def bind_source_address(cluster: Message, path: str) -> tuple[str, int] | None:
    """``upstream_bind_config.source_address`` as ``(ip, port)`` for ``local_addr``, or None.

    The address must be an IP literal (Envoy resolves no names here) and the protocol TCP; port 0 lets
    the kernel pick the source port (what Istio sends)."""
    if not cluster.HasField("upstream_bind_config"):
        return None
    here = f"{path}.upstream_bind_config"
    bind = cluster.upstream_bind_config
    if not bind.HasField("source_address"):
        raise ConfigError(f"{here}.source_address", "a source_address is required")
    sa = bind.source_address
    spath = f"{here}.source_address"
    try:
        ip = ipaddress.ip_address(sa.address)
    except ValueError:
        raise ConfigError(f"{spath}.address", f"'{sa.address}' is not an IP address") from None
    if sa.protocol != 0:  # TCP
        raise ConfigError(f"{spath}.protocol", "only TCP is supported")
    if sa.port_value > 65535:
        raise ConfigError(f"{spath}.port_value", "must be at most 65535")
    return (str(ip), sa.port_value)


def _is_singular(msg: Message, name: str) -> bool:
    return not msg.DESCRIPTOR.fields_by_name[name].is_repeated


def check_protocol_options(cluster: Message, path: str):
    """Unpack typed_extension_protocol_options; return the HttpProtocolOptions or None."""
    found = None
    for key, any_msg in cluster.typed_extension_protocol_options.items():
        here = f"{path}.typed_extension_protocol_options[{key}]"
        expected = "type.googleapis.com/" + HTTP_PROTOCOL_OPTIONS_KEY
        if key != HTTP_PROTOCOL_OPTIONS_KEY or any_msg.type_url != expected:
            raise ConfigError(
                here, f"only {HTTP_PROTOCOL_OPTIONS_KEY} is supported (got type '{any_msg.type_url}')"
            )
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        if not any_msg.Unpack(opts):
            raise ConfigError(here, f"cannot unpack {any_msg.type_url}")
        reject_unsupported(opts, HTTP_PROTOCOL_OPTIONS_SPEC, here)
        found = opts
    return found
