"""The HTTP connection manager driven in-process: a fake downstream connection and a fake terminal filter."""

from __future__ import annotations

import asyncio

import pytest

from proxy.core.headers import Headers
from proxy.core.http1 import Data, EndOfMessage, ResponseHead, ResponseParser
from proxy.filters.http.base import CONTINUE, STOP, HttpFilter
from proxy.filters.network.http_connection_manager import (
    HcmConfig,
    HttpConnectionManager,
    StaticRouteProvider,
)
from proxy.filters.network.http_connection_manager.config import HcmStats
from proxy.stats.store import Store


class FakeConn:
    def __init__(self, remote=("10.1.2.3", 5555)) -> None:
        self.remote_address = remote
        self.local_address = ("127.0.0.1", 10000)
        self.ssl = None
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.pauses = 0
        self.write_paused = False
        self.filter = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def writelines(self, chunks) -> None:
        for c in chunks:
            self.write(c)

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def _lost(self) -> None:
        if self.filter is not None:
            self.filter.on_connection_lost(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._lost)

    def abort(self) -> None:
        if not self.closed:
            self.aborted = True
            self.close()

    def is_write_paused(self) -> bool:
        return self.write_paused

    async def drain(self) -> None:
        while self.write_paused:
            await asyncio.sleep(0.001)

    def responses(self):
        """Parse what was written into [(head, body)]."""
        p = ResponseParser(emit_informational=True)
        out, cur = [], None
        for ev in p.feed(bytes(self.out)) + p.feed_eof():
            if isinstance(ev, ResponseHead):
                cur = [ev, b""]
                out.append(cur)
                if ev.status < 200 and ev.status != 101:
                    cur = None
            elif isinstance(ev, Data) and cur is not None:
                cur[1] += ev.data
            elif isinstance(ev, EndOfMessage):
                cur = None
        return [(h, b) for h, b in out]


class Route:
    name = "r1"


class Table:
    def __init__(self, route=Route()) -> None:
        self.route = route
        self.seen = []

    def match(self, headers, random_value):
        self.seen.append(headers)
        return self.route


class Recorder:
    def __init__(self) -> None:
        self.infos = []

    def log(self, info) -> None:
        self.infos.append(info)


class Terminal(HttpFilter):
    """Calls the test's handler: the stand-in for the router."""

    __slots__ = ("handler", "destroyed")

    def __init__(self, handler, destroyed) -> None:
        self.handler = handler
        self.destroyed = destroyed

    async def on_request_headers(self, stream, end_stream):
        await self.handler(stream, end_stream)
        return STOP

    def on_destroy(self) -> None:
        self.destroyed.append(self)


class TerminalFactory:
    def __init__(self, handler) -> None:
        self.handler = handler
        self.destroyed = []

    def create(self):
        return Terminal(self.handler, self.destroyed)


async def ok_handler(stream, end_stream):
    body = b""
    async for chunk in stream.request_body():
        body += chunk
    payload = b"echo:" + body
    await stream.encode_headers(
        Headers(
            [
                (":status", "200"),
                ("content-length", str(len(payload))),
                ("connection", "keep-alive"),
                ("x-path", stream.request_headers.path),
            ]
        ),
        False,
    )
    await stream.encode_data(payload, True)


def make(handler=ok_handler, route_table=None, conn=None, **kw):
    store = Store()
    logger = Recorder()
    tf = TerminalFactory(handler)
    filters = kw.pop("filters", [])
    cfg = HcmConfig(
        stat_prefix="ing",
        stats=HcmStats.build(store.scope("http.ing.")),
        route_provider=StaticRouteProvider(route_table if route_table is not None else Table()),
        filter_factories=[*filters, ("router", tf)],
        access_loggers=[logger],
        **kw,
    )
    conn = conn or FakeConn()
    hcm = HttpConnectionManager(cfg, conn)
    conn.filter = hcm
    hcm.on_new_connection(conn)
    return hcm, conn, store, logger, tf


