"""``envoy.transport_sockets.tls`` and ``envoy.transport_sockets.raw_buffer``: the hook points.

``build_transport_socket(proto, ctx, path, upstream=...)`` turns a ``TransportSocket`` (on a filter
chain or a cluster) into ``None`` (plaintext) or a ``TlsSocketFactory``. The factory always holds the
newest ``BuiltContext``; new connections take it, existing ones keep theirs.

* Downstream (``proxy.core.listener``): after chain selection,
  ``tls = factory.wrap_downstream(conn.transport, conn, pre_read, listener.stats)``; the listener
  then uses ``tls`` as the connection's transport (``None``: no secret yet, the connection is closed).
* Upstream (``proxy.upstream``): ``factory.protocol_factory(inner_factory, cluster.stats)`` is what
  ``loop.create_connection`` gets; ``await factory.handshake_of(protocol).wait_handshake()`` maps a
  failed handshake to a connect failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from isthmus.log import event
from proxy.config.errors import ConfigError
from proxy.config.registry import TRANSPORT_SOCKETS
from proxy.config.supported import reject_unsupported
from proxy.tls.context import (
    BuiltContext,
    NotReady,
    TlsConfig,
    build_context,
    compile_downstream,
    compile_upstream,
)
from proxy.tls.transport import TlsTransport, tls_stats

log = logging.getLogger("proxy.tls")

TLS = "envoy.transport_sockets.tls"
RAW_BUFFER = "envoy.transport_sockets.raw_buffer"


class TlsSocketFactory:
    """The newest TLS context of one transport_socket, rebuilt on every secret update."""

    def __init__(self, config: TlsConfig, secret_manager, path: str) -> None:
        self.config = config
        self.path = path
        self.current: BuiltContext | None = None
        self.generation = 0
        self._secrets: dict[str, secret_pb2.Secret] = {}
        self._ready = asyncio.Event() if _has_loop() else None
        if not config.sds_names:
            self.current = build_context(config, {}, 0, f"{path}: ")
        else:
            if secret_manager is None:
                raise ConfigError(path, "SDS secrets are configured but this proxy has no secret manager")
            cpath = f"{path}.common_tls_context"
            for i, sds in enumerate(config.certificate_sds):
                secret_manager.watch(sds, f"{cpath}.tls_certificate_sds_secret_configs[{i}]", self)
            if config.validation_sds is not None:
                secret_manager.watch(
                    config.validation_sds, f"{cpath}.validation_context_sds_secret_config", self
                )

    @property
    def ready(self) -> bool:
        return self.current is not None

    async def wait_ready(self) -> None:
        if self.current is not None:
            return
        if self._ready is None:
            self._ready = asyncio.Event()
        await self._ready.wait()

    # ---- SecretWatcher -------------------------------------------------------------------------

    def prepare(self, name: str, secret: secret_pb2.Secret) -> Callable[[], None]:
        secrets = dict(self._secrets)
        secrets[name] = secret
        try:
            built = build_context(self.config, secrets, self.generation + 1, f"{self.path}: ")
        except NotReady:
            built = None  # still waiting for the other secret; keep this one

        def commit() -> None:
            self._secrets = secrets
            if built is not None:
                self.generation = built.generation
                self.current = built
                if self._ready is not None:
                    self._ready.set()
                event(log, logging.INFO, "tls.context_updated", transport_socket=self.path,
                      generation=built.generation, secret=name)  # fmt: skip

        return commit

    # ---- hooks ---------------------------------------------------------------------------------

    def wrap_downstream(
        self, raw: asyncio.Transport, conn, pre_read: bytes, stats_scope
    ) -> TlsTransport | None:
        """Put TLS between the accepted socket and the connection (`conn` becomes the app protocol)."""
        stats = tls_stats(stats_scope)
        built = self.current
        if built is None:
            stats.connection_error.inc()
            event(log, logging.DEBUG, "tls.not_ready", transport_socket=self.path)
            return None
        name = f"{conn.remote_address[0]}:{conn.remote_address[1]}" if hasattr(conn, "remote_address") else ""
        tls = TlsTransport(built, conn, stats=stats, name=name)
        tls.attach(raw, pre_read)
        return tls

    def protocol_factory(
        self, inner_factory: Callable[[], asyncio.BaseProtocol], stats_scope, sni: str | None = None
    ) -> Callable[[], TlsTransport]:
        """For ``loop.create_connection``: TLS around the caller's protocol, SNI from the config."""
        built = self.current
        if built is None:
            tls_stats(stats_scope).connection_error.inc()
            raise ConnectionError(f"{self.path}: TLS secrets have not arrived yet")
        stats = tls_stats(stats_scope)
        server_name = sni if sni is not None else (self.config.sni or None)
        return lambda: TlsTransport(built, inner_factory(), server_hostname=server_name, stats=stats)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _secret_manager(ctx):
    if ctx is None:
        return None
    manager = getattr(ctx, "extra", {}).get("secret_manager")
    if manager is None:
        manager = getattr(getattr(ctx, "server", None), "secret_manager", None)
    return manager


@TRANSPORT_SOCKETS.register(TLS, tls_pb2.DownstreamTlsContext)
def make_downstream_tls(msg: tls_pb2.DownstreamTlsContext, ctx, path: str) -> TlsSocketFactory:
    return TlsSocketFactory(compile_downstream(msg, path), _secret_manager(ctx), path)


# Same name, second config type: resolve() goes by type URL first, as Envoy does.
@TRANSPORT_SOCKETS.register(TLS, tls_pb2.UpstreamTlsContext)
def make_upstream_tls(msg: tls_pb2.UpstreamTlsContext, ctx, path: str) -> TlsSocketFactory:
    return TlsSocketFactory(compile_upstream(msg, path), _secret_manager(ctx), path)


@TRANSPORT_SOCKETS.register(RAW_BUFFER, raw_buffer_pb2.RawBuffer)
def make_raw_buffer(msg: raw_buffer_pb2.RawBuffer, ctx, path: str) -> None:
    reject_unsupported(msg, {}, path)
    return None


def build_transport_socket(proto, ctx, path: str, *, upstream: bool) -> TlsSocketFactory | None:
    """A ``config.core.v3.TransportSocket`` on a filter chain (upstream=False) or cluster (True)."""
    reject_unsupported(proto, {"name": True, "typed_config": True}, path)
    typed = proto.typed_config if proto.HasField("typed_config") else None
    if typed is None and proto.name == TLS:
        raise ConfigError(f"{path}.typed_config", "envoy.transport_sockets.tls needs a typed_config")
    ext, msg = TRANSPORT_SOCKETS.resolve(proto.name, typed, path)
    wrong = tls_pb2.DownstreamTlsContext if upstream else tls_pb2.UpstreamTlsContext
    if isinstance(msg, wrong):
        side = "a cluster" if upstream else "a listener's filter chain"
        want = "UpstreamTlsContext" if upstream else "DownstreamTlsContext"
        raise ConfigError(f"{path}.typed_config", f"{side} needs {want}, not {type(msg).__name__}")
    return ext.factory(msg, ctx, f"{path}.typed_config")
