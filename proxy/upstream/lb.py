"""Load balancing, in Envoy's model: a priority set of host sets, a priority chosen by Envoy's
priority-load algorithm (overprovisioning factor, panic threshold), then a host chosen inside that
priority by the cluster's lb_policy.

Everything here is built once per membership change into immutable choosers, so ``choose`` on the
request path is a few list/heap operations. Hash-based policies (RING_HASH, MAGLEV) use
``LbContext.hash_key`` (an unsigned 64-bit int; routers can derive it with ``stable_hash64``) and fall
back to random when there is none, as Envoy does.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from proxy.upstream.host import Host

MASK64 = 0xFFFFFFFFFFFFFFFF
DEFAULT_OVERPROVISIONING_FACTOR = 140  # percent, Envoy's default
DEFAULT_PANIC_THRESHOLD = 50.0  # percent
DEFAULT_MIN_RING_SIZE = 1024
DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024
DEFAULT_MAGLEV_TABLE_SIZE = 65537
DEFAULT_CHOICE_COUNT = 2


def stable_hash64(data: bytes | str) -> int:
    """A fast, process-independent 64-bit hash (unlike ``hash()``, which is salted per process)."""
    if isinstance(data, str):
        data = data.encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@dataclass(slots=True)
class LbContext:
    """What the caller knows about the request for host selection."""

    hash_key: int | None = None  # from the route's hash_policy; None -> hash policies pick at random
    downstream_connection: Any = None  # DownstreamConnection (ORIGINAL_DST reads .original_dst)
    headers: Any = None  # request Headers (ORIGINAL_DST's use_http_header)


@dataclass(frozen=True, slots=True)
class LbConfig:
    policy: str = "ROUND_ROBIN"  # ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV
    min_ring_size: int = DEFAULT_MIN_RING_SIZE
    max_ring_size: int = DEFAULT_MAX_RING_SIZE
    maglev_table_size: int = DEFAULT_MAGLEV_TABLE_SIZE
    choice_count: int = DEFAULT_CHOICE_COUNT
    active_request_bias: float = 1.0
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD
    overprovisioning_factor: int = DEFAULT_OVERPROVISIONING_FACTOR
    locality_weighted: bool = False

    @property
    def hash_based(self) -> bool:
        return self.policy in ("RING_HASH", "MAGLEV")


class HostSet:
    """The hosts of one priority. `localities` is [(locality, locality_weight, hosts)] in config order."""

    __slots__ = ("priority", "hosts", "healthy_hosts", "localities")

    def __init__(
        self, priority: int, hosts: list[Host], localities: list[tuple[Any, int, list[Host]]] | None = None
    ):
        self.priority = priority
        self.hosts = hosts
        self.healthy_hosts = [h for h in hosts if h.healthy]
        self.localities = localities if localities is not None else [(None, 1, hosts)]

    def healthy_percent(self) -> float:
        return 100.0 * len(self.healthy_hosts) / len(self.hosts) if self.hosts else 0.0


# ---------------------------------------------------------------------------------------------
# Choosers: pick a host from a fixed list.


class EmptyChooser:
    __slots__ = ()

    def choose(self, ctx: LbContext | None) -> Host | None:
        return None


class RoundRobinChooser:
    """Plain rotation when all weights are equal; otherwise Envoy's EDF scheduler (smooth weighted
    round robin: each pick has deadline += 1/weight, earliest deadline first, ties in order)."""

    __slots__ = ("_hosts", "_n", "_i", "_heap", "_seq")

    def __init__(self, hosts: list[Host]) -> None:
        self._hosts = hosts
        self._n = len(hosts)
        self._i = random.randrange(self._n) if hosts else 0  # proxies do not all start at host 0
        self._heap = None
        if len({h.weight for h in hosts}) > 1:
            self._seq = itertools.count()
            # (deadline, tie-break order, picks so far, host); deadline = picks / weight, computed
            # rather than accumulated so that ties stay exact.
            self._heap = [(1.0 / h.weight, next(self._seq), 1, h) for h in hosts]
            heapq.heapify(self._heap)

    def choose(self, ctx: LbContext | None) -> Host | None:
        heap = self._heap
        if heap is not None:
            _, _, n, host = heap[0]
            heapq.heapreplace(heap, ((n + 1) / host.weight, next(self._seq), n + 1, host))
            return host
        i = self._i
        self._i = (i + 1) % self._n
        return self._hosts[i]


class RandomChooser:
    __slots__ = ("_hosts",)

    def __init__(self, hosts: list[Host]) -> None:
        self._hosts = hosts

    def choose(self, ctx: LbContext | None) -> Host | None:
        return random.choice(self._hosts)


class LeastRequestChooser:
    """Power of `choice_count` choices: sample hosts, keep the one with the fewest active requests.
    With unequal weights, samples are drawn by weight and compared by (active+1)^bias / weight, which
    approximates Envoy's weighted least request."""

    __slots__ = ("_hosts", "_choices", "_bias", "_cum", "_weighted")

    def __init__(
        self, hosts: list[Host], choice_count: int = DEFAULT_CHOICE_COUNT, bias: float = 1.0
    ) -> None:
        self._hosts = hosts
        self._choices = max(1, choice_count)
        self._bias = bias
        self._weighted = len({h.weight for h in hosts}) > 1
        self._cum = list(itertools.accumulate(h.weight for h in hosts)) if self._weighted else None

    def choose(self, ctx: LbContext | None) -> Host | None:
        hosts = self._hosts
        if len(hosts) == 1:
            return hosts[0]
        if not self._weighted:
            best = None
            for _ in range(self._choices):
                h = random.choice(hosts)
                if best is None or h.stats.rq_active < best.stats.rq_active:
                    best = h
            return best
        picks = random.choices(hosts, cum_weights=self._cum, k=self._choices)
        bias = self._bias
        return min(picks, key=lambda h: (h.stats.rq_active + 1) ** bias / h.weight)