async def settle(cond=None, timeout=2.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        await asyncio.sleep(0)
        if cond is None or cond():
            if cond is None:
                for _ in range(20):
                    await asyncio.sleep(0)
            return
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


def stat(store, name):
    if name in store.counters:
        return store.counters[name].value
    return store.gauges[name].value


# ------------------------------------------------------------------------------------------ basics


async def test_get_is_proxied_with_envoy_headers_stats_and_access_log():
    hcm, conn, store, logger, tf = make()
    hcm.on_data(b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: logger.infos)
    [(head, body)] = conn.responses()
    assert head.status == 200 and body == b"echo:"
    h = head.headers
    assert h.get("server") == "envoy" and h.get("date") and h.get("x-path") == "/a"
    assert "connection" not in h  # hop-by-hop from the upstream is not forwarded; keep-alive is default
    assert not conn.closed
    info = logger.infos[0]
    assert info.response_code == 200 and info.route_name == "r1" and info.bytes_sent == 5
    assert info.request_headers.get("x-request-id")  # generated
    assert info.request_headers.get("x-forwarded-proto") == "http"
    assert stat(store, "http.ing.downstream_rq_total") == 1
    assert stat(store, "http.ing.downstream_rq_2xx") == 1
    assert stat(store, "http.ing.downstream_rq_active") == 0
    assert stat(store, "http.ing.downstream_cx_total") == 1
    assert stat(store, "http.ing.downstream_cx_active") == 1
    assert store.histograms["http.ing.downstream_rq_time"].count == 1
    assert len(tf.destroyed) == 1


async def test_pipelined_requests_are_answered_in_order():
    gate = asyncio.Event()

    async def handler(stream, end_stream):
        if stream.request_headers.path == "/slow":
            await gate.wait()
        await ok_handler(stream, end_stream)

    hcm, conn, store, logger, _ = make(handler)
    hcm.on_data(
        b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"
        b"hiGET /c HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    await settle()
    assert conn.responses() == []  # nothing overtakes the slow first request
    gate.set()
    await settle(lambda: len(logger.infos) == 3)
    assert [h.headers.get("x-path") for h, _ in conn.responses()] == ["/slow", "/b", "/c"]
    assert conn.responses()[1][1] == b"echo:hi"


async def test_chunked_request_and_streamed_chunked_response():
    async def handler(stream, end_stream):
        assert not end_stream
        assert "transfer-encoding" not in stream.request_headers  # hop-by-hop removed before routing
        await stream.encode_headers(Headers([(":status", "200")]), False)
        async for chunk in stream.request_body():
            await stream.encode_data(chunk.upper(), False)
        await stream.encode_data(b"", True)

    hcm, conn, store, logger, _ = make(handler)
    hcm.on_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await settle()
    assert b"transfer-encoding: chunked" in bytes(conn.out)
    hcm.on_data(b"2\r\nde\r\n0\r\n\r\n")
    await settle(lambda: logger.infos)
    [(head, body)] = conn.responses()
    assert body == b"ABCDE" and bytes(conn.out).endswith(b"0\r\n\r\n")
    assert logger.infos[0].bytes_received == 5


async def test_request_body_backpressure_pauses_and_resumes_reading():
    release = asyncio.Event()

    async def handler(stream, end_stream):
        await release.wait()
        n = 0
        async for chunk in stream.request_body():
            n += len(chunk)
        await stream.send_local_reply(200, f"got {n}")

    hcm, conn, store, logger, _ = make(handler, buffer_limit=1000)
    hcm.on_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
    for _ in range(5):
        hcm.on_data(b"x" * 1000)
    await settle()
    assert not conn.reading  # paused past the high-water mark
    release.set()
    await settle(lambda: logger.infos)
    assert conn.reading
    assert conn.responses()[0][1] == b"got 5000"


async def test_expect_continue_gets_100_then_the_response():
    hcm, conn, store, logger, _ = make()
    hcm.on_data(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    await settle()
    assert bytes(conn.out) == b"HTTP/1.1 100 Continue\r\n\r\n"
    hcm.on_data(b"abc")
    await settle(lambda: logger.infos)
    assert [h.status for h, _ in conn.responses()] == [100, 200]
    assert "expect" not in logger.infos[0].request_headers


async def test_head_response_has_no_body_bytes():
    hcm, conn, store, logger, _ = make()
    hcm.on_data(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle(lambda: logger.infos)
    out = bytes(conn.out)
    assert out.endswith(b"\r\n\r\n") and b"echo:" not in out and b"content-length: 5" in out


# ------------------------------------------------------------------------------------- local replies


async def test_send_local_reply_sets_flag_details_and_text_body():
    async def handler(stream, end_stream):
        await stream.send_local_reply(
            503,
            "upstream connect error",
            flag="UO",
            details="overflow",
            headers={"x-envoy-overloaded": "true"},
        )

    hcm, conn, store, logger, _ = make(handler)
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle(lambda: logger.infos)
    [(head, body)] = conn.responses()
    assert head.status == 503 and body == b"upstream connect error"
    assert head.headers.get("content-type") == "text/plain"
    assert head.headers.get("x-envoy-overloaded") == "true"
    info = logger.infos[0]
    assert info.flags_string() == "UO" and info.response_code_details == "overflow"
    assert stat(store, "http.ing.downstream_rq_5xx") == 1


async def test_no_route_and_no_terminal_answer_is_404_nr():
    class Passthrough(HttpFilter):
        async def on_request_headers(self, stream, end_stream):
            return CONTINUE

    class PF:
        def create(self):
            return Passthrough()

    store = Store()
    logger = Recorder()
    cfg = HcmConfig(
        stat_prefix="ing",
        stats=HcmStats.build(store.scope("http.ing.")),
        route_provider=StaticRouteProvider(Table(route=None)),
        filter_factories=[("p", PF())],
        access_loggers=[logger],
    )
    conn = FakeConn()
    hcm = HttpConnectionManager(cfg, conn)
    conn.filter = hcm
    hcm.on_data(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle(lambda: logger.infos)
    assert conn.responses()[0][0].status == 404
    assert logger.infos[0].flags_string() == "NR"


async def test_encoder_filters_run_in_reverse_order():
    order = []

    class Enc(HttpFilter):
        def __init__(self, name):
            self.name = name

        async def on_response_headers(self, stream, headers, end_stream):
            order.append(self.name)
            headers.add("x-seen", self.name)
            return CONTINUE

    class EF:
        def __init__(self, name):
            self.name = name

        def create(self):
            return Enc(self.name)

    hcm, conn, store, logger, _ = make(filters=[("a", EF("a")), ("b", EF("b"))])
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle(lambda: logger.infos)
    assert order == ["b", "a"]
    assert conn.responses()[0][0].headers.get_all("x-seen") == ["b", "a"]


# ----------------------------------------------------------------------------------- codec and closes


@pytest.mark.parametrize(
    "raw,status,details",
    [
        (b"BAD LINE\r\n\r\n", 400, "http1.codec_error"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 400, "http1.invalid_characters"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "http1.content_length_and_chunked_not_allowed",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431, "http1.headers_too_large"),
    ],
)
async def test_codec_errors_answer_and_close_with_dpe(raw, status, details):
    hcm, conn, store, logger, _ = make()
    hcm.on_data(raw)
    await settle(lambda: logger.infos and conn.closed)
    [(head, body)] = conn.responses()
    assert head.status == status and head.headers.get("connection") == "close"
    info = logger.infos[0]
    assert (
        info.response_code == status
        and "DPE" in info.response_flags
        and info.response_code_details == details
    )
    assert stat(store, "http.ing.downstream_cx_protocol_error") == 1
    await settle()
    assert stat(store, "http.ing.downstream_cx_active") == 0


async def test_connection_close_and_http10():
    hcm, conn, store, logger, _ = make()
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await settle(lambda: conn.closed)
    assert conn.responses()[0][0].headers.get("connection") == "close"

    hcm, conn, store, logger, _ = make()  # Envoy refuses HTTP/1.0 unless accept_http_10
    hcm.on_data(b"GET / HTTP/1.0\r\n\r\n")
    await settle(lambda: conn.closed)
    assert conn.responses()[0][0].status == 426

    hcm, conn, store, logger, _ = make(accept_http_10=True, default_host_for_http_10="dflt")
    hcm.on_data(b"GET / HTTP/1.0\r\n\r\n")
    await settle(lambda: conn.closed)
    assert conn.responses()[0][0].status == 200
    assert logger.infos[0].request_headers.authority == "dflt" and logger.infos[0].protocol == "HTTP/1.0"


async def test_missing_host_is_400():
    hcm, conn, store, logger, _ = make()
    hcm.on_data(b"GET / HTTP/1.1\r\n\r\n")
    await settle(lambda: logger.infos)
    assert conn.responses()[0][0].status == 400
    assert logger.infos[0].response_code_details == "missing_host_header"


async def test_downstream_disconnect_mid_request_is_dc_and_cancels_the_filter():
    started = asyncio.Event()
    cancelled = []

    async def handler(stream, end_stream):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    hcm, conn, store, logger, tf = make(handler)
    hcm.on_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\npartial")
    await started.wait()
    hcm.on_connection_lost(None)
    await settle(lambda: logger.infos)
    info = logger.infos[0]
    assert info.flags_string() == "DC" and info.response_code == 0
    await settle()
    assert cancelled and tf.destroyed
    assert stat(store, "http.ing.downstream_rq_active") == 0
    assert stat(store, "http.ing.downstream_cx_active") == 0


async def test_drain_makes_the_next_response_close():
    hcm, conn, store, logger, _ = make()
    hcm.on_drain_started()
    assert conn.closed  # idle: closed at once

    gate = asyncio.Event()

    async def handler(stream, end_stream):
        await gate.wait()
        await ok_handler(stream, end_stream)

    hcm, conn, store, logger, _ = make(handler)
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    hcm.on_drain_started()  # a request in flight: it is answered, with Connection: close
    assert not conn.closed
    gate.set()
    await settle(lambda: conn.closed)
    [(head, body)] = conn.responses()
    assert head.status == 200 and head.headers.get("connection") == "close"


# ------------------------------------------------------------------------------------------ timeouts


async def test_request_headers_timeout_is_408():
    hcm, conn, store, logger, _ = make(request_headers_timeout=0.05)
    hcm.on_data(b"GET / HTTP/1.1\r\nHo")
    await settle(lambda: conn.closed)
    assert conn.responses()[0][0].status == 408
    assert conn.responses()[0][1] == b"request header timeout"
    assert stat(store, "http.ing.downstream_rq_header_timeout") == 1
    assert logger.infos[0].response_code == 408


async def test_stream_idle_timeout_is_408_si():
    async def handler(stream, end_stream):
        await asyncio.sleep(30)

    hcm, conn, store, logger, _ = make(handler, stream_idle_timeout=0.05)
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle(lambda: logger.infos)
    [(head, body)] = conn.responses()
    assert head.status == 408 and body == b"stream timeout"
    assert logger.infos[0].flags_string() == "SI"


async def test_request_timeout_is_408():
    async def handler(stream, end_stream):
        async for _ in stream.request_body():
            pass

    hcm, conn, store, logger, _ = make(handler, request_timeout=0.05)
    hcm.on_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
    await settle(lambda: logger.infos)
    assert conn.responses()[0][0].status == 408
    assert conn.responses()[0][1] == b"request timeout"
    assert stat(store, "http.ing.downstream_rq_timeout") == 1


async def test_connection_idle_timeout_closes():
    hcm, conn, store, logger, _ = make(idle_timeout=0.05)
    await settle(lambda: conn.closed)
    assert stat(store, "http.ing.downstream_cx_idle_timeout") == 1


# ---------------------------------------------------------------------------------------- addresses


async def test_use_remote_address_appends_xff_and_sanitizes_external_requests():
    hcm, conn, store, logger, _ = make(use_remote_address=True, conn=FakeConn(remote=("203.0.113.9", 1)))
    hcm.on_data(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Envoy-Retry-On: 5xx\r\n"
        b"X-Request-Id: client-chosen\r\n\r\n"
    )
    await settle(lambda: logger.infos)
    h = logger.infos[0].request_headers
    assert h.get("x-forwarded-for") == "1.1.1.1, 203.0.113.9"
    assert "x-envoy-retry-on" not in h and h.get("x-envoy-external-address") == "203.0.113.9"
    assert h.get("x-request-id") != "client-chosen"

    hcm, conn, store, logger, _ = make(use_remote_address=True, conn=FakeConn(remote=("127.0.0.1", 1)))
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Envoy-Retry-On: 5xx\r\nX-Request-Id: keep\r\n\r\n")
    await settle(lambda: logger.infos)
    h = logger.infos[0].request_headers
    assert h.get("x-envoy-internal") == "true" and h.get("x-envoy-retry-on") == "5xx"
    assert h.get("x-request-id") == "keep"


async def test_xff_trusted_hops_sets_downstream_address_without_use_remote_address():
    hcm, conn, store, logger, _ = make(xff_num_trusted_hops=1)
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 9.9.9.9, 8.8.8.8\r\n\r\n")
    await settle(lambda: logger.infos)
    assert logger.infos[0].downstream_remote_address == ("9.9.9.9", 0)
    assert logger.infos[0].request_headers.get("x-forwarded-for") == "9.9.9.9, 8.8.8.8"


async def test_server_name_is_configurable():
    hcm, conn, store, logger, _ = make(server_name="isthmus")
    hcm.on_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle(lambda: logger.infos)
    assert conn.responses()[0][0].headers.get("server") == "isthmus"


# ------------------------------------------------------------------------------------------- upgrade


class FakeDuplex:
    def __init__(self) -> None:
        self.written = bytearray()
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data
        if data == b"ping":
            self.inbox.put_nowait(b"pong")

    async def read(self) -> bytes:
        return await self.inbox.get()

    def close(self) -> None:
        self.closed = True
        self.inbox.put_nowait(b"")


async def test_upgrade_tunnels_bytes_both_ways():
    duplex = FakeDuplex()

    async def handler(stream, end_stream):
        assert stream.request_headers.get("upgrade") == "websocket"
        assert stream.request_headers.get("connection") == "upgrade"
        await stream.encode_headers(Headers([(":status", "101"), ("upgrade", "websocket")]), False)
        await stream.upgrade(duplex)

    hcm, conn, store, logger, _ = make(handler, upgrade_types=frozenset({"websocket"}))
    hcm.on_data(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly")
    await settle(lambda: duplex.written == b"early")
    hcm.on_data(b"ping")
    await settle(lambda: bytes(conn.out).endswith(b"pong"))
    head = bytes(conn.out).split(b"\r\n\r\n")[0]
    assert (
        head.startswith(b"HTTP/1.1 101") and b"connection: upgrade" in head and b"upgrade: websocket" in head
    )
    hcm.on_eof()
    await settle(lambda: logger.infos)
    assert duplex.closed and conn.closed and logger.infos[0].response_code == 101


async def test_upgrade_not_configured_is_403():
    hcm, conn, store, logger, _ = make()
    hcm.on_data(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    await settle(lambda: logger.infos)
    assert conn.responses()[0][0].status == 403
    assert logger.infos[0].response_code_details == "upgrade_failed"
