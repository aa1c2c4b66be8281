"""``envoy.filters.http.ratelimit``: global rate limiting through a rate limit service (mixer).

As Envoy's filter: the descriptors come from the matched route's ``rate_limits`` of this filter's
``stage`` (plus the virtual host's when the route has none, or when the route sets
``include_vh_rate_limits``); a request with no descriptor is not sent. Otherwise one
``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`` call (timeout 20 ms by default):

* ``OK``: continue (``cluster.<route cluster>.ratelimit.ok``); ``request_headers_to_add`` go upstream,
  ``response_headers_to_add`` to the client;
* ``OVER_LIMIT``: 429 (or ``rate_limited_status``) with flag ``RL`` and ``x-envoy-ratelimited: true``
  (``...over_limit``);
* an error or timeout (``...error``): the request passes (``...failure_mode_allowed``) unless
  ``failure_mode_deny``, then 500 (or ``status_on_error``) with flag ``RLSE``.

Stats are charged to the route's target cluster, as in Envoy (``cluster.<route target
cluster>.ratelimit.*``).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import HTTP_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.http.base import CONTINUE, STOP, FilterStatus, HttpFilter
from proxy.grpc.service import GrpcClusterClient, NoHostError, check_cluster_exists, parse_grpc_service
from proxy.router.rate_limits import DescriptorContext, descriptors_for

log = logging.getLogger("proxy.ratelimit")

FILTER_NAME = "envoy.filters.http.ratelimit"
DEFAULT_TIMEOUT = 0.02  # Envoy's default: 20 ms
RATELIMITED_HEADER = "x-envoy-ratelimited"

RATELIMIT_SPEC = {
    "domain": True,
    "stage": True,
    "request_type": True,
    "timeout": True,
    "failure_mode_deny": True,
    "rate_limit_service": {"grpc_service": True, "transport_api_version": True},
    "disable_x_envoy_ratelimited_header": True,
    "rate_limited_status": {"code": True},
    "status_on_error": {"code": True},
    "enable_x_ratelimit_headers": True,  # only OFF (checked below)
}

OK_CODE = rls_pb2.RateLimitResponse.OK
OVER_LIMIT_CODE = rls_pb2.RateLimitResponse.OVER_LIMIT


def _seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


class RateLimitStats:
    __slots__ = ("ok", "over_limit", "error", "failure_mode_allowed")

    def __init__(self, scope) -> None:
        for name in self.__slots__:
            setattr(self, name, scope.counter(name))


class RateLimitConfig:
    def __init__(
        self, msg: rate_limit_pb2.RateLimit, ctx: FactoryContext | None, path: str, client=None
    ) -> None:
        reject_unsupported(msg, RATELIMIT_SPEC, path)
        if not msg.domain:
            raise ConfigError(f"{path}.domain", "a rate limit filter needs a domain")
        if msg.stage > 10:
            raise ConfigError(f"{path}.stage", "stage must be between 0 and 10")
        if msg.request_type not in ("", "both"):
            raise ConfigError(
                f"{path}.request_type",
                "only request_type 'both' is supported (Isthmus has no edge/internal split)",
            )
        if msg.enable_x_ratelimit_headers != 0:
            raise ConfigError(
                f"{path}.enable_x_ratelimit_headers", "X-RateLimit headers are not supported yet"
            )
        rls = msg.rate_limit_service
        if not msg.HasField("rate_limit_service") or not rls.HasField("grpc_service"):
            raise ConfigError(f"{path}.rate_limit_service.grpc_service", "a rate limit service is required")
        if rls.transport_api_version not in (0, 2):
            raise ConfigError(
                f"{path}.rate_limit_service.transport_api_version",
                "only transport_api_version V3 is supported",
            )
        service = parse_grpc_service(rls.grpc_service, f"{path}.rate_limit_service.grpc_service")
        cm = ctx.cluster_manager if ctx is not None else None
        check_cluster_exists(cm, service.cluster_name, f"{path}.rate_limit_service.grpc_service")
        self.ctx = ctx
        self.domain = msg.domain
        self.stage = msg.stage
        # The filter's timeout wins; else the grpc_service's; else Envoy's 20 ms.
        if msg.HasField("timeout"):
            self.timeout = _seconds(msg.timeout) or None
        else:
            self.timeout = service.timeout or DEFAULT_TIMEOUT
        self.failure_mode_deny = msg.failure_mode_deny
        self.ratelimited_header = not msg.disable_x_envoy_ratelimited_header
        self.rate_limited_status = 429
        if msg.HasField("rate_limited_status"):
            code = msg.rate_limited_status.code
            if code < 400:
                raise ConfigError(f"{path}.rate_limited_status.code", "must be 400 or above")
            self.rate_limited_status = code
        self.status_on_error = 500
        if msg.HasField("status_on_error") and msg.status_on_error.code:
            code = msg.status_on_error.code
            if not 400 <= code < 600:
                raise ConfigError(f"{path}.status_on_error.code", "must be an HTTP error status")
            self.status_on_error = code
        self.client = client if client is not None else GrpcClusterClient(cm, service)
        self.metadata = service.initial_metadata or None
        self._stats: dict[str, RateLimitStats] = {}

    def stats(self, cluster: str) -> RateLimitStats:
        s = self._stats.get(cluster)
        if s is None:
            s = self._stats[cluster] = RateLimitStats(self.ctx.stats.scope(f"cluster.{cluster}.ratelimit."))
        return s

    @property
    def local_cluster(self) -> str:
        server = getattr(self.ctx, "server", None)
        bootstrap = getattr(server, "bootstrap", None)
        return bootstrap.node.cluster if bootstrap is not None else ""

    def descriptors(self, stream, route) -> list:
        action = route.action
        cluster = action.select_cluster(stream.request_headers, getattr(stream, "random_value", 0))[0]
        remote = stream.stream_info.downstream_remote_address
        dctx = DescriptorContext(
            stream.request_headers, self.local_cluster, cluster, remote[0] if remote else ""
        )
        out = descriptors_for(route.rate_limits, self.stage, dctx)
        vh_limits = route.virtual_host.rate_limits
        if vh_limits and (route.include_vh_rate_limits or not route.rate_limits):
            out.extend(descriptors_for(vh_limits, self.stage, dctx))
        return out, cluster

    def request(self, descriptors) -> rls_pb2.RateLimitRequest:
        req = rls_pb2.RateLimitRequest(domain=self.domain)
        for d in descriptors:
            rd = req.descriptors.add()
            for k, v in d:
                rd.entries.add(key=k, value=v)
        return req

    async def should_rate_limit(self, request):
        """The response, or None on any failure (never raises but cancellation)."""
        try:
            stub = self.client.stub(rls_pb2_grpc.RateLimitServiceStub)
            return await stub.ShouldRateLimit(request, timeout=self.timeout, metadata=self.metadata)
        except asyncio.CancelledError:
            raise
        except (grpc.aio.AioRpcError, NoHostError) as e:
            log.debug(
                "rate limit call failed: %s", e.code().name if isinstance(e, grpc.aio.AioRpcError) else e
            )
        except Exception:
            log.exception("rate limit call failed")
        return None


def _header_pairs(options) -> list[tuple[str, str]]:
    out = []
    for opt in options:
        name = opt.header.key.lower()
        if name and not name.startswith(":"):
            out.append((name, opt.header.value or opt.header.raw_value.decode("utf-8", "replace")))
    return out


class RateLimitFilter(HttpFilter):
    __slots__ = ("config", "response_headers")

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.response_headers: list[tuple[str, str]] = []

    async def on_request_headers(self, stream, end_stream: bool) -> FilterStatus:
        cfg = self.config
        route = stream.route
        if route is None or route.action is None:
            return CONTINUE
        descriptors, cluster = cfg.descriptors(stream, route)
        if not descriptors:
            return CONTINUE
        stats = cfg.stats(cluster)
        resp = await cfg.should_rate_limit(cfg.request(descriptors))
        code = resp.overall_code if resp is not None else None
        if code == OK_CODE:
            stats.ok.inc()
            for name, value in _header_pairs(resp.request_headers_to_add):
                stream.request_headers.set(name, value)
            self.response_headers = _header_pairs(resp.response_headers_to_add)
            return CONTINUE
        if code == OVER_LIMIT_CODE:
            stats.over_limit.inc()
            headers = dict(_header_pairs(resp.response_headers_to_add))
            if cfg.ratelimited_header:
                headers[RATELIMITED_HEADER] = "true"
            await stream.send_local_reply(
                cfg.rate_limited_status, b"", flag="RL", details="request_rate_limited", headers=headers
            )
            return STOP
        stats.error.inc()
        if cfg.failure_mode_deny:
            await stream.send_local_reply(cfg.status_on_error, b"", flag="RLSE", details="rate_limiter_error")
            return STOP
        stats.failure_mode_allowed.inc()
        return CONTINUE

    async def on_response_headers(self, stream, headers, end_stream: bool) -> FilterStatus:
        for name, value in self.response_headers:
            headers.add(name, value)
        return CONTINUE


class RateLimitFilterFactory:
    __slots__ = ("config",)

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config

    def create(self) -> RateLimitFilter:
        return RateLimitFilter(self.config)


@HTTP_FILTERS.register(FILTER_NAME, rate_limit_pb2.RateLimit)
def make_ratelimit(
    config: rate_limit_pb2.RateLimit, ctx: FactoryContext, path: str
) -> RateLimitFilterFactory:
    return RateLimitFilterFactory(RateLimitConfig(config, ctx, path))
