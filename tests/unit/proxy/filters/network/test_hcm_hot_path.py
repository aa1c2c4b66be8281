"""What the connection manager's fast paths must keep: one send for head and body, a head that is not
held back when the body is late, lazily re-armed timers that still fire, and valid request IDs."""

from __future__ import annotations

import asyncio
import uuid

from proxy.core.headers import Headers
from proxy.filters.network.http_connection_manager.manager import _request_id
from tests.unit.proxy.filters.network.test_http_connection_manager import (
    FakeConn,
    make,
    settle,
    stat,
)


class CountingConn(FakeConn):
    """Records every write call (a call is one send() on a real transport)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))
        super().write(data)

    def writelines(self, chunks) -> None:
        self.calls.append(b"".join(chunks))
        FakeConn.write(self, b"".join(chunks))


async def test_head_and_body_of_an_answer_leave_in_one_write():
    conn = CountingConn()
    hcm, conn, store, logger, _ = make(conn=conn)
    hcm.on_data(b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: logger.infos)
    assert len(conn.calls) == 1
    assert conn.calls[0].startswith(b"HTTP/1.1 200 OK\r\n") and conn.calls[0].endswith(b"\r\n\r\necho:")
    [(head, body)] = conn.responses()
    assert head.status == 200 and body == b"echo:"


async def test_head_is_sent_without_waiting_for_a_late_body():
    gate = asyncio.Event()

    async def handler(stream, end_stream):
        await stream.encode_headers(Headers([(":status", "200"), ("content-length", "4")]), False)
        await gate.wait()
        await stream.encode_data(b"late", True)

    conn = CountingConn()
    hcm, conn, store, logger, _ = make(handler, conn=conn)
    hcm.on_data(b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: conn.calls)
    assert conn.calls[0].startswith(b"HTTP/1.1 200 OK\r\n") and conn.calls[0].endswith(b"\r\n\r\n")
    gate.set()
    await settle(lambda: logger.infos)
    assert conn.calls[-1] == b"late"
    [(head, body)] = conn.responses()
    assert body == b"late"


async def test_idle_timeout_still_closes_after_requests_reused_the_timer():
    hcm, conn, store, logger, _ = make(idle_timeout=0.1)
    for i in range(3):
        hcm.on_data(b"GET /%d HTTP/1.1\r\nHost: svc\r\n\r\n" % i)
        await settle(lambda n=i: len(logger.infos) == n + 1)
        await asyncio.sleep(0.04)  # less than the idle timeout each time: the connection stays open
    assert not conn.closed
    await settle(lambda: conn.closed, timeout=2.0)
    assert stat(store, "http.ing.downstream_cx_idle_timeout") == 1
    assert len(conn.responses()) == 3


async def test_stream_idle_timeout_applies_to_a_later_stream_on_the_same_connection():
    gate = asyncio.Event()

    async def handler(stream, end_stream):
        if stream.request_headers.path == "/stall":
            await gate.wait()  # never set: the stream goes idle
        await stream.encode_headers(Headers([(":status", "200"), ("content-length", "0")]), True)

    hcm, conn, store, logger, _ = make(handler, stream_idle_timeout=0.1)
    hcm.on_data(b"GET /fast HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: logger.infos)
    hcm.on_data(b"GET /stall HTTP/1.1\r\nHost: svc\r\n\r\n")
    await settle(lambda: len(logger.infos) == 2, timeout=2.0)
    assert [h.status for h, _ in conn.responses()] == [200, 408]
    assert logger.infos[1].flags_string() == "SI"


def test_request_ids_are_distinct_version_4_uuids():
    ids = {_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for rid in list(ids)[:200]:
        u = uuid.UUID(rid)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == rid
