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
