"""``envoy.filters.http.router``: the terminal HTTP filter that proxies to the upstream cluster."""

from envoy.extensions.filters.http.router.v3 import router_pb2

from proxy.config.context import FactoryContext
from proxy.config.registry import HTTP_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.http.router.filter import RouterConfig, RouterFilter, RouterFilterFactory

ROUTER_SPEC = {"dynamic_stats": True, "suppress_envoy_headers": True}


@HTTP_FILTERS.register("envoy.filters.http.router", router_pb2.Router)
def make_router(config: router_pb2.Router, ctx: FactoryContext, path: str) -> RouterFilterFactory:
    reject_unsupported(config, ROUTER_SPEC, path)
    return RouterFilterFactory(
        RouterConfig(
            ctx,
            dynamic_stats=config.dynamic_stats.value if config.HasField("dynamic_stats") else True,
            suppress_envoy_headers=config.suppress_envoy_headers,
        )
    )


__all__ = ["RouterConfig", "RouterFilter", "RouterFilterFactory", "make_router"]
