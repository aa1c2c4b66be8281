"""A batch of access-log entries -> Istio's metric series and their counts (pure).

The label values of an entry depend only on a few of its fields, and the entries of one edge repeat
them: our proxy's isthmus label Struct (identical bytes for every request of a peer, destination
service and TLS facts), the upstream cluster, the response flags, the authority, the content type and
the response code, plus the reporting node. ``Ingest`` keys a bounded LRU by exactly those, so the
labels (computed by ``attributes.http_report``, the reference, on a miss) cost one dict lookup for a
repeated edge. An entry without the isthmus Struct (a real Envoy's) has its labels from other fields
(filter state, headers, TLS properties): it takes ``http_report`` every time. Entries arrive as
``alsview`` HTTP entries (metadata and response flags as their raw bytes: the key as received).

A batch is then aggregated per series before anything is recorded (``HttpTotals``: count, buckets,
sums), so Istio's metrics and the dashboard's store are touched once per series and batch. Every
entry is counted exactly once.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass

from mixer.adapters.prometheus import DURATION_BUCKETS_MS, SIZE_BUCKETS, HttpTotals
from mixer.telemetry.alsview import full_http_entry
from mixer.telemetry.attributes import (
    ISTHMUS_METADATA,
    REQUEST_LABELS,
    TCP_LABELS,
    Report,
    Workload,
    http_report,
    tcp_report,
)
from mixer.telemetry.store import EdgeKey, edge_key


@dataclass(eq=False)
class Series:
    """One label combination: its values in the metric's label order, its dashboard edge, and the two
    facts the dashboard counts per request (mTLS, error)."""

    kind: str
    labels: dict[str, str]
    values: tuple[str, ...]
    edge: EdgeKey
    mtls: bool
    error: bool

    @classmethod
    def of(cls, report: Report) -> Series:
        names = REQUEST_LABELS if report.kind == "http" else TCP_LABELS
        values = tuple(report.labels[n] for n in names)
        error = False
        if report.kind == "http":
            code = int(report.labels["response_code"] or 0)
            error = code == 0 or code >= 500
        return cls(report.kind, report.labels, values, edge_key(report.labels), report.mtls, error)


@dataclass
class TcpTotals:
    opened: int = 0
    closed: int = 0
    sent: int = 0
    received: int = 0
    n: int = 0


class _Values:
    """The values of one series' entries in a batch, in arrival order."""

    __slots__ = ("series", "duration", "request", "response")

    def __init__(self, series: Series) -> None:
        self.series = series
        self.duration: list[float] = []
        self.request: list[int] = []
        self.response: list[int] = []

    def extend(self, other: _Values) -> None:
        self.duration += other.duration
        self.request += other.request
        self.response += other.response

    def totals(self) -> HttpTotals:
        """The HttpTotals ``add`` of each entry in turn makes (the sums added in the same order)."""
        t = HttpTotals()
        t.n = len(self.duration)
        t.duration_sum = 0.0 + sum(self.duration)
        t.request_sum = 0.0 + sum(self.request)
        t.response_sum = 0.0 + sum(self.response)
        _count(DURATION_BUCKETS_MS, self.duration, t.duration)
        _count(SIZE_BUCKETS, self.request, t.request)
        _count(SIZE_BUCKETS, self.response, t.response)
        return t


def _count(bounds: tuple[float, ...], values: list, counts: list[int]) -> None:
    """Add ``values`` (sorted here, in place) to per-bucket ``counts`` (not cumulative, the last +Inf; a
    value equal to a bound falls in that bound's bucket, as ``bisect_left(bounds, v)`` places it): only
    the bounds between the smallest and the largest value are looked at."""
    values.sort()
    lo = bisect_left(bounds, values[0])
    hi = bisect_left(bounds, values[-1])
    done = 0
    for i in range(lo, hi):
        upto = bisect_right(values, bounds[i], done)  # values <= bounds[i]
        counts[i] += upto - done
        done = upto
    counts[hi] += len(values) - done


