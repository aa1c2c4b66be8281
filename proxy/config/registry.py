"""Extension registries keyed by Envoy name and by typed_config type URL.

An extension module registers itself at import time::

    @HTTP_FILTERS.register("envoy.filters.http.fault", fault_pb2.HTTPFault)
    def make_fault(config: fault_pb2.HTTPFault, ctx: FactoryContext, path: str) -> HttpFilterFactory: ...

``resolve(name, typed_config, path)`` finds the factory by type URL first (as Envoy does), then by
name, unpacks the ``Any`` and returns ``(factory_fn, config_message)``. An unknown extension or an
unimplemented config type is a ConfigError naming the path. ``load_builtin_extensions()`` imports
every extension module so that registration happened and ``json_format`` can resolve ``Any``s.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

from proxy.config.errors import ConfigError

TYPE_URL_PREFIX = "type.googleapis.com/"


@dataclass(frozen=True)
class Extension:
    name: str
    proto_cls: type[Message]
    factory: Callable[..., Any]

    @property
    def type_url(self) -> str:
        return TYPE_URL_PREFIX + self.proto_cls.DESCRIPTOR.full_name


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.by_name: dict[str, Extension] = {}
        self.by_type_url: dict[str, Extension] = {}

    def register(self, name: str, proto_cls: type[Message]):
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            ext = Extension(name, proto_cls, factory)
            self.by_name[name] = ext
            self.by_type_url[ext.type_url] = ext
            return factory

        return decorator

    def resolve(self, name: str, typed_config: any_pb2.Any | None, path: str) -> tuple[Extension, Message]:
        ext = None
        if typed_config is not None and typed_config.type_url:
            ext = self.by_type_url.get(typed_config.type_url)
            if ext is None:
                raise ConfigError(
                    f"{path}.typed_config",
                    f"{self.kind} config type '{typed_config.type_url}' is not supported by Isthmus "
                    f"(supported: {', '.join(sorted(self.by_type_url)) or 'none'})",
                )
        else:
            ext = self.by_name.get(name)
            if ext is None:
                raise ConfigError(
                    f"{path}.name",
                    f"unknown {self.kind} '{name}' (supported: {', '.join(sorted(self.by_name)) or 'none'})",
                )
        msg = ext.proto_cls()
        if typed_config is not None and typed_config.type_url:
            if not typed_config.Unpack(msg):
                raise ConfigError(f"{path}.typed_config", f"cannot unpack {typed_config.type_url}")
        return ext, msg


HTTP_FILTERS = Registry("HTTP filter")
NETWORK_FILTERS = Registry("network filter")
LISTENER_FILTERS = Registry("listener filter")
ACCESS_LOGGERS = Registry("access logger")
TRANSPORT_SOCKETS = Registry("transport socket")

# Every module that registers an extension. Keep in sync when adding one.
BUILTIN_EXTENSION_MODULES = [
    "proxy.filters.http.router",
    "proxy.filters.http.fault",
    "proxy.filters.http.ext_authz",
    "proxy.filters.http.ratelimit",
    "proxy.filters.http.rbac",
    "proxy.filters.http.peer_metadata",
    "proxy.filters.network.http_connection_manager",
    "proxy.filters.network.tcp_proxy",
    "proxy.filters.network.rbac",
    "proxy.filters.listener.original_dst",
    "proxy.filters.listener.tls_inspector",
    "proxy.filters.listener.http_inspector",
    "proxy.accesslog.loggers",
    "proxy.accesslog.grpc",
    "proxy.tls.transport_socket",
]


def load_builtin_extensions() -> None:
    for module in BUILTIN_EXTENSION_MODULES:
        importlib.import_module(module)
