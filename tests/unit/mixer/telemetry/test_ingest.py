"""The batched ingest (label cache, per-series aggregation, the istio_* collector) against the reference:
every entry through ``http_report``/``tcp_report`` one at a time into prometheus_client's own Counter
and Histogram and the dashboard store's per-report ``add``. Same samples, same dashboard answers."""

from __future__ import annotations

import json
import random

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import any_pb2, struct_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from mixer.adapters.prometheus import DURATION_BUCKETS_MS, SIZE_BUCKETS
from mixer.config.model import MixerConfig, TelemetryConfig
from mixer.server.app import Telemetry
from mixer.server.metrics import MixerMetrics
from mixer.telemetry.alsview import StreamAccessLogsView, full_http_entry, view_http_entry
from mixer.telemetry.attributes import (
    REQUEST_LABELS,
    TCP_LABELS,
    encode_peer_header,
    http_report,
    node_workload,
    tcp_report,
)
from mixer.telemetry.ingest import Ingest
from mixer.telemetry.store import TrafficStore


def workload(meta: dict, node_id: str):
    n = base_pb2.Node(id=node_id)
    n.metadata.update(meta)
    return node_workload(n)


REVIEWS = workload(
    {"WORKLOAD_NAME": "reviews-v2", "NAMESPACE": "default", "LABELS": {"app": "reviews", "version": "v2"}},
    "sidecar~127.0.0.12~reviews-v2-x.default~default.svc.cluster.local",
)
GATEWAY = workload(
    {"WORKLOAD_NAME": "istio-ingressgateway", "NAMESPACE": "istio-system", "LABELS": {"app": "gw"}},
    "router~127.0.0.1~istio-ingressgateway.istio-system~x",
)
PRODUCTPAGE = {"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default", "LABELS": {"app": "productpage"}}


def isthmus(reporter: str, src: str, dst: str, service: str, policy: str) -> struct_pb2.Struct:
    st = struct_pb2.Struct()
    st.update(
        {
            "reporter": reporter,
            "source": {"workload": src, "namespace": "default", "app": src.split("-")[0], "version": "v1",
                       "principal": f"spiffe://cluster.local/ns/default/sa/{src}" if policy == "mutual_tls" else ""},
            "destination": {"workload": dst, "namespace": "default", "app": dst.split("-")[0], "version": ""},
            "destination_service": service,
            "connection_security_policy": policy,
        }
    )  # fmt: skip
    return st


