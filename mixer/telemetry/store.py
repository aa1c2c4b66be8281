"""Recent traffic for the dashboard's JSON API: 15 minutes in 5-second buckets (pure; clock injected).

Each bucket keeps, per edge (reporter, source workload, destination workload, destination service),
the request count, the 5xx count (a response code of 0, no response, counts as an error too), how many
requests used mTLS, and a latency histogram with Istio's buckets, from which p50/p90/p99 are
interpolated. When both sides of an edge report, the destination's reports are used, as Kiali does;
a proxy that only reports as source still gives its edges.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mixer.adapters.prometheus import DURATION_BUCKETS_MS
from mixer.telemetry.attributes import Report

BUCKET_S = 5
HISTORY_S = 15 * 60


@dataclass
class EdgeStats:
    requests: int = 0
    errors: int = 0
    mtls: int = 0
    tcp_bytes: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_MS) + 1))


@dataclass(frozen=True)
class EdgeKey:
    reporter: str
    src: tuple[str, str, str, str]  # workload, namespace, app, version
    dst: tuple[str, str, str, str]
    service: str
    protocol: str


def edge_key(labels: dict[str, str]) -> EdgeKey:
    return EdgeKey(
        labels["reporter"],
        (
            labels["source_workload"],
            labels["source_workload_namespace"],
            labels["source_app"],
            labels["source_version"],
        ),
        (
            labels["destination_workload"],
            labels["destination_workload_namespace"],
            labels["destination_app"],
            labels["destination_version"],
        ),
        labels["destination_service"],
        labels["request_protocol"],
    )


def percentile(counts: list[int], q: float) -> float | None:
    """Interpolated q-quantile (0..1) from counts per Istio duration bucket (last is +Inf)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            lower = DURATION_BUCKETS_MS[i - 1] if i > 0 else 0.0
            upper = DURATION_BUCKETS_MS[i] if i < len(DURATION_BUCKETS_MS) else DURATION_BUCKETS_MS[-1]
            return lower + (upper - lower) * (rank - seen) / c
        seen += c
    return float(DURATION_BUCKETS_MS[-1])


