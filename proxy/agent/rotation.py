"""When to renew a certificate, and how to back off when citadel does not answer (pure; times in seconds).

Renew at half the lifetime, plus or minus a little jitter so a fleet started together does not renew in
one burst. After a failure, retry with exponential back-off (with jitter), never waiting past the
certificate's expiry while it is still valid.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class RotationPolicy:
    grace_ratio: float = 0.5  # renew when this fraction of the lifetime has passed
    jitter_ratio: float = 0.05  # +- this fraction of the lifetime
    retry_initial: float = 0.2
    retry_max: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def renew_at(self, not_before: float, not_after: float) -> float:
        lifetime = max(0.0, not_after - not_before)
        jitter = self.rng.uniform(-self.jitter_ratio, self.jitter_ratio) * lifetime
        return not_before + lifetime * self.grace_ratio + jitter

    def retry_at(self, now: float, failures: int, not_after: float | None) -> float:
        """When to try again after `failures` consecutive failures (>= 1)."""
        delay = min(self.retry_initial * 2 ** (failures - 1), self.retry_max)
        delay *= self.rng.uniform(0.9, 1.1)
        if not_after is not None and now < not_after:
            # keep trying at least a few times before the current certificate expires
            delay = min(delay, max(self.retry_initial, (not_after - now) / 4))
        return now + delay
