"""``envoy.filters.http.fault``: inject delays and aborts (Envoy's HTTP fault filter).

Order per request, as Envoy: the request must match ``headers`` (and ``upstream_cluster``,
``downstream_nodes``); ``max_active_faults`` is checked; then a delay may be injected, and after it
an abort. Header-controlled faults read ``x-envoy-fault-delay-request`` (milliseconds) and
``x-envoy-fault-abort-request`` (HTTP status), with optional ``...-percentage`` headers that can only
lower the configured percentage.

Per-route configuration (Istio puts every VirtualService fault there): a route's
``typed_per_filter_config["envoy.filters.http.fault"]`` (an ``HTTPFault``) replaces the filter's
configuration for requests on that route, as Envoy's ``FaultFilter`` does; stats stay the filter's.
"""

from __future__ import annotations

import asyncio
import random

from envoy.extensions.filters.http.fault.v3 import fault_pb2

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import HTTP_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.http.base import CONTINUE, STOP, FilterStatus, HttpFilter
from proxy.router.matchers import HeaderMatcher
from proxy.router.per_filter import register_per_route
from proxy.router.percent import Fraction

DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENT_HEADER = "x-envoy-fault-delay-request-percentage"
ABORT_HEADER = "x-envoy-fault-abort-request"
ABORT_PERCENT_HEADER = "x-envoy-fault-abort-request-percentage"
ABORT_BODY = b"fault filter abort"

FAULT_SPEC = {
    "delay": {"fixed_delay": True, "header_delay": True, "percentage": True},
    "abort": {"http_status": True, "header_abort": True, "percentage": True},
    "upstream_cluster": True,
    "headers": True,
    "downstream_nodes": True,
    "max_active_faults": True,
    # Per-downstream-cluster stats are not emitted at all, so disabling them changes nothing.
    "disable_downstream_cluster_stats": True,
}


def _seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


class FaultStats:
    __slots__ = ("aborts_injected", "delays_injected", "active_faults", "faults_overflow")

    def __init__(self, scope) -> None:
        self.aborts_injected = scope.counter("aborts_injected")
        self.delays_injected = scope.counter("delays_injected")
        self.active_faults = scope.gauge("active_faults")
        self.faults_overflow = scope.counter("faults_overflow")


class FaultConfig:
    def __init__(self, msg: fault_pb2.HTTPFault, ctx: FactoryContext | None, path: str, rand=None) -> None:
        reject_unsupported(msg, FAULT_SPEC, path)
        self.ctx = ctx
        self.rand = rand or random.getrandbits
        self.fixed_delay: float | None = None
        self.header_delay = False
        self.delay_fraction: Fraction | None = None
        if msg.HasField("delay"):
            d = msg.delay
            kind = d.WhichOneof("fault_delay_secifier")
            if kind == "fixed_delay":
                self.fixed_delay = _seconds(d.fixed_delay)
            elif kind == "header_delay":
                self.header_delay = True
            else:
                raise ConfigError(f"{path}.delay", "delay needs fixed_delay or header_delay")
            self.delay_fraction = Fraction.from_proto(d.percentage, f"{path}.delay.percentage")
        self.abort_status: int | None = None
        self.header_abort = False
        self.abort_fraction: Fraction | None = None
        if msg.HasField("abort"):
            a = msg.abort
            kind = a.WhichOneof("error_type")
            if kind == "http_status":
                if not 200 <= a.http_status < 600:
                    raise ConfigError(f"{path}.abort.http_status", "http_status must be in [200, 600)")
                self.abort_status = a.http_status
            elif kind == "header_abort":
                self.header_abort = True
            else:
                raise ConfigError(f"{path}.abort", "abort needs http_status or header_abort")
            self.abort_fraction = Fraction.from_proto(a.percentage, f"{path}.abort.percentage")
        self.upstream_cluster = msg.upstream_cluster
        self.headers = tuple(HeaderMatcher(h, f"{path}.headers[{i}]") for i, h in enumerate(msg.headers))
        self.downstream_nodes = frozenset(msg.downstream_nodes)
        self.max_active_faults = msg.max_active_faults.value if msg.HasField("max_active_faults") else None
        self._stats: dict[str, FaultStats] = {}
        # Active faults are per filter config (Envoy keeps the count per filter instance config).
        self.active = 0

    def stats(self, stream) -> FaultStats:
        prefix = getattr(stream.config, "stat_prefix", "") or ""
        s = self._stats.get(prefix)
        if s is None:
            s = self._stats[prefix] = FaultStats(self.ctx.stats.scope(f"http.{prefix}.fault."))
        return s

    def applies(self, stream) -> bool:
        headers = stream.request_headers
        for hm in self.headers:
            if not hm.matches(headers):
                return False
        if self.upstream_cluster:
            route = stream.route
            action = getattr(route, "action", None) if route is not None else None
            if action is None or action.cluster != self.upstream_cluster:
                return False
        if self.downstream_nodes:
            if headers.get("x-envoy-downstream-service-node") not in self.downstream_nodes:
                return False
        return True

    def delay_for(self, headers) -> float | None:
        """The delay to inject (seconds), or None."""
        if self.delay_fraction is None:
            return None
        fraction = self.delay_fraction
        if self.header_delay:
            raw = headers.get(DELAY_HEADER)
            if raw is None:
                return None
            try:
                ms = int(raw)
            except ValueError:
                return None
            if ms <= 0:
                return None
            delay = ms / 1000
            fraction = _header_fraction(fraction, headers.get(DELAY_PERCENT_HEADER))
        else:
            delay = self.fixed_delay
        if not delay or not fraction.hit(self.rand(32)):
            return None
        return delay

    def abort_for(self, headers) -> int | None:
        if self.abort_fraction is None:
            return None
        fraction = self.abort_fraction
        if self.header_abort:
            raw = headers.get(ABORT_HEADER)
            if raw is None:
                return None
            try:
                status = int(raw)
            except ValueError:
                return None
            if not 200 <= status < 600:
                return None
            fraction = _header_fraction(fraction, headers.get(ABORT_PERCENT_HEADER))
        else:
            status = self.abort_status
        if status is None or not fraction.hit(self.rand(32)):
            return None
        return status


