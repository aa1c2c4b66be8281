"""An open-loop, fixed-rate HTTP/1.1 load generator (wrk2-style) for latency at a given request rate.

Requests leave on a fixed schedule (``rate`` per second) whatever the answers do: a request whose
turn comes while every connection is busy gets a new connection instead of waiting, so a slow proxy
cannot slow the client down and hide its own queueing (coordinated omission). Latency runs from the
moment the request bytes were written to the moment the last byte of the answer arrived.

The event loop's timers tick in milliseconds, so at 1000 req/s requests leave in small bursts of
those due; every request is still timed from its own write.
"""

from __future__ import annotations

import asyncio
import math
import time

MAX_CONNECTIONS = 512


class _ResponseFramer:
    """Finds the end of one HTTP/1.1 response (Content-Length or chunked) in a byte stream."""

    __slots__ = ("buf", "need")

    def __init__(self) -> None:
        self.buf = b""
        self.need = -1  # total bytes of the current response once its head is known

    def feed(self, data: bytes) -> int:
        """Add bytes; return how many complete responses they finished (0 or more)."""
        self.buf += data
        done = 0
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return done
                head = self.buf[:end].lower()
                idx = head.find(b"\r\ncontent-length:")
                if idx >= 0:
                    line_end = head.find(b"\r\n", idx + 2)
                    value = head[idx + 17 : line_end if line_end >= 0 else len(head)]
                    self.need = end + 4 + int(value.strip())
                elif b"chunked" in head:
                    term = self.buf.find(b"\r\n0\r\n\r\n", end)
                    if term < 0:
                        return done
                    self.need = term + 7
                else:
                    self.need = end + 4  # no body (204/304)
            if len(self.buf) < self.need:
                return done
            self.buf = self.buf[self.need :]
            self.need = -1
            done += 1


class _Conn(asyncio.Protocol):
    def __init__(self, client: PacedClient) -> None:
        self.client = client
        self.transport = None
        self.framer = _ResponseFramer()
        self.sent_at = 0.0
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.framer.feed(data):
            self.client.answered(self, time.perf_counter() - self.sent_at)

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed"))
        self.client.lost(self)


class PacedClient:
    def __init__(self, host: str, port: int, path: str = "/") -> None:
        self.host, self.port = host, port
        self.request = f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode()
        self.idle: list[_Conn] = []
        self.busy: set[_Conn] = set()
        self.opening = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.record = False
        self.outstanding = 0
        self.all_done: asyncio.Future | None = None

    def answered(self, conn: _Conn, latency: float) -> None:
        if self.record:
            self.latencies.append(latency)
        self.busy.discard(conn)
        self.idle.append(conn)
        self._one_done()

    def lost(self, conn: _Conn) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.errors += 1
            self._one_done()
        elif conn in self.idle:
            self.idle.remove(conn)

    def _one_done(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.all_done is not None and not self.all_done.done():
            self.all_done.set_result(None)

    def _send_on(self, conn: _Conn) -> None:
        self.busy.add(conn)
        conn.sent_at = time.perf_counter()
        conn.transport.write(self.request)

    async def _send_new(self) -> None:
        loop = asyncio.get_running_loop()
        self.opening += 1
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
            await conn.ready
        except OSError:
            self.errors += 1
            self._one_done()
            return
        finally:
            self.opening -= 1
        conn.transport.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY
        self._send_on(conn)

    def fire(self) -> None:
        self.outstanding += 1
        if self.idle:
            self._send_on(self.idle.pop())
        elif len(self.busy) + self.opening < MAX_CONNECTIONS:
            asyncio.ensure_future(self._send_new())
        else:
            self.errors += 1  # overloaded beyond any sensible latency: counted, not queued
            self._one_done()

    async def run(self, rate: float, seconds: float, warmup: float) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / rate
        start = loop.time()
        record_from = start + warmup
        end = record_from + seconds
        sent = 0
        while True:
            now = loop.time()
            if now >= end:
                break
            self.record = now >= record_from
            due = int((now - start) / interval) + 1
            while sent < due:
                self.fire()
                sent += 1
            await asyncio.sleep(start + sent * interval - loop.time())
        if self.outstanding:
            self.all_done = loop.create_future()
            try:
                await asyncio.wait_for(self.all_done, 5)
            except TimeoutError:
                self.errors += self.outstanding
        for conn in list(self.idle) + list(self.busy):
            conn.transport.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


def paced_latency(host: str, port: int, rate: float, seconds: float, warmup: float = 1.0) -> dict:
    """Send `rate` requests/s for warmup + `seconds`; latency percentiles (ms) of the measured part."""
    client = PacedClient(host, port)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(client.run(rate, seconds, warmup))
    lat = sorted(client.latencies)
    return {
        "requests": len(lat),
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p90_ms": percentile(lat, 0.90) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else math.nan,
        "errors": client.errors,
    }
