"""Istio's standard metrics, filled from access-log reports, with bounded label cardinality.

Names, label names and histogram buckets are Istio's, so Grafana's and Kiali's Istio dashboards work
unchanged. Every metric family keeps at most ``max_series`` label combinations; a report that would add
one more is not recorded and counts in ``mixer_telemetry_dropped_series_total{metric=...}`` instead
(reports for series that already exist keep being counted).

The istio_* series are plain Python numbers per label tuple, exposed by a collector when /metrics is
read (the same samples prometheus_client's Counter and Histogram write: ``_total``/``_created``,
``_bucket``/``_count``/``_sum``/``_created``). Recording costs no lock and no per-observation call:
mixer aggregates a whole access-log batch per series first (``HttpTotals``), then adds it here once
(``record_http``). Everything runs on mixer's one event loop, /metrics included.
"""

from __future__ import annotations

import bisect
import time

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from mixer.telemetry.attributes import REQUEST_LABELS, TCP_LABELS, Report

# Istio's default buckets: request duration in milliseconds, and sizes (exponential 1..1e9)
DURATION_BUCKETS_MS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
SIZE_BUCKETS = tuple(10.0**i for i in range(10))
_DURATION_LE = (*(floatToGoString(b) for b in DURATION_BUCKETS_MS), "+Inf")
_SIZE_LE = (*(floatToGoString(b) for b in SIZE_BUCKETS), "+Inf")

_REQUESTS = "istio_requests_total"
_DURATION = "istio_request_duration_milliseconds"
_REQUEST_BYTES = "istio_request_bytes"
_RESPONSE_BYTES = "istio_response_bytes"
_TCP_SENT = "istio_tcp_sent_bytes_total"
_TCP_RECEIVED = "istio_tcp_received_bytes_total"
_TCP_OPENED = "istio_tcp_connections_opened_total"
_TCP_CLOSED = "istio_tcp_connections_closed_total"
HTTP_FAMILIES = (_REQUESTS, _DURATION, _REQUEST_BYTES, _RESPONSE_BYTES)
TCP_FAMILIES = (_TCP_OPENED, _TCP_CLOSED, _TCP_SENT, _TCP_RECEIVED)
_HELP = {
    _REQUESTS: "Requests, by Istio's standard labels",
    _DURATION: "Request duration in milliseconds",
    _REQUEST_BYTES: "Request sizes (headers and body)",
    _RESPONSE_BYTES: "Response sizes (headers and body)",
    _TCP_SENT: "Bytes sent to the downstream on TCP connections",
    _TCP_RECEIVED: "Bytes received from the downstream on TCP connections",
    _TCP_OPENED: "TCP connections opened",
    _TCP_CLOSED: "TCP connections closed",
}