def _header_fraction(configured: Fraction, raw: str | None) -> Fraction:
    if raw is None:
        return configured
    try:
        return configured.with_numerator(int(raw))
    except ValueError:
        return configured


class FaultFilter(HttpFilter):
    __slots__ = ("config", "counted", "stats", "active_in")

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.counted = False
        self.stats: FaultStats | None = None
        self.active_in: FaultConfig | None = None  # the config whose active count this request holds

    def _enter(self, stats: FaultStats, cfg: FaultConfig) -> None:
        if not self.counted:
            self.counted = True
            self.active_in = cfg
            cfg.active += 1
            stats.active_faults.inc()
            self.stats = stats

    def _leave(self) -> None:
        if self.counted:
            self.counted = False
            self.active_in.active -= 1
            self.stats.active_faults.dec()

    def _effective(self, stream) -> FaultConfig:
        route = stream.route
        per_route = getattr(route, "per_filter_config", None) if route is not None else None
        override = per_route.get(FAULT_FILTER_NAME) if per_route else None
        return override if override is not None else self.config

    async def on_request_headers(self, stream, end_stream: bool) -> FilterStatus:
        cfg = self._effective(stream)
        if cfg.delay_fraction is None and cfg.abort_fraction is None:
            return CONTINUE
        if not cfg.applies(stream):
            return CONTINUE
        headers = stream.request_headers
        delay = cfg.delay_for(headers)
        abort = cfg.abort_for(headers)
        if delay is None and abort is None:
            return CONTINUE
        stats = self.config.stats(stream)
        if cfg.max_active_faults is not None and cfg.active >= cfg.max_active_faults:
            stats.faults_overflow.inc()
            return CONTINUE
        si = stream.stream_info
        self._enter(stats, cfg)
        try:
            if delay is not None:
                stats.delays_injected.inc()
                si.set_flag("DI")
                await asyncio.sleep(delay)
            if abort is not None:
                stats.aborts_injected.inc()
                await stream.send_local_reply(abort, ABORT_BODY, flag="FI", details="fault_filter_abort")
                return STOP
            return CONTINUE
        finally:
            # The fault is over once the delay has elapsed or the abort was sent (Envoy decrements
            # active_faults when the stream ends; for a delay-only fault that is when proxying ends,
            # which on_destroy handles).
            if abort is not None:
                self._leave()

    def on_destroy(self) -> None:
        self._leave()


class FaultFilterFactory:
    __slots__ = ("config",)

    def __init__(self, config: FaultConfig) -> None:
        self.config = config

    def create(self) -> FaultFilter:
        return FaultFilter(self.config)


FAULT_FILTER_NAME = "envoy.filters.http.fault"


@HTTP_FILTERS.register(FAULT_FILTER_NAME, fault_pb2.HTTPFault)
def make_fault(config: fault_pb2.HTTPFault, ctx: FactoryContext, path: str) -> FaultFilterFactory:
    return FaultFilterFactory(FaultConfig(config, ctx, path))


def _per_route(msg: fault_pb2.HTTPFault, path: str) -> FaultConfig:
    return FaultConfig(msg, None, path)


register_per_route(FAULT_FILTER_NAME, fault_pb2.HTTPFault, _per_route)
