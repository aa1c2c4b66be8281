"""Stats over several processes (``--concurrency N``): a worker's ``Store`` as a plain snapshot, and
the main process's view that sums the workers.

Counters and gauges add by name; histograms add bucket by bucket and fine bin by fine bin (the
log-linear bins are the same in every process, so the merged quantiles are exact up to the bins).
Some stats describe configuration or the control plane, which the main process owns and every
worker mirrors (``server.*``, ``control_plane.*``, ``cluster_manager.*``, ``listener_manager.*``,
a cluster's ``update_*`` and ``membership_*``...): for those the main's value is the answer, as in
Envoy where the main thread alone sets them. Pure: no I/O.
"""

from __future__ import annotations

from proxy.stats.store import Histogram, Store

# Names the main process owns (its value, never a sum over workers).
MAIN_PREFIXES = (
    "server.",
    "control_plane.",
    "cluster_manager.",
    "listener_manager.",
    "runtime.",
    "http.admin.",
)
MAIN_CLUSTER_SUFFIXES = (
    ".update_attempt",
    ".update_success",
    ".update_rejected",
    ".update_empty",
    ".update_no_rebuild",
    ".membership_total",
    ".membership_healthy",
    ".membership_degraded",
    ".membership_excluded",
    ".max_host_weight",
    ".version",
    ".assignment_stale",
    ".assignment_timeout_received",
)


def main_owned(name: str) -> bool:
    if name.startswith(MAIN_PREFIXES):
        return True
    if name.startswith("cluster.") and (name.endswith(MAIN_CLUSTER_SUFFIXES) or ".health_check." in name):
        return True
    return ".rds." in name and name.startswith("http.")


def snapshot(store: Store) -> dict:
    """A JSON-able copy of every stat of `store` (what a worker sends the main process)."""
    return {
        "counters": {n: c.value for n, c in store.counters.items()},
        "gauges": {n: g.value for n, g in store.gauges.items()},
        "histograms": {n: snapshot_histogram(h) for n, h in store.histograms.items()},
    }


def _add_histogram(into: Histogram, snap: dict) -> None:
    if tuple(snap["bounds"]) != tuple(into.bounds):
        raise ValueError(f"histogram {into.name}: bucket bounds differ between processes")
    for i, c in enumerate(snap["counts"]):
        into.counts[i] += c
    into.count += snap["count"]
    into.sum += snap["sum"]
    bins = into.bins
    for key, c in snap["bins"]:
        bins[key] = bins.get(key, 0) + c


def merge(main: Store, workers: list[dict], owned=main_owned) -> Store:
    """A new Store: `main`'s stats plus the sum of the worker snapshots (``snapshot()``), except that
    names for which ``owned(name)`` holds keep the main's value (or, when the main never created the
    stat, the first worker's)."""
    out = Store()
    for kind in ("counters", "gauges"):
        make = out.counter if kind == "counters" else out.gauge
        mine = getattr(main, kind)
        for name, stat in mine.items():
            make(name).value = stat.value
        for snap in workers:
            for name, value in snap.get(kind, {}).items():
                if owned(name):
                    if name not in mine and name not in getattr(out, kind):
                        make(name).value = value
                    continue
                make(name).value += value
    for name, h in main.histograms.items():
        _add_histogram(out.histogram(name), snapshot_histogram(h))
    for snap in workers:
        for name, hs in snap.get("histograms", {}).items():
            target = out.histograms.get(name)
            if target is None:
                target = out.histograms[name] = Histogram(name, tuple(hs["bounds"]))
            _add_histogram(target, hs)
    return out


def snapshot_histogram(h: Histogram) -> dict:
    return {
        "bounds": list(h.bounds),
        "counts": list(h.counts),
        "count": h.count,
        "sum": h.sum,
        "bins": [[k, v] for k, v in h.bins.items()],
    }
