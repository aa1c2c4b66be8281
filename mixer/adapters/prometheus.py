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
        self._names = {
            id(self.requests): "istio_requests_total",
            id(self.duration): "istio_request_duration_milliseconds",
            id(self.request_bytes): "istio_request_bytes",
            id(self.response_bytes): "istio_response_bytes",
            id(self.tcp_sent): "istio_tcp_sent_bytes_total",
            id(self.tcp_received): "istio_tcp_received_bytes_total",
            id(self.tcp_opened): "istio_tcp_connections_opened_total",
            id(self.tcp_closed): "istio_tcp_connections_closed_total",
        }
        # label tuple -> the labelled children, so a known series costs no labels() lookup
        self._series: dict[str, dict[tuple, tuple]] = {"http": {}, "tcp": {}}

    def series_count(self, kind: str) -> int:
        return len(self._series[kind])

    def _children(self, kind: str, key: tuple, families: tuple) -> tuple | None:
        seen = self._series[kind]
        children = seen.get(key)
        if children is None:
            if len(seen) >= self.max_series:
                for family in families:
                    self.dropped.labels(self._names[id(family)]).inc()
                return None
            children = seen[key] = tuple(f.labels(*key) for f in families)
        return children

    def record(self, report: Report) -> bool:
        """Count one report; False when it was dropped by the cardinality bound."""
        self.reports.labels(report.kind).inc()
        if report.kind == "http":
            key = tuple(report.labels[n] for n in REQUEST_LABELS)
            children = self._children(
                "http", key, (self.requests, self.duration, self.request_bytes, self.response_bytes)
            )
            if children is None:
                return False
            requests, duration, request_bytes, response_bytes = children
            requests.inc()
            duration.observe(report.duration_ms)
            request_bytes.observe(report.request_bytes)
            response_bytes.observe(report.response_bytes)
            return True
        key = tuple(report.labels[n] for n in TCP_LABELS)
        children = self._children(
            "tcp", key, (self.tcp_opened, self.tcp_closed, self.tcp_sent, self.tcp_received)
        )
        if children is None:
            return False
        opened, closed, sent, received = children
        if report.opened:
            opened.inc()
        if report.closed:
            closed.inc()
            sent.inc(report.sent_bytes)
            received.inc(report.received_bytes)
        return True