def http_entries(rng: random.Random, n: int) -> list[accesslog_pb2.HTTPAccessLogEntry]:
    """A mix: a few edges with the isthmus Struct (codes, flags, gRPC, no response), gateway 404 NR, and
    entries without the Struct (a real Envoy's: peer header or filter state, TLS facts)."""
    structs = [
        isthmus("destination", "productpage-v1", "reviews-v2", "reviews:9080", "mutual_tls"),
        isthmus("destination", "reviews-v1", "reviews-v2", "reviews", "none"),
        isthmus("source", "", "ratings-v1", "ratings.default.svc.cluster.local", "unknown"),
    ]
    out = []
    for i in range(n):
        e = accesslog_pb2.HTTPAccessLogEntry()
        c = e.common_properties
        kind = rng.randrange(10)
        if kind < 7:
            c.metadata.filter_metadata["isthmus"].CopyFrom(rng.choice(structs))
            c.upstream_cluster = rng.choice(
                ["inbound|9080||", "outbound|9080||ratings.default.svc.cluster.local"]
            )
        elif kind == 7:  # the gateway answering itself
            c.metadata.filter_metadata["isthmus"].update(
                {
                    "reporter": "source",
                    "destination_service": "127.0.0.1",
                    "connection_security_policy": "unknown",
                }
            )
            c.response_flags.no_route_found = rng.random() < 0.7
        elif kind == 8:  # a real Envoy's inbound entry: the peer header, TLS facts
            c.upstream_cluster = "inbound|9080||"
            e.request.request_headers["x-envoy-peer-metadata"] = encode_peer_header(PRODUCTPAGE)
            if rng.random() < 0.5:
                c.tls_properties.peer_certificate_properties.subject_alt_name.add(
                    uri="spiffe://x/ns/default/sa/pp"
                )
                c.tls_properties.local_certificate_properties.subject_alt_name.add(
                    uri="spiffe://x/ns/default/sa/r"
                )
        else:  # outbound with the peer in filter state
            c.upstream_cluster = "outbound|9080|v1|reviews.default.svc.cluster.local"
            st = struct_pb2.Struct()
            st.update({"WORKLOAD_NAME": rng.choice(["reviews-v1", "reviews-v3"]), "NAMESPACE": "default"})
            packed = any_pb2.Any()
            packed.Pack(st)
            c.filter_state_objects["upstream_peer"].CopyFrom(packed)
        if rng.random() < 0.1:
            c.response_flags.upstream_retry_limit_exceeded = True
        if rng.random() < 0.05:
            c.response_flags.unauthorized_details.SetInParent()
        if rng.random() < 0.2:
            e.request.request_headers["content-type"] = "application/grpc"
        if rng.random() < 0.9:
            e.response.response_code.value = rng.choice([200, 200, 200, 404, 503])
        elif rng.random() < 0.5:
            e.response.response_code.SetInParent()  # a present 0: "0" as when there is no code
        ms = rng.choice([0, 0.5, 1, 3, 25, 250, 7000, 4000000, rng.random() * 100])
        if rng.random() < 0.9:
            c.duration.FromNanoseconds(int(ms * 1e6))
            if not ms and rng.random() < 0.5:  # a present zero duration wins over the last byte's time
                c.time_to_last_downstream_tx_byte.FromNanoseconds(5_000_000)
        else:
            c.time_to_last_downstream_tx_byte.FromNanoseconds(int(ms * 1e6))
        e.request.authority = rng.choice(["reviews:9080", "127.0.0.1:8080", "[::1]:80"])
        e.request.request_headers_bytes = rng.choice([0, 1, 10, 99, 100, 5000])
        e.request.request_body_bytes = rng.randrange(3)
        e.response.response_headers_bytes = rng.choice([0, 10, 1000])
        e.response.response_body_bytes = rng.choice([0, 1, 999999, 10**10])
        c.start_time.FromNanoseconds(1_700_000_000_000_000_000 + i)  # differs on every entry
        e.request.request_id = f"req-{i}"
        out.append(e)
    return out


def tcp_entries(rng: random.Random, n: int) -> list[accesslog_pb2.TCPAccessLogEntry]:
    out = []
    for _ in range(n):
        e = accesslog_pb2.TCPAccessLogEntry()
        c = e.common_properties
        c.upstream_cluster = rng.choice(
            ["outbound|27017||mongodb.default.svc.cluster.local", "inbound|27017||"]
        )
        c.access_log_type = accesslog_pb2.AccessLogType.Value(
            rng.choice(["TcpUpstreamConnected", "TcpConnectionEnd", "TcpPeriodic", "NotSet"])
        )
        c.intermediate_log_entry = rng.random() < 0.2
        if rng.random() < 0.5:
            c.tls_properties.peer_certificate_properties.subject_alt_name.add(
                uri="spiffe://x/ns/default/sa/pp"
            )
            c.tls_properties.local_certificate_properties.subject_alt_name.add(
                uri="spiffe://x/ns/default/sa/r"
            )
        e.connection_properties.sent_bytes = rng.randrange(1000)
        e.connection_properties.received_bytes = rng.randrange(1000)
        out.append(e)
    return out