class TrafficStore:
    def __init__(self, clock: Callable[[], float] = time.time, max_edges: int = 5000) -> None:
        self.clock = clock
        self.max_edges = max_edges
        self.buckets: deque[tuple[int, dict[EdgeKey, EdgeStats]]] = deque()
        self.dropped = 0

    def _bucket(self, now: float) -> dict[EdgeKey, EdgeStats]:
        start = int(now // BUCKET_S) * BUCKET_S
        if not self.buckets or self.buckets[-1][0] != start:
            self.buckets.append((start, {}))
        while self.buckets and self.buckets[0][0] <= start - HISTORY_S:
            self.buckets.popleft()
        return self.buckets[-1][1]

    def add(self, report: Report) -> None:
        """One report (``add_http``/``add_tcp`` take a whole batch's counts per edge)."""
        key = edge_key(report.labels)
        if report.kind == "http":
            latency = [0] * (len(DURATION_BUCKETS_MS) + 1)
            latency[bisect.bisect_left(DURATION_BUCKETS_MS, report.duration_ms)] = 1
            code = int(report.labels["response_code"] or 0)
            self.add_http(key, 1, int(code == 0 or code >= 500), int(report.mtls), latency)
        else:
            sent = report.sent_bytes + report.received_bytes
            self.add_tcp(key, 1, int(report.opened), sent, int(report.mtls))

    def _stats(self, key: EdgeKey, n: int) -> EdgeStats | None:
        bucket = self._bucket(self.clock())
        stats = bucket.get(key)
        if stats is None:
            if len(bucket) >= self.max_edges:
                self.dropped += n
                return None
            stats = bucket[key] = EdgeStats()
        return stats

    def add_http(self, key: EdgeKey, n: int, errors: int, mtls: int, latency: list[int]) -> None:
        """``n`` requests of one edge: how many were errors and used mTLS, the count per Istio duration
        bucket (the last is +Inf)."""
        stats = self._stats(key, n)
        if stats is None:
            return
        stats.requests += n
        stats.errors += errors
        stats.mtls += mtls
        own = stats.latency
        for i, c in enumerate(latency):
            if c:
                own[i] += c

    def add_tcp(self, key: EdgeKey, n: int, opened: int, tcp_bytes: int, mtls: int) -> None:
        """``n`` TCP reports of one edge: connections opened, bytes of the closed ones, mTLS reports."""
        stats = self._stats(key, n)
        if stats is None:
            return
        stats.requests += opened  # for TCP edges "requests" are connections
        stats.tcp_bytes += tcp_bytes
        stats.mtls += mtls

    def _window(self, window_s: float) -> dict[EdgeKey, EdgeStats]:
        """Edges summed over the last window_s seconds, one reporter per (source, destination) pair."""
        now = self.clock()
        merged: dict[EdgeKey, EdgeStats] = {}
        self._bucket(now)  # drops buckets that fell out of the history
        for start, bucket in self.buckets:
            if start + BUCKET_S <= now - window_s:
                continue
            for key, s in bucket.items():
                m = merged.setdefault(key, EdgeStats())
                m.requests += s.requests
                m.errors += s.errors
                m.mtls += s.mtls
                m.tcp_bytes += s.tcp_bytes
                m.latency = [a + b for a, b in zip(m.latency, s.latency, strict=True)]
        return _one_reporter(merged)

    def graph(self, window_s: float = 60.0) -> dict:
        nodes: dict[str, dict] = {}
        edges = []

        def node(w: tuple[str, str, str, str]) -> str:
            node_id = f"{w[1]}/{w[0]}"
            nodes.setdefault(
                node_id, {"id": node_id, "workload": w[0], "namespace": w[1], "app": w[2], "version": w[3]}
            )
            return node_id

        for key, s in sorted(self._window(window_s).items(), key=lambda kv: (kv[0].src, kv[0].dst)):
            edges.append(
                {
                    "source": node(key.src),
                    "target": node(key.dst),
                    "service": key.service,
                    "protocol": key.protocol,
                    "reporter": key.reporter,
                    "requests": s.requests,
                    "rps": round(s.requests / window_s, 3),
                    "error_rate": round(s.errors / s.requests, 4) if s.requests else 0.0,
                    "mtls": s.mtls > 0 and s.mtls * 2 >= max(s.requests, 1),
                    "tcp_bytes": s.tcp_bytes,
                }
            )
        return {"window_s": window_s, "nodes": sorted(nodes.values(), key=lambda n: n["id"]), "edges": edges}

    def services(self, window_s: float = 60.0) -> list[dict]:
        per: dict[str, EdgeStats] = {}
        for key, s in self._window(window_s).items():
            if key.protocol == "tcp":
                continue
            m = per.setdefault(key.service, EdgeStats())
            m.requests += s.requests
            m.errors += s.errors
            m.latency = [a + b for a, b in zip(m.latency, s.latency, strict=True)]
        out = []
        for service, s in sorted(per.items()):
            out.append(
                {
                    "service": service,
                    "requests": s.requests,
                    "rps": round(s.requests / window_s, 3),
                    "success_rate": round(1 - s.errors / s.requests, 4) if s.requests else None,
                    "p50_ms": _round(percentile(s.latency, 0.50)),
                    "p90_ms": _round(percentile(s.latency, 0.90)),
                    "p99_ms": _round(percentile(s.latency, 0.99)),
                }
            )
        return out

    def timeseries(self) -> dict:
        """Per 5-second bucket over the last 15 minutes: requests/s and error rate, overall and per service."""
        points = []
        now = self.clock()
        for start, bucket in self.buckets:
            if start <= now - HISTORY_S:
                continue
            picked = _one_reporter(bucket)
            total = sum(s.requests for k, s in picked.items() if k.protocol != "tcp")
            errors = sum(s.errors for k, s in picked.items() if k.protocol != "tcp")
            by_service: dict[str, int] = {}
            for k, s in picked.items():
                if k.protocol != "tcp":
                    by_service[k.service] = by_service.get(k.service, 0) + s.requests
            points.append(
                {
                    "t": start,
                    "rps": round(total / BUCKET_S, 3),
                    "error_rate": round(errors / total, 4) if total else 0.0,
                    "services": {name: round(n / BUCKET_S, 3) for name, n in sorted(by_service.items())},
                }
            )
        return {"bucket_s": BUCKET_S, "history_s": HISTORY_S, "points": points}


def _one_reporter(bucket: dict[EdgeKey, EdgeStats]) -> dict[EdgeKey, EdgeStats]:
    dest = {(k.src, k.dst, k.service) for k in bucket if k.reporter == "destination"}
    return {
        k: v
        for k, v in bucket.items()
        if k.reporter == "destination" or (k.src, k.dst, k.service) not in dest
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