class HttpTotals:
    """Requests of one series: count, and per histogram the count per bucket (not cumulative; the last
    is +Inf) and the sum. ``duration`` uses Istio's duration buckets, the dashboard's too."""

    __slots__ = ("n", "duration", "duration_sum", "request", "request_sum", "response", "response_sum")

    def __init__(self) -> None:
        self.n = 0
        self.duration = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.duration_sum = 0.0
        self.request = [0] * (len(SIZE_BUCKETS) + 1)
        self.request_sum = 0.0
        self.response = [0] * (len(SIZE_BUCKETS) + 1)
        self.response_sum = 0.0

    def add(self, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        """One request (a value equal to a bound falls in that bound's bucket: ``le``)."""
        self.n += 1
        self.duration[bisect.bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1
        self.duration_sum += duration_ms
        self.request[bisect.bisect_left(SIZE_BUCKETS, request_bytes)] += 1
        self.request_sum += request_bytes
        self.response[bisect.bisect_left(SIZE_BUCKETS, response_bytes)] += 1
        self.response_sum += response_bytes

    def merge(self, other: HttpTotals) -> None:
        self.n += other.n
        for mine, theirs in (
            (self.duration, other.duration),
            (self.request, other.request),
            (self.response, other.response),
        ):
            for i, c in enumerate(theirs):
                if c:
                    mine[i] += c
        self.duration_sum += other.duration_sum
        self.request_sum += other.request_sum
        self.response_sum += other.response_sum


class _TcpTotals:
    __slots__ = ("opened", "closed", "sent", "received", "created")

    def __init__(self, created: float) -> None:
        self.opened = self.closed = self.sent = self.received = 0
        self.created = created


class IstioMetrics:
    def __init__(self, registry: CollectorRegistry, max_series: int = 5000) -> None:
        self.max_series = max_series
        self.dropped = Counter(
            "mixer_telemetry_dropped_series_total",
            "Reports not recorded because their metric reached its series limit",
            ["metric"],
            registry=registry,
        )
        self.reports = Counter(
            "mixer_telemetry_reports_total",
            "Access-log entries aggregated, by kind",
            ["kind"],
            registry=registry,
        )
        # labelled children, resolved on first use (a series appears once it has been counted)
        self._dropped: dict[str, object] = {}
        self._reports: dict[str, object] = {}
        # label values (REQUEST_LABELS / TCP_LABELS order) -> (totals, created time)
        self._http: dict[tuple, tuple[HttpTotals, float]] = {}
        self._tcp: dict[tuple, _TcpTotals] = {}
        registry.register(_Collector(self))

    def series_count(self, kind: str) -> int:
        return len(self._http if kind == "http" else self._tcp)

    def count_reports(self, kind: str, n: int) -> None:
        child = self._reports.get(kind)
        if child is None:
            child = self._reports[kind] = self.reports.labels(kind)
        child.inc(n)

    def _drop(self, families: tuple[str, ...], n: int) -> None:
        for name in families:
            child = self._dropped.get(name)
            if child is None:
                child = self._dropped[name] = self.dropped.labels(name)
            child.inc(n)

    def record_http(self, values: tuple, totals: HttpTotals) -> bool:
        """Add ``totals`` to the series ``values``; False (and counted as dropped) at the series bound."""
        series = self._http.get(values)
        if series is None:
            if len(self._http) >= self.max_series:
                self._drop(HTTP_FAMILIES, totals.n)
                return False
            series = self._http[values] = (HttpTotals(), time.time())
        series[0].merge(totals)
        return True

    def record_tcp(self, values: tuple, opened: int, closed: int, sent: int, received: int, n: int) -> bool:
        """Add ``n`` TCP reports' counts to the series ``values``; False at the series bound."""
        series = self._tcp.get(values)
        if series is None:
            if len(self._tcp) >= self.max_series:
                self._drop(TCP_FAMILIES, n)
                return False
            series = self._tcp[values] = _TcpTotals(time.time())
        series.opened += opened
        series.closed += closed
        series.sent += sent
        series.received += received
        return True

    def record(self, report: Report) -> bool:
        """Count one report; False when it was dropped by the cardinality bound."""
        self.count_reports(report.kind, 1)
        if report.kind == "http":
            totals = HttpTotals()
            totals.add(report.duration_ms, report.request_bytes, report.response_bytes)
            return self.record_http(tuple(report.labels[n] for n in REQUEST_LABELS), totals)
        closed = int(report.closed)
        return self.record_tcp(
            tuple(report.labels[n] for n in TCP_LABELS),
            int(report.opened),
            closed,
            report.sent_bytes if closed else 0,
            report.received_bytes if closed else 0,
            1,
        )


class _Collector:
    """The istio_* families as prometheus_client's Counter and Histogram expose them."""

    def __init__(self, metrics: IstioMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return [_family(name) for name in HTTP_FAMILIES + TCP_FAMILIES]

    def collect(self):
        requests, duration, request_bytes, response_bytes = (_family(n) for n in HTTP_FAMILIES)
        for values, (t, created) in self.metrics._http.items():
            labels = dict(zip(REQUEST_LABELS, values, strict=True))
            _counter_samples(requests, labels, t.n, created)
            _histogram_samples(duration, labels, _DURATION_LE, t.duration, t.n, t.duration_sum, created)
            _histogram_samples(request_bytes, labels, _SIZE_LE, t.request, t.n, t.request_sum, created)
            _histogram_samples(response_bytes, labels, _SIZE_LE, t.response, t.n, t.response_sum, created)
        opened, closed, sent, received = (_family(n) for n in TCP_FAMILIES)
        for values, t in self.metrics._tcp.items():
            labels = dict(zip(TCP_LABELS, values, strict=True))
            _counter_samples(opened, labels, t.opened, t.created)
            _counter_samples(closed, labels, t.closed, t.created)
            _counter_samples(sent, labels, t.sent, t.created)
            _counter_samples(received, labels, t.received, t.created)
        return [requests, duration, request_bytes, response_bytes, opened, closed, sent, received]


def _family(name: str) -> Metric:
    if name.endswith("_total"):
        return Metric(name[: -len("_total")], _HELP[name], "counter")
    return Metric(name, _HELP[name], "histogram")


def _counter_samples(family: Metric, labels: dict, value: float, created: float) -> None:
    family.add_sample(family.name + "_total", labels, float(value))
    family.add_sample(family.name + "_created", labels, created)


def _histogram_samples(family: Metric, labels: dict, les, counts, n, total, created) -> None:
    name = family.name
    cumulative = 0
    for le, c in zip(les, counts, strict=True):
        cumulative += c
        family.add_sample(name + "_bucket", {**labels, "le": le}, float(cumulative))
    family.add_sample(name + "_count", labels, float(n))
    family.add_sample(name + "_sum", labels, float(total))
    family.add_sample(name + "_created", labels, created)
