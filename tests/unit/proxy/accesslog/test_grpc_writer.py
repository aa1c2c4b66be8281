"""The flush's HTTP entry writer (``HttpEntryWriter``: one call per entry, cached parts) against the
part-by-part encoder (``GrpcAccessLogger.encode_parts``, itself held to the protobuf builders in
test_grpc_wire) as the oracle: the same message for many varied requests, each encoded twice (the
second time from the caches), with repeated and empty headers, TLS, flags, peers and odd times."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2

from proxy.accesslog.grpc import HTTP, AlsStats, GrpcAccessLogger, GrpcLogSink
from proxy.accesslog.grpc_entries import encode_peer_metadata
from proxy.accesslog.grpc_wire import _nanos, varint
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from proxy.stats.store import Store

LOCAL = {"workload": "reviews-v2", "namespace": "default", "app": "reviews", "version": "v2",
         "service_account": "bookinfo-reviews", "principal": ""}  # fmt: skip
PEERS = [
    encode_peer_metadata(
        {"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default", "LABELS": {"app": "pp"}}
    ),
    encode_peer_metadata({"WORKLOAD_NAME": "ratings-v1", "LABELS": {"version": "v1"}}),
    "not base64!",
    "",
]
DISCOVERED = [{"WORKLOAD_NAME": "details-v1", "NAMESPACE": "default"}, {"WORKLOAD_NAME": "x"}]
TLS = [
    SimpleNamespace(version="TLSv1.3", sni="reviews.default.svc", peer_subject="O=cluster.local",
                    peer_uri_sans=["spiffe://cluster.local/ns/default/sa/productpage"],
                    local_uri_sans=["spiffe://cluster.local/ns/default/sa/reviews"]),
    SimpleNamespace(version="TLSv1.2", sni="", peer_uri_sans=[], local_uri_sans=["spiffe://a/b"],
                    peer_certificate_presented=False),
    SimpleNamespace(info=SimpleNamespace(version="TLSv1.3", sni="s", peer_uri_sans=["spiffe://p"],
                                         local_uri_sans=[], peer_subject="")),
]  # fmt: skip
NAMES = [":method", ":scheme", ":authority", ":path", "user-agent", "referer", "x-forwarded-for", "x-request-id",
         "x-envoy-original-path", "x-envoy-peer-metadata", "x-trace", "accept"]  # fmt: skip
VALUES = ["", "GET", "POST", "PURGE", "/", "/reviews/0?x=1", "/p/" + "é" * 100, "reviews:9080", "[::1]:80",
          "127.0.0.1", "curl/8", "a" * 200, "5f2c-aa", "10.1.1.1, 10.0.0.9"]  # fmt: skip


def logger(inbound: bool, req=(), resp=()) -> GrpcAccessLogger:
    lg = GrpcAccessLogger("x", HTTP, GrpcLogSink(HTTP, "als", None, None, AlsStats(Store())), None, req, resp)
    lg._local, lg._inbound = dict(LOCAL), inbound
    return lg


def random_headers(rnd: random.Random) -> Headers | None:
    if rnd.random() < 0.05:
        return None
    items = []
    for _ in range(rnd.randrange(0, 12)):
        name = rnd.choice(NAMES)
        value = rnd.choice(PEERS) if name == "x-envoy-peer-metadata" else rnd.choice(VALUES)
        items.append((name, value))
    if rnd.random() < 0.7:
        items += [(":method", "GET"), (":path", f"/r/{rnd.randrange(10**6)}"), (":authority", "reviews:9080"),
                  ("x-request-id", f"{rnd.getrandbits(128):032x}")]  # fmt: skip
    rnd.shuffle(items)
    return Headers(items)


def random_stream(rnd: random.Random) -> StreamInfo:
    si = StreamInfo(
        downstream_remote_address=rnd.choice([None, ("10.0.0.1", rnd.randrange(1, 65536)), ("::1", 0)]),
        downstream_local_address=rnd.choice([None, ("10.0.0.2", 9080)]),
        start_time=rnd.choice([0.0, 1.0, 1764293000.5, 1764293000 + rnd.random(), 1e9 + rnd.random()]),
        start_monotonic=1000.0,
        request_headers=random_headers(rnd),
    )
    si.end_monotonic = rnd.choice([None, 1000.0, 999.0, 1001.0, 1000.0 + rnd.random() * 3, 1000.0 + 1e-9 * rnd.randrange(1, 1 << 30)])  # fmt: skip
    si.protocol = rnd.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/2", ""])
    if rnd.random() < 0.8:
        si.response_headers = Headers([(":status", "200"), ("server", "app")] + (
            [("x-envoy-peer-metadata", rnd.choice(PEERS))] if rnd.random() < 0.5 else []))  # fmt: skip
    si.response_code = rnd.choice([0, 200, 404, 503])
    si.response_code_details = rnd.choice(["", "via_upstream", "ext_authz_denied"])
    si.response_flags = set(rnd.sample(["UF", "UAEX", "RL", "NR", "DC", "XX"], rnd.randrange(0, 3)))
    si.bytes_received = rnd.choice([0, 12, 300, 10**12])
    si.bytes_sent = rnd.choice([0, 7, 1024, 2**40])
    si.upstream_host = rnd.choice([None, "127.0.0.1:9081", "[::1]:80", "odd"])
    si.upstream_cluster = rnd.choice(
        [None, "inbound|9080||", "outbound|9080||details.default.svc.cluster.local"]
    )
    si.route_name = rnd.choice([None, "", "default"])
    si.upstream_request_attempts = rnd.choice([0, 1, 3, 300])
    si.downstream_ssl = rnd.choice([None, None, *TLS])
    if rnd.random() < 0.3:
        si.filter_state["downstream_peer"] = rnd.choice(DISCOVERED)
        si.filter_state["upstream_peer"] = rnd.choice(DISCOVERED)
    return si


def parsed(raw: bytes) -> accesslog_pb2.HTTPAccessLogEntry:
    return accesslog_pb2.HTTPAccessLogEntry.FromString(raw)


@pytest.mark.parametrize("inbound", [True, False])
@pytest.mark.parametrize("logged", [False, True])
def test_writer_makes_the_part_by_part_entry_for_varied_requests(inbound, logged):
    rnd = random.Random(f"{inbound}-{logged}")
    lg = logger(inbound, ("x-trace", "accept") if logged else (), ("server", "absent") if logged else ())
    oracle = logger(inbound, lg.req_headers, lg.resp_headers)
    streams = [random_stream(rnd) for _ in range(400)]
    for _ in range(2):  # the second time mostly from the writer's caches
        for si in streams:
            assert parsed(lg.encode(si)) == parsed(oracle.encode_parts(si))


def test_writer_bytes_are_the_oracle_bytes_up_to_field_order():
    """Every entry the writer makes has exactly the oracle's length: no field twice, none missing."""
    rnd = random.Random(7)
    lg, oracle = logger(True), logger(True)
    for _ in range(300):
        si = random_stream(rnd)
        assert len(lg.encode(si)) == len(oracle.encode_parts(si))


