"""The upstream HTTP/1.1 connection pool against a real upstream process, driven in-process."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from proxy.core.headers import Headers
from proxy.stats.store import Store
from proxy.upstream.cluster_stats import ClusterStats
from proxy.upstream.errors import PoolOverflow, UpstreamConnectError, UpstreamResetError
from proxy.upstream.host import Host
from proxy.upstream.pool import HttpConnectionPool, PoolSettings
from proxy.upstream.resources import ResourceManager
from tests.integration.proxy.harness import start_upstream
from tests.support.net import free_port


def make_pool(port: int, **settings) -> tuple[HttpConnectionPool, Store]:
    store = Store()
    scope = store.scope("cluster.backend.")
    limits = {
        k: settings.pop(k)
        for k in list(settings)
        if k.startswith("max_") and k != "max_requests_per_connection"
    }
    pool = HttpConnectionPool(
        Host(("127.0.0.1", port)),
        PoolSettings(**settings),
        ClusterStats(scope),
        ResourceManager(scope, **limits),
    )
    return pool, store


def get(path: str = "/", **headers: str) -> Headers:
    h = Headers([(":method", "GET"), (":path", path), (":authority", "backend"), (":scheme", "http")])
    for k, v in headers.items():
        h.add(k.replace("_", "-"), v)
    return h


@pytest.fixture
def upstream(procs) -> int:
    return start_upstream(procs, "app")


async def test_keepalive_connection_is_reused(upstream):
    pool, store = make_pool(upstream)
    for i in range(5):
        resp = await pool.request(get(f"/r{i}"))
        assert resp.headers.status == 200
        body = json.loads(await resp.read())
        assert body["path"] == f"/r{i}"
        assert body["headers"]["host"] == "backend"
    assert store.counters["cluster.backend.upstream_cx_total"].value == 1
    assert store.counters["cluster.backend.upstream_rq_total"].value == 5
    assert pool.host.stats.rq_success == 5
    assert store.gauges["cluster.backend.upstream_rq_active"].value == 0
    await pool.close()


async def test_post_body_bytes_and_streamed_chunked(upstream):
    pool, _ = make_pool(upstream)
    post = get("/upload")
    post.set(":method", "POST")
    resp = await pool.request(post, b"x" * 1000)
    assert json.loads(await resp.read())["body_len"] == 1000

    async def chunks():
        for _ in range(10):
            yield b"y" * 500

    resp = await pool.request(post, chunks())
    assert json.loads(await resp.read())["body_len"] == 5000
    await pool.close()


async def test_large_streamed_response_body(upstream):
    pool, _ = make_pool(upstream, buffer_limit=16 * 1024)
    resp = await pool.request(get("/big", x_test_body_size=str(2_000_000)))
    total = 0
    async for chunk in resp:
        total += len(chunk)
    assert total == 2_000_000
    # and the connection went back to the pool for the next request
    resp = await pool.request(get("/after"))
    assert json.loads(await resp.read())["path"] == "/after"
    assert pool.stats.upstream_cx_total.value == 1
    await pool.close()


async def test_head_request_has_no_body(upstream):
    pool, _ = make_pool(upstream)
    head = get("/h")
    head.set(":method", "HEAD")
    resp = await pool.request(head)
    assert resp.headers.status == 200
    assert await resp.read() == b""
    resp = await pool.request(get("/next"))
    assert json.loads(await resp.read())["path"] == "/next"
    await pool.close()


async def test_max_requests_per_connection_closes_after_n(upstream):
    pool, store = make_pool(upstream, max_requests_per_connection=2)
    for _ in range(5):
        resp = await pool.request(get())
        await resp.read()
    assert store.counters["cluster.backend.upstream_cx_total"].value == 3
    assert store.counters["cluster.backend.upstream_cx_max_requests"].value >= 2
    await pool.close()


async def test_concurrent_requests_open_parallel_connections(upstream):
    pool, store = make_pool(upstream)

    async def one(i):
        resp = await pool.request(get(f"/c{i}", x_test_delay_ms="200"))
        return json.loads(await resp.read())["path"]

    paths = await asyncio.gather(*(one(i) for i in range(4)))
    assert sorted(paths) == [f"/c{i}" for i in range(4)]
    assert store.counters["cluster.backend.upstream_cx_total"].value == 4
    # all four are idle now and get reused
    await asyncio.gather(*(one(i) for i in range(4)))
    assert store.counters["cluster.backend.upstream_cx_total"].value == 4
    await pool.close()


async def test_connect_refused_is_upstream_connect_error():
    port = free_port()  # nothing listens there
    pool, store = make_pool(port)
    with pytest.raises(UpstreamConnectError):
        await pool.request(get())
    assert store.counters["cluster.backend.upstream_cx_connect_fail"].value == 1
    assert pool.host.stats.cx_connect_fail == 1
    assert store.gauges["cluster.backend.upstream_cx_active"].value == 0
    assert store.gauges["cluster.backend.upstream_rq_pending_active"].value == 0
    await pool.close()


async def test_connect_timeout_is_upstream_connect_error():
    # A listener whose backlog is full never completes new handshakes: connect hangs until the timeout.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            pool, store = make_pool(port, connect_timeout=0.3)
            with pytest.raises(UpstreamConnectError) as info:
                await pool.request(get())
            if not info.value.timeout:
                pytest.skip("this kernel refused instead of leaving the SYN unanswered")
            assert store.counters["cluster.backend.upstream_cx_connect_timeout"].value == 1
            assert store.counters["cluster.backend.upstream_cx_connect_fail"].value == 1
            await pool.close()
        finally:
            for s in fillers:
                s.close()


async def test_reset_before_headers_is_upstream_reset_error():
    # A raw upstream that reads the first request and closes without answering, then behaves.
    # (upstream_app's x-test-reset answers 500 through uvicorn instead of resetting.)
    calls = []

    async def handle(reader, writer):
        calls.append(1)
        await reader.readuntil(b"\r\n\r\n")
        if len(calls) > 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool, store = make_pool(server.sockets[0].getsockname()[1])
    with pytest.raises(UpstreamResetError):
        await pool.request(get())
    assert pool.host.stats.rq_error == 1
    assert store.counters["cluster.backend.upstream_cx_destroy_remote_with_active_rq"].value == 1
    # the pool recovers with a fresh connection
    resp = await pool.request(get("/ok"))
    assert resp.headers.status == 200
    assert await resp.read() == b"ok"
    await pool.close()
    server.close()
    await server.wait_closed()


async def test_reset_mid_body_raises_from_the_body_iterator():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool, _ = make_pool(server.sockets[0].getsockname()[1])
    resp = await pool.request(get())
    assert resp.headers.status == 200
    with pytest.raises(UpstreamResetError):
        await resp.read()
    await pool.close()
    server.close()
    await server.wait_closed()


async def test_upstream_connection_close_header_is_honoured():
    # A tiny raw upstream that answers every request with `Connection: close`.
    seen = []

    async def handle(reader, writer):
        seen.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool, store = make_pool(port)
    for _ in range(3):
        resp = await pool.request(get())
        assert await resp.read() == b"ok"
    assert len(seen) == 3
    assert store.counters["cluster.backend.upstream_cx_total"].value == 3
    await pool.close()
    server.close()
    await server.wait_closed()


async def test_idle_timeout_closes_idle_connections(upstream):
    pool, store = make_pool(upstream, idle_timeout=0.1)
    resp = await pool.request(get())
    await resp.read()
    assert len(pool.idle) == 1
    for _ in range(100):
        if store.counters["cluster.backend.upstream_cx_idle_timeout"].value:
            break
        await asyncio.sleep(0.02)
    assert store.counters["cluster.backend.upstream_cx_idle_timeout"].value == 1
    assert pool.idle == []
    await pool.close()


async def test_pending_overflow_raises_pool_overflow(upstream):
    pool, store = make_pool(upstream, max_connections=1, max_pending_requests=1)
    # Warm one connection: a request waiting for a connection being opened is pending too (Envoy).
    await (await pool.request(get())).read()

    async def slow():
        resp = await pool.request(get(x_test_delay_ms="300"))
        return await resp.read()

    tasks = [asyncio.ensure_future(slow()) for _ in range(4)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    overflows = [r for r in results if isinstance(r, PoolOverflow)]
    assert len(overflows) == 2  # one active, one pending, two overflow
    assert store.counters["cluster.backend.upstream_rq_pending_overflow"].value == 2
    assert store.counters["cluster.backend.upstream_cx_total"].value == 1
    await pool.close()


async def test_cancelled_request_does_not_poison_the_pool(upstream):
    pool, store = make_pool(upstream)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await pool.request(get(x_test_delay_ms="1000"))
    assert store.gauges["cluster.backend.upstream_rq_active"].value == 0
    resp = await pool.request(get("/fresh"))
    assert json.loads(await resp.read())["path"] == "/fresh"
    await pool.close()


async def test_upgrade_101_hands_back_a_raw_duplex():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nhello")
        while data := await reader.read(1024):
            writer.write(data.upper())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool, _ = make_pool(server.sockets[0].getsockname()[1])
    resp = await pool.request(get("/ws", upgrade="echo", connection="upgrade"))
    assert resp.headers.status == 101
    duplex = resp.duplex
    assert duplex is not None
    assert await duplex.read() == b"hello"
    duplex.write(b"abc")
    assert await duplex.read() == b"ABC"
    duplex.close()
    await pool.close()
    server.close()
    await server.wait_closed()


async def test_max_requests_is_enforced_when_requests_attach(upstream):
    pool, store = make_pool(upstream, max_requests=2)

    async def slow():
        resp = await pool.request(get(x_test_delay_ms="300"))
        return await resp.read()

    # All five start together on an empty pool: they pass the first check, wait for connections,
    # and only two may attach.
    results = await asyncio.gather(*(slow() for _ in range(5)), return_exceptions=True)
    assert sum(isinstance(r, PoolOverflow) for r in results) == 3
    assert store.counters["cluster.backend.upstream_rq_pending_overflow"].value == 3
    assert pool.resources.requests.count == 0
    await pool.close()


def tcp_cluster(port: int, **fields):
    from proxy.upstream.cluster import build_cluster
    from tests.unit.proxy.upstream.helpers import cluster_proto, ctx, endpoints, load_assignment

    return build_cluster(
        cluster_proto(load_assignment=load_assignment(endpoints(f"127.0.0.1:{port}")), **fields), ctx(), "c"
    )


async def test_connect_tcp_duplex_and_connection_stats():
    async def echo(reader, writer):
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    cluster = tcp_cluster(server.sockets[0].getsockname()[1])
    host = cluster.choose_host()
    transport, duplex = await cluster.connect_tcp(host)
    duplex.write(b"ping")
    assert await duplex.read() == b"ping"
    assert cluster.stats.upstream_cx_active.value == 1 and host.stats.cx_active == 1
    duplex.close()
    for _ in range(100):
        if cluster.stats.upstream_cx_active.value == 0:
            break
        await asyncio.sleep(0.01)
    assert cluster.stats.upstream_cx_active.value == 0 and host.stats.cx_active == 0
    assert cluster.stats.upstream_cx_total.value == 1
    await cluster.close()
    server.close()
    await server.wait_closed()


async def test_connect_tcp_failure_and_max_connections():
    cluster = tcp_cluster(free_port(), circuit_breakers={"thresholds": [{"max_connections": 1}]})
    with pytest.raises(UpstreamConnectError):
        await cluster.connect_tcp(cluster.choose_host())
    assert cluster.stats.upstream_cx_connect_fail.value == 1
    assert cluster.resources.connections.count == 0
    cluster.resources.connections.inc()  # someone holds the only connection
    with pytest.raises(PoolOverflow):
        await cluster.connect_tcp(cluster.choose_host())
    assert cluster.stats.upstream_cx_overflow.value == 1
    await cluster.close()


async def test_cluster_http_pool_is_per_host_and_reused(upstream):
    cluster = tcp_cluster(upstream)
    host = cluster.choose_host()
    assert cluster.http_pool(host) is cluster.http_pool(host)
    resp = await cluster.http_pool(host).request(get("/via-cluster"))
    assert json.loads(await resp.read())["path"] == "/via-cluster"
    assert host.stats.rq_total == 1 and host.stats.rq_success == 1
    await cluster.close()
