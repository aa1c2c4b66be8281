"""Routing: the compiled, immutable RouteConfiguration (pure, no I/O)."""

from proxy.router.actions import DirectResponse, Redirect, RetryPolicy, RouteAction, shadow_authority
from proxy.router.table import Route, RouteTable, VirtualHost, compile_route_configuration

__all__ = [
    "DirectResponse",
    "Redirect",
    "RetryPolicy",
    "Route",
    "RouteAction",
    "RouteTable",
    "VirtualHost",
    "compile_route_configuration",
    "shadow_authority",
]
