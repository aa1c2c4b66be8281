"""Jittered exponential back-off for reconnecting to the control plane (pure).

Envoy's ``JitteredExponentialBackOffStrategy``: the n-th retry waits a uniformly random time in
``[0, min(max, base * 2**n))`` ("full jitter"), so a fleet of proxies that lost the same control
plane does not reconnect in lock-step. A healthy stream resets the sequence.
"""

from __future__ import annotations

import random
from collections.abc import Callable

DEFAULT_BASE_S = 0.5
DEFAULT_MAX_S = 30.0


class JitteredBackoff:
    def __init__(
        self,
        base: float = DEFAULT_BASE_S,
        maximum: float = DEFAULT_MAX_S,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or maximum < base:
            raise ValueError(f"back-off needs 0 < base <= max, got base={base} max={maximum}")
        self.base = base
        self.maximum = maximum
        self._rand = rand
        self._attempt = 0

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        return min(self.maximum, self.base * (2**self._attempt))

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call moves one step up the sequence."""
        ceiling = self.ceiling()
        if ceiling < self.maximum:
            self._attempt += 1
        return ceiling * self._rand()

    def reset(self) -> None:
        self._attempt = 0
