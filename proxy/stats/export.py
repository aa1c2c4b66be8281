"""Render a stats ``Store`` as Envoy's admin does: ``/stats`` text and JSON, and
``/stats/prometheus`` with Envoy's default tag extraction.

Runs only when an admin request asks (never on the request path). Tag extraction results are cached
per stat name, since names do not change.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache

from proxy.stats.store import Histogram, Store

# Envoy's supported quantiles, printed as P0 P25 P50 P75 P90 P95 P99 P99.5 P99.9 P100.
SUPPORTED_QUANTILES = (0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100)


def _num(v: float) -> str:
    if v != v:  # NaN
        return "nan"
    return f"{v:.6g}"


def _quantiles(h: Histogram) -> list[float]:
    if h.count == 0:
        return [math.nan] * len(SUPPORTED_QUANTILES)
    return [h.quantile(q / 100.0) for q in SUPPORTED_QUANTILES]


def _selected(store: Store, filter_re: re.Pattern | None, used_only: bool):
    counters = [
        (n, c.value)
        for n, c in store.counters.items()
        if (not used_only or c.value) and (filter_re is None or filter_re.search(n))
    ]
    gauges = [
        (n, g.value)
        for n, g in store.gauges.items()
        if (not used_only or g.value) and (filter_re is None or filter_re.search(n))
    ]
    hists = [
        (n, h)
        for n, h in store.histograms.items()
        if (not used_only or h.count) and (filter_re is None or filter_re.search(n))
    ]
    return counters, gauges, hists


def text(store: Store, filter_re: re.Pattern | None = None, used_only: bool = False) -> str:
    """``name: value`` lines: counters and gauges sorted together, then histograms sorted.

    Histograms print Envoy's ``P<q>(<interval>,<cumulative>)`` summary; Isthmus does not keep
    per-flush interval data, so the interval value is ``nan``, as Envoy prints it when an interval
    has no samples."""
    counters, gauges, hists = _selected(store, filter_re, used_only)
    lines = [f"{n}: {v}" for n, v in sorted(counters + gauges)]
    for name, h in sorted(hists, key=lambda x: x[0]):
        if h.count == 0:
            lines.append(f"{name}: No recorded values")
            continue
        qs = _quantiles(h)
        lines.append(
            f"{name}: "
            + " ".join(f"P{q:g}(nan,{_num(v)})" for q, v in zip(SUPPORTED_QUANTILES, qs, strict=True))
        )
    return "".join(line + "\n" for line in lines)


def json_text(store: Store, filter_re: re.Pattern | None = None, used_only: bool = False) -> str:
    """Envoy's ``/stats?format=json``: ``{"stats": [{"name", "value"}..., {"histograms": {...}}]}``."""
    counters, gauges, hists = _selected(store, filter_re, used_only)
    stats: list[dict] = [{"name": n, "value": v} for n, v in sorted(counters + gauges)]
    if hists:
        computed = []
        for name, h in sorted(hists, key=lambda x: x[0]):
            values = [{"interval": None, "cumulative": (None if v != v else v)} for v in _quantiles(h)]
            computed.append({"name": name, "values": values})
        stats.append(
            {"histograms": {"supported_quantiles": list(SUPPORTED_QUANTILES), "computed_quantiles": computed}}
        )
    return json.dumps({"stats": stats}, indent=1)


# --- Prometheus -----------------------------------------------------------------------------------------

# Envoy's default tag extractors (a subset: the ones Isthmus's stats use), applied in this order.
# Group 1 is removed from the name; group 2 is the tag value.
_TAG_EXTRACTORS: list[tuple[str, re.Pattern]] = [
    ("envoy.response_code_class", re.compile(r"_rq_((\d))xx$")),
    ("envoy.response_code", re.compile(r"_rq(_(\d{3}))$")),
    ("envoy.http_conn_manager_prefix", re.compile(r"^http\.((.*?)\.)")),
    ("envoy.listener_address", re.compile(r"^listener\.(((?:[_.\d]*|[_\[\]aAbBcCdDeEfF\d]*))\.)")),
    ("envoy.cluster_name", re.compile(r"^cluster\.((.+?(?:\..+?\.svc\.cluster\.local)?)\.)")),
    ("envoy.tcp_prefix", re.compile(r"^tcp\.((.*?)\.)\w+?$")),
]

_SANITIZE_RE = re.compile(r"[^a-zA-Z0-9_]")


@lru_cache(maxsize=65536)
def extract_tags(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``cluster.backend.upstream_rq_2xx`` -> (``cluster.upstream_rq_xx``,
    ((``envoy.response_code_class``, ``2``), (``envoy.cluster_name``, ``backend``)))."""
    tags = []
    for tag, rx in _TAG_EXTRACTORS:
        m = rx.search(name)
        if m is None:
            continue
        tags.append((tag, m.group(2)))
        name = name[: m.start(1)] + name[m.end(1) :]
    return name, tuple(tags)


@lru_cache(maxsize=65536)
def prometheus_name(name: str) -> tuple[str, str]:
    """(metric name, rendered label body without braces) for a stat name."""
    base, tags = extract_tags(name)
    metric = "envoy_" + _SANITIZE_RE.sub("_", base)
    labels = ",".join(f'{_SANITIZE_RE.sub("_", t)}="{_escape_label(v)}"' for t, v in tags)
    return metric, labels


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _prom_value(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if v != v:
        return "NaN"
    if v == math.inf:
        return "+Inf"
    return repr(float(v))


def _le(bound: float) -> str:
    if bound == math.inf:
        return "+Inf"
    return f"{bound:g}" if bound != int(bound) else f"{int(bound)}"


def prometheus(store: Store, filter_re: re.Pattern | None = None, used_only: bool = False) -> str:
    counters, gauges, hists = _selected(store, filter_re, used_only)
    # metric -> (type, [lines]); a metric name groups every stat that maps to it (different tags).
    families: dict[str, tuple[str, list[str]]] = {}

    def family(metric: str, kind: str) -> list[str]:
        fam = families.get(metric)
        if fam is None:
            fam = families[metric] = (kind, [])
        elif fam[0] != kind:  # e.g. a counter and a gauge sanitizing to the same name: keep the first
            return []
        return fam[1]

    for kind, items in (("counter", counters), ("gauge", gauges)):
        for name, value in sorted(items):
            metric, labels = prometheus_name(name)
            family(metric, kind).append(f"{metric}{{{labels}}} {value}")
    for name, h in sorted(hists, key=lambda x: x[0]):
        metric, labels = prometheus_name(name)
        lines = family(metric, "histogram")
        if not lines and families[metric][0] != "histogram":
            continue
        sep = "," if labels else ""
        for bound, cum in h.cumulative_buckets():
            lines.append(f'{metric}_bucket{{{labels}{sep}le="{_le(bound)}"}} {cum}')
        lines.append(f"{metric}_sum{{{labels}}} {_prom_value(float(h.sum))}")
        lines.append(f"{metric}_count{{{labels}}} {h.count}")

    out = []
    for metric in sorted(families):
        kind, lines = families[metric]
        if not lines:
            continue
        out.append(f"# TYPE {metric} {kind}\n")
        out.extend(line + "\n" for line in lines)
    return "".join(out)