def test_each_new_peer_dict_and_tls_object_gets_its_own_labels_and_tls_properties():
    lg, oracle = logger(True), logger(True)

    def one(i: int) -> None:  # freed on return (the writer keys by id and keeps the objects it keyed)
        si = random_stream(random.Random(1))
        si.filter_state["downstream_peer"] = {"WORKLOAD_NAME": f"peer-{i}"}
        si.downstream_ssl = SimpleNamespace(version="TLSv1.3", sni="", peer_uri_sans=[f"spiffe://p/{i}"],
                                            local_uri_sans=[], peer_subject="")  # fmt: skip
        common = parsed(lg.encode(si)).common_properties
        assert common.metadata.filter_metadata["isthmus"]["source"]["workload"] == f"peer-{i}"
        assert common.tls_properties.peer_certificate_properties.subject_alt_name[0].uri == f"spiffe://p/{i}"
        assert parsed(lg.encode(si)) == parsed(oracle.encode_parts(si))

    for i in range(50):
        one(i)


@pytest.mark.parametrize(
    "n", [0, 1, 127, 128, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 0xFFFFFFF, 0x10000000, 10**9 - 1]
)
def test_nanos_field_is_protobufs(n):
    assert _nanos(n) == (b"\x10" + varint(n) if n else b"")


def test_start_times_across_second_boundaries_in_any_order():
    """The writer keeps the last entry's second and takes the nanoseconds by subtraction: entries
    going forward, back and exactly onto a second's first and last nanosecond stay the oracle's."""
    rnd = random.Random(11)
    lg, oracle = logger(True), logger(True)
    base = 1764293000
    times = [base + 0.999999999, base + 1.0, base + 1.5, base + 0.25, base + 2.0, 0.0, 1.0, 0.5, base + 3.0]
    times += [base + rnd.randrange(0, 5) + rnd.random() for _ in range(200)]
    for t in times:
        si = random_stream(rnd)
        si.start_time = t
        assert parsed(lg.encode(si)) == parsed(oracle.encode_parts(si))
        assert parsed(lg.encode(si)).common_properties.start_time.ToNanoseconds() == int(t * 1e9)
