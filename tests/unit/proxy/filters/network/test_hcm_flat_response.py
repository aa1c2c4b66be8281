"""The flat response path: a whole answer written without awaiting (one send, encoder filters still
honoured), and the connection's one lazily re-armed deadline timer (the router's upstream timeout)."""

from __future__ import annotations

import asyncio

from proxy.core.headers import Headers
from proxy.filters.http.base import CONTINUE, HttpFilter
from tests.unit.proxy.filters.network.test_hcm_hot_path import CountingConn
from tests.unit.proxy.filters.network.test_http_connection_manager import make, settle


def _answer(extra=()):
    return Headers([(":status", "200"), ("content-type", "text/plain"), *extra])


async def test_a_whole_answer_leaves_in_one_write_and_completes_the_stream():
    used = []

    async def handler(stream, end_stream):
        used.append(stream.encode_whole(_answer(), b"hello"))

    conn = CountingConn()
    hcm, conn, store, logger, _ = make(handler, conn=conn)
    hcm.on_data(b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: logger.infos)
    assert used == [True]
    assert len(conn.calls) == 1
    [(head, body)] = conn.responses()
    assert head.status == 200 and body == b"hello"
    assert logger.infos[0].response_code == 200 and logger.infos[0].bytes_sent == 5


async def test_a_whole_answer_to_head_carries_no_body():
    async def handler(stream, end_stream):
        assert stream.encode_whole(_answer([("content-length", "5")]), b"hello")

    conn = CountingConn()
    hcm, conn, store, logger, _ = make(handler, conn=conn)
    hcm.on_data(b"HEAD /a HTTP/1.1\r\nHost: svc\r\n\r\nGET /b HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: len(logger.infos) == 2)
    assert conn.calls[0].endswith(b"\r\n\r\n")  # the head only
    assert logger.infos[0].bytes_sent == 0


class AddsResponseHeader(HttpFilter):
    """An encoder filter: a whole answer must still pass through it."""

    async def on_response_headers(self, stream, headers, end_stream):
        await asyncio.sleep(0)
        headers.add("x-encoded", "1")
        return CONTINUE


class AddsResponseHeaderFactory:
    def create(self):
        return AddsResponseHeader()


async def test_an_encoder_filter_makes_the_router_take_the_awaiting_path():
    used = []

    async def handler(stream, end_stream):
        h = _answer()
        ok = stream.encode_whole(h, b"hello")
        used.append(ok)
        if not ok:
            await stream.encode_headers(h, False)
            await stream.encode_data(b"hello", True)

    hcm, conn, store, logger, _ = make(handler, filters=[("enc", AddsResponseHeaderFactory())])
    hcm.on_data(b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: logger.infos)
    assert used == [False]
    [(head, body)] = conn.responses()
    assert head.headers.get("x-encoded") == "1" and body == b"hello"


async def test_the_deadline_fires_once_at_its_time_and_a_cleared_one_never_fires():
    hcm, conn, store, logger, _ = make()
    loop = asyncio.get_running_loop()
    fired = []
    hcm.set_deadline(loop.time() + 0.05, fired.append, "first")
    hcm.clear_deadline()
    # A later deadline reuses the armed timer (it fires early and re-arms), then fires at its time.
    start = loop.time()
    hcm.set_deadline(loop.time() + 0.15, fired.append, "second")
    await settle(lambda: fired, timeout=2.0)
    assert fired == ["second"]
    assert loop.time() - start >= 0.14
    await asyncio.sleep(0.1)
    assert fired == ["second"]


async def test_an_earlier_deadline_replaces_a_later_armed_one():
    hcm, conn, store, logger, _ = make()
    loop = asyncio.get_running_loop()
    fired = []
    hcm.set_deadline(loop.time() + 30, fired.append, "late")
    start = loop.time()
    hcm.set_deadline(loop.time() + 0.05, fired.append, "soon")
    await settle(lambda: fired, timeout=2.0)
    assert fired == ["soon"] and loop.time() - start < 5


async def test_a_stale_owner_never_clears_the_current_deadline():
    hcm, conn, store, logger, _ = make()
    loop = asyncio.get_running_loop()
    fired = []
    old, new = [], []
    hcm.set_deadline(loop.time() + 30, lambda *_: fired.append("old"), old)
    hcm.set_deadline(loop.time() + 0.05, lambda *_: fired.append("new"), new)
    hcm.clear_deadline(old)  # the first attempt finishing late
    await settle(lambda: fired, timeout=2.0)
    assert fired == ["new"]


async def test_a_closed_connection_forgets_its_deadline():
    hcm, conn, store, logger, _ = make()
    loop = asyncio.get_running_loop()
    fired = []
    hcm.set_deadline(loop.time() + 0.03, fired.append, "x")
    hcm.on_connection_lost(None)
    await asyncio.sleep(0.1)
    assert fired == []
