"""The entry writer's per-connection compare (``HttpEntryWriter``: an entry's cached parts found by
comparing its inputs with the last entry of the same downstream connection) against the part-by-part
encoder (``encode_parts``) as the oracle: connections interleaved, and on one connection every input
of the cached parts changing alone from one request to the next, then changing back."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from proxy.accesslog.grpc_entries import encode_peer_metadata
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from tests.unit.proxy.accesslog.test_grpc_writer import logger, parsed, random_stream

PEER = encode_peer_metadata({"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default"})
TLS = SimpleNamespace(version="TLSv1.3", sni="r", peer_subject="", peer_uri_sans=["spiffe://p"],
                      local_uri_sans=["spiffe://l"])  # fmt: skip


def base_items() -> list[tuple[str, str]]:
    return [(":method", "GET"), (":path", "/reviews/0"), (":authority", "reviews:9080"), (":scheme", "http"),
            ("user-agent", "wrk"), ("x-request-id", "0f1e2d3c"), ("x-envoy-peer-metadata", PEER)]  # fmt: skip


def stream(remote, items=None, **fields) -> StreamInfo:
    si = StreamInfo(remote, ("127.0.0.1", 15006), request_headers=Headers.from_lowercase(items or base_items()),
                    start_time=1764293000.25, start_monotonic=10.0)  # fmt: skip
    si.end_monotonic = 10.0015
    si.response_code, si.bytes_sent, si.upstream_host = 200, 1024, "127.0.0.1:80"
    si.upstream_cluster, si.route_name = "inbound|9080||", "default"
    si.response_headers = Headers.from_lowercase([(":status", "200")])
    for k, v in fields.items():
        setattr(si, k, v)
    return si


def _swap(items, name, value):
    return [(k, value if k == name else v) for k, v in items]


# One change each to an input of the cached parts (the request's shape, the peer, the addresses, the
# upstream, route, attempts, TLS, protocol, response), and to the per-entry values.
CHANGES = {
    "method": lambda: {"items": _swap(base_items(), ":method", "POST")},
    "authority": lambda: {"items": _swap(base_items(), ":authority", "details:9080")},
    "scheme": lambda: {"items": _swap(base_items(), ":scheme", "https")},
    "user agent": lambda: {"items": _swap(base_items(), "user-agent", "curl/8")},
    "referer added": lambda: {"items": base_items() + [("referer", "http://a/")]},
    "xff added": lambda: {"items": base_items() + [("x-forwarded-for", "10.0.0.1")]},
    "original path": lambda: {"items": base_items() + [("x-envoy-original-path", "/o")]},
    "peer header": lambda: {
        "items": _swap(base_items(), "x-envoy-peer-metadata", encode_peer_metadata({"WORKLOAD_NAME": "x"}))
    },
    "peer header gone": lambda: {"items": [i for i in base_items() if i[0] != "x-envoy-peer-metadata"]},
    "discovered peer": lambda: {"filter_state": {"downstream_peer": {"WORKLOAD_NAME": "details-v1"}}},
    "no request headers": lambda: {"request_headers": None},
    "local address": lambda: {"downstream_local_address": ("127.0.0.2", 15006)},
    "upstream host": lambda: {"upstream_host": "[::1]:81"},
    "no upstream": lambda: {"upstream_host": None, "upstream_cluster": None},
    "cluster": lambda: {"upstream_cluster": "outbound|9080||details.default.svc.cluster.local"},
    "route": lambda: {"route_name": ""},
    "attempts": lambda: {"upstream_request_attempts": 2},
    "tls": lambda: {"downstream_ssl": TLS},
    "protocol": lambda: {"protocol": "HTTP/1.0"},
    "code": lambda: {"response_code": 503, "response_flags": {"UF"}},
    "details": lambda: {"response_code_details": "via_upstream"},
    "bytes sent": lambda: {"bytes_sent": 0},
    "bytes received": lambda: {"bytes_received": 300},
    "long path": lambda: {"items": _swap(base_items(), ":path", "/p/" + "é" * 300)},
    "long request id": lambda: {"items": _swap(base_items(), "x-request-id", "r" * 200)},
    "slow": lambda: {"end_monotonic": 12.5},
    "zero time": lambda: {"end_monotonic": 10.0, "start_time": 1764293001.0},
}


@pytest.mark.parametrize("inbound", [True, False])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_one_input_changing_on_a_connection_and_back(inbound, change):
    lg, oracle = logger(inbound), logger(inbound)
    remote = ("127.0.0.1", 40000)
    for fields in ({}, CHANGES[change](), {}, CHANGES[change](), CHANGES[change]()):
        items = fields.pop("items", None)
        si = stream(remote, items, **fields)
        assert parsed(lg.encode(si)) == parsed(oracle.encode_parts(si))


@pytest.mark.parametrize("inbound", [True, False])
def test_interleaved_connections_with_random_requests(inbound):
    """Random requests spread over a few connections (each its own remote address object), so a
    connection's last entry is sometimes the same request, sometimes not; each entry twice."""
    rnd = random.Random(f"conn-{inbound}")
    lg, oracle = logger(inbound), logger(inbound)
    remotes = [("10.0.0.1", 40000 + i) for i in range(4)] + [None, ("::1", 0)]
    for _ in range(800):
        si = random_stream(rnd)
        si.downstream_remote_address = rnd.choice(remotes)
        assert parsed(lg.encode(si)) == parsed(oracle.encode_parts(si))
        assert len(lg.encode(si)) == len(oracle.encode_parts(si))


def test_the_connection_memo_stays_bounded():
    lg = logger(True)
    for i in range(5000):
        lg.encode(stream(("10.0.0.1", i)))
    writer = lg._writer
    assert len(writer._by_connection) <= 4096 and len(writer._entries) <= 4096
