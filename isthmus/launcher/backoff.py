"""When to restart a crashed process (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: initial, initial*factor, ... capped at maximum.

    A process that stayed up for `stable_after` seconds counts as healthy again: its next crash
    starts from `initial` once more.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    stable_after: float = 30.0

    def delay(self, consecutive_crashes: int) -> float:
        """Seconds to wait before restart number `consecutive_crashes` (1 for the first crash)."""
        if consecutive_crashes < 1:
            raise ValueError("consecutive_crashes starts at 1")
        return min(self.maximum, self.initial * self.factor ** (consecutive_crashes - 1))

    def next_count(self, consecutive_crashes: int, uptime: float) -> int:
        """The crash count after a crash that came `uptime` seconds after the last start."""
        return 1 if uptime >= self.stable_after else consecutive_crashes + 1
