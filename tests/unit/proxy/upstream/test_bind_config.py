"""upstream_bind_config.source_address: parsed by the cluster, rejected by path when unsupported, and the
upstream connection really leaves from that address (Istio's 127.0.0.6 on inbound clusters)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.config.errors import ConfigError
from proxy.upstream.cluster import build_cluster
from proxy.upstream.connect import open_connection
from tests.unit.proxy.upstream.helpers import cluster_proto, ctx, endpoints, load_assignment

PATH = "static_resources.clusters[0]"


def build(**fields):
    return build_cluster(
        cluster_proto(load_assignment=load_assignment(endpoints("127.0.0.1:80")), **fields), ctx(), PATH
    )


def bind(**source) -> dict:
    return {"upstream_bind_config": {"source_address": source}}


def test_source_address_is_parsed_and_reaches_the_http_pool():
    c = build(**bind(address="127.0.0.6", port_value=0))
    assert c.source_address == ("127.0.0.6", 0)
    assert c.http_pool(c.hosts[0]).source_address == ("127.0.0.6", 0)


def test_without_bind_config_nothing_is_bound():
    c = build()
    assert c.source_address is None
    assert c.http_pool(c.hosts[0]).source_address is None


@pytest.mark.parametrize(
    "fields,path,text",
    [
        (bind(address="localhost"), ".upstream_bind_config.source_address.address", "not an IP"),
        (bind(address="127.0.0.6", protocol="UDP"), ".upstream_bind_config.source_address.protocol", "TCP"),
        ({"upstream_bind_config": {"freebind": True}}, ".upstream_bind_config.freebind", "not supported"),
        (
            {"upstream_bind_config": {"source_address": {"address": "127.0.0.6"}, "socket_options": [{}]}},
            ".upstream_bind_config.socket_options",
            "not supported",
        ),
        (
            {"upstream_bind_config": {"source_address": {"address": "127.0.0.6", "named_port": "x"}}},
            ".upstream_bind_config.source_address.named_port",
            "not supported",
        ),
        (
            {"upstream_bind_config": {"additional_source_addresses": [{"address": "127.0.0.7"}]}},
            ".upstream_bind_config.additional_source_addresses",
            "not supported",
        ),
    ],
)
def test_unsupported_bind_options_are_rejected_with_their_path(fields, path, text):
    with pytest.raises(ConfigError) as info:
        build(**fields)
    assert info.value.path == PATH + path, info.value
    assert text in str(info.value)


async def _peer_of_connection(source_address):
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        seen.set_result(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        transport, _ = await open_connection(
            loop, asyncio.Protocol, ("127.0.0.1", port), None, None, source_address
        )
        peer = await asyncio.wait_for(seen, 5)
        transport.close()
        return peer
    finally:
        server.close()
        await server.wait_closed()


async def test_connection_leaves_from_the_bound_source_address():
    peer = await _peer_of_connection(("127.0.0.6", 0))
    assert peer[0] == "127.0.0.6"
    assert peer[1] != 0


async def test_without_source_address_the_kernel_picks_loopback():
    peer = await _peer_of_connection(None)
    assert peer[0] == "127.0.0.1"


async def test_an_unbindable_source_address_is_a_connect_failure():
    with pytest.raises(OSError):
        await _peer_of_connection(("192.0.2.77", 0))  # TEST-NET-1: not a local address
