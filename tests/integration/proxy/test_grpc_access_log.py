"""envoy.access_loggers.http_grpc through a real proxy process and a real access log service (another
process): exactly N entries with the right codes, flags and Istio peer metadata over one stream; the
log service going away never slows or fails a request, drops are counted, and logging resumes when
the service is back."""

from __future__ import annotations

import time

import httpx

from proxy.accesslog.grpc_entries import encode_peer_metadata
from tests.integration.proxy.mixer_support import HTTP_GRPC_LOG, start_mesh, start_services

NODE = {
    "id": "sidecar~127.0.0.12~reviews-v2.default~default.svc.cluster.local",
    "cluster": "reviews.default",
    "metadata": {
        "WORKLOAD_NAME": "reviews-v2",
        "NAMESPACE": "default",
        "SERVICE_ACCOUNT": "bookinfo-reviews",
        "LABELS": {"app": "reviews", "version": "v2"},
    },
}
PEER = {
    "WORKLOAD_NAME": "productpage-v1",
    "NAMESPACE": "default",
    "LABELS": {"app": "productpage", "version": "v1"},
}
ROUTES = [
    {"match": {"prefix": "/ok"}, "route": {"cluster": "app"}},
    {"match": {"prefix": "/teapot"}, "direct_response": {"status": 418}},
]


def als(buffer_size: int | None = None) -> list[dict]:
    common = {
        "log_name": "isthmus-test",
        "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}},
        "transport_api_version": "V3",
        "buffer_flush_interval": "0.1s",
    }
    if buffer_size is not None:
        common["buffer_size_bytes"] = buffer_size
    return [
        {
            "name": "envoy.access_loggers.http_grpc",
            "typed_config": {"@type": HTTP_GRPC_LOG, "common_config": common},
        }
    ]


def mesh(procs, tmp_path, port, **kw):
    return start_mesh(
        procs,
        tmp_path,
        port,
        routes=ROUTES,
        access_logs=als(**kw),
        listener_name="virtualInbound",
        listener_extra={"traffic_direction": "INBOUND"},
        node=NODE,
    )


def test_n_requests_give_exactly_n_entries_with_codes_flags_and_peer_metadata(procs, tmp_path):
    svc = start_services(procs, tmp_path / "svc")
    m = mesh(procs, tmp_path, svc.port)
    peer = {"x-envoy-peer-metadata": encode_peer_metadata(PEER)}
    expected = []
    with httpx.Client(base_url=m.base, timeout=5) as c:
        for i in range(30):
            path = ("/ok", "/teapot", "/missing")[i % 3]
            r = c.get(f"{path}?i={i}", headers=peer)
            expected.append((f"{path}?i={i}", r.status_code))
    assert sorted(code for _, code in expected) == sorted([200] * 10 + [418] * 10 + [404] * 10)
    entries = svc.wait_records("als.jsonl", 30)
    assert len(entries) == 30
    assert [(e["path"], e["code"]) for e in entries] == expected  # in order, none lost, none doubled
    assert all(e["flags"] == ["no_route_found"] for e in entries if e["code"] == 404)
    assert all(e["flags"] == [] for e in entries if e["code"] != 404)
    md = entries[0]["isthmus"]
    assert md["reporter"] == "destination"
    assert md["destination"]["workload"] == "reviews-v2" and md["destination"]["version"] == "v2"
    assert md["destination"]["app"] == "reviews" and md["destination"]["namespace"] == "default"
    assert md["source"]["workload"] == "productpage-v1" and md["source"]["app"] == "productpage"
    assert md["destination_service"] == "127.0.0.1"
    streams = svc.records("als_streams.jsonl")
    assert len(streams) == 1  # one long-lived stream
    assert streams[0]["log_name"] == "isthmus-test"
    assert streams[0]["node"]["id"] == NODE["id"]
    assert m.stat("access_logs.grpc_access_log.logs_written") == 30
    assert m.stat("access_logs.grpc_access_log.logs_dropped") == 0


def test_log_service_down_never_fails_requests_drops_are_counted_and_logging_resumes(procs, tmp_path):
    svc = start_services(procs, tmp_path / "svc")
    m = mesh(procs, tmp_path, svc.port, buffer_size=256)  # a small buffer: the bound is 16 KiB
    with httpx.Client(base_url=m.base, timeout=5) as c:
        assert c.get("/ok").status_code == 200
        assert len(svc.wait_records("als.jsonl", 1)) == 1
        procs.stop(svc.proc)
        codes = [c.get(f"/ok?n={i}").status_code for i in range(200)]
        assert codes == [200] * 200  # every request answered while the log service is gone
        assert m.wait_stat("access_logs.grpc_access_log.logs_dropped", 1) > 0
        # The service comes back on the same port: the proxy reconnects and logging resumes.
        back = start_services(procs, tmp_path / "svc2", port=svc.port)
        # What was buffered during the outage (up to the bound; the rest was dropped) goes first.
        backlog = back.wait_records("als.jsonl", 1, timeout=30)
        assert backlog and all(e["path"].startswith("/ok?n=") for e in backlog)
        for i in range(3):
            assert c.get(f"/ok?after={i}").status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            later = [e["path"] for e in back.records("als.jsonl") if e["path"].startswith("/ok?after=")]
            if len(later) == 3:
                break
            time.sleep(0.1)
    assert later == ["/ok?after=0", "/ok?after=1", "/ok?after=2"]
    assert len(back.records("als_streams.jsonl")) >= 1
