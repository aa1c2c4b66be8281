"""Per-cluster, per-host HTTP/1.1 connection pools (Envoy's HTTP/1 conn pool, httpcore's style).

``HttpConnectionPool.request(headers, body)`` first *decides* (circuit breakers, an idle keep-alive
connection to reuse, or a new connection to open, or queue as pending), then does the I/O. It returns
an ``UpstreamResponse`` as soon as the response head arrives; the body streams through
``async for chunk in response`` (or ``await response.read()``).

Release/discard: once the upstream has sent the whole response, the connection goes straight back to
the pool (the response keeps its buffered chunks), so a caller that reads to the end has nothing to
do. A caller that stops early must call ``response.discard()`` (or use ``async with response``), which
closes the connection when the response is not complete. A 101 answer to an Upgrade request takes the
connection out of the pool: ``response.duplex`` is a RawDuplex over it.

Errors: UpstreamConnectError (UF), UpstreamResetError (UC, closed/reset before the response head;
also raised from the body iterator when the upstream goes away mid-body), PoolOverflow (UO).
Accounting (Envoy's): the pool charges ``upstream_rq_total``/``upstream_rq_active``, pending and
connection stats, circuit breakers and per-host ``rq_total``/``rq_active``/``rq_success``/``rq_error``
(5xx and resets count as errors). Response-code stats and timing are the router's.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from proxy.core import http1
from proxy.core.headers import Headers
from proxy.upstream.connect import open_connection
from proxy.upstream.errors import PoolOverflow, UpstreamConnectError, UpstreamResetError

if TYPE_CHECKING:
    from proxy.upstream.cluster_stats import ClusterStats
    from proxy.upstream.host import Host
    from proxy.upstream.resources import ResourceManager

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 3600.0
DEFAULT_BUFFER_LIMIT = 1024 * 1024  # per_connection_buffer_limit_bytes


class PoolSettings:
    __slots__ = ("connect_timeout", "max_requests_per_connection", "idle_timeout", "buffer_limit")

    def __init__(
        self,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_requests_per_connection: int = 0,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_requests_per_connection = max_requests_per_connection  # 0: unlimited
        self.idle_timeout = idle_timeout  # None/0: never
        self.buffer_limit = buffer_limit


# States of one exchange.
_WAITING_HEAD, _READING_BODY, _COMPLETE, _FAILED = range(4)


class _Exchange:
    """One request/response on a connection: the head future and the buffered body chunks."""

    __slots__ = (
        "head",
        "chunks",
        "buffered",
        "waiter",
        "state",
        "error",
        "status",
        "request_done",
        "close_after",
        "is_head_request",
        "upgrade",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, is_head_request: bool, upgrade: bool) -> None:
        self.head: asyncio.Future = loop.create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None
        self.state = _WAITING_HEAD
        self.error: BaseException | None = None
        self.status = 0
        self.request_done = False
        self.close_after = False
        self.is_head_request = is_head_request
        self.upgrade = upgrade

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


_new = object.__new__  # per-request slotted objects made without an __init__ frame (request() says which)


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to a host. Parses responses with the sans-IO codec."""

    def __init__(self, pool: HttpConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.parser = http1.ResponseParser()
        self.exchange: _Exchange | None = None
        self.requests_served = 0
        self.closed = False
        self.closed_locally = False
        self.idle_handle: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.write_paused = False
        self.drain_waiter: asyncio.Future | None = None
        self.reading_paused = False
        self.tunnel: _Tunnel | None = None
        self.remote_closed = False
        self.active_at_close = False
        self.created = time.monotonic()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        # Kept: on Python 3.11 every asyncio.get_running_loop() is a getpid() syscall.
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.pool.stats.upstream_cx_rx_bytes_total.value += len(data)  # (a plain add: no call per read)
        if self.tunnel is not None:
            self.tunnel.feed(data)
            return
        ex = self.exchange
        if ex is None:
            # Bytes while idle: the upstream is confused (or sent a 408). Never reuse this connection.
            self.pool.stats.upstream_cx_protocol_error.inc()
            self.abort()
            return
        self._handle_events(ex, self.parser.feed(data))

    def eof_received(self):
        self.remote_closed = True
        ex = self.exchange
        if ex is not None and self.tunnel is None:
            # A body delimited by the connection closing ends here (or a truncated one fails).
            self._handle_events(ex, self.parser.feed_eof())
        if self.tunnel is not None:
            self.tunnel.feed(b"")
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_idle_timer()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        if self.tunnel is not None:
            self.tunnel.feed(b"")
        ex = self.exchange
        active = ex is not None and ex.state in (_WAITING_HEAD, _READING_BODY)
        if active:
            self._fail(ex, UpstreamResetError("upstream connection closed before the response completed"))
        self.pool._on_connection_closed(self, had_active=active or self.active_at_close)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- events from the codec ---------------------------------------------------------------
    def _handle_events(self, ex: _Exchange, events: list) -> None:
        last = len(events) - 1
        for i, ev in enumerate(events):
            kind = type(ev)
            if self.tunnel is not None:
                if kind is http1.Data:  # bytes that came right after the 101 head
                    self.tunnel.feed(ev.data)
                continue
            if kind is http1.Data:
                if ex.state == _READING_BODY:
                    data = ev.data
                    ex.chunks.append(data)
                    ex.buffered += len(data)
                    if ex.buffered > self.pool.settings.buffer_limit and not self.reading_paused:
                        self.reading_paused = True
                        self.transport.pause_reading()
                    w = ex.waiter  # ex.wake() written out: nobody waits when the body came with the head
                    if w is not None and not w.done():
                        w.set_result(None)
            elif kind is http1.ResponseHead:
                status = ev.code or ev.headers.status or 0
                if 100 <= status < 200 and status != 101:
                    continue  # 100 Continue and other interim answers are not proxied (Envoy's default)
                ex.status = status
                if not ev.keep_alive:
                    ex.close_after = True
                    self.pool.stats.upstream_cx_close_notify.inc()
                if status == 101 and ex.upgrade:
                    self._start_tunnel(ex, ev)
                    continue
                ex.state = _READING_BODY
                if not ex.head.done():
                    ex.head.set_result(ev.headers)
            elif kind is http1.EndOfMessage:
                if ex.state == _READING_BODY:
                    if i < last or not self.parser.idle:
                        ex.close_after = True  # bytes beyond the response: never reuse this connection
                    self._complete(ex)
                return
            elif kind is http1.ProtocolError:
                if self.remote_closed:  # the upstream closed mid-response: a reset, not garbage
                    self.active_at_close = True
                    self._fail(
                        ex, UpstreamResetError("upstream closed the connection before the response completed")
                    )
                    return
                self.pool.stats.upstream_cx_protocol_error.inc()
                self._fail(ex, UpstreamResetError(f"upstream protocol error: {ev.reason}"))
                self.abort()
                return

    def _start_tunnel(self, ex: _Exchange, head) -> None:
        self.tunnel = _Tunnel(self)
        ex.state = _COMPLETE
        self.pool._on_exchange_done(self, ex, success=True, reusable=False)
        if not ex.head.done():
            ex.head.set_result(head.headers)

    def _complete(self, ex: _Exchange) -> None:
        ex.state = _COMPLETE
        w = ex.waiter  # ex.wake() written out
        if w is not None and not w.done():
            w.set_result(None)
        reusable = ex.request_done and not ex.close_after
        self.pool._on_exchange_done(self, ex, success=ex.status < 500, reusable=reusable)

    def _fail(self, ex: _Exchange, error: BaseException) -> None:
        if ex.state in (_COMPLETE, _FAILED):
            return
        was_waiting = ex.state == _WAITING_HEAD
        ex.state = _FAILED
        ex.error = error
        if was_waiting and not ex.head.done():
            ex.head.set_exception(error)
            ex.head.exception()  # mark retrieved: the caller may be gone already
        ex.wake()
        self.pool._on_exchange_done(self, ex, success=False, reusable=False)

    # -- used by the pool and the response ---------------------------------------------------
    def send(self, data: bytes) -> None:
        self.pool.stats.upstream_cx_tx_bytes_total.value += len(data)
        self.transport.write(data)

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    def consumed(self, ex: _Exchange, n: int) -> None:
        ex.buffered -= n
        if self.reading_paused and ex.buffered <= self.pool.settings.buffer_limit // 2 and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed_locally = not self.remote_closed
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed_locally = not self.remote_closed
            self.transport.abort()

    def _cancel_idle_timer(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None


class _Tunnel:
    """RawDuplex over an upgraded (101) upstream connection."""

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.chunks: collections.deque[bytes] = collections.deque()
        self.eof = False
        self.waiter: asyncio.Future | None = None

    def feed(self, data: bytes) -> None:
        if data:
            self.chunks.append(data)
        else:
            self.eof = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def write(self, data: bytes) -> None:
        if not self.conn.closed:
            self.conn.send(data)

    async def read(self) -> bytes:
        while not self.chunks:
            if self.eof:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.chunks.popleft()

    def close(self) -> None:
        self.conn.close()


class UpstreamResponse:
    """Response head plus a streaming body. Iterate it (``async for chunk in response``) or
    ``await response.read()``; call ``discard()`` if you stop before the end."""

    __slots__ = ("headers", "host", "_conn", "_ex", "status")

    def __init__(self, headers: Headers, host: Host, conn: UpstreamConnection, ex: _Exchange) -> None:
        self.headers = headers
        self.host = host
        self._conn = conn
        self._ex = ex
        self.status = ex.status  # set with the head, before the response is made; never changes after

    @property
    def duplex(self) -> _Tunnel | None:
        """For a 101 to an Upgrade request: the raw byte pipe to the upstream; else None."""
        return self._conn.tunnel

    @property
    def complete(self) -> bool:
        """The whole response arrived from the upstream (its body may still be buffered here)."""
        return self._ex.state == _COMPLETE

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        ex = self._ex
        while True:
            if ex.chunks:
                data = ex.chunks.popleft()
                self._conn.consumed(ex, len(data))
                return data
            if ex.state == _COMPLETE:
                raise StopAsyncIteration
            if ex.state == _FAILED:
                raise ex.error
            ex.waiter = asyncio.get_running_loop().create_future()
            try:
                await ex.waiter
            finally:
                ex.waiter = None

    def next_buffered(self) -> bytes | None:
        """A body chunk that is already here (no await, no timer needed), or None: await the
        iterator then. Raises the upstream's error when the exchange failed and nothing is left."""
        ex = self._ex
        if ex.chunks:
            data = ex.chunks.popleft()
            self._conn.consumed(ex, len(data))
            return data
        if ex.state == _FAILED:
            raise ex.error
        return None

    def buffered_body(self) -> bytes | None:
        """When the whole response already arrived (the usual case for small answers: head and body
        in one read): the rest of its body in one piece, else None."""
        ex = self._ex
        if ex.state != _COMPLETE:
            return None
        chunks = ex.chunks
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        ex.buffered = 0
        return data

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    def discard(self) -> None:
        """Give up on the rest of the body: the connection is closed unless the response was complete."""
        ex = self._ex
        ex.chunks.clear()
        if ex.state in (_WAITING_HEAD, _READING_BODY) and self._conn.tunnel is None:
            self._conn.pool.stats.upstream_cx_destroy_local_with_active_rq.inc()
            self._conn._fail(ex, UpstreamResetError("response discarded"))
            self._conn.abort()

    release = discard  # reading to the end already released the connection; this is for early stops

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc) -> None:
        self.discard()


def _request_needs_chunked(headers: Headers) -> bool:
    return "content-length" not in headers and "transfer-encoding" not in headers


class HttpConnectionPool:
    """HTTP/1.1 connections to one host of one cluster."""

    transport_socket = None  # the cluster's TlsSocketFactory (set by Cluster.http_pool); None: plaintext
    source_address = None  # the cluster's upstream_bind_config source (ip, port) (set by Cluster.http_pool)

    def __init__(
        self, host: Host, settings: PoolSettings, stats: ClusterStats, resources: ResourceManager
    ) -> None:
        self.host = host
        self.settings = settings
        self.stats = stats
        self.resources = resources
        self.idle: list[UpstreamConnection] = []
        self.busy: set[UpstreamConnection] = set()
        self.connecting = 0
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.draining = False
        self._connect_tasks: set[asyncio.Task] = set()

    @property
    def active_connections(self) -> int:
        return len(self.idle) + len(self.busy) + self.connecting

    # -- the request -------------------------------------------------------------------------
    async def request(
        self, headers: Headers, body: bytes | AsyncIterator[bytes] | None = None
    ) -> UpstreamResponse:
        """Send one request; return when the response head arrived.

        `headers` carries :method, :path, :authority (sent as Host) and regular headers; hop-by-hop
        cleanup is the caller's. A bytes body gets a Content-Length when none is set; an iterator body
        without Content-Length is sent chunked."""
        stats = self.stats
        rq = self.resources.requests
        if rq.count >= rq.max:  # rq.can_create(), inline
            stats.upstream_rq_pending_overflow.inc()
            raise PoolOverflow("max requests circuit breaker open")
        idle = self.idle  # _take_idle's usual case inline: the most recent idle connection is open
        conn = idle.pop() if idle else None
        if conn is not None and conn.closed:
            conn = self._take_idle()
        if conn is None:
            conn = await self._wait_for_connection()
            if rq.count >= rq.max:
                # Checked again when attaching, as Envoy does: others attached while we waited.
                self._on_connection_free(conn)
                stats.upstream_rq_pending_overflow.inc()
                raise PoolOverflow("max requests circuit breaker open")
        self.host.used = True
        items = headers.items()
        if items and items[0][0] == ":method":  # where the codec puts it
            method = items[0][1] or "GET"
        else:
            method = headers.get(":method") or "GET"
        upgrade = "upgrade" in headers
        # _Exchange(loop, is_head_request, upgrade) without its __init__ frame: every slot as __init__ sets it.
        ex = _new(_Exchange)
        ex.head = (conn.loop or asyncio.get_running_loop()).create_future()
        ex.chunks = collections.deque()
        ex.buffered = 0
        ex.waiter = None
        ex.state = _WAITING_HEAD
        ex.error = None
        ex.status = 0
        ex.request_done = False
        ex.close_after = False
        ex.is_head_request = method == "HEAD"
        ex.upgrade = upgrade
        conn.exchange = ex
        conn.requests_served += 1
        self.busy.add(conn)
        rq.inc()
        stats.upstream_rq_total.value += 1  # plain adds: no call per counter on the request path
        stats.upstream_rq_active.value += 1
        host_stats = self.host.stats
        host_stats.rq_total += 1
        host_stats.rq_active += 1
        conn.parser.expect(method)  # the parser must know which responses (HEAD) carry no body
        sender = None
        try:
            if body is None or isinstance(body, (bytes, bytearray, memoryview)):
                body = bytes(body or b"")
                if body and "content-length" not in headers and "transfer-encoding" not in headers:
                    headers = headers.copy()
                    headers.set("content-length", str(len(body)))
                data = (
                    http1.encode_request_head(headers) + body if body else http1.encode_request_head(headers)
                )
                stats.upstream_cx_tx_bytes_total.value += len(data)  # conn.send(data), written out
                conn.transport.write(data)
                ex.request_done = True
            else:
                chunked = _request_needs_chunked(headers)
                if chunked:
                    headers = headers.copy()
                    headers.set("transfer-encoding", "chunked")
                conn.send(http1.encode_request_head(headers))
                sender = asyncio.ensure_future(self._send_body(conn, ex, body, chunked))
            resp_headers = await ex.head
        except asyncio.CancelledError:
            if sender is not None:
                sender.cancel()
            self.stats.upstream_rq_cancelled.inc()
            if ex.state in (_WAITING_HEAD, _READING_BODY):
                # The connection is mid-exchange and cannot be reused. (A complete exchange already
                # gave it back to the pool, possibly to another request: leave it alone then.)
                self.stats.upstream_cx_destroy_local_with_active_rq.inc()
                conn._fail(ex, UpstreamResetError("request cancelled"))
                conn.abort()
            raise
        except BaseException:
            if sender is not None:
                sender.cancel()
            raise
        resp = _new(UpstreamResponse)  # UpstreamResponse(resp_headers, host, conn, ex), no __init__ frame
        resp.headers = resp_headers
        resp.host = self.host
        resp._conn = conn
        resp._ex = ex
        resp.status = ex.status
        return resp

    async def _send_body(
        self, conn: UpstreamConnection, ex: _Exchange, body: AsyncIterator[bytes], chunked: bool
    ) -> None:
        try:
            async for chunk in body:
                if conn.closed or ex.state == _FAILED:
                    return
                if not chunk:
                    continue
                conn.send(http1.encode_chunk(chunk) if chunked else chunk)
                if conn.write_paused:
                    await conn.drain()
            if chunked and not conn.closed:
                conn.send(http1.LAST_CHUNK)
            ex.request_done = True
            if ex.state == _COMPLETE and not conn.closed:
                # The upstream answered before the body was sent; the connection cannot be reused.
                conn.close()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the downstream body failed (client went away): reset the upstream
            conn._fail(ex, UpstreamResetError(f"request body failed: {e!r}"))
            conn.abort()

    # -- deciding which connection -----------------------------------------------------------
    def _take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()  # most recently used first: least likely to have been closed upstream
            if conn.closed:
                continue
            # The idle timer stays armed: it finds the connection busy and lets go (no cancel and
            # re-arm per request).
            return conn
        return None

    async def _wait_for_connection(self) -> UpstreamConnection:
        stats = self.stats
        pending_res = self.resources.pending_requests
        if not pending_res.can_create():
            stats.upstream_rq_pending_overflow.inc()
            raise PoolOverflow("max pending requests circuit breaker open")
        fut = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        pending_res.inc()
        stats.upstream_rq_pending_total.inc()
        stats.upstream_rq_pending_active.inc()
        try:
            self._maybe_connect()
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._on_connection_free(fut.result())  # handed to us just as we were cancelled
            raise
        finally:
            pending_res.dec()
            stats.upstream_rq_pending_active.dec()
            try:
                self.pending.remove(fut)
            except ValueError:
                pass

    def _maybe_connect(self) -> None:
        """Open connections for pending requests that no connecting attempt will serve."""
        while len(self.pending) > self.connecting and not self.draining:
            cx = self.resources.connections
            if not cx.can_create():
                self.stats.upstream_cx_overflow.inc()
                # Envoy: a pool with no connection at all always gets one, so it cannot starve.
                if self.active_connections:
                    return
            self._start_connect()

    def _start_connect(self) -> None:
        self.connecting += 1
        self.resources.connections.inc()
        stats = self.stats
        stats.upstream_cx_total.inc()
        stats.upstream_cx_http1_total.inc()
        stats.upstream_cx_active.inc()
        self.host.stats.cx_total += 1
        self.host.stats.cx_active += 1
        task = asyncio.ensure_future(self._connect())
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        ip, port = self.host.address[0], self.host.address[1]
        error: UpstreamConnectError | None = None
        conn = None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                _, conn = await open_connection(
                    loop,
                    lambda: UpstreamConnection(self),
                    (ip, port),
                    self.transport_socket,
                    self.stats.scope,
                    self.source_address,
                )
        except TimeoutError:
            self.stats.upstream_cx_connect_timeout.inc()
            error = UpstreamConnectError(f"connect to {self.host.address_str} timed out", timeout=True)
        except OSError as e:
            error = UpstreamConnectError(f"connect to {self.host.address_str} failed: {e.strerror or e}")
        except asyncio.CancelledError:
            error = UpstreamConnectError("connect cancelled")
        self.connecting -= 1
        if error is not None:
            self.stats.upstream_cx_connect_fail.inc()
            self.host.stats.cx_connect_fail += 1
            self._connection_gone()
            # Fail the oldest pending request this attempt was going to serve.
            while self.pending and len(self.pending) > self.connecting:
                fut = self.pending.popleft()
                if not fut.done():
                    fut.set_exception(error)
                    break
            self._maybe_connect()
            return
        self.stats.upstream_cx_connect_ms.record((time.monotonic() - started) * 1000)
        self._on_connection_free(conn)

    # -- connection lifecycle ----------------------------------------------------------------
    def _on_connection_free(self, conn: UpstreamConnection) -> None:
        if conn.closed:
            return
        if self.draining:
            conn.close()
            return
        pending = self.pending
        while pending:
            fut = pending.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)
        timeout = self.settings.idle_timeout
        if timeout:
            loop = conn.loop or asyncio.get_running_loop()
            conn.idle_since = loop.time()
            if conn.idle_handle is None:
                conn.idle_handle = loop.call_later(timeout, self._idle_expired, conn)

    def _idle_expired(self, conn: UpstreamConnection) -> None:
        conn.idle_handle = None
        if conn not in self.idle or conn.closed:
            return  # busy (or gone): armed again when it is freed
        left = conn.idle_since + self.settings.idle_timeout - asyncio.get_running_loop().time()
        if left > 0:  # it was used since this timer was armed
            conn.idle_handle = asyncio.get_running_loop().call_later(left, self._idle_expired, conn)
            return
        self.stats.upstream_cx_idle_timeout.inc()
        self.idle.remove(conn)
        conn.close()

    def _on_exchange_done(
        self, conn: UpstreamConnection, ex: _Exchange, *, success: bool, reusable: bool
    ) -> None:
        self.resources.requests.dec()
        self.stats.upstream_rq_active.value -= 1
        host_stats = self.host.stats
        host_stats.rq_active -= 1
        if success:
            host_stats.rq_success += 1
        else:
            host_stats.rq_error += 1
        if conn.exchange is ex:
            conn.exchange = None
        self.busy.discard(conn)
        if conn.tunnel is not None:
            self.busy.add(conn)  # an upgraded connection stays counted until it closes
            return
        if conn.closed:
            return
        max_rq = self.settings.max_requests_per_connection
        if max_rq and conn.requests_served >= max_rq:
            self.stats.upstream_cx_max_requests.inc()
            reusable = False
        if reusable:
            self._on_connection_free(conn)
        elif ex.request_done or ex.state == _FAILED:
            conn.close()
        # else: the request body is still being sent; _send_body closes the connection when done.

    def _on_connection_closed(self, conn: UpstreamConnection, had_active: bool) -> None:
        stats = self.stats
        stats.upstream_cx_destroy.inc()
        if conn.closed_locally:
            stats.upstream_cx_destroy_local.inc()
        else:
            stats.upstream_cx_destroy_remote.inc()
            if had_active:
                stats.upstream_cx_destroy_remote_with_active_rq.inc()
        if had_active:
            stats.upstream_cx_destroy_with_active_rq.inc()
        stats.upstream_cx_length_ms.record((time.monotonic() - conn.created) * 1000)
        self.busy.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._connection_gone()
        if self.pending:
            self._maybe_connect()

    def _connection_gone(self) -> None:
        self.resources.connections.dec()
        self.stats.upstream_cx_active.dec()
        self.host.stats.cx_active -= 1

    # -- shutdown ----------------------------------------------------------------------------
    def drain(self) -> None:
        """Stop taking requests: close idle connections now, busy ones when their request ends."""
        self.draining = True
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()

    async def close(self) -> None:
        self.drain()
        for task in list(self._connect_tasks):
            task.cancel()
        for conn in list(self.busy):
            conn.abort()
        for fut in list(self.pending):
            if not fut.done():
                fut.set_exception(UpstreamConnectError("pool closed"))
