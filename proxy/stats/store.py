"""The proxy's stats: counters, gauges and histograms under Envoy's dotted names.

Names are the full Envoy names (``cluster.backend.upstream_rq_total``). A ``Scope`` prefixes names
(``store.scope("cluster.backend.")``). Stats are created on first use and then looked up once by the
code that owns them, so the request path only does ``counter.inc()``.
Export (``/stats``, ``/stats/prometheus`` with Envoy's tag extraction) lives in ``proxy.admin``.
"""

from __future__ import annotations

import bisect
import math

# Envoy's default histogram bucket bounds (milliseconds for time histograms).
_bisect_left, _bisect_right = bisect.bisect_left, bisect.bisect_right

DEFAULT_BUCKETS = (
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


class Counter:
    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Gauge:
    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def dec(self, n: int = 1) -> None:
        self.value -= n

    def set(self, v: int) -> None:
        self.value = v


class Histogram:
    """A histogram with Envoy's bucket bounds for export and fine log-linear bins for quantiles.

    Like Envoy's circllhist, every value also lands in a bin two significant digits wide
    (1.0-1.1, 10-11, 250-260, ...), so quantiles are accurate to about 5% whatever the range,
    while memory stays bounded by the number of distinct bins actually seen.
    """

    __slots__ = ("name", "bounds", "counts", "count", "sum", "bins", "_search")

    def __init__(self, name: str, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.name = name
        self.bounds = bounds
        # The bounds as floats for the per-record bisection: float-to-float comparisons are cheaper
        # than float-to-int ones. Only when every bound converts exactly (then the buckets are the same).
        floats = tuple(float(b) for b in bounds)
        self._search = floats if all(f == b for f, b in zip(floats, bounds, strict=True)) else bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above the largest bound
        self.count = 0
        self.sum = 0.0
        self.bins: dict[float, int] = {}

    def record(self, value: float) -> None:
        self.counts[_bisect_left(self._search, value)] += 1
        self.count += 1
        self.sum += value
        # The bin's floor by bisection over a precomputed table (one C call on the request path)
        # instead of log10/pow arithmetic; values outside the table's range take the long way.
        if _TABLE_LOW <= value < _TABLE_HIGH:
            key = _FLOORS[_bisect_right(_FLOORS, value * _NUDGE) - 1]
        else:
            key = _bin_floor(value)
        bins = self.bins
        bins[key] = bins.get(key, 0) + 1

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """[(upper_bound, cumulative count)], ending with (+inf, count)."""
        out, running = [], 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            running += c
            out.append((bound, running))
        out.append((math.inf, self.count))
        return out

    def quantile(self, q: float) -> float:
        """Estimated q-quantile (0..1), interpolated within its fine bin; NaN when empty."""
        if self.count == 0:
            return math.nan
        target = q * self.count
        running = 0
        keys = sorted(self.bins)
        for key in keys:
            c = self.bins[key]
            if running + c >= target:
                return key + _bin_width(key) * ((target - running) / c)
            running += c
        last = keys[-1]
        return last + _bin_width(last)


def _bin_exponent(value: float) -> tuple[int, int]:
    """(mantissa 10..99, exponent) with value in [m * 10**e, (m + 1) * 10**e)."""
    e = math.floor(math.log10(value)) - 1
    # The tiny nudge absorbs binary rounding (0.57 * 100 == 56.99999...).
    m = math.floor(value * 10.0**-e * (1 + 1e-12))
    if m >= 100:
        m, e = m // 10, e + 1
    elif m < 10:
        m, e = math.floor(value * 10.0 ** -(e - 1) * (1 + 1e-12)), e - 1
    return m, e


def _bin_floor(value: float) -> float:
    """Lower edge of the two-significant-digit bin holding `value` (0 for values <= 0)."""
    if value <= 0:
        return 0.0
    m, e = _bin_exponent(value)
    return m / 10**-e if e < 0 else float(m * 10**e)


_NUDGE = 1 + 1e-12  # the same nudge as _bin_exponent: binary rounding never drops a value a bin
# Every bin floor from 0.001 to 10**7 (ms: a microsecond to about three hours), ascending.
_FLOORS = [m / 10**-e if e < 0 else float(m * 10**e) for e in range(-4, 6) for m in range(10, 100)]
_TABLE_LOW = _FLOORS[0]
_TABLE_HIGH = 100 * 10**5


def _bin_width(floor: float) -> float:
    if floor <= 0:
        return 0.0
    _, e = _bin_exponent(floor)
    return 1 / 10**-e if e < 0 else float(10**e)


class Store:
    """All stats of one proxy process."""

    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.histograms: dict[str, Histogram] = {}

    def counter(self, name: str) -> Counter:
        c = self.counters.get(name)
        if c is None:
            c = self.counters[name] = Counter(name)
        return c

    def gauge(self, name: str) -> Gauge:
        g = self.gauges.get(name)
        if g is None:
            g = self.gauges[name] = Gauge(name)
        return g

    def histogram(self, name: str) -> Histogram:
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = Histogram(name)
        return h

    def scope(self, prefix: str) -> Scope:
        return Scope(self, prefix)


class Scope:
    """A view of a Store that prefixes every name, e.g. ``cluster.backend.``."""

    __slots__ = ("store", "prefix")

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def counter(self, name: str) -> Counter:
        return self.store.counter(self.prefix + name)

    def gauge(self, name: str) -> Gauge:
        return self.store.gauge(self.prefix + name)

    def histogram(self, name: str) -> Histogram:
        return self.store.histogram(self.prefix + name)

    def scope(self, prefix: str) -> Scope:
        return Scope(self.store, self.prefix + prefix)
