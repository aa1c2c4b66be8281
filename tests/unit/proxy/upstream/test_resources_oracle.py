"""Resource.inc/dec set their gauges inline: held to the previous implementation (inc/dec -> _update ->
Gauge.set) as the oracle over random sequences, every threshold shape, with and without
track_remaining, and with two resources sharing one gauge (a cluster updated while the old one drains)."""

from __future__ import annotations

import random

import pytest

from proxy.stats.store import Store
from proxy.upstream.resources import UNLIMITED, Resource


class OldResource:
    """The implementation before the inline gauges, verbatim in behaviour."""

    def __init__(self, maximum, open_gauge=None, remaining_gauge=None):
        self.max = maximum
        self.count = 0
        self._open = open_gauge
        self._remaining = remaining_gauge
        self._update()

    def can_create(self):
        return self.count < self.max

    def inc(self):
        self.count += 1
        self._update()

    def dec(self):
        self.count -= 1
        self._update()

    def _update(self):
        if self._open is not None:
            self._open.set(1 if self.count >= self.max else 0)
        if self._remaining is not None:
            self._remaining.set(max(0, self.max - self.count))


def _pair(maximum: int, gauges: str, new_store: Store, old_store: Store, tag: str):
    def g(store: Store, name: str):
        return store.gauge(f"{tag}.{name}")

    new_args = [
        g(new_store, "open") if "o" in gauges else None,
        g(new_store, "rem") if "r" in gauges else None,
    ]
    old_args = [
        g(old_store, "open") if "o" in gauges else None,
        g(old_store, "rem") if "r" in gauges else None,
    ]
    return Resource(maximum, *new_args), OldResource(maximum, *old_args)


@pytest.mark.parametrize("maximum", [0, 1, 2, 3, 5, 1024, UNLIMITED])
@pytest.mark.parametrize("gauges", ["", "o", "r", "or"])
def test_inline_gauges_match_the_previous_update(maximum, gauges):
    rnd = random.Random(maximum * 7 + len(gauges))
    new_store, old_store = Store(), Store()
    # two resources per side share the same gauges: the last change wins on both sides
    pairs = [_pair(maximum, gauges, new_store, old_store, "shared") for _ in range(2)]
    assert {k: v.value for k, v in new_store.gauges.items()} == {
        k: v.value for k, v in old_store.gauges.items()
    }
    for _ in range(3000):
        new, old = pairs[rnd.randrange(2)]
        op = rnd.random()
        if op < 0.45 or new.count <= 0 and op < 0.9:
            new.inc()
            old.inc()
        elif op < 0.9:
            new.dec()
            old.dec()
        else:
            with new:
                old.inc()
                assert new.count == old.count
                assert new.can_create() == old.can_create()
            old.dec()
        assert new.count == old.count
        assert new.can_create() == old.can_create()
        assert {k: v.value for k, v in new_store.gauges.items()} == {
            k: v.value for k, v in old_store.gauges.items()
        }


def test_negative_counts_and_counts_past_the_maximum_match():
    new_store, old_store = Store(), Store()
    new, old = _pair(2, "or", new_store, old_store, "x")
    for step in ["dec", "dec", "inc", "inc", "inc", "inc", "inc", "dec", "dec", "dec", "dec", "dec"]:
        getattr(new, step)()
        getattr(old, step)()
        assert new_store.gauge("x.open").value == old_store.gauge("x.open").value
        assert new_store.gauge("x.rem").value == old_store.gauge("x.rem").value
