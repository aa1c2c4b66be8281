"""Per-route HTTP filter configuration (``typed_per_filter_config``), compiled with the route table.

A filter that accepts a per-route override registers a parser with ``register_per_route(name,
proto_cls, parse)``; ``parse(msg, path)`` returns the filter's own compiled object, which the filter
reads from ``stream.route.per_filter_config[name]``. As in Envoy, the map key is the filter's name,
the ``Any`` must be the filter's config type, and a key no filter claims is an error unless wrapped
as optional (``envoy.config.route.v3.FilterConfig`` with ``is_optional: true``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoy.config.route.v3 import route_components_pb2

from proxy.config.errors import ConfigError

_FILTER_CONFIG_URL = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
_PARSERS: dict[str, tuple[type, Callable[[Any, str], Any]]] = {}


def register_per_route(name: str, proto_cls: type, parse: Callable[[Any, str], Any]) -> None:
    _PARSERS[name] = (proto_cls, parse)


def compile_per_filter_config(configs, path: str) -> dict[str, Any]:
    """Compile a ``map<string, Any>``; raises ConfigError naming ``path[<filter name>]``."""
    if not configs:
        return {}
    if not _PARSERS:
        from proxy.config.registry import load_builtin_extensions  # registers the built-in parsers

        load_builtin_extensions()
    out: dict[str, Any] = {}
    for name in sorted(configs):
        here = f"{path}[{name}]"
        any_msg = configs[name]
        optional = False
        if any_msg.type_url == _FILTER_CONFIG_URL:
            wrapper = route_components_pb2.FilterConfig()
            any_msg.Unpack(wrapper)
            optional = wrapper.is_optional
            if wrapper.disabled:
                raise ConfigError(
                    f"{here}.disabled", "disabling a filter per route is not supported by Isthmus yet"
                )
            any_msg = wrapper.config
        entry = _PARSERS.get(name)
        if entry is None:
            if optional:
                continue
            raise ConfigError(
                here,
                f"no HTTP filter named '{name}' accepts per-route config in Isthmus "
                f"(supported: {', '.join(sorted(_PARSERS)) or 'none'})",
            )
        proto_cls, parse = entry
        msg = proto_cls()
        if not any_msg.Unpack(msg):
            raise ConfigError(
                here,
                f"per-route config for '{name}' must be {msg.DESCRIPTOR.full_name}, not {any_msg.type_url}",
            )
        out[name] = parse(msg, here)
    return out
