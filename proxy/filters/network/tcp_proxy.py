"""``envoy.filters.network.tcp_proxy``: proxy a downstream TCP connection to an upstream host.

Bytes flow both ways with backpressure (a side whose write buffer is above its high-water mark
pauses reading on the other side), half-closes are propagated, ``idle_timeout`` (default 1h) closes
both sides, and the access log gets one ``StreamInfo`` per connection (``UF`` on connect failure,
``UH`` with no healthy host, ``NC`` when the cluster does not exist, ``UO`` on overflow).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random

from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import NETWORK_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.core.stream_info import StreamInfo
from proxy.filters.network.base import NetworkFilter

log = logging.getLogger("proxy.tcp_proxy")

DEFAULT_IDLE_TIMEOUT = 3600.0
DEFAULT_CONNECT_TIMEOUT = 5.0
UPSTREAM_BUFFER_LIMIT = 1024 * 1024

SPEC = {
    "stat_prefix": True,
    "cluster": True,
    "weighted_clusters": {"clusters": {"name": True, "weight": True}},
    "idle_timeout": True,
    "access_log": True,
    "max_connect_attempts": True,
    "max_downstream_connection_duration": True,
}


def _duration(d) -> float:
    return d.seconds + d.nanos / 1e9


class TcpProxyStats:
    __slots__ = (
        "cx_total",
        "no_route",
        "tx_total",
        "rx_total",
        "tx_buffered",
        "rx_buffered",
        "idle_timeout",
        "flush_total",
        "flush_active",
        "paused_total",
        "resumed_total",
        "max_duration",
    )

    def __init__(self, scope) -> None:
        self.cx_total = scope.counter("downstream_cx_total")
        self.no_route = scope.counter("downstream_cx_no_route")
        self.tx_total = scope.counter("downstream_cx_tx_bytes_total")
        self.rx_total = scope.counter("downstream_cx_rx_bytes_total")
        self.tx_buffered = scope.gauge("downstream_cx_tx_bytes_buffered")
        self.rx_buffered = scope.gauge("downstream_cx_rx_bytes_buffered")
        self.idle_timeout = scope.counter("idle_timeout")
        self.flush_total = scope.counter("upstream_flush_total")
        self.flush_active = scope.gauge("upstream_flush_active")
        self.paused_total = scope.counter("downstream_flow_control_paused_reading_total")
        self.resumed_total = scope.counter("downstream_flow_control_resumed_reading_total")
        self.max_duration = scope.counter("max_downstream_connection_duration")


class TcpProxyConfig:
    def __init__(self, msg: tcp_proxy_pb2.TcpProxy, ctx: FactoryContext, path: str) -> None:
        reject_unsupported(msg, SPEC, path)
        if not msg.stat_prefix:
            raise ConfigError(f"{path}.stat_prefix", "stat_prefix is required")
        self.stat_prefix = msg.stat_prefix
        self.ctx = ctx
        which = msg.WhichOneof("cluster_specifier")
        if which == "cluster":
            if not msg.cluster:
                raise ConfigError(f"{path}.cluster", "cluster must not be empty")
            self.clusters = [(msg.cluster, 1)]
        elif which == "weighted_clusters":
            self.clusters = []
            for i, wc in enumerate(msg.weighted_clusters.clusters):
                if not wc.name:
                    raise ConfigError(
                        f"{path}.weighted_clusters.clusters[{i}].name", "name must not be empty"
                    )
                if wc.weight < 1:
                    raise ConfigError(
                        f"{path}.weighted_clusters.clusters[{i}].weight", "weight must be at least 1"
                    )
                self.clusters.append((wc.name, wc.weight))
            if not self.clusters:
                raise ConfigError(f"{path}.weighted_clusters.clusters", "at least one cluster is required")
        else:
            raise ConfigError(f"{path}.cluster", "one of cluster or weighted_clusters is required")
        self.total_weight = sum(w for _, w in self.clusters)
        self.idle_timeout = (
            _duration(msg.idle_timeout) if msg.HasField("idle_timeout") else DEFAULT_IDLE_TIMEOUT
        )
        self.max_connect_attempts = (
            msg.max_connect_attempts.value if msg.HasField("max_connect_attempts") else 1
        )
        if self.max_connect_attempts < 1:
            raise ConfigError(f"{path}.max_connect_attempts", "must be at least 1")
        self.max_duration = (
            _duration(msg.max_downstream_connection_duration)
            if msg.HasField("max_downstream_connection_duration")
            else 0.0
        )
        self.access_loggers = []
        if len(msg.access_log):
            from proxy.accesslog.loggers import build_access_loggers

            self.access_loggers = build_access_loggers(msg.access_log, ctx, f"{path}.access_log")
        self.stats = TcpProxyStats(ctx.stats.scope(f"tcp.{self.stat_prefix}."))

    def pick_cluster(self) -> str:
        if len(self.clusters) == 1:
            return self.clusters[0][0]
        r = random.randrange(self.total_weight)
        for name, w in self.clusters:
            if r < w:
                return name
            r -= w
        return self.clusters[-1][0]

    def create(self, conn) -> TcpProxyFilter:
        return TcpProxyFilter(self, conn)


@NETWORK_FILTERS.register("envoy.filters.network.tcp_proxy", tcp_proxy_pb2.TcpProxy)
def make_tcp_proxy(msg: tcp_proxy_pb2.TcpProxy, ctx: FactoryContext, path: str) -> TcpProxyConfig:
    return TcpProxyConfig(msg, ctx, path)


# --------------------------------------------------------------------------------------------------
# Upstream connection
# --------------------------------------------------------------------------------------------------


class _UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("f", "transport")

    def __init__(self, f: TcpProxyFilter) -> None:
        self.f = f
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=UPSTREAM_BUFFER_LIMIT, low=UPSTREAM_BUFFER_LIMIT // 2)

    def data_received(self, data: bytes) -> None:
        self.f.on_upstream_data(data)

    def eof_received(self) -> bool:
        self.f.on_upstream_eof()
        return True

    def connection_lost(self, exc) -> None:
        self.f.on_upstream_lost(exc)

    def pause_writing(self) -> None:
        self.f.on_upstream_write_paused()

    def resume_writing(self) -> None:
        self.f.on_upstream_write_resumed()


async def _connect(cluster, host, protocol_factory):
    """Open a TCP connection to `host` through the cluster (its stats, circuit breakers and
    connect_timeout). Returns (transport, protocol)."""
    fn = getattr(cluster, "connect_tcp", None)
    if fn is not None:
        params = inspect.signature(fn).parameters
        if "protocol_factory" in params:
            return await fn(host, protocol_factory=protocol_factory)
    # Fallback: connect ourselves with the cluster's connect_timeout and count cluster stats.
    from proxy.upstream.errors import UpstreamConnectError

    timeout = getattr(cluster, "connect_timeout", DEFAULT_CONNECT_TIMEOUT) or DEFAULT_CONNECT_TIMEOUT
    stats = getattr(cluster, "stats", None)
    loop = asyncio.get_running_loop()
    ip, port = host.address[0], host.address[1]
    if stats is not None:
        stats.counter("upstream_cx_total").inc()
    host.stats.cx_total += 1
    try:
        return await asyncio.wait_for(loop.create_connection(protocol_factory, ip, port), timeout)
    except TimeoutError:
        if stats is not None:
            stats.counter("upstream_cx_connect_fail").inc()
            stats.counter("upstream_cx_connect_timeout").inc()
        host.stats.cx_connect_fail += 1
        raise UpstreamConnectError("connection timeout", timeout=True) from None
    except OSError as e:
        if stats is not None:
            stats.counter("upstream_cx_connect_fail").inc()
        host.stats.cx_connect_fail += 1
        raise UpstreamConnectError(f"connection failure: {e.strerror or e}") from None


# --------------------------------------------------------------------------------------------------
# Per-connection filter
# --------------------------------------------------------------------------------------------------


class TcpProxyFilter(NetworkFilter):
    def __init__(self, config: TcpProxyConfig, conn) -> None:
        self.config = config
        self.conn = conn
        self.upstream = None  # upstream transport
        self.pending: list[bytes] = []
        self.pending_eof = False
        self.downstream_eof = False
        self.upstream_eof = False
        self.downstream_closed = False
        self.upstream_closed = False
        self.info = StreamInfo(protocol="")
        self.logged = False
        self.idle_handle: asyncio.TimerHandle | None = None
        self.duration_handle: asyncio.TimerHandle | None = None
        self.last_activity = 0.0
        self.loop = asyncio.get_event_loop()
        self.connect_task: asyncio.Task | None = None
        self.drain_task: asyncio.Task | None = None
        self.host = None
        self.cluster = None
        self.flushing = False

    # ---- downstream ----------------------------------------------------------------------------

    def on_new_connection(self, conn) -> None:
        cfg = self.config
        cfg.stats.cx_total.inc()
        self.info.downstream_remote_address = conn.remote_address
        self.info.downstream_local_address = conn.local_address
        self.last_activity = self.loop.time()
        if cfg.idle_timeout > 0:
            self.idle_handle = self.loop.call_later(cfg.idle_timeout, self._check_idle)
        if cfg.max_duration > 0:
            self.duration_handle = self.loop.call_later(cfg.max_duration, self._on_max_duration)
        name = cfg.pick_cluster()
        self.info.upstream_cluster = name
        cm = cfg.ctx.cluster_manager
        cluster = cm.get(name) if cm is not None else None
        if cluster is None:
            cfg.stats.no_route.inc()
            self.info.set_flag("NC")
            self._close_downstream()
            return
        self.cluster = cluster
        conn.pause_reading()
        self.connect_task = self.loop.create_task(self._connect_upstream())

    async def _connect_upstream(self) -> None:
        from proxy.upstream.errors import PoolOverflow, UpstreamError

        try:
            from proxy.upstream.lb import LbContext
        except ModuleNotFoundError:  # pragma: no cover - upstream package always has lb
            LbContext = None
        cluster = self.cluster
        attempts = self.config.max_connect_attempts
        for attempt in range(attempts):
            ctx = LbContext(downstream_connection=self.conn) if LbContext is not None else None
            host = cluster.choose_host(ctx)
            if host is None:
                stats = getattr(cluster, "stats", None)
                if stats is not None:
                    stats.counter("upstream_cx_none_healthy").inc()
                self.info.set_flag("UH")
                self._close_downstream()
                return
            self.host = host
            self.info.upstream_host = (
                host.address_str if hasattr(host, "address_str") else f"{host.address[0]}:{host.address[1]}"
            )
            self.info.upstream_request_attempts = attempt + 1
            try:
                transport, _ = await _connect(cluster, host, lambda: _UpstreamProtocol(self))
            except PoolOverflow:
                self.info.set_flag("UO")
                self._close_downstream()
                return
            except UpstreamError:
                if self.downstream_closed:
                    self._finish()
                    return
                if attempt + 1 < attempts:
                    continue
                self.info.set_flag("UF")
                self._close_downstream()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tcp_proxy upstream connect failed")
                self.info.set_flag("UF")
                self._close_downstream()
                return
            break
        self.connect_task = None
        if self.downstream_closed:
            transport.close()
            return
        self.upstream = transport
        if self.pending:
            transport.writelines(self.pending)
            self.pending = []
        if self.pending_eof and transport.can_write_eof():
            transport.write_eof()
        if not self.downstream_eof and transport.get_write_buffer_size() < UPSTREAM_BUFFER_LIMIT:
            self.conn.resume_reading()

    def on_data(self, data: bytes) -> None:
        n = len(data)
        self.info.bytes_received += n
        self.config.stats.rx_total.inc(n)
        self.last_activity = self.loop.time()
        up = self.upstream
        if up is None:
            self.pending.append(data)
            return
        up.write(data)

    def on_eof(self) -> None:
        self.downstream_eof = True
        if self.upstream is None:
            self.pending_eof = True
        elif self.upstream.can_write_eof():
            self.upstream.write_eof()
        if self.upstream_eof:
            self._close_both()

    def on_connection_lost(self, exc) -> None:
        self.downstream_closed = True
        self._cancel_timers()
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        up = self.upstream
        if up is not None and not self.upstream_closed:
            if up.get_write_buffer_size() > 0 and exc is None:
                # Keep flushing what the downstream sent, then close (Envoy's upstream flush).
                self.flushing = True
                self.config.stats.flush_total.inc()
                self.config.stats.flush_active.inc()
                up.close()
            else:
                up.close()
                if exc is not None:
                    up.abort()
        if self.upstream is None or self.upstream_closed or not self.flushing:
            self._finish()

    def on_drain_started(self) -> None:
        """TCP connections are not interrupted by a drain; they end on their own or at drain time."""

    # ---- upstream ------------------------------------------------------------------------------

    def on_upstream_data(self, data: bytes) -> None:
        n = len(data)
        self.info.bytes_sent += n
        self.config.stats.tx_total.inc(n)
        self.last_activity = self.loop.time()
        conn = self.conn
        conn.write(data)
        if conn.is_write_paused() and self.drain_task is None and self.upstream is not None:
            # Downstream cannot keep up: stop reading the upstream until its buffer drains.
            self.upstream.pause_reading()
            self.drain_task = self.loop.create_task(self._wait_downstream_drain())

    async def _wait_downstream_drain(self) -> None:
        try:
            await self.conn.drain()
        finally:
            self.drain_task = None
        if self.upstream is not None and not self.upstream_closed:
            self.upstream.resume_reading()

    def on_upstream_eof(self) -> None:
        self.upstream_eof = True
        self.conn.write_eof() if hasattr(self.conn, "write_eof") else None
        if self.downstream_eof:
            self._close_both()

    def on_upstream_lost(self, exc) -> None:
        self.upstream_closed = True
        if self.flushing:
            self.flushing = False
            self.config.stats.flush_active.dec()
        if not self.downstream_closed:
            self._close_downstream()
        else:
            self._finish()

    def on_upstream_write_paused(self) -> None:
        self.config.stats.paused_total.inc()
        self.conn.pause_reading()

    def on_upstream_write_resumed(self) -> None:
        self.config.stats.resumed_total.inc()
        if not self.downstream_eof:
            self.conn.resume_reading()

    # ---- timers and teardown -------------------------------------------------------------------

    def _check_idle(self) -> None:
        self.idle_handle = None
        if self.downstream_closed:
            return
        left = self.last_activity + self.config.idle_timeout - self.loop.time()
        if left > 0.001:
            self.idle_handle = self.loop.call_later(left, self._check_idle)
            return
        self.config.stats.idle_timeout.inc()
        self._close_both(abort=False)

    def _on_max_duration(self) -> None:
        self.duration_handle = None
        self.config.stats.max_duration.inc()
        self._close_both(abort=False)

    def _cancel_timers(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if self.duration_handle is not None:
            self.duration_handle.cancel()
            self.duration_handle = None

    def _close_downstream(self) -> None:
        self.conn.close()

    def _close_both(self, abort: bool = False) -> None:
        if self.upstream is not None and not self.upstream_closed:
            self.upstream.close()
        self.conn.close()

    def _finish(self) -> None:
        if self.logged:
            return
        self.logged = True
        self._cancel_timers()
        self.info.finish()
        for logger in self.config.access_loggers:
            try:
                logger.log(self.info)
            except Exception:
                log.exception("access log failed")
