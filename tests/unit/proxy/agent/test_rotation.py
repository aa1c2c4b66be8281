"""Rotation schedule with a fixed RNG: half-life renewal with bounded jitter; back-off that grows, caps,
and never waits past a still-valid certificate's expiry."""

import random

from proxy.agent.rotation import RotationPolicy


def test_renews_at_half_life_within_jitter():
    policy = RotationPolicy(jitter_ratio=0.05, rng=random.Random(1))
    times = [policy.renew_at(1000.0, 1000.0 + 86400) for _ in range(200)]
    assert all(1000 + 86400 * 0.45 <= t <= 1000 + 86400 * 0.55 for t in times)
    assert len({round(t) for t in times}) > 50  # really jittered, so a fleet spreads out


def test_no_jitter_is_exactly_half():
    policy = RotationPolicy(jitter_ratio=0.0)
    assert policy.renew_at(0.0, 6.0) == 3.0


def test_backoff_grows_then_caps():
    policy = RotationPolicy(retry_initial=0.5, retry_max=8.0, rng=random.Random(2))
    delays = [policy.retry_at(100.0, n, None) - 100.0 for n in range(1, 10)]
    assert 0.45 <= delays[0] <= 0.55 and 0.9 <= delays[1] <= 1.1 and 1.8 <= delays[2] <= 2.2
    assert all(d <= 8.0 * 1.1 for d in delays) and delays[-1] >= 8.0 * 0.9


def test_backoff_keeps_retrying_before_the_current_certificate_expires():
    policy = RotationPolicy(retry_initial=0.5, retry_max=30.0, rng=random.Random(3))
    now, not_after = 100.0, 110.0
    attempts = 0
    while now < not_after:
        now = policy.retry_at(now, 20, not_after)  # deep into back-off: 30 s alone would overshoot
        attempts += 1
    assert attempts >= 4
