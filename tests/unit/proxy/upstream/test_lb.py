"""Load balancer distributions, weights, hashing consistency and priorities."""

from __future__ import annotations

import collections
import random

import pytest

from proxy.upstream.host import FAILED_EDS_HEALTH, Host
from proxy.upstream.lb import (
    HostSet,
    LbConfig,
    LbContext,
    LeastRequestChooser,
    MaglevChooser,
    PriorityLoadBalancer,
    RingHashChooser,
    RoundRobinChooser,
    priority_loads,
    stable_hash64,
)


def hosts(n: int, weights=None, priority: int = 0) -> list[Host]:
    weights = weights or [1] * n
    return [Host((f"10.0.{priority}.{i}", 80), weight=w, priority=priority) for i, w in enumerate(weights)]


def counts(chooser, n: int, ctx=None) -> collections.Counter:
    return collections.Counter(chooser.choose(ctx).address[0] for _ in range(n))


def test_round_robin_visits_every_host_in_turn():
    hs = hosts(3)
    rr = RoundRobinChooser(hs)
    picks = [rr.choose(None) for _ in range(9)]
    assert collections.Counter(picks) == {h: 3 for h in hs}
    assert picks[0:3] == picks[3:6] == picks[6:9]


def test_weighted_round_robin_is_exact_and_smooth():
    hs = hosts(2, weights=[3, 1])
    rr = RoundRobinChooser(hs)
    picks = [rr.choose(None) for _ in range(400)]
    c = collections.Counter(picks)
    assert c[hs[0]] == 300 and c[hs[1]] == 100
    # smooth (EDF): the light host is never starved for long
    gaps = [i for i, h in enumerate(picks) if h is hs[1]]
    assert max(b - a for a, b in zip(gaps, gaps[1:], strict=False)) <= 4


def test_random_is_roughly_uniform():
    lb = PriorityLoadBalancer([HostSet(0, hosts(4))], LbConfig(policy="RANDOM"))
    c = counts(lb, 8000)
    assert len(c) == 4 and all(1700 < v < 2300 for v in c.values())


def test_least_request_prefers_idle_hosts():
    hs = hosts(3)
    hs[0].stats.rq_active = 10
    hs[1].stats.rq_active = 10
    lr = LeastRequestChooser(hs, choice_count=2)
    c = collections.Counter(lr.choose(None) for _ in range(3000))
    # P2C: the idle host wins every sample it appears in (5/9 of picks), the busy ones share the rest
    assert c[hs[2]] > 1400
    assert c[hs[2]] > c[hs[0]] + c[hs[1]] - 300


def test_weighted_least_request_follows_weights_when_idle():
    hs = hosts(2, weights=[1, 4])
    lr = LeastRequestChooser(hs)
    c = collections.Counter(lr.choose(None) for _ in range(5000))
    assert c[hs[1]] > 3 * c[hs[0]]


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_hash_policies_same_key_same_host(policy):
    lb = PriorityLoadBalancer([HostSet(0, hosts(5))], LbConfig(policy=policy))
    for key in range(200):
        k = stable_hash64(f"user-{key}")
        first = lb.choose(LbContext(hash_key=k))
        assert all(lb.choose(LbContext(hash_key=k)) is first for _ in range(3))


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_hash_policies_spread_keys_over_hosts(policy):
    lb = PriorityLoadBalancer([HostSet(0, hosts(4))], LbConfig(policy=policy))
    c = collections.Counter(lb.choose(LbContext(hash_key=stable_hash64(str(i)))).address for i in range(8000))
    assert len(c) == 4 and all(1200 < v < 2800 for v in c.values())


def test_ring_hash_removing_a_host_moves_only_its_keys():
    before_hosts = hosts(5)
    before = RingHashChooser(before_hosts)
    after = RingHashChooser([h for h in before_hosts if h is not before_hosts[2]])
    moved = 0
    for i in range(10000):
        ctx = LbContext(hash_key=stable_hash64(f"k{i}"))
        a, b = before.choose(ctx), after.choose(ctx)
        if a is not b:
            moved += 1
            assert a is before_hosts[2]
    assert 1200 < moved < 2800  # about 1/5 of the keys


def test_maglev_removal_disruption_is_about_one_nth():
    hs = hosts(5)
    before, after = MaglevChooser(hs), MaglevChooser(hs[:2] + hs[3:])
    keys = [stable_hash64(f"k{i}") for i in range(10000)]
    moved = sum(before.choose(LbContext(hash_key=k)) is not after.choose(LbContext(hash_key=k)) for k in keys)
    assert 1500 < moved < 3000


