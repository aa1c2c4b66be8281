"""Recent decisions for the dashboard: denials and rate-limited requests, plus quota usage (pure)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RecentEvents:
    """The last `size` events of one kind, newest last, each a dict with a `time` (Unix seconds)."""

    def __init__(self, size: int = 200, clock: Callable[[], float] = time.time) -> None:
        self.items: deque[dict] = deque(maxlen=size)
        self.clock = clock
        self.total = 0

    def add(self, **fields) -> None:
        self.total += 1
        self.items.append({"time": round(self.clock(), 3), **fields})

    def recent(self, limit: int = 100) -> dict:
        items = list(self.items)[-limit:]
        return {"total": self.total, "events": items[::-1]}


class QuotaUsage:
    """The counter value last seen for each limited descriptor, in its current window."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.usage: dict[tuple[str, str], dict] = {}

    def observe(
        self, domain: str, descriptor: str, used: int, limit: int, unit: str, reset_s: float, shadow: bool
    ) -> None:
        self.usage[(domain, descriptor)] = {
            "domain": domain,
            "descriptor": descriptor,
            "used": used,
            "limit": limit,
            "unit": unit,
            "shadow_mode": shadow,
            "window_end": round(self.clock() + reset_s, 3),
        }

    def snapshot(self) -> list[dict]:
        now = self.clock()
        out = []
        for item in self.usage.values():
            current = dict(item)
            if current["window_end"] <= now:  # the window this count belongs to is over
                current["used"] = 0
            out.append(current)
        return sorted(out, key=lambda u: (u["domain"], u["descriptor"]))
