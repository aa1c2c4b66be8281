"""tcp_proxy and the listener's DownstreamConnection on real loopback sockets, in one event loop,
with a small fake cluster manager (the real one is exercised by the integration tests)."""

from __future__ import annotations

import asyncio
import socket

import uvloop
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

import proxy.filters.network.tcp_proxy  # noqa: F401  (registers the filter)
from proxy.config.context import FactoryContext
from proxy.core.listener import ListenerManager
from proxy.stats.store import Store
from proxy.upstream.host import Host

TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


class FakeCluster:
    def __init__(self, name, port):
        self.name = name
        self.hosts = [Host(("127.0.0.1", port))]
        self.stats = Store().scope(f"cluster.{name}.")
        self.connect_timeout = 1.0

    def choose_host(self, ctx):
        return self.hosts[0] if self.hosts else None


class FakeCM:
    def __init__(self, **clusters):
        self.clusters = clusters

    def get(self, name):
        return self.clusters.get(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def echo_server():
    async def handle(r, w):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.write_eof()
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def proxy_to(cm, **tcp_extra):

    port = free_port()
    proto = json_format.ParseDict(
        {
            "name": "tcp",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.tcp_proxy",
                            "typed_config": {
                                "@type": TCP,
                                "stat_prefix": "echo",
                                "cluster": "echo",
                                **tcp_extra,
                            },
                        }
                    ]
                }
            ],
        },
        listener_pb2.Listener(),
    )
    stats = Store()
    lm = ListenerManager([proto], FactoryContext(stats=stats, cluster_manager=cm))
    lm.bind_all()
    await lm.start()
    return lm, stats, port


def run(coro):
    uvloop.run(asyncio.wait_for(coro, 20))


def test_echo_and_half_close_through_the_proxy():
    async def main():
        srv, up = await echo_server()
        lm, stats, port = await proxy_to(FakeCM(echo=FakeCluster("echo", up)))
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello")
        assert await r.readexactly(5) == b"hello"
        w.write_eof()  # half-close: the echo server answers what is left, then closes
        assert await r.read() == b""
        w.close()
        await lm.wait_connections_closed(5)
        assert stats.counters["tcp.echo.downstream_cx_total"].value == 1
        assert stats.counters["tcp.echo.downstream_cx_rx_bytes_total"].value == 5
        assert stats.counters["tcp.echo.downstream_cx_tx_bytes_total"].value == 5
        assert stats.counters[f"listener.127.0.0.1_{port}.downstream_cx_total"].value == 1
        assert stats.gauges[f"listener.127.0.0.1_{port}.downstream_cx_active"].value == 0
        lm.stop_accepting()
        srv.close()

    run(main())


def test_large_transfer_with_a_slow_reader_keeps_buffers_bounded():
    async def main():
        srv, up = await echo_server()
        lm, stats, port = await proxy_to(FakeCM(echo=FakeCluster("echo", up)))
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        total = 32 * 1024 * 1024
        chunk = bytes(range(256)) * 256  # 64 KiB

        async def send():
            for _ in range(total // len(chunk)):
                w.write(chunk)
                await w.drain()
            w.write_eof()

        sender = asyncio.create_task(send())
        got = 0
        max_buffered = 0
        while got < total:
            data = await r.read(65536)
            assert data
            got += len(data)
            conns = lm.connections()
            if conns:
                max_buffered = max(max_buffered, conns[0].write_buffer_size())
            if got < 4 * 1024 * 1024:
                await asyncio.sleep(0.001)  # a slow reader at first: backpressure must kick in
        await sender
        assert got == total
        # The proxy never buffered much more than its 1 MiB limit towards the slow client.
        assert max_buffered <= 2 * 1024 * 1024 + len(chunk)
        w.close()
        lm.stop_accepting()
        srv.close()

    run(main())


def test_connect_failure_closes_downstream_and_counts():
    async def main():
        dead = free_port()  # nothing listens there
        cluster = FakeCluster("echo", dead)
        lm, stats, port = await proxy_to(FakeCM(echo=cluster))
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"x")
        assert await r.read() == b""
        w.close()
        assert cluster.stats.store.counters["cluster.echo.upstream_cx_connect_fail"].value == 1
        lm.stop_accepting()

    run(main())


