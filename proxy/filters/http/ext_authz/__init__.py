"""``envoy.filters.http.ext_authz``: ask an authorization service (mixer) before proxying.

Per request, as Envoy's ext_authz filter: build the ``CheckRequest`` attributes, call
``envoy.service.auth.v3.Authorization/Check`` on the ``grpc_service`` cluster (timeout 200 ms by
default), then:

* OK: add/set/remove the returned request headers, remember ``response_headers_to_add`` for the
  response, continue (``http.<prefix>.ext_authz.ok``);
* denied: answer with the returned status (default 403), headers and body, flag ``UAEX``
  (``...denied``);
* error or timeout (``...error``): with ``failure_mode_allow`` the request passes
  (``...failure_mode_allowed``, and ``x-envoy-auth-failure-mode-allowed: true`` upstream when
  ``failure_mode_allow_header_add``); otherwise ``status_on_error`` (default 403) with ``UAEX``.

The check cache (``cache.py``) reuses a result while the validity in the response's
``dynamic_metadata`` holds (docs/mixer.md); hits and misses are ``...ext_authz.cache_hit/cache_miss``.
Per route, ``ExtAuthzPerRoute`` can disable the check or add ``context_extensions``.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import HTTP_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.http.base import CONTINUE, STOP, FilterStatus, HttpFilter, sync_request_hook
from proxy.filters.http.ext_authz.attributes import build_check_request, flatten
from proxy.filters.http.ext_authz.cache import CheckCache
from proxy.filters.http.ext_authz.decision import ERROR, OK, Decision, decision_from_response
from proxy.grpc.service import GrpcClusterClient, NoHostError, check_cluster_exists, parse_grpc_service
from proxy.router.per_filter import register_per_route

log = logging.getLogger("proxy.ext_authz")

FILTER_NAME = "envoy.filters.http.ext_authz"
DEFAULT_TIMEOUT = 0.2  # Envoy's default for the ext_authz gRPC call
FAILURE_MODE_ALLOWED_HEADER = "x-envoy-auth-failure-mode-allowed"

EXT_AUTHZ_SPEC = {
    "grpc_service": True,  # checked by parse_grpc_service
    "transport_api_version": True,
    "failure_mode_allow": True,
    "failure_mode_allow_header_add": True,
    "status_on_error": {"code": True},
    "clear_route_cache": True,
    "stat_prefix": True,
}
PER_ROUTE_SPEC = {"disabled": True, "check_settings": {"context_extensions": True}}

_EXPLAINED = {
    "http_service": "only grpc_service is supported by Isthmus (mixer speaks gRPC)",
    "with_request_body": "with_request_body is not supported by Isthmus yet (checks see headers only)",
}


_NO_EXTENSIONS: dict[str, str] = {}  # read only
_NOT_SEEN = object()


class ExtAuthzStats:
    __slots__ = ("ok", "denied", "error", "failure_mode_allowed", "cache_hit", "cache_miss")

    def __init__(self, scope) -> None:
        for name in self.__slots__:
            setattr(self, name, scope.counter(name))


class ExtAuthzConfig:
    def __init__(
        self, msg: ext_authz_pb2.ExtAuthz, ctx: FactoryContext | None, path: str, client=None
    ) -> None:
        for name, why in _EXPLAINED.items():
            if msg.HasField(name):
                raise ConfigError(f"{path}.{name}", why)
        reject_unsupported(msg, EXT_AUTHZ_SPEC, path)
        if msg.transport_api_version not in (0, 2):  # AUTO, V3
            raise ConfigError(f"{path}.transport_api_version", "only transport_api_version V3 is supported")
        if not msg.HasField("grpc_service"):
            raise ConfigError(f"{path}.grpc_service", "ext_authz needs a grpc_service")
        service = parse_grpc_service(msg.grpc_service, f"{path}.grpc_service")
        cm = ctx.cluster_manager if ctx is not None else None
        check_cluster_exists(cm, service.cluster_name, f"{path}.grpc_service")
        self.ctx = ctx
        self.timeout = service.timeout if service.timeout else DEFAULT_TIMEOUT
        self.failure_mode_allow = msg.failure_mode_allow
        self.failure_mode_allow_header_add = msg.failure_mode_allow_header_add
        code = msg.status_on_error.code if msg.HasField("status_on_error") else 0
        if code and not 200 <= code < 600:
            raise ConfigError(f"{path}.status_on_error.code", "status_on_error must be an HTTP status")
        self.status_on_error = code or 403
        self.clear_route_cache = msg.clear_route_cache
        self.stat_prefix = msg.stat_prefix
        self.client = client if client is not None else GrpcClusterClient(cm, service)
        self.metadata = service.initial_metadata or None
        self.cache = CheckCache()
        self._stats: dict[str, ExtAuthzStats] = {}
        # (the connection manager config last seen, its stats): one identity test per request
        self.stats_memo: tuple = (_NOT_SEEN, None)

    def stats(self, stream) -> ExtAuthzStats:
        prefix = getattr(stream.config, "stat_prefix", "") or ""
        s = self._stats.get(prefix)
        if s is None:
            name = f"http.{prefix}.ext_authz." + (f"{self.stat_prefix}." if self.stat_prefix else "")
            s = self._stats[prefix] = ExtAuthzStats(self.ctx.stats.scope(name))
        self.stats_memo = (stream.config, s)
        return s

    async def check(self, request) -> Decision:
        """One Check RPC; every failure becomes an ERROR decision (never raises but cancellation)."""
        try:
            stub = self.client.stub(external_auth_pb2_grpc.AuthorizationStub)
            response = await stub.Check(request, timeout=self.timeout, metadata=self.metadata)
        except asyncio.CancelledError:
            raise
        except (grpc.aio.AioRpcError, NoHostError) as e:
            detail = e.code().name if isinstance(e, grpc.aio.AioRpcError) else str(e)
            log.debug("ext_authz check failed: %s", detail)
            return Decision(ERROR)
        except Exception:
            log.exception("ext_authz check failed")
            return Decision(ERROR)
        return decision_from_response(response)


class PerRoute:
    __slots__ = ("disabled", "context_extensions")

    def __init__(self, msg: ext_authz_pb2.ExtAuthzPerRoute, path: str) -> None:
        reject_unsupported(msg, PER_ROUTE_SPEC, path)
        self.disabled = msg.disabled
        self.context_extensions = dict(msg.check_settings.context_extensions)


class ExtAuthzFilter(HttpFilter):
    """Per stream. It has no response hook, so the connection manager keeps its single-write response
    path, unless the decision has ``response_headers_to_add``: then the filter becomes an
    ``_EncodingExtAuthzFilter`` (same slots) for the rest of its stream."""

    __slots__ = ("config", "response_headers")

    def __init__(self, config: ExtAuthzConfig) -> None:
        self.config = config

    def decode_headers_sync(self, stream, end_stream: bool):
        """The connection manager's synchronous hook: a cache hit decides here (no coroutine); a miss,
        and a cached denial or error, return the awaitable that finishes the job."""
        cfg = self.config
        route = stream.route
        extensions = _NO_EXTENSIONS
        if route is not None:
            per_route = route.per_filter_config.get(FILTER_NAME)
            if per_route is not None:
                if per_route.disabled:
                    return CONTINUE
                extensions = per_route.context_extensions
        memo = cfg.stats_memo
        stats = memo[1] if memo[0] is stream.config else cfg.stats(stream)
        decision = cfg.cache.lookup_stream(stream, extensions)
        if decision is None:
            stats.cache_miss.value += 1
            return self._check(stream, extensions, stats)
        stats.cache_hit.value += 1
        if decision.plain_ok:
            stats.ok.value += 1
            return CONTINUE
        return self._decide(stream, decision, stats)

    on_request_headers = sync_request_hook

    async def _check(self, stream, extensions, stats) -> FilterStatus:
        cfg = self.config
        attrs = flatten(stream, extensions)
        decision = await cfg.check(build_check_request(stream, attrs, extensions))
        if decision.validity is not None:
            cfg.cache.store(attrs, decision, decision.validity)
        if decision.plain_ok:
            stats.ok.value += 1
            return CONTINUE
        status = self._decide(stream, decision, stats)
        if status.__class__ is not FilterStatus:
            status = await status
        return status

    def _decide(self, stream, decision: Decision, stats):
        """Act on a decision that is not a plain OK: CONTINUE, or the awaitable of the local reply."""
        cfg = self.config
        if decision.kind == OK:
            stats.ok.value += 1
            if decision.request_headers or decision.headers_to_remove:
                if decision.apply_to_request(stream.request_headers) and cfg.clear_route_cache:
                    stream.clear_route_cache()
            if decision.response_headers_to_add:
                self.response_headers = decision.response_headers_to_add
                self.__class__ = self._encoding
            return CONTINUE
        if decision.kind == ERROR:
            stats.error.inc()
            if cfg.failure_mode_allow:
                stats.failure_mode_allowed.inc()
                if cfg.failure_mode_allow_header_add:
                    stream.request_headers.set(FAILURE_MODE_ALLOWED_HEADER, "true")
                return CONTINUE
            return _reply(stream, cfg.status_on_error, b"", "ext_authz_error", None)
        stats.denied.inc()
        headers = dict(decision.denied_headers) if decision.denied_headers else None
        return _reply(stream, decision.status, decision.body, "ext_authz_denied", headers)


async def _reply(stream, status: int, body, details: str, headers) -> FilterStatus:
    await stream.send_local_reply(status, body, flag="UAEX", details=details, headers=headers)
    return STOP


class _EncodingExtAuthzFilter(ExtAuthzFilter):
    """An ``ExtAuthzFilter`` whose OK decision had ``response_headers_to_add``."""

    __slots__ = ()

    async def on_response_headers(self, stream, headers, end_stream: bool) -> FilterStatus:
        for name, value, append in self.response_headers:
            if append:
                headers.add(name, value)
            else:
                headers.set(name, value)
        return CONTINUE


ExtAuthzFilter._encoding = _EncodingExtAuthzFilter


class ExtAuthzFilterFactory:
    """``create`` is a filter class made for this config (``config`` a class attribute, no
    ``__init__`` of its own to run): a new per-stream filter costs no Python frame."""

    __slots__ = ("config", "create")

    def __init__(self, config: ExtAuthzConfig) -> None:
        self.config = config
        bound = {"__slots__": (), "config": config, "__init__": object.__init__}
        encoding = type("ExtAuthzFilter", (_EncodingExtAuthzFilter,), dict(bound))
        self.create = type("ExtAuthzFilter", (ExtAuthzFilter,), dict(bound, _encoding=encoding))


@HTTP_FILTERS.register(FILTER_NAME, ext_authz_pb2.ExtAuthz)
def make_ext_authz(config: ext_authz_pb2.ExtAuthz, ctx: FactoryContext, path: str) -> ExtAuthzFilterFactory:
    return ExtAuthzFilterFactory(ExtAuthzConfig(config, ctx, path))


register_per_route(FILTER_NAME, ext_authz_pb2.ExtAuthzPerRoute, PerRoute)
