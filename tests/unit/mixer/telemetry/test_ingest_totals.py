"""A batch's histograms counted from sorted values (ingest._Values.totals) against HttpTotals.add of
each value in turn, the per-entry path it replaced: same counts per bucket, same sums, same n."""

from __future__ import annotations

import random

from mixer.adapters.prometheus import DURATION_BUCKETS_MS, SIZE_BUCKETS, HttpTotals
from mixer.telemetry.ingest import _Values


def reference(values: list[tuple[float, int, int]]) -> HttpTotals:
    t = HttpTotals()
    for d, q, r in values:
        t.add(d, q, r)
    return t


def batched(values: list[tuple[float, int, int]], split: int | None = None) -> HttpTotals:
    parts = [values] if split is None else [values[:split], values[split:]]
    acc = None
    for part in parts:
        v = _Values(series=None)
        for d, q, r in part:
            v.duration.append(d)
            v.request.append(q)
            v.response.append(r)
        if acc is None:
            acc = v
        else:
            acc.extend(v)
    return acc.totals()


def same(a: HttpTotals, b: HttpTotals) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in HttpTotals.__slots__)


def test_bucket_counts_and_sums_equal_adding_each_value():
    rng = random.Random(3)
    # on, just below and just above every bound; zero; beyond the last bound
    edges_ms = [0.0, 1e-9, 4e6, *DURATION_BUCKETS_MS, *(b * (1 + 1e-12) for b in DURATION_BUCKETS_MS)]
    edges_ms += [b * (1 - 1e-12) for b in DURATION_BUCKETS_MS]
    edges_size = [0, 2, 10**10, *(int(b) for b in SIZE_BUCKETS), *(int(b) + 1 for b in SIZE_BUCKETS)]
    edges_size += [int(b) - 1 for b in SIZE_BUCKETS]
    for _ in range(2000):
        n = rng.choice([1, 1, 2, 3, 36, 100])
        values = [
            (
                rng.choice(edges_ms) if rng.random() < 0.5 else rng.random() * rng.choice([1, 100, 1e7]),
                rng.choice(edges_size) if rng.random() < 0.5 else rng.randrange(10**6),
                rng.choice(edges_size) if rng.random() < 0.5 else rng.randrange(10**9),
            )
            for _ in range(n)
        ]
        want = reference(values)
        assert same(batched(values), want), values
        assert same(batched(values, rng.randrange(1, n + 1) if n > 1 else None), want), values


def test_all_values_in_one_bucket_and_in_the_overflow_bucket():
    for values in ([(0.1, 0, 0)] * 5, [(5e6, 10**10, 10**10)] * 3, [(1.0, 1, 1)]):
        assert same(batched(values), reference(values))
