"""Histogram.record's table lookup puts every value in the same fine bin as the arithmetic does."""

from __future__ import annotations

import random

from proxy.stats.store import _FLOORS, Histogram, _bin_floor


def _recorded_bin(value: float) -> float:
    h = Histogram("t")
    h.record(value)
    [key] = h.bins
    return key


def test_bins_match_the_arithmetic_at_every_edge_and_at_random():
    rng = random.Random(7)
    values = [f for f in _FLOORS] + [f * (1 - 1e-13) for f in _FLOORS] + [f * (1 + 1e-9) for f in _FLOORS]
    values += [rng.uniform(0, 1) * 10 ** rng.uniform(-3, 7) for _ in range(5000)]
    values += [0.0, 0.0004, 5e7, 0.57, 123.456]  # outside the table and familiar rounding cases
    for v in values:
        expected = _bin_floor(v) if v > 0 else 0.0
        assert _recorded_bin(v) == expected, v


def test_quantiles_from_the_fast_bins():
    h = Histogram("t")
    for v in range(1, 101):
        h.record(v / 10)  # 0.1 .. 10.0 ms
    assert abs(h.quantile(0.5) - 5.0) < 0.3
    assert abs(h.quantile(0.99) - 9.9) < 0.5


def test_buckets_are_the_same_as_bisection_over_the_configured_bounds():
    import bisect

    from proxy.stats.store import DEFAULT_BUCKETS

    rng = random.Random(3)
    huge = (1, 2**60 + 1, 2**61)  # bounds a float cannot hold exactly: searched as given
    for bounds in (DEFAULT_BUCKETS, (0.25, 3, 7.5), huge):
        h = Histogram("t", bounds)
        values = [b for b in bounds] + [b - 1e-9 for b in bounds] + [b + 1e-9 for b in bounds]
        values += [0, 0.0, 3, 2**60, 2**60 + 1, float(2**60)] + [rng.uniform(0, 4e6) for _ in range(2000)]
        expected = [0] * (len(bounds) + 1)
        for v in values:
            h.record(v)
            expected[bisect.bisect_left(bounds, v)] += 1
        assert h.counts == expected, bounds
        assert h.bounds is bounds  # exported as configured
