"""The HTTP connection manager: one ``HttpConnectionManager`` per downstream connection, one
``ActiveStream`` (the ``HttpStream`` contract) per request.

HTTP/1.1 requests on a connection are served one at a time, in order: pipelined requests wait (as
parsed events and, beyond them, raw bytes, with reading paused past the buffer limit) until the
response before them is complete, exactly as Envoy's HTTP/1 codec does.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import random
import time
from email.utils import formatdate

from proxy.core.headers import Headers
from proxy.core.http1 import (
    CONTINUE_100,
    LAST_CHUNK,
    Data,
    EndOfMessage,
    ProtocolError,
    RequestHead,
    RequestParser,
    encode_chunk,
    encode_head_lines,
    reason_phrase,
    status_line,
)
from proxy.core.stream_info import StreamInfo
from proxy.filters.http.base import STOP, FilterStatus, HttpFilter
from proxy.filters.network.base import NetworkFilter
from proxy.tls import xfcc

log = logging.getLogger("proxy.hcm")

# Hop-by-hop headers Envoy removes from requests before routing and from responses before encoding.
_REQUEST_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te")
)
_RESPONSE_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"))

# x-envoy-* request headers Envoy removes from external (edge) requests.
_INTERNAL_ONLY = frozenset(
    (
        "x-envoy-decorator-operation",
        "x-envoy-downstream-service-cluster",
        "x-envoy-downstream-service-node",
        "x-envoy-expected-rq-timeout-ms",
        "x-envoy-external-address",
        "x-envoy-force-trace",
        "x-envoy-internal",
        "x-envoy-ip-tags",
        "x-envoy-max-retries",
        "x-envoy-retry-grpc-on",
        "x-envoy-retry-on",
        "x-envoy-upstream-alt-stat-name",
        "x-envoy-upstream-rq-per-try-timeout-ms",
        "x-envoy-upstream-rq-timeout-alt-response",
        "x-envoy-upstream-rq-timeout-ms",
        "x-envoy-upstream-stream-duration-ms",
        "x-envoy-hedge-on-per-try-timeout",
        "x-envoy-retriable-status-codes",
        "x-envoy-retriable-header-names",
        "x-envoy-original-path",
        "x-envoy-original-url",
    )
)

_OVERWRITE, _APPEND_IF_ABSENT, _PASS_THROUGH = 0, 1, 2

_NO_ENCODER = HttpFilter.on_response_headers  # a filter that does not override it encodes nothing
_NO_DESTROY = HttpFilter.on_destroy

_date_cache = [0, ""]
_monotonic = time.monotonic
_getrandbits = random.getrandbits  # the module's Random instance (random.seed reseeds it)


def http_date() -> str:
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]


def _request_id() -> str:
    """A random (version 4) UUID string, as Envoy's request ID. Like Envoy's, from a fast PRNG, not
    the OS's entropy: an ID for tracing, not a secret (uuid.uuid4() costs a syscall per request)."""
    h = "%032x" % (
        (_getrandbits(128) & _UUID_CLEAR) | _UUID_SET
    )  # (%-formatting: 40% faster than f"{n:032x}")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