def test_ring_hash_weights_scale_ownership():
    hs = hosts(2, weights=[1, 3])
    ring = RingHashChooser(hs, min_ring_size=4096)
    c = collections.Counter(ring.choose(LbContext(hash_key=random.getrandbits(64))) for _ in range(8000))
    assert 0.18 < c[hs[0]] / 8000 < 0.32


def test_ring_hash_respects_min_ring_size():
    assert RingHashChooser(hosts(3), min_ring_size=3000).ring_size >= 3000


def test_maglev_weights_scale_table_share():
    hs = hosts(2, weights=[1, 3])
    m = MaglevChooser(hs, table_size=65537)
    share = sum(1 for h in m._table if h is hs[0]) / 65537
    assert 0.23 < share < 0.27


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_hash_policies_without_key_fall_back_to_random(policy):
    lb = PriorityLoadBalancer([HostSet(0, hosts(3))], LbConfig(policy=policy))
    assert len(counts(lb, 300, LbContext())) == 3


def test_stable_hash_is_stable():
    assert stable_hash64("abc") == stable_hash64(b"abc") != stable_hash64("abd")
    assert 0 <= stable_hash64("x") < 2**64


def test_lowest_priority_with_healthy_hosts_takes_all_load():
    p0, p1 = hosts(2, priority=0), hosts(2, priority=1)
    lb = PriorityLoadBalancer([HostSet(0, p0), HostSet(1, p1)], LbConfig())
    assert set(counts(lb, 100)) == {h.address[0] for h in p0}


def test_priority_spills_over_when_p0_is_degraded():
    p0, p1 = hosts(4, priority=0), hosts(4, priority=1)
    for h in p0[:3]:
        h.health_flags.add(FAILED_EDS_HEALTH)
    # P0 health = 1/4 * 1.4 = 35% -> 35% of the load stays in P0, 65% spills to P1
    assert priority_loads([HostSet(0, p0), HostSet(1, p1)]) == [35, 65]
    lb = PriorityLoadBalancer([HostSet(0, p0), HostSet(1, p1)], LbConfig())
    c = counts(lb, 4000)
    assert 0.30 < c[p0[3].address[0]] / 4000 < 0.40
    assert not any(c[h.address[0]] for h in p0[:3])  # unhealthy hosts get nothing


def test_overprovisioning_keeps_mostly_healthy_priority_whole():
    p0, p1 = hosts(10, priority=0), hosts(2, priority=1)
    for h in p0[:2]:
        h.health_flags.add(FAILED_EDS_HEALTH)
    assert priority_loads([HostSet(0, p0), HostSet(1, p1)]) == [100, 0]


def test_all_unhealthy_panics_to_all_hosts_of_p0():
    p0 = hosts(3)
    for h in p0:
        h.health_flags.add(FAILED_EDS_HEALTH)
    lb = PriorityLoadBalancer([HostSet(0, p0)], LbConfig())
    assert len(counts(lb, 60)) == 3


def test_panic_threshold_uses_all_hosts_when_too_few_are_healthy():
    p0 = hosts(4)
    for h in p0[:3]:
        h.health_flags.add(FAILED_EDS_HEALTH)
    lb = PriorityLoadBalancer([HostSet(0, p0)], LbConfig())  # 25% healthy < 50% panic threshold
    assert len(counts(lb, 200)) == 4
    lb = PriorityLoadBalancer([HostSet(0, p0)], LbConfig(panic_threshold=0))  # panic disabled
    assert set(counts(lb, 50)) == {p0[3].address[0]}


def test_empty_cluster_chooses_nothing():
    assert PriorityLoadBalancer([], LbConfig()).choose(None) is None


def test_locality_weighted_lb_splits_by_locality_weight():
    a, b = hosts(1, priority=0), [Host(("10.9.0.1", 80)), Host(("10.9.0.2", 80))]
    hs = HostSet(0, a + b, localities=[("zone-a", 1, a), ("zone-b", 3, b)])
    lb = PriorityLoadBalancer([hs], LbConfig(locality_weighted=True))
    c = counts(lb, 400)
    assert c[a[0].address[0]] == 100
    # without locality weighting, the three hosts share equally
    c = counts(PriorityLoadBalancer([hs], LbConfig()), 300)
    assert c[a[0].address[0]] == 100 and len(c) == 3
