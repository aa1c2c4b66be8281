"""Quota: descriptor-based fixed-window rate limits in the style of envoyproxy/ratelimit.

A request (Envoy's ``RateLimitRequest``) names a domain and a list of descriptors; each descriptor is a
list of key/value entries. A descriptor is limited when walking its entries down the domain's
descriptor tree (exact ``key``+``value`` first, then a ``key`` with no value, matching any value) ends
on a node with a ``rate_limit``. Every limited descriptor has its own counter per window; the window
for unit U starts at ``floor(now / U) * U`` (Unix seconds), so replicas sharing a backend agree on it.

Counter keys (the same in memory and in Redis)::

    ratelimit:<domain>_<key1>_<value1>_<key2>_<value2>..._<window start in Unix seconds>

e.g. ``ratelimit:productpage-ratelimit_PATH_/productpage_1735732800``. A counter lives for one window
(the backend expires it after the window's length). A descriptor is over the limit when its counter,
after adding ``hits_addend`` (0 means 1), exceeds ``requests_per_unit``. In ``shadow_mode`` it is
counted and reported in metrics but the answer stays OK. ``unlimited: true`` never counts.

When the backend fails (Redis unreachable or slow), the configured failure mode decides: ``open``
answers OK, ``closed`` answers OVER_LIMIT for every limited descriptor. Mixer itself keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mixer.config.model import QuotaConfig, RateLimit, find_node


class BackendError(Exception):
    """The counter store could not answer (e.g. Redis down); the failure mode applies."""


@dataclass(frozen=True)
class LimitMatch:
    """One request descriptor that ended on a limit in the config."""

    index: int
    entries: tuple[tuple[str, str], ...]
    limit: RateLimit
    shadow: bool

    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.entries)


@dataclass(frozen=True)
class DescriptorResult:
    code: str  # "OK" | "OVER_LIMIT"
    limit: RateLimit | None = None
    remaining: int = 0
    reset_s: float = 0.0
    used: int = 0
    shadow_over: bool = False


@dataclass(frozen=True)
class QuotaResult:
    overall: str  # "OK" | "OVER_LIMIT"
    statuses: tuple[DescriptorResult, ...]
    backend_error: str | None = None


def match_limits(
    quota: QuotaConfig, domain: str, descriptors: list[list[tuple[str, str]]]
) -> list[LimitMatch | None]:
    """For each request descriptor, the limit it ends on (None: not limited)."""
    roots = quota.domains.get(domain)
    out: list[LimitMatch | None] = []
    for i, entries in enumerate(descriptors):
        found = None
        if roots and entries:
            nodes, node = roots, None
            for depth, (key, value) in enumerate(entries):
                node = find_node(nodes, key, value)
                if node is None:
                    break
                if depth == len(entries) - 1 and node.rate_limit is not None:
                    found = LimitMatch(i, tuple(entries), node.rate_limit, node.shadow_mode)
                nodes = node.children
        out.append(found)
    return out


def window_start(now: float, window_s: int) -> int:
    return int(now // window_s) * window_s


def counter_key(domain: str, entries: tuple[tuple[str, str], ...], start: int) -> str:
    parts = [domain]
    for k, v in entries:
        parts += [k, v]
    parts.append(str(start))
    return "ratelimit:" + "_".join(parts)


class MemoryBackend:
    """Counters in this process (the default). Expired windows are dropped as they are passed."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.counters: dict[str, tuple[int, float]] = {}
        self._next_sweep = 0.0

    async def increment(self, items: list[tuple[str, int]], hits: int) -> list[int]:
        now = self.clock()
        if now >= self._next_sweep:
            self.counters = {k: v for k, v in self.counters.items() if v[1] > now}
            self._next_sweep = now + 1.0
        out = []
        for key, ttl in items:
            count, expires = self.counters.get(key, (0, now + ttl))
            if expires <= now:
                count, expires = 0, now + ttl
            count += hits
            self.counters[key] = (count, expires)
            out.append(count)
        return out

    async def close(self) -> None:
        pass


class QuotaService:
    """Decides a RateLimitRequest against the current config and a counter backend."""

    def __init__(self, backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock

    async def should_rate_limit(
        self, quota: QuotaConfig, domain: str, descriptors: list[list[tuple[str, str]]], hits_addend: int = 0
    ) -> QuotaResult:
        hits = hits_addend or 1
        now = self.clock()
        matches = match_limits(quota, domain, descriptors)
        counted = [m for m in matches if m is not None and not m.limit.unlimited]
        items = []
        for m in counted:
            start = window_start(now, m.limit.window_s)
            items.append((counter_key(domain, m.entries, start), m.limit.window_s))
        counts: dict[int, int] = {}
        error = None
        if items:
            try:
                values = await self.backend.increment(items, hits)
                counts = {m.index: v for m, v in zip(counted, values, strict=True)}
            except BackendError as e:
                error = str(e)
        statuses, overall = [], "OK"
        for m in matches:
            if m is None or m.limit.unlimited:
                statuses.append(DescriptorResult("OK", m.limit if m else None))
                continue
            reset = window_start(now, m.limit.window_s) + m.limit.window_s - now
            if error is not None:
                code = "OVER_LIMIT" if quota.failure_mode == "closed" else "OK"
                statuses.append(DescriptorResult(code, m.limit, 0, reset))
            else:
                used = counts[m.index]
                over = used > m.limit.requests_per_unit
                remaining = max(0, m.limit.requests_per_unit - used)
                code = "OVER_LIMIT" if over and not m.shadow else "OK"
                statuses.append(DescriptorResult(code, m.limit, remaining, reset, used, over and m.shadow))
            if statuses[-1].code == "OVER_LIMIT":
                overall = "OVER_LIMIT"
        return QuotaResult(overall, tuple(statuses), error)