def _is_internal(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.is_private or addr.is_loopback


class StreamReset(Exception):
    """The stream was reset (downstream went away); raised to a body reader."""


def _set_pairs(items: list, pairs) -> list:
    """``items`` after ``Headers.set(name, value)`` of each pair (one value per name, at its first
    place; appended when absent); the caller's list is left as it was."""
    want = dict(pairs)
    out, done = [], set()
    for kv in items:
        k = kv[0]
        if k in want:
            if k not in done:
                done.add(k)
                out.append((k, want[k]))
        else:
            out.append(kv)
    for name, _ in pairs:
        if name not in done:
            done.add(name)
            out.append((name, want[name]))
    return out


class ActiveStream:
    """One request/response exchange (``proxy.filters.http.base.HttpStream``)."""

    __slots__ = (
        "hcm",
        "config",
        "connection",
        "request_headers",
        "stream_info",
        "http_version",
        "keep_alive",
        "is_head",
        "is_upgrade",
        "random_value",
        "_route",
        "_route_cached",
        "filters",
        "_reached",
        "response_started",
        "response_complete",
        "request_complete",
        "_chunked",
        "_no_body",
        "_close",
        "_body",
        "_body_bytes",
        "_body_waiter",
        "_body_taken",
        "_task",
        "reset",
        "done",
        "_tunnel",
        "_tunnel_buf",
        "_request_timer",
        "_last_activity",
        "_encoding_local_reply",
        "_pending_head",
        "response_headers_to_set",
    )

    def __init__(
        self, hcm: HttpConnectionManager, headers: Headers, http_version: str, keep_alive: bool
    ) -> None:
        self.hcm = hcm
        self.config = hcm.config
        self.connection = hcm.conn
        self.request_headers = headers
        addrs = hcm._addresses
        if addrs is None:  # the connection's two addresses, read once per connection
            conn = hcm.conn
            addrs = hcm._addresses = (
                getattr(conn, "remote_address", None),
                getattr(conn, "local_address", None),
            )
        self.stream_info = StreamInfo(
            addrs[0], addrs[1], None, None, None, "HTTP/1.0" if http_version == "1.0" else "HTTP/1.1", headers
        )
        self.http_version = http_version
        self.keep_alive = keep_alive
        items = headers.items()  # the codec puts :method first
        self.is_head = (
            items[0][1] if items and items[0][0] == ":method" else headers.get(":method")
        ) == "HEAD"
        self.is_upgrade = False
        self.random_value = _getrandbits(63)
        self._route = None
        self._route_cached = False
        self.filters: list = []
        self._reached = 0
        self.response_started = False
        self.response_complete = False
        self.request_complete = False
        self._chunked = False
        self._no_body = False
        self._close = False
        self._body: collections.deque[bytes] = collections.deque()
        self._body_bytes = 0
        self._body_waiter: asyncio.Future | None = None
        self._body_taken = False
        self._task: asyncio.Task | None = None
        self.reset = False
        self.done = False
        self._tunnel = None
        self._tunnel_buf: list[bytes] = []
        self._request_timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._encoding_local_reply = False
        self._pending_head: bytes | None = None
        # (name, value) pairs a request hook wants set on this stream's response, whichever way it
        # is answered (upstream or local reply), with Headers.set semantics: the filter needs no
        # response hook, so the whole-response single write stays available (encode_whole).
        self.response_headers_to_set: tuple | list | None = None

    # ------------------------------------------------------------------ HttpStream: routing

    @property
    def route(self):
        if not self._route_cached:
            self._route_cached = True
            table = self.config.route_provider.current()
            self._route = table.match(self.request_headers, self.random_value) if table is not None else None
            self.stream_info.route_name = getattr(self._route, "name", None) or None
        return self._route

    def clear_route_cache(self) -> None:
        self._route_cached = False
        self._route = None

    # ------------------------------------------------------------------ request body

    def request_body(self):
        if self._body_taken:
            raise RuntimeError("the request body can be read once")
        self._body_taken = True
        return self._iter_body()

    async def _iter_body(self):
        hcm = self.hcm
        while True:
            if self._body:
                chunk = self._body.popleft()
                self._body_bytes -= len(chunk)
                if hcm.read_paused_for_body and self._body_bytes <= self.config.buffer_limit // 2:
                    hcm.resume_for_body()
                yield chunk
                continue
            if self.request_complete:
                return
            if self.reset:
                raise StreamReset("downstream reset the stream")
            fut = self._body_waiter = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self._body_waiter = None

    def _wake_body(self) -> None:
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def on_data(self, data: bytes) -> None:
        self.stream_info.bytes_received += len(data)
        self._last_activity = self.hcm.loop.time()
        if self.response_complete:
            return  # answered already; the body is drained and dropped
        self._body.append(data)
        self._body_bytes += len(data)
        if self._body_bytes > self.config.buffer_limit:
            self.hcm.pause_for_body()
        self._wake_body()

    def on_request_end(self) -> None:
        self.request_complete = True
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        self._wake_body()
        if self.response_complete:
            self._finish()

    # ------------------------------------------------------------------ encoding

    async def encode_headers(self, headers: Headers, end_stream: bool) -> None:
        if self.response_started or self.reset:
            return
        filters = self.filters
        for i in range(self._reached - 1, -1, -1):
            f = filters[i]
            if type(f).on_response_headers is not _NO_ENCODER:  # (the base no-op needs no await)
                await f.on_response_headers(self, headers, end_stream)
        if self.response_started or self.reset:
            return  # an encoder filter answered instead
        self._write_headers(headers, end_stream)

    def encode_whole(self, headers: Headers, body: bytes) -> bool:
        """The whole response at once, without awaiting, when no filter that saw the request encodes
        responses: head and body leave in one write. False when it cannot (an encoder filter, or a
        response already started): use ``encode_headers`` + ``encode_data`` then."""
        if self.response_started or self.reset:
            return False
        filters = self.filters
        for i in range(self._reached):
            if type(filters[i]).on_response_headers is not _NO_ENCODER:
                return False
        self._write_headers(headers, False, body)
        return True

    def _write_headers(self, headers: Headers, end_stream: bool, body: bytes | None = None) -> None:
        cfg = self.config
        self.response_started = True
        src = headers.items()
        if src and src[0][0] == ":status":  # where the codec and local replies put it
            status_s = src[0][1] or "200"
        else:
            status_s = headers.get(":status") or "200"
        try:
            status = int(status_s)
        except ValueError:
            status = 500
        # One pass: drop hop-by-hop headers, note the few this method looks at, overwrite Server in
        # place, and make the wire lines of what is kept (the head is encoded from them, not from a
        # second walk over the headers). Everything added below is appended to both lists.
        sht = cfg.server_header_transformation
        items = []
        lines = [""]  # the status line goes first, once the status text is checked
        has_length = has_server = has_date = has_rid = False
        to_set = self.response_headers_to_set
        if to_set:
            src = _set_pairs(src, to_set)
        for kv in src:
            k = kv[0]
            if k in _RESPONSE_HOP:
                continue
            if k == "content-length":
                has_length = True
            elif k == "date":
                has_date = True
            elif k == "server":
                if sht == _OVERWRITE:
                    if has_server:
                        continue  # Headers.set semantics: one value, at the first one's place
                    kv = ("server", cfg.server_name)
                has_server = True
            elif k == "x-request-id":
                has_rid = True
            items.append(kv)
            if k[0] != ":":
                lines.append(f"{k}: {kv[1]}")
        hcm = self.hcm
        if status == 101 and self.is_upgrade:
            items.append(("connection", "upgrade"))
            lines.append("connection: upgrade")
            up = self.request_headers.get("upgrade")
            if up is not None:
                up = headers.get("upgrade") or up  # (dropped above as hop-by-hop: the original)
                items.append(("upgrade", up))
                lines.append(f"upgrade: {up}")
        no_body = self.is_head or status < 200 or status in (204, 304)
        close = (
            not self.keep_alive
            or hcm.draining
            or self._close
            or (cfg.max_requests_per_connection and hcm.requests >= cfg.max_requests_per_connection)
        )
        if end_stream and not self.request_complete:
            close = True
        if self.is_upgrade and status != 101:
            close = True  # the codec is past the upgrade head: the connection cannot carry more requests
        if not no_body and status != 101:
            if has_length:
                pass
            elif end_stream:
                items.append(("content-length", "0"))
                lines.append("content-length: 0")
            elif self.http_version == "1.1":
                items.append(("transfer-encoding", "chunked"))
                lines.append("transfer-encoding: chunked")
                self._chunked = True
            else:
                close = True  # HTTP/1.0: the body ends when the connection closes
        self._no_body = no_body
        if not has_server and (sht == _OVERWRITE or sht == _APPEND_IF_ABSENT):
            items.append(("server", cfg.server_name))
            lines.append(f"server: {cfg.server_name}")
        if not has_date:
            date = http_date()
            items.append(("date", date))
            lines.append(f"date: {date}")
        if cfg.always_set_request_id_in_response and not has_rid:
            rid = self.request_headers.get("x-request-id")
            if rid is not None:
                items.append(("x-request-id", rid))
                lines.append(f"x-request-id: {rid}")
        if close and status != 101:
            items.append(("connection", "close"))
            lines.append("connection: close")
            self._close = True
        elif self.http_version == "1.0" and status != 101:
            items.append(("connection", "keep-alive"))
            lines.append("connection: keep-alive")
        info = self.stream_info
        info.response_code = status
        info.response_headers = Headers.from_lowercase(items)
        self._last_activity = hcm.loop.time()
        lines[0] = status_line(status_s)
        head = encode_head_lines(lines)
        if end_stream:
            hcm.conn.write(head)
            self._on_response_end()
        elif body is not None:
            self._pending_head = head
            self._send_data(body, True)
        else:
            # Held until the body's first bytes (usually in this same loop turn) so head and body
            # leave in one send(); flushed on the next loop turn at the latest.
            self._pending_head = head
            hcm.loop.call_soon(self._flush_head)

    def _flush_head(self) -> None:
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            self.hcm.conn.write(head)

    async def encode_data(self, data: bytes, end_stream: bool) -> None:
        if self.response_complete or self.reset or not self.response_started:
            return
        conn = self._send_data(data, end_stream)
        if conn is not None and conn.is_write_paused():
            await conn.drain()

    def _send_data(self, data: bytes, end_stream: bool):
        """Write body bytes (with a held head); returns the connection when the stream goes on."""
        conn = self.hcm.conn
        head = self._pending_head
        out = [head] if head is not None else []
        self._pending_head = None
        if data and not self._no_body:
            self.stream_info.bytes_sent += len(data)
            if self._chunked:
                out.append(encode_chunk(data))
                if end_stream:
                    out.append(LAST_CHUNK)
            else:
                out.append(data)
        elif end_stream and self._chunked:
            out.append(LAST_CHUNK)
        if len(out) == 1:
            conn.write(out[0])
        elif out:
            conn.writelines(out)
        self._last_activity = self.hcm.loop.time()
        if end_stream:
            self._on_response_end()
            return None
        return conn

    async def send_local_reply(
        self,
        status: int,
        body: str | bytes = b"",
        *,
        flag: str | None = None,
        details: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        info = self.stream_info
        if flag:
            info.set_flag(flag)
        if details:
            info.response_code_details = details
        if self.response_started:
            # Too late for a reply: Envoy resets the stream (HTTP/1: the connection).
            self._reset_stream(tx=True)
            return
        h, payload = self._local_reply_headers(status, body, headers)
        self._encoding_local_reply = True
        try:
            await self.encode_headers(h, not payload)
            if payload:
                await self.encode_data(payload, True)
        finally:
            self._encoding_local_reply = False

    def _local_reply_headers(self, status: int, body, headers) -> tuple[Headers, bytes]:
        payload = body.encode() if isinstance(body, str) else bytes(body or b"")
        items = [(":status", str(status))]
        if payload:
            items.append(("content-length", str(len(payload))))
            items.append(("content-type", "text/plain"))
        h = Headers.from_lowercase(items)
        if headers:
            for k, v in headers.items():
                h.set(k, v)
        return h, payload

    def local_reply_now(
        self, status: int, body: str | bytes, flag: str | None, details: str, close: bool = False
    ) -> None:
        """Answer without running encoder filters (codec errors, timeouts before any filter ran)."""
        if flag:
            self.stream_info.set_flag(flag)
        if details:
            self.stream_info.response_code_details = details
        if self.response_started:
            self._reset_stream(tx=True)
            return
        if close:
            self._close = True
        h, payload = self._local_reply_headers(status, body, None)
        self._write_headers(h, not payload)
        if payload and not self.response_complete:
            self._flush_head()
            if not self._no_body:
                self.stream_info.bytes_sent += len(payload)
                self.hcm.conn.write(payload)
            self._on_response_end()

    # ------------------------------------------------------------------ upgrade

    async def upgrade(self, upstream) -> None:
        if self.reset:
            upstream.close()
            return
        hcm = self.hcm
        self._tunnel = upstream
        stats = self.config.stats
        stats.cx_upgrades_total.inc()
        stats.cx_upgrades_active.inc()
        self._flush_head()
        try:
            for chunk in self._tunnel_buf:
                upstream.write(chunk)
            self._tunnel_buf = []
            if hcm.read_paused_for_body:
                hcm.resume_for_body()
            conn = hcm.conn
            while True:
                data = await upstream.read()
                if not data:
                    break
                self.stream_info.bytes_sent += len(data)
                self._last_activity = hcm.loop.time()
                conn.write(data)
                if conn.is_write_paused():
                    await conn.drain()
        finally:
            stats.cx_upgrades_active.dec()
            upstream.close()
            self._tunnel = None
        self._close = True
        if not self.reset:
            self.request_complete = True
            self._on_response_end()

    def on_tunnel_data(self, data: bytes) -> None:
        self.stream_info.bytes_received += len(data)
        self._last_activity = self.hcm.loop.time()
        if self._tunnel is not None:
            self._tunnel.write(data)
        else:
            self._tunnel_buf.append(data)
            if sum(map(len, self._tunnel_buf)) > self.config.buffer_limit:
                self.hcm.pause_for_body()

    def on_tunnel_eof(self) -> None:
        if self._tunnel is not None:
            self._tunnel.close()

    # ------------------------------------------------------------------ lifecycle

    def start(self, end_stream: bool) -> None:
        hcm = self.hcm
        cfg = self.config
        self._last_activity = hcm.loop.time()
        if cfg.request_timeout:
            self._request_timer = hcm.loop.call_later(cfg.request_timeout, self._on_request_timeout)
        if cfg.stream_idle_timeout and hcm._stream_idle_timer is None:  # (armed: nothing to do)
            hcm.watch_stream_idle()
        filters = self.filters  # a plain loop: no comprehension frame for the usual one or two filters
        for _, factory in cfg.filter_factories:
            filters.append(factory.create())
        self._task = hcm.loop.create_task(self._run(end_stream))

    async def _run(self, end_stream: bool) -> None:
        try:
            _ = self.route  # Envoy resolves the route before the decoder filters run (ROUTE_NAME, NR)
            filters = self.filters
            reached = 0
            for f in filters:
                reached += 1
                self._reached = reached
                sync = f.decode_headers_sync
                if sync is None:
                    status = await f.on_request_headers(self, end_stream)
                else:  # the filter's synchronous hook (Envoy's decodeHeaders): no coroutine unless it waits
                    status = sync(self, end_stream)
                    if status.__class__ is not FilterStatus:
                        status = await status
                if status is STOP or self.response_started or self.reset:
                    return
            if not self.response_started and not self.reset:
                if self.route is None:
                    await self.send_local_reply(404, b"", flag="NR", details="route_not_found")
                else:
                    await self.send_local_reply(500, b"", details="filter_chain_not_terminated")
        except asyncio.CancelledError:
            raise
        except StreamReset:
            pass
        except Exception:
            log.exception("HTTP filter chain failed")
            if not self.reset and not self.response_started:
                await self.send_local_reply(500, b"", details="filter_chain_exception")
            elif not self.reset:
                self._reset_stream(tx=True)

    def _on_request_timeout(self) -> None:
        self._request_timer = None
        if self.done or self.request_complete:
            return
        self.config.stats.rq_timeout.inc()
        self._timeout_reply(408, "request timeout", None, "request_overall_timeout")

    def _on_idle_check(self) -> None:
        """The connection's stream-idle timer fired while this stream is current."""
        if self.done:
            return
        timeout = self.config.stream_idle_timeout
        idle = self.hcm.loop.time() - self._last_activity
        if idle < timeout:
            self.hcm.watch_stream_idle(timeout - idle)
            return
        self.config.stats.rq_idle_timeout.inc()
        self._timeout_reply(408, "stream timeout", "SI", "stream_idle_timeout")

    def _timeout_reply(self, status: int, body: str, flag: str | None, details: str) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.response_started:
            if flag:
                self.stream_info.set_flag(flag)
            self.stream_info.response_code_details = details
            self._reset_stream(tx=True)
            return
        self.local_reply_now(status, body, flag, details, close=not self.request_complete)

    def _on_response_end(self) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        if not self.request_complete:
            self._close = True
            self._body.clear()
            self._body_bytes = 0
            if self.hcm.read_paused_for_body:
                self.hcm.resume_for_body()
        self._finish()

    def _reset_stream(self, tx: bool = False, flag: str | None = None) -> None:
        """End the stream abnormally: the HTTP/1 connection goes with it."""
        if self.done:
            return
        self.reset = True
        if flag:
            self.stream_info.set_flag(flag)
        stats = self.config.stats
        (stats.rq_tx_reset if tx else stats.rq_rx_reset).inc()
        self._close = True
        if self._task is not None and not self._task.done() and asyncio.current_task() is not self._task:
            self._task.cancel()
        if self._tunnel is not None:
            self._tunnel.close()
        self._wake_body()
        self._flush_head()  # what was already sent stays sent, as it would have without the hold
        self.hcm.abort()  # first: a closed manager serves nothing pipelined behind this stream
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        if not self.reset and not (self.response_complete and (self.request_complete or self._close)):
            return
        self.done = True
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        info = self.stream_info
        if info.end_monotonic is None:  # info.finish(), written out
            info.end_monotonic = _monotonic()
        stats = self.config.stats
        # Plain adds on the stats' values (the request path's counters, without a call each).
        stats.rq_active.value -= 1
        stats.rq_completed.value += 1
        code = info.response_code
        if 100 <= code < 600:
            stats.rq_xx[code // 100].value += 1
        stats.rq_time.record((info.end_monotonic - info.start_monotonic) * 1000.0)
        for f in self.filters:
            if type(f).on_destroy is _NO_DESTROY:
                continue  # the base no-op
            try:
                f.on_destroy()
            except Exception:
                log.exception("HTTP filter on_destroy failed")
        for logger in self.config.access_loggers:
            logger.log(info)
        self.hcm.stream_done(self)


class HttpConnectionManager(NetworkFilter):
    """``envoy.filters.network.http_connection_manager`` for one downstream connection."""

    def __init__(self, config, conn) -> None:
        self.config = config
        self.conn = conn
        self.loop = asyncio.get_event_loop()
        scheme = "https" if getattr(conn, "ssl", None) else "http"
        self.scheme = scheme
        self.parser = RequestParser(config.max_header_bytes, config.max_headers_count, scheme)
        self.stream: ActiveStream | None = None
        self.requests = 0
        self.draining = False
        self.closed = False
        self.read_paused_for_body = False
        self._read_paused_for_backlog = False
        self._backlog: collections.deque = collections.deque()  # parsed events of later requests
        self._raw: list[bytes] = []  # unparsed bytes held back while a response is pending
        self._raw_bytes = 0
        self._blocked = False
        self._close_after = False
        self._eof = False
        self._headers_timer: asyncio.TimerHandle | None = None
        self._delayed_close: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_idle = self.loop.time()
        self._stream_idle_timer: asyncio.TimerHandle | None = None
        # One deadline at a time (the router's upstream timeout): see set_deadline.
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_timer_at = 0.0
        self._deadline: float | None = None
        self._deadline_cb = None
        self._deadline_args: tuple = ()
        self._addresses: tuple | None = None  # (remote, local) of conn, read on the first request
        self._started = False
        self._start()

    # ------------------------------------------------------------------ NetworkFilter

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        s = self.config.stats
        s.cx_total.inc()
        s.cx_active.inc()
        s.cx_http1_total.inc()
        s.cx_http1_active.inc()
        self._arm_idle()

    def on_new_connection(self, conn) -> None:
        self.conn = conn
        self._addresses = None

    def on_data(self, data: bytes) -> None:
        if self.closed:
            return
        if self._blocked:
            self._raw.append(data)
            self._raw_bytes += len(data)
            if self._raw_bytes > self.config.buffer_limit and not self._read_paused_for_backlog:
                self._read_paused_for_backlog = True
                self.conn.pause_reading()
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        parser = self.parser
        events = parser.feed(data)
        if events:
            self._dispatch(events)
        if self._headers_timer is None:
            # A head that did not arrive whole in this read starts the request-headers timer (a
            # head that did, the usual case, never needs one).
            if self.stream is None and parser.in_head and not self.closed and not parser.upgraded:
                self._on_request_begin()
        elif (
            self.stream is None
            and not self._blocked
            and parser.idle
            and not self.closed
            and not parser.in_head
        ):
            self._disarm_headers_timer()

    def on_eof(self) -> None:
        self._eof = True
        if self.closed:
            self.conn.close()  # the peer saw our close: no need to wait out the delayed close
            return
        st = self.stream
        if st is not None and not st.done:
            if st.is_upgrade and self.parser.upgraded:
                st.on_tunnel_eof()
                return
            if st.request_complete:
                self._close_after = True  # answer what was asked, then close
                return
            st.stream_info.response_code_details = (
                st.stream_info.response_code_details or "downstream_remote_disconnect"
            )
            st._reset_stream(flag="DC")
            return
        if not self._blocked:
            self.close()
        else:
            self._close_after = True

    def on_connection_lost(self, exc: BaseException | None) -> None:
        if self.closed and self.stream is None:
            self._account_close()
            return
        self.closed = True
        st = self.stream
        if st is not None and not st.done:
            if not st.response_complete:
                st.stream_info.set_flag("DC")
                if not st.stream_info.response_code_details:
                    st.stream_info.response_code_details = "downstream_remote_disconnect"
            st._reset_stream()
        self._account_close()

    def _account_close(self) -> None:
        if self._started:
            self._started = False
            s = self.config.stats
            s.cx_active.dec()
            s.cx_http1_active.dec()
            s.cx_destroy.inc()
        for t in (
            self._headers_timer, self._idle_timer, self._delayed_close, self._stream_idle_timer,
            self._deadline_timer,
        ):  # fmt: skip
            if t is not None:
                t.cancel()
        self._deadline_timer = None
        self._deadline = self._deadline_cb = None
        self._headers_timer = self._idle_timer = self._delayed_close = self._stream_idle_timer = None
        self._backlog.clear()
        self._raw = []

    def on_drain_started(self) -> None:
        self.draining = True
        if self.stream is None and self.parser.idle and not self._blocked:
            self.config.stats.cx_drain_close.inc()
            self.close()

    # ------------------------------------------------------------------ events

    def _dispatch(self, events) -> None:
        i = 0
        n = len(events)
        while i < n:
            if self.closed:
                return
            ev = events[i]
            st = self.stream
            if type(ev) is RequestHead:
                if st is not None:
                    # A pipelined request: it waits for the response in progress.
                    self._backlog.extend(events[i:])
                    self._blocked = True
                    return
                end = i + 1 < n and type(events[i + 1]) is EndOfMessage
                self._on_request_head(ev, end)
            elif type(ev) is Data:
                if st is not None:
                    if st.is_upgrade and st.request_complete:
                        st.on_tunnel_data(ev.data)
                    else:
                        st.on_data(ev.data)
                elif self.parser.upgraded:
                    pass  # a tunnel that ended: drop
            elif type(ev) is EndOfMessage:
                if st is not None and not st.request_complete:
                    st.on_request_end()
            elif type(ev) is ProtocolError:
                self._on_protocol_error(ev)
                return
            i += 1

    def _on_request_begin(self) -> None:
        """A request head is incomplete: start the request-headers timer. (The connection idle timer
        stays armed; it checks for a request in progress when it fires.)"""
        # Envoy's stream exists from the first byte, so without request_headers_timeout a request
        # whose head never completes still meets the stream idle timeout.
        t = self.config.request_headers_timeout or self.config.stream_idle_timeout
        if t and self._headers_timer is None:
            self._headers_timer = self.loop.call_later(t, self._on_headers_timeout)

    def _disarm_headers_timer(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _new_stream(self, headers: Headers, version: str, keep_alive: bool) -> ActiveStream:
        self.requests += 1
        s = self.config.stats
        s.rq_total.value += 1
        s.rq_http1_total.value += 1
        s.rq_active.value += 1
        st = ActiveStream(self, headers, version, keep_alive)
        self.stream = st
        return st

    def _on_request_head(self, head: RequestHead, end_stream: bool) -> None:
        if self._headers_timer is not None:
            self._disarm_headers_timer()
        cfg = self.config
        headers = head.headers
        version = head.http_version
        st = self._new_stream(headers, version, head.keep_alive)
        if version not in ("1.1", "1.0"):
            st.local_reply_now(400, reason_phrase(400), "DPE", "http1.codec_error", close=True)
            return
        if version == "1.0":
            if not cfg.accept_http_10:
                self.config.stats.cx_protocol_error.inc()
                st.local_reply_now(426, reason_phrase(426), "DPE", "http1.codec_error", close=True)
                return
            if ":authority" not in headers and cfg.default_host_for_http_10:
                headers.add(":authority", cfg.default_host_for_http_10)
        items = headers.items()
        if len(items) > 2 and items[0][0] == ":method" and items[1][0] == ":path":  # the codec's order
            method, path = items[0][1], items[1][1]
            has_authority = items[2][0] == ":authority" or ":authority" in headers
        else:
            path = headers.get(":path")
            method = headers.get(":method")
            has_authority = ":authority" in headers
        if path is not None and path[:1] != "/" and not (path == "*" and method == "OPTIONS"):
            cfg.stats.rq_non_relative_path.inc()
            st.local_reply_now(404, b"", None, "absolute_path_rejected", close=not end_stream)
            return
        if not has_authority:
            st.local_reply_now(400, b"", None, "missing_host_header", close=not end_stream)
            return
        if head.upgrade:
            kind = "connect" if method == "CONNECT" else (headers.get("upgrade") or "").lower()
            if kind not in cfg.upgrade_types:
                st.local_reply_now(403, b"", None, "upgrade_failed", close=True)
                return
            st.is_upgrade = True
        elif method == "CONNECT":
            st.local_reply_now(403, b"", None, "upgrade_failed", close=True)
            return
        # Path normalization (proxy.core.path): routing, filters and the upstream see the normalized path.
        if cfg.path_normalizer is not None and not cfg.path_normalizer.apply(st, headers, end_stream):
            return
        self._mutate_request_headers(st, head)
        if cfg.xfcc is not None:  # x-forwarded-client-cert, per forward_client_cert_details
            xfcc.apply_to_headers(cfg.xfcc, headers, getattr(self.conn.ssl, "info", None))
        if head.expect_continue and not end_stream:
            self.conn.write(CONTINUE_100)
        if end_stream and not st.is_upgrade:
            st.request_complete = True
        elif st.is_upgrade:
            pass  # EndOfMessage of the upgrade head marks the start of the tunnel
        st.start(end_stream and not st.is_upgrade)

    def _mutate_request_headers(self, st: ActiveStream, head: RequestHead) -> None:
        cfg = self.config
        headers = head.headers
        # The received names in one C call: the checks below are dict lookups, not header scans. (Only
        # for presence: a value is read from the headers, whose first value counts.) The edits before
        # a check never touch the names it checks.
        names = dict(headers.items())
        if not _REQUEST_HOP.isdisjoint(names):
            te = headers.get("te")
            upgrade = headers.get("upgrade") if st.is_upgrade else None
            headers.remove_names(_REQUEST_HOP)  # cuts their lines out of the received head too
            if te is not None and te.strip().lower() == "trailers":
                headers.add("te", "trailers")
            if upgrade is not None:
                headers.add("connection", "upgrade")
                headers.add("upgrade", upgrade)
        if head.expect_continue:
            headers.remove("expect")
        addrs = self._addresses  # set by the stream's constructor
        remote = addrs[0] if addrs is not None else getattr(self.conn, "remote_address", None)
        remote_ip = (remote or ("", 0))[0]
        xff = headers.get("x-forwarded-for") if "x-forwarded-for" in names else None
        entries = [e.strip() for e in xff.split(",")] if xff else []
        n = cfg.xff_num_trusted_hops
        edge = False
        if cfg.use_remote_address:
            if n > 0 and len(entries) >= n:
                client = entries[len(entries) - n]
                st.stream_info.downstream_remote_address = (client, 0)
            internal = _is_internal(remote_ip) and not entries
            edge = not internal
            if not cfg.skip_xff_append and remote_ip:
                headers.set("x-forwarded-for", f"{xff}, {remote_ip}" if xff else remote_ip)
            headers.set("x-forwarded-proto", self.scheme)
            if internal:
                headers.set("x-envoy-internal", "true")
            else:
                headers.remove_names(_INTERNAL_ONLY)
                if remote_ip:
                    headers.set("x-envoy-external-address", remote_ip)
        else:
            if entries:
                idx = len(entries) - 1 - n
                if idx >= 0:
                    st.stream_info.downstream_remote_address = (entries[idx], 0)
            if "x-forwarded-proto" not in names:
                headers.add("x-forwarded-proto", self.scheme)
        if cfg.generate_request_id:
            if "x-request-id" not in names:
                headers.add("x-request-id", _request_id())
            elif edge and not cfg.preserve_external_request_id:
                headers.set("x-request-id", _request_id())
        if cfg.via:
            via = headers.get("via") if "via" in names else None
            headers.set("via", f"{via}, {cfg.via}" if via else cfg.via)

    def _on_protocol_error(self, err: ProtocolError) -> None:
        self.config.stats.cx_protocol_error.inc()
        self._disarm_headers_timer()
        st = self.stream
        if st is None:
            st = self._new_stream(Headers(), "1.1", False)
        elif st.done:
            self.abort()
            return
        if st._task is not None and not st._task.done():
            st._task.cancel()
        st.local_reply_now(err.status, reason_phrase(err.status), "DPE", err.reason, close=True)
        if not st.done:
            st._reset_stream(tx=True)
        self._close_after = True
        self.close()

    def _on_headers_timeout(self) -> None:
        self._headers_timer = None
        if self.closed or self.stream is not None:
            return
        st = self._new_stream(Headers(), "1.1", False)
        if self.config.request_headers_timeout:
            self.config.stats.rq_header_timeout.inc()
            st.local_reply_now(408, "request header timeout", None, "request_header_timeout", close=True)
        else:
            self.config.stats.rq_idle_timeout.inc()
            st.local_reply_now(408, "stream timeout", "SI", "stream_idle_timeout", close=True)
        self.close()

    # ------------------------------------------------------------------ stream completion

    def stream_done(self, st: ActiveStream) -> None:
        if self.stream is st:
            self.stream = None
        if self.closed:
            return
        if st._close or self._close_after:
            self.close()
            return
        if self.read_paused_for_body:
            self.resume_for_body()
        self._last_idle = self.loop.time()
        # Serve what was pipelined behind this request.
        if self._backlog:
            events = list(self._backlog)
            self._backlog.clear()
            self._blocked = False
            self._dispatch(events)
            if self.stream is not None and self._backlog:
                return
        self._blocked = False
        while self._raw and not self._blocked and not self.closed:
            raw, self._raw = self._raw, []
            self._raw_bytes = 0
            data = b"".join(raw)
            self._feed(data)
        if self._read_paused_for_backlog and not self._blocked and not self.closed:
            self._read_paused_for_backlog = False
            self.conn.resume_reading()
        if self.stream is None and not self.closed:
            if self._eof or self.draining:
                if self.draining:
                    self.config.stats.cx_drain_close.inc()
                self.close()
            elif self.parser.idle:
                # _arm_idle without its second clock read (_last_idle was set above)
                t = self.config.idle_timeout
                if t and self._idle_timer is None:
                    self._idle_timer = self.loop.call_later(t, self._on_idle_timeout)

    # ------------------------------------------------------------------ flow control and closing

    def pause_for_body(self) -> None:
        if not self.read_paused_for_body:
            self.read_paused_for_body = True
            self.conn.pause_reading()

    def resume_for_body(self) -> None:
        if self.read_paused_for_body:
            self.read_paused_for_body = False
            if not self.closed and not self._read_paused_for_backlog:
                self.conn.resume_reading()

    def watch_stream_idle(self, delay: float | None = None) -> None:
        """Envoy's stream idle timeout, with one timer per connection (HTTP/1 has one stream at a
        time) that checks the current stream's last activity when it fires, instead of a new timer
        for every request."""
        if self._stream_idle_timer is None and not self.closed:
            t = self.config.stream_idle_timeout if delay is None else delay
            self._stream_idle_timer = self.loop.call_later(t, self._on_stream_idle_timer)

    def _on_stream_idle_timer(self) -> None:
        self._stream_idle_timer = None
        st = self.stream
        if st is not None and not st.done and not self.closed:
            st._on_idle_check()

    def set_deadline(self, when: float, callback, *args) -> None:
        """Call ``callback(*args)`` at loop time `when` unless ``clear_deadline`` comes first. HTTP/1
        runs one stream, and the router one upstream attempt, at a time, so one deadline per
        connection is enough: it lives in one timer handle that is re-armed lazily (when it fires
        before the current deadline) instead of a new timer armed and cancelled per request."""
        self._deadline = when
        self._deadline_cb = callback
        self._deadline_args = args
        h = self._deadline_timer
        if h is not None:
            if self._deadline_timer_at <= when:
                return  # fires first and re-arms for `when`
            h.cancel()
        self._deadline_timer_at = when
        self._deadline_timer = self.loop.call_at(when, self._on_deadline_timer)

    def clear_deadline(self, owner: object = None) -> None:
        """Forget the deadline (only if its last callback argument is `owner`, when one is given: a
        cancelled attempt that finishes late never clears the next one's)."""
        if owner is not None and (not self._deadline_args or self._deadline_args[-1] is not owner):
            return
        self._deadline = self._deadline_cb = None
        self._deadline_args = ()

    def _on_deadline_timer(self) -> None:
        self._deadline_timer = None
        when = self._deadline
        if when is None or self.closed:
            return
        if self.loop.time() < when:
            self._deadline_timer_at = when
            self._deadline_timer = self.loop.call_at(when, self._on_deadline_timer)
            return
        cb, args = self._deadline_cb, self._deadline_args
        self.clear_deadline()
        cb(*args)

    def _arm_idle(self) -> None:
        """Idle from now. One timer per connection, re-armed lazily when it fires early, instead of a
        new timer for every request."""
        t = self.config.idle_timeout
        if t:
            self._last_idle = self.loop.time()
            if self._idle_timer is None:
                self._idle_timer = self.loop.call_later(t, self._on_idle_timeout)

    def _on_idle_timeout(self) -> None:
        self._idle_timer = None
        if self.closed or self.stream is not None or not self.parser.idle:
            return  # busy: stream_done arms it again
        left = self._last_idle + self.config.idle_timeout - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._on_idle_timeout)
            return
        self.config.stats.cx_idle_timeout.inc()
        self.close()

    def close(self) -> None:
        """Close after what was written is flushed. Like Envoy's delayed close: send our FIN first and
        keep reading (and dropping) for ``delayed_close_timeout``, so a client still sending does not
        get a RST that destroys the response before it read it."""
        if self.closed:
            return
        self.closed = True
        conn = self.conn
        delay = self.config.delayed_close_timeout
        write_eof = getattr(conn, "write_eof", None)
        if delay and write_eof is not None and not self._eof:
            try:
                write_eof()
            except Exception:
                conn.close()
                return
            self._delayed_close = self.loop.call_later(delay, conn.close)
        else:
            conn.close()

    def abort(self) -> None:
        self.closed = True
        self.conn.abort()