class Reference:
    """The per-report recording the batched path replaces: prometheus_client's Counter and Histogram."""

    def __init__(self, max_series: int = 5000) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.max_series = max_series
        self.http = {"istio_requests_total": Counter("istio_requests_total", "x", REQUEST_LABELS, registry=r)}
        for name, buckets in (
            ("istio_request_duration_milliseconds", DURATION_BUCKETS_MS),
            ("istio_request_bytes", SIZE_BUCKETS),
            ("istio_response_bytes", SIZE_BUCKETS),
        ):
            self.http[name] = Histogram(name, "x", REQUEST_LABELS, buckets=buckets, registry=r)
        self.tcp = {
            name: Counter(name, "x", TCP_LABELS, registry=r)
            for name in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                         "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total")
        }  # fmt: skip
        self.dropped = Counter("mixer_telemetry_dropped_series_total", "x", ["metric"], registry=r)
        self.reports = Counter("mixer_telemetry_reports_total", "x", ["kind"], registry=r)
        self.seen = {"http": set(), "tcp": set()}
        self.store = TrafficStore(clock=lambda: 1000.0)

    def record(self, report) -> None:
        self.store.add(report)
        self.reports.labels(report.kind).inc()
        names = REQUEST_LABELS if report.kind == "http" else TCP_LABELS
        key = tuple(report.labels[n] for n in names)
        families = self.http if report.kind == "http" else self.tcp
        seen = self.seen[report.kind]
        if key not in seen and len(seen) >= self.max_series:
            for name in families:
                self.dropped.labels(name).inc()
            return
        seen.add(key)
        if report.kind == "http":
            self.http["istio_requests_total"].labels(*key).inc()
            self.http["istio_request_duration_milliseconds"].labels(*key).observe(report.duration_ms)
            self.http["istio_request_bytes"].labels(*key).observe(report.request_bytes)
            self.http["istio_response_bytes"].labels(*key).observe(report.response_bytes)
            return
        opened, closed, sent, received = (self.tcp[n].labels(*key) for n in self.tcp)
        if report.opened:
            opened.inc()
        if report.closed:
            closed.inc()
            sent.inc(report.sent_bytes)
            received.inc(report.received_bytes)


def samples(registry) -> dict:
    """Every istio_* and mixer_telemetry_* sample except the creation times; a histogram's ``_sum`` to
    12 significant digits (a batch adds its own sum first: float additions in another order)."""
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.startswith(("istio_", "mixer_telemetry_")) and not s.name.endswith("_created"):
                value = float(f"{s.value:.12g}") if s.name.endswith("_sum") else s.value
                out[(s.name, tuple(sorted(s.labels.items())))] = value
    return out


def telemetry(max_series: int = 5000, access_log: str | None = None) -> tuple[Telemetry, CollectorRegistry]:
    registry = CollectorRegistry()
    config = MixerConfig(
        telemetry=TelemetryConfig(max_series_per_metric=max_series, access_log_path=access_log)
    )
    t = Telemetry(registry, MixerMetrics(registry), config)
    t.store.clock = lambda: 1000.0
    return t, registry


def feed(t: Telemetry, node, entries, batch: int, tcp: bool = False) -> None:
    """Envoy's entries in batches, HTTP ones read as the gRPC service reads them (alsview)."""
    for i in range(0, len(entries), batch):
        if tcp:
            t.tcp(node, entries[i : i + batch])
        else:
            message = als_pb2.StreamAccessLogsMessage()
            message.http_logs.log_entry.extend(entries[i : i + batch])
            view = StreamAccessLogsView.FromString(message.SerializeToString())
            t.http(node, view.http_logs.log_entry)


def test_batched_ingest_gives_the_reference_samples_and_dashboard():
    rng = random.Random(7)
    http, tcp = http_entries(rng, 800), tcp_entries(rng, 100)
    ref = Reference()
    t, registry = telemetry()
    for node in (REVIEWS, GATEWAY):
        for e in http:
            ref.record(http_report(node, e))
        for e in tcp:
            ref.record(tcp_report(node, e))
        feed(t, node, http, 97)
        feed(t, node, tcp, 13, tcp=True)
    got, want = samples(registry), samples(ref.registry)
    assert got == want
    assert got[("mixer_telemetry_reports_total", (("kind", "http"),))] == 1600
    assert t.ingest.hits > 500  # repeated edges took the cache
    for window in (10, 60):
        assert t.store.graph(window) == ref.store.graph(window)
        assert t.store.services(window) == ref.store.services(window)
    assert t.store.timeseries() == ref.store.timeseries()


