"""Raw TCP connections to upstream hosts (tcp_proxy), with Envoy's connection stats and breaker.

With a cluster ``transport_socket`` the connection is TLS (``proxy.upstream.connect``): a failed
handshake is a connect failure like a refused connection."""

from __future__ import annotations

import asyncio
import collections
import time

from proxy.upstream.connect import open_connection
from proxy.upstream.errors import PoolOverflow, UpstreamConnectError


class TcpUpstream(asyncio.Protocol):
    """The default protocol of ``Cluster.connect_tcp``: a RawDuplex (``write``, ``await read()`` ->
    ``b""`` at EOF, ``close``) that pauses reading while more than `high_water` bytes are unread."""

    def __init__(self, high_water: int = 1024 * 1024) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.waiter: asyncio.Future | None = None
        self.high_water = high_water
        self.paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > self.high_water and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()
        return True  # keep our side open for writing (half-close), as tcp_proxy needs

    def connection_lost(self, exc) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def read(self) -> bytes:
        while not self.chunks:
            if self.eof:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered <= self.high_water // 2:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Tracked(asyncio.Protocol):
    """Forwards every callback to the caller's protocol and releases the connection's accounting
    exactly once when it closes."""

    __slots__ = ("inner", "release")

    def __init__(self, inner: asyncio.Protocol, release) -> None:
        self.inner = inner
        self.release = release

    def connection_made(self, transport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()
        self.inner.connection_lost(exc)


async def open_tcp(cluster, host, protocol_factory=None):
    stats = cluster.stats
    cx = cluster.resources.connections
    if not cx.can_create():
        stats.upstream_cx_overflow.inc()
        raise PoolOverflow("max connections circuit breaker open")
    cx.inc()
    stats.upstream_cx_total.inc()
    stats.upstream_cx_active.inc()
    host.stats.cx_total += 1
    host.stats.cx_active += 1
    host.used = True
    started = time.monotonic()

    def release() -> None:
        cx.dec()
        stats.upstream_cx_active.dec()
        stats.upstream_cx_destroy.inc()
        host.stats.cx_active -= 1
        stats.upstream_cx_length_ms.record((time.monotonic() - started) * 1000)

    inner = (protocol_factory or TcpUpstream)()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(cluster.pool_settings.connect_timeout):
            transport, _ = await open_connection(
                loop,
                lambda: _Tracked(inner, release),
                host.address,
                getattr(cluster, "transport_socket", None),
                cluster.stats_scope,
                getattr(cluster, "source_address", None),
            )
    except (OSError, TimeoutError) as e:
        cx.dec()
        stats.upstream_cx_active.dec()
        stats.upstream_cx_connect_fail.inc()
        host.stats.cx_active -= 1
        host.stats.cx_connect_fail += 1
        if isinstance(e, TimeoutError):
            stats.upstream_cx_connect_timeout.inc()
            raise UpstreamConnectError(f"connect to {host.address_str} timed out", timeout=True) from None
        raise UpstreamConnectError(f"connect to {host.address_str} failed: {e.strerror or e}") from None
    except BaseException:
        cx.dec()
        stats.upstream_cx_active.dec()
        host.stats.cx_active -= 1
        raise
    stats.upstream_cx_connect_ms.record((time.monotonic() - started) * 1000)
    return transport, inner