class Ingest:
    def __init__(self, max_cached: int = 4096) -> None:
        self.max_cached = max_cached
        self._cache: OrderedDict[tuple, Series | None] = OrderedDict()
        self.hits = self.misses = 0

    def _series(self, key: tuple, node: Workload, entry) -> tuple[Series, Report, bool]:
        """On a miss: the entry's labels by the reference code, cached when the key determines them
        (and whether it does)."""
        self.misses += 1
        full = full_http_entry(entry)
        report = http_report(node, full)
        series = Series.of(report)
        cacheable = ISTHMUS_METADATA in full.common_properties.metadata.filter_metadata
        self._cache[key] = series if cacheable else None
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return series, report, cacheable

    def http(self, node: Workload, entries, reports: list | None = None) -> dict[Series, HttpTotals]:
        """HTTP entries (``alsview``) -> totals per series; each entry's Report appended to ``reports``
        when given (the JSON access log wants one line per entry)."""
        if reports is not None:
            return self._http_with_reports(node, entries, reports)
        # The batch's own first-level map: key -> the values of its entries. The LRU is consulted (and
        # touched) once per distinct key and batch, not per entry; the histograms are counted per series
        # from sorted values (_totals), not per entry.
        batch: dict[tuple, _Values] = {}
        loose: dict[Series, _Values] = {}
        node_key = (node.workload, node.namespace, node.app, node.version)
        for entry in entries:
            common = entry.common_properties
            request = entry.request
            response = entry.response
            headers = request.request_headers  # an empty map's get() costs 10x its truth test
            key = (
                node_key,
                common.metadata,
                common.upstream_cluster,
                common.response_flags,
                request.authority,
                headers.get("content-type", "") if headers else "",
                response.response_code,
            )
            values = batch.get(key)
            if values is None:
                series, _, cacheable = self._lookup(key, node, entry)
                if cacheable:
                    values = batch[key] = _Values(series)
                else:  # not determined by the key (no isthmus Struct): this entry's own series
                    values = loose.get(series)
                    if values is None:
                        values = loose[series] = _Values(series)
            d = common.duration
            ms = d.seconds * 1000.0 + d.nanos / 1e6
            if not ms and not common.HasField("duration"):
                d = common.time_to_last_downstream_tx_byte
                ms = d.seconds * 1000.0 + d.nanos / 1e6
            values.duration.append(ms)
            values.request.append(request.request_headers_bytes + request.request_body_bytes)
            values.response.append(response.response_headers_bytes + response.response_body_bytes)
        per_series: dict[Series, _Values] = {}
        for values in (*batch.values(), *loose.values()):
            mine = per_series.get(values.series)
            if mine is None:
                per_series[values.series] = values
            else:  # two keys, one label set (e.g. two authorities of one service)
                mine.extend(values)
        return {series: values.totals() for series, values in per_series.items()}

    def _lookup(self, key: tuple, node: Workload, entry) -> tuple[Series, Report | None, bool]:
        """The series of ``key`` from the LRU (a hit) or the reference code (a miss, with its Report),
        and whether ``key`` determines it."""
        series = self._cache.get(key)
        if series is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return series, None, True
        return self._series(key, node, entry)

    def _http_with_reports(self, node: Workload, entries, reports: list) -> dict[Series, HttpTotals]:
        """As ``http``, with one Report per entry (the JSON access log): Envoy's entry rebuilt for each."""
        out: dict[Series, HttpTotals] = {}
        node_key = (node.workload, node.namespace, node.app, node.version)
        for entry in entries:
            common = entry.common_properties
            request = entry.request
            headers = request.request_headers
            key = (
                node_key,
                common.metadata,
                common.upstream_cluster,
                common.response_flags,
                request.authority,
                headers.get("content-type", "") if headers else "",
                entry.response.response_code,
            )
            series, report, _ = self._lookup(key, node, entry)
            if report is None:
                report = http_report(node, full_http_entry(entry))
            reports.append(report)
            totals = out.get(series)
            if totals is None:
                totals = out[series] = HttpTotals()
            totals.add(report.duration_ms, report.request_bytes, report.response_bytes)
        return out

    def tcp(self, node: Workload, entries, reports: list | None = None) -> dict[Series, TcpTotals]:
        """TCPAccessLogEntry messages -> totals per series (one per connection event: no cache)."""
        out: dict[tuple, tuple[Series, TcpTotals]] = {}
        for entry in entries:
            report = tcp_report(node, entry)
            if reports is not None:
                reports.append(report)
            values = tuple(report.labels[n] for n in TCP_LABELS)
            pair = out.get((values, report.mtls))
            if pair is None:
                pair = out[(values, report.mtls)] = (Series.of(report), TcpTotals())
            t = pair[1]
            t.n += 1
            t.opened += report.opened
            if report.closed:
                t.closed += 1
                t.sent += report.sent_bytes
                t.received += report.received_bytes
        return dict(out.values())
