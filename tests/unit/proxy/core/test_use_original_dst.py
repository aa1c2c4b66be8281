"""``use_original_dst`` implies the original_dst listener filter (Envoy adds it itself): Istio's
virtualOutbound has ``use_original_dst: true`` and no listener_filters, and its redirected connections
must still be handed to the listener of their original destination."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from proxy.config.bootstrap import load_extensions
from proxy.config.context import FactoryContext
from proxy.core.listener import Listener
from proxy.filters.listener.original_dst import OriginalDstFactory
from proxy.stats.store import Store

ODST = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def listener(**fields) -> Listener:
    load_extensions()
    d = {
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"@type": TCP, "stat_prefix": "p", "cluster": "PassthroughCluster"},
                    }
                ]
            }
        ],
        **fields,
    }
    proto = json_format.ParseDict(d, listener_pb2.Listener())
    return Listener(proto, FactoryContext(stats=Store()), "listeners[0]")


def test_use_original_dst_without_listener_filters_reads_the_original_destination():
    lst = listener(use_original_dst=True)
    assert [type(f) for f in lst.listener_filters] == [OriginalDstFactory]


def test_an_explicit_original_dst_filter_is_not_doubled():
    lst = listener(
        use_original_dst=True,
        listener_filters=[{"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": ODST}}],
    )
    assert [type(f) for f in lst.listener_filters] == [OriginalDstFactory]


def test_without_use_original_dst_no_filter_is_added():
    assert listener().listener_filters == []
