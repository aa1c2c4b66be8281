"""The bootstrap's ``dynamic_resources`` as the ADS client needs it (pure; raises ConfigError).

Supported, as in Envoy: ``ads_config`` with ``api_type`` GRPC (SotW) or DELTA_GRPC (Delta),
``transport_api_version: V3`` and one ``grpc_services[0].envoy_grpc.cluster_name`` naming a static
cluster (STATIC: its first endpoint; STRICT_DNS/LOGICAL_DNS: its first hostname, resolved by gRPC);
``lds_config``/``cds_config`` as ``ads: {}`` with an optional ``initial_fetch_timeout``.
Everything else in these messages is reported, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2

from proxy.config.errors import ConfigError
from proxy.xds import api

DEFAULT_INITIAL_FETCH_TIMEOUT_S = 15.0

_ApiType = config_source_pb2.ApiConfigSource
_SUPPORTED_ADS_FIELDS = {
    "api_type",
    "transport_api_version",
    "grpc_services",
    "set_node_on_first_message_only",
}
_SUPPORTED_SOURCE_FIELDS = {"ads", "initial_fetch_timeout", "resource_api_version"}


@dataclass(frozen=True)
class AdsConfig:
    delta: bool
    cluster_name: str
    target: str  # gRPC target "host:port"
    lds: bool = False  # lds_config is `ads: {}`
    cds: bool = False
    set_node_on_first_message_only: bool = False
    # type_url -> seconds (0 disables); types not listed use DEFAULT_INITIAL_FETCH_TIMEOUT_S
    initial_fetch_timeouts: dict[str, float] = field(default_factory=dict)

    def initial_fetch_timeout(self, type_url: str) -> float:
        return self.initial_fetch_timeouts.get(type_url, DEFAULT_INITIAL_FETCH_TIMEOUT_S)


def duration_s(d) -> float:
    return d.seconds + d.nanos / 1e9


def config_source_timeout(source: config_source_pb2.ConfigSource, path: str) -> float:
    """initial_fetch_timeout of a ConfigSource that must be ``ads: {}`` (used for RDS and EDS too)."""
    _reject_set_fields(source, _SUPPORTED_SOURCE_FIELDS, path)
    if source.WhichOneof("config_source_specifier") != "ads":
        raise ConfigError(
            path, "only `ads: {}` config sources are supported (set dynamic_resources.ads_config)"
        )
    if source.resource_api_version not in (config_source_pb2.AUTO, config_source_pb2.V3):
        raise ConfigError(f"{path}.resource_api_version", "only V3 is supported")
    if source.HasField("initial_fetch_timeout"):
        return duration_s(source.initial_fetch_timeout)
    return DEFAULT_INITIAL_FETCH_TIMEOUT_S


def ads_config_from_bootstrap(bootstrap: bootstrap_pb2.Bootstrap) -> AdsConfig | None:
    """None when the bootstrap has no ``dynamic_resources``."""
    if not bootstrap.HasField("dynamic_resources"):
        return None
    dyn = bootstrap.dynamic_resources
    base = "dynamic_resources"
    _reject_set_fields(dyn, {"ads_config", "lds_config", "cds_config"}, base)
    if not dyn.HasField("ads_config"):
        raise ConfigError(f"{base}.ads_config", "ads_config is required (only ADS is supported)")
    ads = dyn.ads_config
    path = f"{base}.ads_config"
    _reject_set_fields(ads, _SUPPORTED_ADS_FIELDS, path)
    if ads.api_type == _ApiType.GRPC:
        delta = False
    elif ads.api_type == _ApiType.DELTA_GRPC:
        delta = True
    else:
        name = _ApiType.ApiType.Name(ads.api_type)
        raise ConfigError(f"{path}.api_type", f"{name} is not supported; use GRPC or DELTA_GRPC")
    if ads.transport_api_version != config_source_pb2.V3:
        name = config_source_pb2.ApiVersion.Name(ads.transport_api_version)
        raise ConfigError(f"{path}.transport_api_version", f"{name} is not supported; use V3")
    if len(ads.grpc_services) != 1:
        raise ConfigError(f"{path}.grpc_services", "exactly one grpc_service is required")
    svc = ads.grpc_services[0]
    spath = f"{path}.grpc_services[0]"
    if svc.WhichOneof("target_specifier") != "envoy_grpc":
        raise ConfigError(spath, "only envoy_grpc is supported")
    _reject_set_fields(svc, {"envoy_grpc", "timeout"}, spath)
    _reject_set_fields(svc.envoy_grpc, {"cluster_name"}, f"{spath}.envoy_grpc")
    cluster_name = svc.envoy_grpc.cluster_name
    if not cluster_name:
        raise ConfigError(f"{spath}.envoy_grpc.cluster_name", "a cluster name is required")
    target = _cluster_target(bootstrap, cluster_name, f"{spath}.envoy_grpc.cluster_name")

    timeouts: dict[str, float] = {}
    lds = cds = False
    if dyn.HasField("lds_config"):
        timeouts[api.LISTENER] = config_source_timeout(dyn.lds_config, f"{base}.lds_config")
        lds = True
    if dyn.HasField("cds_config"):
        timeouts[api.CLUSTER] = config_source_timeout(dyn.cds_config, f"{base}.cds_config")
        cds = True
    return AdsConfig(
        delta=delta,
        cluster_name=cluster_name,
        target=target,
        lds=lds,
        cds=cds,
        set_node_on_first_message_only=ads.set_node_on_first_message_only,
        initial_fetch_timeouts=timeouts,
    )


def _cluster_target(bootstrap: bootstrap_pb2.Bootstrap, name: str, path: str) -> str:
    for cluster in bootstrap.static_resources.clusters:
        if cluster.name == name:
            break
    else:
        raise ConfigError(path, f"cluster {name!r} is not defined in static_resources.clusters")
    kind = cluster.type
    if kind not in (
        cluster_pb2.Cluster.STATIC,
        cluster_pb2.Cluster.STRICT_DNS,
        cluster_pb2.Cluster.LOGICAL_DNS,
    ):
        raise ConfigError(path, f"cluster {name!r} must be STATIC, STRICT_DNS or LOGICAL_DNS")
    for locality in cluster.load_assignment.endpoints:
        for lb_endpoint in locality.lb_endpoints:
            sa = lb_endpoint.endpoint.address.socket_address
            if sa.address and sa.port_value:
                host = f"[{sa.address}]" if ":" in sa.address else sa.address
                return f"{host}:{sa.port_value}"
    raise ConfigError(path, f"cluster {name!r} has no endpoint with a socket_address")


def _reject_set_fields(msg, supported: set[str], path: str) -> None:
    for fd, _ in msg.ListFields():
        if fd.name not in supported:
            raise ConfigError(f"{path}.{fd.name}", "not supported")
