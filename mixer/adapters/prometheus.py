"""Istio's standard metrics, filled from access-log reports, with bounded label cardinality.

Names, label names and histogram buckets are Istio's, so Grafana's and Kiali's Istio dashboards work
unchanged. Every metric family keeps at most ``max_series`` label combinations; a report that would add
one more is not recorded and counts in ``mixer_telemetry_dropped_series_total{metric=...}`` instead
(reports for series that already exist keep being counted).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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


class IstioMetrics:
    def __init__(self, registry: CollectorRegistry, max_series: int = 5000) -> None:
        self.max_series = max_series
        self.requests = Counter(
            "istio_requests_total", "Requests, by Istio's standard labels", REQUEST_LABELS, registry=registry
        )
        self.duration = Histogram(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            REQUEST_LABELS,
            buckets=DURATION_BUCKETS_MS,
            registry=registry,
        )
        self.request_bytes = Histogram(
            "istio_request_bytes",
            "Request sizes (headers and body)",
            REQUEST_LABELS,
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.response_bytes = Histogram(
            "istio_response_bytes",
            "Response sizes (headers and body)",
            REQUEST_LABELS,
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.tcp_sent = Counter(
            "istio_tcp_sent_bytes_total",
            "Bytes sent to the downstream on TCP connections",
            TCP_LABELS,
            registry=registry,
        )
        self.tcp_received = Counter(
            "istio_tcp_received_bytes_total",
            "Bytes received from the downstream on TCP connections",
            TCP_LABELS,
            registry=registry,
        )
        self.tcp_opened = Counter(
            "istio_tcp_connections_opened_total", "TCP connections opened", TCP_LABELS, registry=registry
        )
        self.tcp_closed = Counter(
            "istio_tcp_connections_closed_total", "TCP connections closed", TCP_LABELS, registry=registry
        )
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
        self._series: dict[str, set[tuple]] = {"http": set(), "tcp": set()}

    def series_count(self, kind: str) -> int:
        return len(self._series[kind])

    def _admit(self, kind: str, key: tuple, metrics: tuple[str, ...]) -> bool:
        seen = self._series[kind]
        if key in seen:
            return True
        if len(seen) >= self.max_series:
            for name in metrics:
                self.dropped.labels(name).inc()
            return False
        seen.add(key)
        return True

    def record(self, report: Report) -> bool:
        """Count one report; False when it was dropped by the cardinality bound."""
        self.reports.labels(report.kind).inc()
        if report.kind == "http":
            key = tuple(report.labels[n] for n in REQUEST_LABELS)
            names = (
                "istio_requests_total",
                "istio_request_duration_milliseconds",
                "istio_request_bytes",
                "istio_response_bytes",
            )
            if not self._admit("http", key, names):
                return False
            self.requests.labels(*key).inc()
            self.duration.labels(*key).observe(report.duration_ms)
            self.request_bytes.labels(*key).observe(report.request_bytes)
            self.response_bytes.labels(*key).observe(report.response_bytes)
            return True
        key = tuple(report.labels[n] for n in TCP_LABELS)
        names = (
            "istio_tcp_sent_bytes_total",
            "istio_tcp_received_bytes_total",
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
        )
        if not self._admit("tcp", key, names):
            return False
        if report.opened:
            self.tcp_opened.labels(*key).inc()
        if report.closed:
            self.tcp_closed.labels(*key).inc()
            self.tcp_sent.labels(*key).inc(report.sent_bytes)
            self.tcp_received.labels(*key).inc(report.received_bytes)
        return True