def test_unknown_cluster_closes_and_counts_no_route():
    async def main():
        lm, stats, port = await proxy_to(FakeCM())
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await r.read() == b""
        w.close()
        assert stats.counters["tcp.echo.downstream_cx_no_route"].value == 1
        lm.stop_accepting()

    run(main())


def test_idle_timeout_closes_both_sides():
    async def main():
        srv, up = await echo_server()
        lm, stats, port = await proxy_to(FakeCM(echo=FakeCluster("echo", up)), idle_timeout="0.2s")
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        assert await asyncio.wait_for(r.read(), 5) == b""  # closed by the proxy
        assert stats.counters["tcp.echo.idle_timeout"].value == 1
        w.close()
        lm.stop_accepting()
        srv.close()

    run(main())


async def tagged_echo(tag: bytes):
    async def handle(r, w):
        w.write(tag)
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


def test_listener_filters_pick_the_chain_and_peeked_bytes_are_replayed():
    import proxy.filters.listener.http_inspector  # noqa: F401
    import proxy.filters.listener.tls_inspector  # noqa: F401
    from tests.unit.proxy.filters.listener.test_tls_inspector import client_hello

    async def main():
        srv_a, pa = await tagged_echo(b"A:")
        srv_b, pb = await tagged_echo(b"B:")
        srv_c, pc = await tagged_echo(b"C:")
        port = free_port()

        def chain(match, cluster):
            return {
                "filter_chain_match": match,
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"@type": TCP, "stat_prefix": cluster, "cluster": cluster},
                    }
                ],
            }

        proto = json_format.ParseDict(
            {
                "name": "sni",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "listener_filters": [
                    {
                        "name": "envoy.filters.listener.tls_inspector",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                        },
                    },
                    {
                        "name": "envoy.filters.listener.http_inspector",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
                        },
                    },
                ],
                "filter_chains": [
                    chain({"server_names": ["*.example.com"], "transport_protocol": "tls"}, "a"),
                    chain({"application_protocols": ["http/1.1"]}, "b"),
                ],
                "default_filter_chain": {
                    "filters": [
                        {
                            "name": "envoy.filters.network.tcp_proxy",
                            "typed_config": {"@type": TCP, "stat_prefix": "c", "cluster": "c"},
                        }
                    ]
                },
            },
            listener_pb2.Listener(),
        )
        cm = FakeCM(a=FakeCluster("a", pa), b=FakeCluster("b", pb), c=FakeCluster("c", pc))
        lm = ListenerManager([proto], FactoryContext(stats=Store(), cluster_manager=cm))
        lm.bind_all()
        await lm.start()

        async def roundtrip(payload: bytes, chunked: bool = False) -> bytes:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            if chunked:  # the hello arrives in small pieces while the inspector waits
                for i in range(0, len(payload), 7):
                    w.write(payload[i : i + 7])
                    await w.drain()
            else:
                w.write(payload)
            got = await r.readexactly(2 + len(payload))
            w.close()
            return got

        hello = client_hello("www.example.com", ["h2"])
        assert await roundtrip(hello, chunked=True) == b"A:" + hello
        req = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
        assert await roundtrip(req) == b"B:" + req
        other = b"\x00binary protocol\n"
        assert await roundtrip(other) == b"C:" + other
        other_sni = client_hello("www.example.org", None)
        assert await roundtrip(other_sni) == b"C:" + other_sni
        lm.stop_accepting()
        for s in (srv_a, srv_b, srv_c):
            s.close()

    run(main())
