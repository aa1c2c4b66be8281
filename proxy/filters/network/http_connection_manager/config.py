"""The HttpConnectionManager's immutable, compiled configuration (built once per config version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import HTTP_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.tls.xfcc import XfccConfig

HCM = hcm_pb2.HttpConnectionManager

ROUTER_FILTER = "envoy.filters.http.router"
ROUTER_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# What Isthmus implements of HttpConnectionManager; every other field set is a ConfigError.
HCM_SPEC = {
    "codec_type": True,  # AUTO and HTTP1 only (checked below)
    "stat_prefix": True,
    "route_config": True,  # checked by compile_route_configuration
    "rds": {"config_source": True, "route_config_name": True},
    "http_filters": {"name": True, "typed_config": True},
    "access_log": True,  # checked by build_access_loggers
    "common_http_protocol_options": {
        "idle_timeout": True,
        "max_headers_count": True,
        "max_requests_per_connection": True,
    },
    "http_protocol_options": {
        "allow_absolute_url": True,
        "accept_http_10": True,
        "default_host_for_http_10": True,
    },
    "server_name": True,
    "server_header_transformation": True,
    "max_request_headers_kb": True,
    "stream_idle_timeout": True,
    "request_timeout": True,
    "request_headers_timeout": True,
    "drain_timeout": True,
    "delayed_close_timeout": True,
    "use_remote_address": True,
    "xff_num_trusted_hops": True,
    "skip_xff_append": True,
    "via": True,
    "generate_request_id": True,
    "preserve_external_request_id": True,
    "always_set_request_id_in_response": True,
    "proxy_100_continue": True,  # only false is implemented (checked below)
    "upgrade_configs": {"upgrade_type": True, "enabled": True},
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": True,
    "forward_client_cert_details": True,
    "set_current_client_cert_details": {
        "subject": True,
        "cert": True,
        "chain": True,
        "dns": True,
        "uri": True,
    },
}


def _seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


class StaticRouteProvider:
    """Routes from an inline ``route_config``. ``current()`` is what a stream reads once."""

    __slots__ = ("table",)

    def __init__(self, table: Any) -> None:
        self.table = table

    def current(self) -> Any:
        return self.table


class SwappableRouteProvider(StaticRouteProvider):
    """Routes delivered later (RDS): ``update(table)`` swaps the reference; ``None`` until the first."""

    __slots__ = ("route_config_name",)

    def __init__(self, route_config_name: str) -> None:
        super().__init__(None)
        self.route_config_name = route_config_name

    def update(self, table: Any) -> None:
        self.table = table


@dataclass(eq=False)
class HcmStats:
    cx_total: Any
    cx_active: Any
    cx_http1_total: Any
    cx_http1_active: Any
    cx_destroy: Any
    cx_protocol_error: Any
    cx_idle_timeout: Any
    cx_drain_close: Any
    cx_upgrades_total: Any
    cx_upgrades_active: Any
    rq_total: Any
    rq_http1_total: Any
    rq_active: Any
    rq_completed: Any
    rq_xx: tuple  # index 1..5
    rq_time: Any
    rq_timeout: Any
    rq_idle_timeout: Any
    rq_header_timeout: Any
    rq_rx_reset: Any
    rq_tx_reset: Any
    rq_non_relative_path: Any

    @classmethod
    def build(cls, scope) -> HcmStats:
        c, g = scope.counter, scope.gauge
        return cls(
            cx_total=c("downstream_cx_total"),
            cx_active=g("downstream_cx_active"),
            cx_http1_total=c("downstream_cx_http1_total"),
            cx_http1_active=g("downstream_cx_http1_active"),
            cx_destroy=c("downstream_cx_destroy"),
            cx_protocol_error=c("downstream_cx_protocol_error"),
            cx_idle_timeout=c("downstream_cx_idle_timeout"),
            cx_drain_close=c("downstream_cx_drain_close"),
            cx_upgrades_total=c("downstream_cx_upgrades_total"),
            cx_upgrades_active=g("downstream_cx_upgrades_active"),
            rq_total=c("downstream_rq_total"),
            rq_http1_total=c("downstream_rq_http1_total"),
            rq_active=g("downstream_rq_active"),
            rq_completed=c("downstream_rq_completed"),
            rq_xx=(None,) + tuple(c(f"downstream_rq_{i}xx") for i in range(1, 6)),
            rq_time=scope.histogram("downstream_rq_time"),
            rq_timeout=c("downstream_rq_timeout"),
            rq_idle_timeout=c("downstream_rq_idle_timeout"),
            rq_header_timeout=c("downstream_rq_header_timeout"),
            rq_rx_reset=c("downstream_rq_rx_reset"),
            rq_tx_reset=c("downstream_rq_tx_reset"),
            rq_non_relative_path=c("downstream_rq_non_relative_path"),
        )


@dataclass(eq=False)
class HcmConfig:
    """Everything a connection and its streams read; shared, never mutated after build."""

    stat_prefix: str
    stats: HcmStats
    route_provider: Any
    filter_factories: list = field(default_factory=list)  # [(name, factory)]
    access_loggers: list = field(default_factory=list)
    idle_timeout: float | None = 3600.0  # Envoy's default connection idle timeout: 1 hour
    max_header_bytes: int = 60 * 1024
    max_headers_count: int = 100
    max_requests_per_connection: int = 0
    request_timeout: float | None = None
    request_headers_timeout: float | None = None
    stream_idle_timeout: float | None = 300.0
    drain_timeout: float = 5.0
    delayed_close_timeout: float = 1.0
    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    via: str = ""
    generate_request_id: bool = True
    preserve_external_request_id: bool = False
    always_set_request_id_in_response: bool = False
    server_name: str = "envoy"
    server_header_transformation: int = 0  # OVERWRITE
    upgrade_types: frozenset = frozenset()
    accept_http_10: bool = False
    default_host_for_http_10: str = ""
    allow_absolute_url: bool = True
    buffer_limit: int = 1024 * 1024  # per-stream request body high-water mark
    server: Any = None
    # normalize_path / merge_slashes / path_with_escaped_slashes_action compiled into one object
    # (proxy.core.path.RequestPathNormalizer); None when the request path is left as received.
    path_normalizer: Any = None
    # x-forwarded-client-cert (proxy.tls.xfcc.XfccConfig); Envoy's default is SANITIZE (header removed).
    xfcc: Any = None


def build_config(msg: hcm_pb2.HttpConnectionManager, ctx: FactoryContext, path: str) -> HcmConfig:
    reject_unsupported(msg, HCM_SPEC, path)
    if msg.codec_type not in (HCM.AUTO, HCM.HTTP1):
        raise ConfigError(f"{path}.codec_type", "only AUTO and HTTP1 codecs are supported by Isthmus yet")
    if not msg.stat_prefix:
        raise ConfigError(f"{path}.stat_prefix", "stat_prefix is required")
    if msg.proxy_100_continue:
        raise ConfigError(
            f"{path}.proxy_100_continue", "proxying 100-continue is not supported by Isthmus yet"
        )

    # Routes.
    which = msg.WhichOneof("route_specifier")
    if which == "route_config":
        from proxy.router import compile_route_configuration

        provider = StaticRouteProvider(compile_route_configuration(msg.route_config, f"{path}.route_config"))
    elif which == "rds":
        # Set by the server when the bootstrap has dynamic_resources (proxy.xds.handlers.RdsHandler):
        # factory(rds, path, stat_prefix) -> a provider the RDS handler updates.
        factory = ctx.extra.get("rds_provider_factory")
        if factory is None:
            raise ConfigError(
                f"{path}.rds",
                "rds needs xDS (dynamic_resources.ads_config in the bootstrap); or use an inline route_config",
            )
        provider = factory(msg.rds, f"{path}.rds", msg.stat_prefix)
    else:
        raise ConfigError(path, "either route_config or rds is required")

    # HTTP filters: the last one must be the (terminal) router, as Envoy checks.
    factories = []
    n = len(msg.http_filters)
    for i, hf in enumerate(msg.http_filters):
        fpath = f"{path}.http_filters[{i}]"
        typed = hf.typed_config if hf.HasField("typed_config") else None
        ext, fmsg = HTTP_FILTERS.resolve(hf.name, typed, fpath)
        is_router = ext.name == ROUTER_FILTER
        if is_router and i != n - 1:
            raise ConfigError(fpath, f"the terminal filter '{ext.name}' must be the last HTTP filter")
        if i == n - 1 and not is_router:
            raise ConfigError(
                fpath,
                f"non-terminal filter '{hf.name}' is the last filter in the HTTP "
                "filter chain; the last one must be envoy.filters.http.router",
            )
        factories.append((ext.name, ext.factory(fmsg, ctx, f"{fpath}.typed_config")))
    if n == 0:
        raise ConfigError(
            f"{path}.http_filters", "the HTTP filter chain needs envoy.filters.http.router last"
        )

    from proxy.accesslog.loggers import build_access_loggers

    loggers = build_access_loggers(msg.access_log, ctx, f"{path}.access_log")

    cfg = HcmConfig(
        stat_prefix=msg.stat_prefix,
        stats=HcmStats.build(ctx.stats.scope(f"http.{msg.stat_prefix}.")),
        route_provider=provider,
        filter_factories=factories,
        access_loggers=loggers,
        server=ctx.server,
    )
    cho = msg.common_http_protocol_options
    if cho.HasField("idle_timeout"):
        t = _seconds(cho.idle_timeout)
        cfg.idle_timeout = t if t > 0 else None
    if cho.HasField("max_headers_count"):
        cfg.max_headers_count = cho.max_headers_count.value
    if cho.HasField("max_requests_per_connection"):
        cfg.max_requests_per_connection = cho.max_requests_per_connection.value
    hpo = msg.http_protocol_options
    if hpo.HasField("allow_absolute_url"):
        cfg.allow_absolute_url = hpo.allow_absolute_url.value
    cfg.accept_http_10 = hpo.accept_http_10
    cfg.default_host_for_http_10 = hpo.default_host_for_http_10
    if msg.HasField("max_request_headers_kb"):
        kb = msg.max_request_headers_kb.value
        if not 1 <= kb <= 8192:
            raise ConfigError(f"{path}.max_request_headers_kb", "must be between 1 and 8192")
        cfg.max_header_bytes = kb * 1024
    # Timeouts: a zero duration disables, as in Envoy.
    if msg.HasField("stream_idle_timeout"):
        t = _seconds(msg.stream_idle_timeout)
        cfg.stream_idle_timeout = t if t > 0 else None
    if msg.HasField("request_timeout"):
        t = _seconds(msg.request_timeout)
        cfg.request_timeout = t if t > 0 else None
    if msg.HasField("request_headers_timeout"):
        t = _seconds(msg.request_headers_timeout)
        cfg.request_headers_timeout = t if t > 0 else None
    if msg.HasField("drain_timeout"):
        cfg.drain_timeout = _seconds(msg.drain_timeout)
    if msg.HasField("delayed_close_timeout"):
        cfg.delayed_close_timeout = _seconds(msg.delayed_close_timeout)
    if msg.HasField("use_remote_address"):
        cfg.use_remote_address = msg.use_remote_address.value
    cfg.xff_num_trusted_hops = msg.xff_num_trusted_hops
    cfg.skip_xff_append = msg.skip_xff_append
    cfg.via = msg.via
    if msg.HasField("generate_request_id"):
        cfg.generate_request_id = msg.generate_request_id.value
    cfg.preserve_external_request_id = msg.preserve_external_request_id
    cfg.always_set_request_id_in_response = msg.always_set_request_id_in_response
    if msg.server_name:
        cfg.server_name = msg.server_name
    cfg.server_header_transformation = msg.server_header_transformation
    upgrades = set()
    for i, uc in enumerate(msg.upgrade_configs):
        if uc.HasField("enabled") and not uc.enabled.value:
            continue
        if not uc.upgrade_type:
            raise ConfigError(f"{path}.upgrade_configs[{i}].upgrade_type", "upgrade_type is required")
        upgrades.add(uc.upgrade_type.lower())
    cfg.upgrade_types = frozenset(upgrades)
    cfg.path_normalizer = build_path_normalizer(msg, ctx.stats.scope(f"http.{msg.stat_prefix}."))
    cfg.xfcc = XfccConfig.from_hcm(msg)
    return cfg


class _PathNormalizationStats:
    __slots__ = ("failed", "redirected")

    def __init__(self, scope) -> None:
        self.failed = scope.counter("downstream_rq_failed_path_normalization")
        self.redirected = scope.counter("downstream_rq_redirected_with_normalized_path")


def build_path_normalizer(msg: hcm_pb2.HttpConnectionManager, scope):
    """normalize_path / merge_slashes / path_with_escaped_slashes_action -> RequestPathNormalizer.

    Always built: even with nothing set, a fragment in the request target is stripped (Envoy's default).
    IMPLEMENTATION_SPECIFIC_DEFAULT means KEEP_UNCHANGED, as in Envoy.
    """
    from proxy.core import path as pathnorm

    action = msg.path_with_escaped_slashes_action
    if action == pathnorm.IMPLEMENTATION_SPECIFIC_DEFAULT:
        action = pathnorm.KEEP_UNCHANGED
    return pathnorm.RequestPathNormalizer(
        normalize=msg.HasField("normalize_path") and msg.normalize_path.value,
        merge=msg.merge_slashes,
        escaped_slashes=action,
        stats=_PathNormalizationStats(scope),
    )