def test_exposition_matches_prometheus_clients_own_text():
    # the collector writes the families exactly as Counter and Histogram do (names, types, le, order)
    rng = random.Random(3)
    http, tcp = http_entries(rng, 200), tcp_entries(rng, 20)
    ref = Reference()
    t, registry = telemetry()
    for e in http:
        ref.record(http_report(REVIEWS, e))
    for e in tcp:
        ref.record(tcp_report(REVIEWS, e))
    feed(t, REVIEWS, http, 50)
    feed(t, REVIEWS, tcp, 50, tcp=True)

    def lines(reg) -> list[str]:
        text = generate_latest(reg).decode().splitlines()
        return sorted(ln for ln in text if ln.startswith("istio_") and "_created" not in ln)

    assert lines(registry) == lines(ref.registry)
    types = [ln for ln in generate_latest(registry).decode().splitlines() if ln.startswith("# TYPE istio_")]
    assert "# TYPE istio_requests_total counter" in types
    assert "# TYPE istio_request_duration_milliseconds histogram" in types


def test_every_entry_of_a_repeated_edge_is_counted_exactly_once():
    rng = random.Random(1)
    entries = [e for e in http_entries(rng, 400) if e.common_properties.metadata.filter_metadata]
    t, registry = telemetry()
    feed(t, REVIEWS, entries, 1)
    feed(t, REVIEWS, entries, 64)
    total = sum(v for (name, _), v in samples(registry).items() if name == "istio_requests_total")
    assert total == 2 * len(entries)
    assert sum(e["requests"] for e in t.store.graph(60)["edges"]) == 2 * len(entries)


def test_the_label_cache_is_bounded_and_a_miss_still_counts_right():
    rng = random.Random(5)
    http = http_entries(rng, 400)
    ref = Reference()
    t, registry = telemetry()
    t.ingest = Ingest(max_cached=8)
    for e in http:
        ref.record(http_report(REVIEWS, e))
    feed(t, REVIEWS, http, 100)
    assert len(t.ingest._cache) <= 8 and t.ingest.misses > 8
    assert samples(registry) == samples(ref.registry)


def test_series_bound_drops_and_counts_overflow_per_family_as_before():
    rng = random.Random(9)
    http, tcp = http_entries(rng, 1000), tcp_entries(rng, 200)
    ref = Reference(max_series=5)
    t, registry = telemetry(max_series=5)
    for e in http:
        ref.record(http_report(REVIEWS, e))
    for e in tcp:
        ref.record(tcp_report(REVIEWS, e))
    feed(t, REVIEWS, http, 1)  # one entry per batch: series appear in the same order as the reference's
    feed(t, REVIEWS, tcp, 1, tcp=True)
    got = samples(registry)
    assert got == samples(ref.registry)
    assert got[("mixer_telemetry_dropped_series_total", (("metric", "istio_requests_total"),))] > 0
    assert t.istio.series_count("http") == 5


def test_json_access_log_has_one_line_per_entry(tmp_path):
    rng = random.Random(2)
    http, tcp = http_entries(rng, 120), tcp_entries(rng, 30)
    path = tmp_path / "access.jsonl"
    t, _ = telemetry(access_log=str(path))
    feed(t, REVIEWS, http, 50)
    feed(t, REVIEWS, tcp, 50, tcp=True)
    t.close()
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert len(lines) == 150
    want = [http_report(REVIEWS, e).labels for e in http] + [tcp_report(REVIEWS, e).labels for e in tcp]
    assert [{k: ln[k] for k in w} for ln, w in zip(lines, want, strict=True)] == want


def test_the_lean_reading_gives_back_envoys_entry_exactly():
    rng = random.Random(11)
    for e in http_entries(rng, 200):
        e.common_properties.downstream_remote_address.socket_address.address = "127.0.0.1"
        e.common_properties.tls_properties.tls_sni_hostname = "reviews"
        e.request.path = "/reviews/0"
        view = view_http_entry(e)
        # a sub-message read as bytes loses only the presence of an empty one (no label reads that)
        for name in ("response_flags", "metadata"):
            if not getattr(e.common_properties, name).ByteSize():
                e.common_properties.ClearField(name)
        if not e.response.response_code.ByteSize():  # a present 0 and no code are both "0"
            e.response.ClearField("response_code")
        assert full_http_entry(view) == e
        assert view.common_properties.metadata == e.common_properties.metadata.SerializeToString()
        assert view.response.response_code == e.response.response_code.SerializeToString()