def _ring_key_hashes(host: Host, count: int) -> list[int]:
    base = host.address_str
    return [stable_hash64(f"{base}_{i}") for i in range(count)]


class RingHashChooser:
    """Ketama-style consistent hash ring (Envoy's ring_hash): each host owns entries in proportion to
    its weight; a key maps to the first entry at or after it, wrapping around."""

    __slots__ = ("_hashes", "_hosts", "_random")

    def __init__(
        self,
        hosts: list[Host],
        min_ring_size: int = DEFAULT_MIN_RING_SIZE,
        max_ring_size: int = DEFAULT_MAX_RING_SIZE,
    ) -> None:
        self._random = RandomChooser(hosts)
        # Envoy sizes the ring between min and max ring size in proportion to weight. We give each
        # host `per_unit * weight/min_weight` entries with `per_unit` rounded up to a power of two,
        # so the ring stays within bounds (>= min, capped at max) while adding or removing a host
        # rarely changes the other hosts' entries: only the removed host's keys move.
        min_weight = min(h.weight for h in hosts)
        units = sum(h.weight / min_weight for h in hosts)
        per_unit = 1 << max(0, math.ceil(math.log2(max(1.0, min_ring_size / units))))
        if per_unit * units > max_ring_size:
            per_unit = max(1.0, max_ring_size / units)
        entries: list[tuple[int, str, Host]] = []
        for host in hosts:
            base = host.address_str
            count = max(1, round(per_unit * host.weight / min_weight))
            entries.extend((stable_hash64(f"{base}_{i}"), base, host) for i in range(count))
        entries.sort(key=lambda e: (e[0], e[1]))
        self._hashes = [e[0] for e in entries]
        self._hosts = [e[2] for e in entries]

    @property
    def ring_size(self) -> int:
        return len(self._hashes)

    def choose(self, ctx: LbContext | None) -> Host | None:
        key = ctx.hash_key if ctx is not None else None
        if key is None:
            return self._random.choose(ctx)
        i = bisect.bisect_left(self._hashes, key & MASK64)
        return self._hosts[i if i < len(self._hosts) else 0]


class MaglevChooser:
    """Maglev lookup table (Envoy's weighted variant): hosts take turns filling slots along their own
    permutation, each turn granted in proportion to weight; a key maps to ``table[key % size]``."""

    __slots__ = ("_table", "_size", "_random")

    def __init__(self, hosts: list[Host], table_size: int = DEFAULT_MAGLEV_TABLE_SIZE) -> None:
        self._random = RandomChooser(hosts)
        size = self._size = table_size
        max_weight = max(h.weight for h in hosts)
        # Sort by address so the table does not depend on config order.
        ordered = sorted(hosts, key=lambda h: h.address_str)
        offsets, skips, nexts, weights, targets = [], [], [], [], []
        for h in ordered:
            digest = hashlib.blake2b(h.address_str.encode(), digest_size=16).digest()
            offsets.append(int.from_bytes(digest[:8], "little") % size)
            skips.append(int.from_bytes(digest[8:], "little") % (size - 1) + 1)
            nexts.append(0)
            weights.append(h.weight / max_weight)
            targets.append(0.0)
        table: list[Host | None] = [None] * size
        filled = 0
        iteration = 1
        n = len(ordered)
        while filled < size:
            for i in range(n):
                if iteration * weights[i] < targets[i]:
                    continue
                targets[i] += 1.0
                offset, skip, j = offsets[i], skips[i], nexts[i]
                c = (offset + skip * j) % size
                while table[c] is not None:
                    j += 1
                    c = (offset + skip * j) % size
                table[c] = ordered[i]
                nexts[i] = j + 1
                filled += 1
                if filled == size:
                    break
            iteration += 1
        self._table = table

    def choose(self, ctx: LbContext | None) -> Host | None:
        key = ctx.hash_key if ctx is not None else None
        if key is None:
            return self._random.choose(ctx)
        return self._table[(key & MASK64) % self._size]


class LocalityChooser:
    """Locality-weighted LB (common_lb_config.locality_weighted_lb_config): EDF over localities by
    locality weight x availability, then the policy's chooser inside the locality."""

    __slots__ = ("_rr",)

    def __init__(self, entries: list[tuple[int, Any]]) -> None:
        # Reuse the weighted round robin scheduler with pseudo-hosts carrying the effective weights.
        self._rr = RoundRobinChooser([_WeightedItem(w, c) for w, c in entries]) if entries else None

    def choose(self, ctx: LbContext | None) -> Host | None:
        if self._rr is None:
            return None
        return self._rr.choose(ctx).item.choose(ctx)


class _WeightedItem:
    __slots__ = ("weight", "item")

    def __init__(self, weight: float, item: Any) -> None:
        self.weight = weight
        self.item = item


def make_chooser(hosts: list[Host], config: LbConfig):
    if not hosts:
        return EmptyChooser()
    policy = config.policy
    if policy == "ROUND_ROBIN":
        return RoundRobinChooser(hosts)
    if policy == "LEAST_REQUEST":
        return LeastRequestChooser(hosts, config.choice_count, config.active_request_bias)
    if policy == "RANDOM":
        return RandomChooser(hosts)
    if policy == "RING_HASH":
        return RingHashChooser(hosts, config.min_ring_size, config.max_ring_size)
    if policy == "MAGLEV":
        return MaglevChooser(hosts, config.maglev_table_size)
    raise ValueError(f"unknown lb policy {policy}")


# ---------------------------------------------------------------------------------------------
# Priorities.


def priority_loads(
    host_sets: list[HostSet], overprovisioning_factor: int = DEFAULT_OVERPROVISIONING_FACTOR
) -> list[int]:
    """Envoy's healthy priority load (percent per priority, summing to 100)."""
    if not host_sets:
        return []
    health = [
        min(100, (len(hs.healthy_hosts) * overprovisioning_factor) // len(hs.hosts)) if hs.hosts else 0
        for hs in host_sets
    ]
    total = min(100, sum(health))
    loads = [0] * len(host_sets)
    if total == 0:
        loads[0] = 100  # everything is unhealthy: all load to P0 (in panic)
        return loads
    remaining = 100
    for i, h in enumerate(health):
        loads[i] = min(remaining, h * 100 // total)
        remaining -= loads[i]
    if remaining:
        first = next(i for i, h in enumerate(health) if h > 0)
        loads[first] += remaining
    return loads


class PriorityLoadBalancer:
    """Chooses a priority by load, then a host within it. Immutable; rebuilt on membership change."""

    __slots__ = ("loads", "panic", "_cumulative", "_choosers", "_single")

    def __init__(self, host_sets: list[HostSet], config: LbConfig) -> None:
        host_sets = [hs for hs in host_sets if hs.hosts]
        self.loads = loads = priority_loads(host_sets, config.overprovisioning_factor)
        total_health = (
            min(
                100,
                sum(
                    min(100, (len(hs.healthy_hosts) * config.overprovisioning_factor) // len(hs.hosts))
                    for hs in host_sets
                ),
            )
            if host_sets
            else 0
        )
        self.panic = [
            config.panic_threshold > 0
            and total_health < 100
            and hs.healthy_percent() < config.panic_threshold
            for hs in host_sets
        ]
        if total_health == 0 and host_sets:
            self.panic = [True] * len(host_sets)
        choosers, cumulative, running = [], [], 0
        for hs, load, panic in zip(host_sets, loads, self.panic, strict=True):
            if load <= 0:
                continue
            running += load
            cumulative.append(running)
            choosers.append(_host_set_chooser(hs, config, panic))
        self._cumulative = cumulative
        self._choosers = choosers
        self._single = choosers[0] if len(choosers) == 1 else None

    def choose(self, ctx: LbContext | None) -> Host | None:
        single = self._single
        if single is not None:
            return single.choose(ctx)
        if not self._choosers:
            return None
        key = ctx.hash_key if ctx is not None else None
        r = (key & MASK64) % 100 if key is not None else random.randrange(100)
        return self._choosers[bisect.bisect_right(self._cumulative, r)].choose(ctx)


def _host_set_chooser(hs: HostSet, config: LbConfig, panic: bool):
    if config.locality_weighted and not config.hash_based:
        entries = []
        for _locality, weight, hosts in hs.localities:
            candidates = hosts if panic else [h for h in hosts if h.healthy]
            if not weight or not candidates or not hosts:
                continue
            availability = min(1.0, len(candidates) * config.overprovisioning_factor / 100 / len(hosts))
            entries.append((weight * availability, make_chooser(candidates, config)))
        return LocalityChooser(entries)
    return make_chooser(hs.hosts if panic else hs.healthy_hosts, config)
